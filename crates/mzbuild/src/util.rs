//! Small shared mechanisms with no better home.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` over `items` on up to `threads` threads, results in the order of
/// `items`. For work that waits on the network or on other processes
/// (registry requests, pulls), where more threads than cores pay off;
/// CPU-bound work uses rayon.
pub fn par_io<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, items.len().max(1));
    let mut parts: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { return out };
                        out.push((i, f(item)));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("I/O worker panicked")).collect()
    });
    parts.sort_unstable_by_key(|(i, _)| *i);
    parts.into_iter().map(|(_, r)| r).collect()
}

/// `word` as one word of a POSIX shell command line: as is when it needs no
/// quoting, else single-quoted.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@,%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn par_io_keeps_the_order() {
        let items: Vec<usize> = (0..100).collect();
        assert_eq!(super::par_io(&items, 7, |i| i * 2), items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(super::par_io(&[] as &[u8], 4, |_| ()).is_empty());
    }

    #[test]
    fn shell_words() {
        assert_eq!(super::shell_word("/tmp/a-b/c.d"), "/tmp/a-b/c.d");
        assert_eq!(super::shell_word("/my repo/it's"), r"'/my repo/it'\''s'");
        assert_eq!(super::shell_word(""), "''");
    }
}
