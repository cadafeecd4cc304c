//! Small shared mechanisms with no better home.

use rayon::prelude::*;

/// `f` over `items` on up to `threads` threads, results in the order of
/// `items`. For work that waits on the network or on other processes
/// (registry requests, pulls), where more threads than cores pay off: a
/// rayon pool of its own, sized for the waiting, instead of the global one
/// (one thread per core) that CPU-bound work uses.
pub fn par_io<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(|| items.par_iter().map(&f).collect()),
        // No threads to be had: one at a time.
        Err(_) => items.iter().map(f).collect(),
    }
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
