//! A set of tree files, by position in `Tree::files`: a bitmap, so that
//! building an image's inputs, and the union of all images' inputs, costs
//! next to nothing, and iterating yields paths in sorted order.

use std::ops::Range;

pub struct FileSet {
    words: Vec<u64>,
}

impl FileSet {
    pub fn new(len: usize) -> FileSet {
        FileSet { words: vec![0; len.div_ceil(64)] }
    }

    pub fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub fn insert_range(&mut self, r: Range<usize>) {
        for (word, mask) in self.masks(r) {
            self.words[word] |= mask;
        }
    }

    pub fn remove_range(&mut self, r: Range<usize>) {
        for (word, mask) in self.masks(r) {
            self.words[word] &= !mask;
        }
    }

    /// The words `r` touches, each with the bits of `r` in it: whole words
    /// at once, so that a range costs its length / 64, not its length.
    fn masks(&self, r: Range<usize>) -> impl Iterator<Item = (usize, u64)> {
        let (first, last) = (r.start / 64, r.end.saturating_sub(1) / 64);
        let words = if r.is_empty() { 0..0 } else { first..last + 1 };
        words.map(move |w| {
            let low = if w == first { !0u64 << (r.start % 64) } else { !0 };
            let high = if w == last { !0u64 >> (63 - (r.end - 1) % 64) } else { !0 };
            (w, low & high)
        })
    }

    pub fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    pub fn union_with(&mut self, other: &FileSet) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= *o;
        }
    }

    /// The members as runs of consecutive positions, ascending.
    pub fn runs(&self) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        // The start of the run that reaches the current word, if any.
        let mut open: Option<usize> = None;
        for (n, &word) in self.words.iter().enumerate() {
            let base = n * 64;
            let mut bit = 0;
            while bit < 64 {
                let rest = word >> bit;
                match open {
                    Some(start) => {
                        let ones = rest.trailing_ones() as usize;
                        if bit + ones == 64 {
                            break;
                        }
                        bit += ones;
                        out.push(start..base + bit);
                        open = None;
                    }
                    None => {
                        if rest == 0 {
                            break;
                        }
                        bit += rest.trailing_zeros() as usize;
                        open = Some(base + bit);
                    }
                }
            }
        }
        if let Some(start) = open {
            out.push(start..self.words.len() * 64);
        }
        out
    }

    /// The members, ascending.
    pub fn iter(&self) -> Bits<'_> {
        Bits { words: &self.words, next_word: 0, current: 0 }
    }
}

pub struct Bits<'a> {
    words: &'a [u64],
    next_word: usize,
    /// The bits of word `next_word - 1` not yet returned.
    current: u64,
}

impl Iterator for Bits<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.current == 0 {
            if self.next_word == self.words.len() {
                return None;
            }
            self.current = self.words[self.next_word];
            self.next_word += 1;
        }
        let bit = self.current.trailing_zeros() as usize;
        self.current &= self.current - 1;
        Some((self.next_word - 1) * 64 + bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_iter_agree_with_a_naive_set() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 300, 1000] {
            for _ in 0..50 {
                let mut set = FileSet::new(len);
                let mut naive = vec![false; len];
                for _ in 0..next(8) {
                    if len == 0 {
                        break;
                    }
                    let a = next(len + 1);
                    let b = a + next(len + 1 - a);
                    if next(4) == 0 {
                        set.remove_range(a..b);
                        naive[a..b].fill(false);
                    } else {
                        set.insert_range(a..b);
                        naive[a..b].fill(true);
                    }
                    let i = next(len);
                    set.insert(i);
                    naive[i] = true;
                }
                let want: Vec<usize> = (0..len).filter(|i| naive[*i]).collect();
                assert_eq!(set.iter().collect::<Vec<_>>(), want);
                let from_runs: Vec<usize> = set.runs().into_iter().flatten().collect();
                assert_eq!(from_runs, want);
                // Runs are maximal: none touches the next.
                let runs = set.runs();
                assert!(runs.windows(2).all(|w| w[0].end < w[1].start));
                assert!(runs.iter().all(|r| !r.is_empty()));
                let mut union = FileSet::new(len);
                union.union_with(&set);
                assert_eq!(union.iter().collect::<Vec<_>>(), want);
            }
        }
    }
}
