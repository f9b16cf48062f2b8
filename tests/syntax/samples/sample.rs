//! Word counter — "naïve" tokenizer, handles é and 日本.
use std::collections::HashMap;

const MIN_LEN: usize = 2;

#[derive(Debug, Default)]
pub struct Counter {
    counts: HashMap<String, usize>,
    total: usize,
}

impl Counter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, text: &str) -> usize {
        let mut added = 0;
        for word in text.split_whitespace() {
            let word = word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
            if word.chars().count() < MIN_LEN {
                continue;
            }
            *self.counts.entry(word).or_insert(0) += 1;
            added += 1;
        }
        self.total += added;
        added
    }

    pub fn top(&self, n: usize) -> Vec<(&String, &usize)> {
        let mut pairs: Vec<_> = self.counts.iter().collect();
        pairs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        pairs.truncate(n);
        pairs
    }
}

fn ratio(part: usize, total: usize) -> f64 {
    if total == 0 { 0.0 } else { part as f64 / total as f64 }
}
