//! Sharding a job over machines (`--shard I/N`) and the records a shard report keeps so that
//! [`crate::merge_shards`] can rebuild the unsharded report exactly.
//!
//! The rule is positional: the job's items (examples, or CoNLL sentences, after `--limit`) are
//! cut, in file order, into the blocks the caller hands to the model in one call (`--batch-size`
//! items; for NER read in passages, that many passages), and block `b` belongs to shard
//! `b mod N`. It depends on nothing but the data and the settings, so every machine and every
//! thread count draws the same line between shards.
//!
//! Whole model calls are dealt out, not single items, because a model's outputs move in the
//! last bits with the other texts of its batch (padding, length-sorted windows): a shard that
//! makes exactly the unsharded run's calls gets bit-identical predictions, so the merged
//! figures are the unsharded run's even where a label is a near tie.

use crate::read::{ClassificationCorpus, NerCorpus};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// One part of a job split `count` ways: the blocks whose number is `index` modulo `count`.
/// `index` counts from 0, so the shards of 3 are `0/3`, `1/3` and `2/3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which part, `0..count`.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl Shard {
    /// Reads `I/N` as written after `--shard`.
    ///
    /// # Errors
    /// A message naming the expected form when `s` is not two whole numbers around a `/`, when
    /// `N` is 0, or when `I` is not below `N`.
    pub fn parse(s: &str) -> std::result::Result<Shard, String> {
        let form = "write it as I/N, shard I (counted from 0) of N shards, e.g. 0/3, 1/3 or 2/3";
        let (i, n) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a shard: {form}"))?;
        let number = |x: &str| x.trim().parse::<usize>().ok();
        let (Some(index), Some(count)) = (number(i), number(n)) else {
            return Err(format!("`{s}` is not a shard: {form}"));
        };
        if count == 0 {
            return Err(format!(
                "`{s}`: the shard count N must be at least 1 ({form})"
            ));
        }
        if index >= count {
            return Err(format!(
                "`{s}`: shard indices count from 0, so the {count} shards are 0/{count} to {}/{count}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether block number `block` belongs to this shard.
    pub fn owns(&self, block: usize) -> bool {
        block % self.count == self.index
    }

    /// Whether the item at `position` belongs to this shard when items are dealt in blocks of
    /// `block` (0 is read as 1).
    pub fn owns_item(&self, position: usize, block: usize) -> bool {
        self.owns(position / block.max(1))
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Shard::parse(s)
    }
}

/// What a shard run hands to [`crate::Report`] (through [`crate::EvalOptions::shard`]) beside
/// the usual corpus and predictions: where each of its items sits in the whole job, and what
/// the whole job was, so that the shards of one job can be told from those of another.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardPart {
    /// Which shard this is.
    pub shard: Shard,
    /// What was dealt out, e.g. `blocks of 32 examples` or `blocks of 32 passages`: shards
    /// dealt differently do not fit together.
    pub dealt: String,
    /// Items in the whole job (after `--limit`).
    pub total: usize,
    /// For each item of the shard's corpus, its position in the whole job, ascending.
    pub positions: Vec<usize>,
    /// A digest of the whole job's items ([`job_digest`]).
    pub digest: String,
    /// Each item's share of the model time in milliseconds, kept so that the merged report's
    /// latency percentiles are those of all items; empty when not measured.
    pub latency_ms: Vec<f64>,
}

/// The `shard` object of a shard report's metrics.json.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Which part, from 0.
    pub index: usize,
    /// How many parts the job was split into.
    pub count: usize,
    /// What was dealt out, e.g. `blocks of 32 examples`.
    pub dealt: String,
    /// Items (examples or sentences) in this shard.
    pub items: usize,
    /// Items in the whole job.
    pub total: usize,
    /// Digest of the whole job's items, the same in every shard of one job.
    pub digest: String,
}

impl ShardInfo {
    pub(crate) fn new(part: &ShardPart) -> Self {
        ShardInfo {
            index: part.shard.index,
            count: part.shard.count,
            dealt: part.dealt.clone(),
            items: part.positions.len(),
            total: part.total,
            digest: part.digest.clone(),
        }
    }
}

/// One entry of a merged report's `merged_from`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergedShard {
    /// The shard's index.
    pub index: usize,
    /// The shard report directory, as given to the merge.
    pub report: String,
    /// Items it held.
    pub items: usize,
    /// When it was made.
    pub timestamp: String,
    /// Its own wall time, when it measured one.
    pub wall_seconds: Option<f64>,
}

/// 64-bit FNV-1a, written out so the digest is the same on every platform and with every
/// dependency version. It tells the shards of different data, filters or samples apart; it is
/// not meant to resist anyone forging a collision.
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// A field, length first, so that `("ab", "c")` and `("a", "bc")` differ.
    pub(crate) fn field(&mut self, s: &str) {
        self.bytes(&(s.len() as u64).to_le_bytes());
        self.bytes(s.as_bytes());
    }

    pub(crate) fn number(&mut self, n: usize) {
        self.bytes(&(n as u64).to_le_bytes());
    }

    pub(crate) fn finish(&self) -> String {
        format!("fnv1a64:{:016x}", self.0)
    }
}

/// The digest of a whole job: every item's id, line, text (or tokens), target and gold label,
/// in order. Shards computed from the same data, column settings, label map and sample agree
/// on it.
pub fn job_digest(items: &JobItems<'_>) -> String {
    let mut h = Fnv::new();
    match items {
        JobItems::Classification(c) => {
            h.field("classification");
            h.number(c.examples.len());
            for e in &c.examples {
                h.field(&e.id);
                h.number(e.line);
                h.field(&e.text);
                match &e.target {
                    Some(t) => {
                        h.number(1);
                        h.field(t);
                    }
                    None => h.number(0),
                }
                h.field(&e.label);
            }
        }
        JobItems::Ner(c) => {
            h.field("ner");
            h.number(c.sentences.len());
            for s in &c.sentences {
                h.field(&s.id);
                h.number(s.line);
                h.number(s.tokens.len());
                for (t, g) in s.tokens.iter().zip(&s.tags) {
                    h.field(t);
                    h.field(g);
                }
            }
        }
    }
    h.finish()
}

/// The items of a whole job, for [`job_digest`].
pub enum JobItems<'a> {
    /// Classification examples.
    Classification(&'a ClassificationCorpus),
    /// NER sentences.
    Ner(&'a NerCorpus),
}

impl ClassificationCorpus {
    /// Keeps this shard's examples, dealt in blocks of `block` (example `k` goes to shard
    /// `(k / block) mod N`), and says where they were. Call it after
    /// [`ClassificationCorpus::sample`]: the sample is drawn from the whole file, then dealt
    /// out. Data issues stay those of the whole file.
    pub fn take_shard(mut self, shard: Shard, block: usize) -> (Self, ShardPart) {
        let block = block.max(1);
        let total = self.examples.len();
        let digest = job_digest(&JobItems::Classification(&self));
        let positions: Vec<usize> = (0..total).filter(|&k| shard.owns_item(k, block)).collect();
        self.examples = crate::sample::keep_positions(self.examples, &positions);
        let part = ShardPart {
            shard,
            dealt: format!("blocks of {block} examples"),
            total,
            positions,
            digest,
            latency_ms: Vec::new(),
        };
        (self, part)
    }
}

impl NerCorpus {
    /// Keeps this shard's sentences. `groups` are runs of consecutive sentences, in order and
    /// covering every sentence (the sentences of one model call), and group `g` goes to shard
    /// `g mod N` whole; `dealt` says what a group is, for the report. Call it after
    /// [`NerCorpus::sample`].
    pub fn take_shard(
        mut self,
        shard: Shard,
        groups: &[Range<usize>],
        dealt: &str,
    ) -> (Self, ShardPart) {
        let total = self.sentences.len();
        let digest = job_digest(&JobItems::Ner(&self));
        let positions: Vec<usize> = groups
            .iter()
            .enumerate()
            .filter(|(g, _)| shard.owns(*g))
            .flat_map(|(_, r)| r.clone())
            .filter(|&k| k < total)
            .collect();
        self.sentences = crate::sample::keep_positions(self.sentences, &positions);
        let part = ShardPart {
            shard,
            dealt: dealt.into(),
            total,
            positions,
            digest,
            latency_ms: Vec::new(),
        };
        (self, part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_i_of_n_and_says_what_is_wrong() {
        assert_eq!(Shard::parse("1/3"), Ok(Shard { index: 1, count: 3 }));
        assert_eq!(Shard::parse(" 0/1 "), Ok(Shard { index: 0, count: 1 }));
        assert_eq!(Shard::parse("2/3").map(|s| s.to_string()), Ok("2/3".into()));
        for (bad, says) in [
            ("3/3", "count from 0"),
            ("0/0", "at least 1"),
            ("1", "I/N"),
            ("a/3", "I/N"),
            ("-1/3", "I/N"),
            ("1/3/4", "I/N"),
            ("", "I/N"),
        ] {
            let err = Shard::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn every_position_has_exactly_one_shard() {
        let shards: Vec<Shard> = (0..4).map(|index| Shard { index, count: 4 }).collect();
        for k in 0..50 {
            assert_eq!(shards.iter().filter(|s| s.owns_item(k, 3)).count(), 1);
        }
        // Blocks of 3: 0-2 in shard 0, 3-5 in shard 1, ..., 12-14 in shard 0 again.
        assert!(shards[1].owns_item(5, 3) && shards[0].owns_item(12, 3));
        assert!(shards[2].owns_item(2, 0), "a block of 0 is a block of 1");
    }

    #[test]
    fn passages_go_whole_to_one_shard() {
        let corpus = NerCorpus {
            sentences: (0..6)
                .map(|i| crate::NerSentence {
                    id: format!("L{i}"),
                    line: i + 1,
                    tokens: vec!["x".into()],
                    tags: vec!["O".into()],
                    token_lines: vec![i + 1],
                    raw_lines: vec!["x O".into()],
                })
                .collect(),
            ..NerCorpus::default()
        };
        let groups = [0..3, 3..4, 4..6];
        let (a, pa) = corpus
            .clone()
            .take_shard(Shard { index: 0, count: 2 }, &groups, "passages");
        let (b, pb) = corpus.take_shard(Shard { index: 1, count: 2 }, &groups, "passages");
        assert_eq!(pa.positions, vec![0, 1, 2, 4, 5]);
        assert_eq!(pb.positions, vec![3]);
        assert_eq!(a.sentences.len(), 5);
        assert_eq!(b.sentences[0].id, "L3");
        assert_eq!(pa.dealt, "passages");
        assert_eq!(pa.digest, pb.digest);
    }
}
