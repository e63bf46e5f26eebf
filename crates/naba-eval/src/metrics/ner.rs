//! Entity-level NER metrics, as seqeval 1.2 computes them.
//!
//! * **Strict** — `classification_report(y_true, y_pred, mode="strict", scheme=IOB2)`: an
//!   entity is a `B-X` followed by any `I-X`; an `I-X` that does not continue a `B-X`/`I-X` of
//!   the same type is not part of any entity. A predicted entity counts only when type, start
//!   and end all equal a gold entity's.
//! * **Lenient** — seqeval's default mode (the conlleval rules): an `I-X` after `O` or after
//!   another type starts a new entity, so malformed sequences still yield entities.
//!
//! Both are computed over all sentences together, as seqeval does with a list of lists.

use super::{averages, scores_of, Averages, Counts, LabelScores};
use crate::error::{EvalError, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// An entity: its type and its tokens `start..end` (end exclusive) within one sentence.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entity {
    /// Entity type (`PER`, `LOC`, ...).
    pub kind: String,
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
}

/// Micro, macro and weighted averages plus per-type scores for one matching mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntityScores {
    /// Totals over all types (seqeval's default `f1_score`).
    pub micro: Averages,
    /// Unweighted mean over types found in gold or predictions.
    pub macro_avg: Averages,
    /// Mean over types weighted by gold support.
    pub weighted: Averages,
    /// Per type, sorted by type name.
    pub per_type: BTreeMap<String, LabelScores>,
}

/// NER metrics: strict IOB2 and lenient (conlleval) entity scores, and token accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct NerMetrics {
    /// Number of sentences.
    pub sentences: usize,
    /// Number of tokens.
    pub tokens: usize,
    /// `mode="strict", scheme=IOB2`.
    pub strict: EntityScores,
    /// seqeval's default mode.
    pub lenient: EntityScores,
    /// Fraction of tokens whose tag is exactly right (seqeval `accuracy_score`).
    pub token_accuracy: f64,
}

/// Compute [`NerMetrics`]. `gold[i]` and `pred[i]` are the tags of sentence `i`.
///
/// # Errors
/// When the number of sentences or of tokens in a sentence differs, when there are no
/// tokens, or when a tag is not IOB2 (strict mode accepts only `O`, `B-…`, `I-…`, as seqeval
/// does).
pub fn ner_metrics<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>]) -> Result<NerMetrics> {
    let counts = NerCounts::new(gold, pred)?;
    let weights = vec![1u32; counts.sentences()];
    Ok(counts.metrics(&weights))
}

/// A parsed tag for strict IOB2: prefix and seqeval's tag (`token[1:].strip("-") or "_"`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefix {
    B,
    I,
    O,
}

fn strict_token(tag: &str) -> Option<(Prefix, &str)> {
    let mut chars = tag.chars();
    let prefix = match chars.next()? {
        'B' => Prefix::B,
        'I' => Prefix::I,
        'O' => Prefix::O,
        _ => return None,
    };
    let rest = chars.as_str().trim_matches('-');
    Some((prefix, if rest.is_empty() { "_" } else { rest }))
}

/// Entities of one sentence under strict IOB2 (seqeval `Tokens(..., IOB2).entities`).
///
/// # Errors
/// `Err(i)` with the index of the first tag that is not `O`, `B…` or `I…`.
pub fn strict_iob2_entities<S: AsRef<str>>(tags: &[S]) -> std::result::Result<Vec<Entity>, usize> {
    let mut toks = Vec::with_capacity(tags.len() + 1);
    for (i, t) in tags.iter().enumerate() {
        toks.push(strict_token(t.as_ref()).ok_or(i)?);
    }
    toks.push((Prefix::O, "_"));
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let (prefix, kind) = toks[i];
        if prefix == Prefix::B {
            // _forward: consume I- tokens of the same type.
            let mut end = i + 1;
            let mut prev = toks[i];
            while end < toks.len() {
                let cur = toks[end];
                let inside = matches!(prev.0, Prefix::B | Prefix::I)
                    && cur.0 == Prefix::I
                    && cur.1 == prev.1;
                if !inside {
                    break;
                }
                prev = cur;
                end += 1;
            }
            // _is_end: the IOB2 end patterns cover every way _forward can stop.
            out.push(Entity {
                kind: kind.to_string(),
                start: i,
                end,
            });
            i = end;
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// seqeval's default-mode split of a tag: first character, and the type
/// (`chunk[1:].split("-", 1)[-1] or "_"`). An empty tag is read as `O`.
fn lenient_parts(chunk: &str) -> (char, &str) {
    let mut chars = chunk.chars();
    let Some(tag) = chars.next() else {
        return ('O', "_");
    };
    let rest = chars.as_str();
    let kind = rest.split_once('-').map_or(rest, |(_, after)| after);
    (tag, if kind.is_empty() { "_" } else { kind })
}

fn end_of_chunk(prev_tag: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(prev_tag, 'E' | 'S')
        || (matches!(prev_tag, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev_tag != 'O' && prev_tag != '.' && prev_type != kind)
}

fn start_of_chunk(prev_tag: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev_tag, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != kind)
}

/// seqeval `get_entities` over one flat sequence: `(type, first, last)` with `last` inclusive.
fn conlleval_chunks<'a>(seq: impl Iterator<Item = &'a str>) -> Vec<(String, usize, usize)> {
    let mut prev_tag = 'O';
    let mut prev_type = String::new();
    let mut begin = 0usize;
    let mut chunks = Vec::new();
    for (i, chunk) in seq.chain(std::iter::once("O")).enumerate() {
        let (tag, kind) = lenient_parts(chunk);
        if end_of_chunk(prev_tag, tag, &prev_type, kind) && i > 0 {
            chunks.push((prev_type.clone(), begin, i - 1));
        }
        if start_of_chunk(prev_tag, tag, &prev_type, kind) {
            begin = i;
        }
        prev_tag = tag;
        prev_type.clear();
        prev_type.push_str(kind);
    }
    chunks
}

/// Entities of one sentence under seqeval's default (conlleval-style) rules.
pub fn conlleval_entities<S: AsRef<str>>(tags: &[S]) -> Vec<Entity> {
    conlleval_chunks(tags.iter().map(AsRef::as_ref))
        .into_iter()
        .map(|(kind, first, last)| Entity {
            kind,
            start: first,
            end: last + 1,
        })
        .collect()
}

/// Per-type counts of one sentence: (type index, tp, pred, gold).
type SentenceCounts = Vec<(usize, u32, u32, u32)>;

/// Counts per sentence, so that metrics can be recomputed for any weighting of sentences
/// (the point estimate and every bootstrap resample).
pub(crate) struct NerCounts {
    types: Vec<String>,
    strict: Vec<SentenceCounts>,
    lenient: Vec<SentenceCounts>,
    token_correct: Vec<u32>,
    token_total: Vec<u32>,
}

#[derive(Default)]
struct TypeIndex {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl TypeIndex {
    fn get(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }
}

fn add(counts: &mut BTreeMap<usize, (u32, u32, u32)>, t: usize, tp: u32, pred: u32, gold: u32) {
    let e = counts.entry(t).or_default();
    e.0 += tp;
    e.1 += pred;
    e.2 += gold;
}

impl NerCounts {
    pub(crate) fn new<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>]) -> Result<Self> {
        if gold.len() != pred.len() {
            return Err(EvalError::LengthMismatch {
                what: "sentences".into(),
                gold: gold.len(),
                predicted: pred.len(),
            });
        }
        for (i, (g, p)) in gold.iter().zip(pred).enumerate() {
            if g.len() != p.len() {
                return Err(EvalError::LengthMismatch {
                    what: format!("tokens of sentence {}", i + 1),
                    gold: g.len(),
                    predicted: p.len(),
                });
            }
        }
        let n_tokens: usize = gold.iter().map(Vec::len).sum();
        if n_tokens == 0 {
            return Err(EvalError::Empty(
                "there are no tokens (is the CoNLL file empty? see the data issues)".into(),
            ));
        }
        let mut types = TypeIndex::default();

        // Strict: per sentence.
        let mut strict = Vec::with_capacity(gold.len());
        for (i, (g, p)) in gold.iter().zip(pred).enumerate() {
            let ge = strict_iob2_entities(g).map_err(|t| invalid(i, t, "gold", g))?;
            let pe = strict_iob2_entities(p).map_err(|t| invalid(i, t, "predicted", p))?;
            let gs: HashSet<&Entity> = ge.iter().collect();
            let mut c = BTreeMap::new();
            for e in &ge {
                add(&mut c, types.get(&e.kind), 0, 0, 1);
            }
            for e in &pe {
                let tp = u32::from(gs.contains(e));
                add(&mut c, types.get(&e.kind), tp, 1, 0);
            }
            strict.push(c.into_iter().map(|(t, (a, b, d))| (t, a, b, d)).collect());
        }

        // Lenient: over the flattened sequence with an `O` after each sentence, exactly as
        // seqeval; each entity is attributed to the sentence it starts in.
        let mut offsets = Vec::with_capacity(gold.len());
        let mut off = 0usize;
        for g in gold {
            offsets.push(off);
            off += g.len() + 1;
        }
        let flat = |seqs: &[Vec<S>]| -> Vec<(String, usize, usize)> {
            conlleval_chunks(
                seqs.iter()
                    .flat_map(|s| s.iter().map(AsRef::as_ref).chain(std::iter::once("O"))),
            )
        };
        let sentence_of = |start: usize| offsets.partition_point(|&o| o <= start).max(1) - 1;
        let gold_chunks: HashSet<(String, usize, usize)> = flat(gold).into_iter().collect();
        let pred_chunks: HashSet<(String, usize, usize)> = flat(pred).into_iter().collect();
        let mut lenient_maps: Vec<BTreeMap<usize, (u32, u32, u32)>> =
            vec![BTreeMap::new(); gold.len()];
        for ch in &gold_chunks {
            add(
                &mut lenient_maps[sentence_of(ch.1)],
                types.get(&ch.0),
                0,
                0,
                1,
            );
        }
        for ch in &pred_chunks {
            let tp = u32::from(gold_chunks.contains(ch));
            add(
                &mut lenient_maps[sentence_of(ch.1)],
                types.get(&ch.0),
                tp,
                1,
                0,
            );
        }
        let lenient = lenient_maps
            .into_iter()
            .map(|m| m.into_iter().map(|(t, (a, b, d))| (t, a, b, d)).collect())
            .collect();

        let token_correct = gold
            .iter()
            .zip(pred)
            .map(|(g, p)| {
                g.iter()
                    .zip(p)
                    .filter(|(a, b)| a.as_ref() == b.as_ref())
                    .count() as u32
            })
            .collect();
        let token_total = gold.iter().map(|g| g.len() as u32).collect();
        Ok(NerCounts {
            types: types.names,
            strict,
            lenient,
            token_correct,
            token_total,
        })
    }

    pub(crate) fn sentences(&self) -> usize {
        self.token_total.len()
    }

    fn scores(&self, per_sentence: &[SentenceCounts], weights: &[u32]) -> EntityScores {
        let mut totals = vec![Counts::default(); self.types.len()];
        for (s, &w) in per_sentence.iter().zip(weights) {
            if w == 0 {
                continue;
            }
            let w = f64::from(w);
            for &(t, tp, pred, gold) in s {
                totals[t].tp += f64::from(tp) * w;
                totals[t].pred += f64::from(pred) * w;
                totals[t].gold += f64::from(gold) * w;
            }
        }
        // seqeval sorts target names; keep types found in this (weighted) sample.
        let mut order: Vec<usize> = (0..self.types.len())
            .filter(|&t| totals[t].pred + totals[t].gold > 0.0)
            .collect();
        order.sort_by(|&a, &b| self.types[a].cmp(&self.types[b]));
        let per: Vec<(Counts, LabelScores)> = order
            .iter()
            .map(|&t| (totals[t], scores_of(totals[t])))
            .collect();
        let (micro, macro_avg, weighted) = averages(&per);
        EntityScores {
            micro,
            macro_avg,
            weighted,
            per_type: order
                .iter()
                .zip(&per)
                .map(|(&t, (_, s))| (self.types[t].clone(), *s))
                .collect(),
        }
    }

    pub(crate) fn metrics(&self, weights: &[u32]) -> NerMetrics {
        let mut correct = 0u64;
        let mut total = 0u64;
        let mut sentences = 0usize;
        for ((&c, &t), &w) in self
            .token_correct
            .iter()
            .zip(&self.token_total)
            .zip(weights)
        {
            correct += u64::from(c) * u64::from(w);
            total += u64::from(t) * u64::from(w);
            sentences += w as usize;
        }
        NerMetrics {
            sentences,
            tokens: total as usize,
            strict: self.scores(&self.strict, weights),
            lenient: self.scores(&self.lenient, weights),
            token_accuracy: super::div0(correct as f64, total as f64),
        }
    }

    /// Every entity type seen in either mode, sorted.
    #[allow(dead_code)]
    pub(crate) fn type_names(&self) -> BTreeSet<String> {
        self.types.iter().cloned().collect()
    }
}

fn invalid<S: AsRef<str>>(
    sentence: usize,
    token: usize,
    side: &'static str,
    tags: &[S],
) -> EvalError {
    EvalError::InvalidTag {
        side,
        tag: tags
            .get(token)
            .map(|t| t.as_ref().to_string())
            .unwrap_or_default(),
        sentence: sentence + 1,
        token: token + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(tags: &str) -> Vec<String> {
        tags.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn strict_ignores_dangling_inside_tags() {
        let e = strict_iob2_entities(&v("I-PER B-PER I-PER I-LOC O B-LOC")).unwrap();
        assert_eq!(
            e,
            [
                Entity {
                    kind: "PER".into(),
                    start: 1,
                    end: 3
                },
                Entity {
                    kind: "LOC".into(),
                    start: 5,
                    end: 6
                },
            ]
        );
        assert_eq!(strict_iob2_entities(&v("O E-PER")), Err(1));
    }

    #[test]
    fn lenient_starts_entities_at_inside_tags() {
        let e = conlleval_entities(&v("I-PER B-PER I-PER I-LOC O B-LOC"));
        let spans: Vec<(&str, usize, usize)> = e
            .iter()
            .map(|e| (e.kind.as_str(), e.start, e.end))
            .collect();
        assert_eq!(
            spans,
            [("PER", 0, 1), ("PER", 1, 3), ("LOC", 3, 4), ("LOC", 5, 6)]
        );
    }

    #[test]
    fn seqeval_docstring_example() {
        let gold = vec![v("O O O B-MISC I-MISC I-MISC O"), v("B-PER I-PER O")];
        let pred = vec![v("O O B-MISC I-MISC I-MISC I-MISC O"), v("B-PER I-PER O")];
        let m = ner_metrics(&gold, &pred).unwrap();
        assert_eq!(m.lenient.micro.f1, 0.5);
        assert_eq!(m.strict.macro_avg.f1, 0.5);
        assert!((m.token_accuracy - 0.8).abs() < 1e-12);
        assert_eq!(m.strict.per_type["PER"].support, 1);
    }

    #[test]
    fn rejects_mismatches_and_bad_tags() {
        assert!(ner_metrics(&[v("O")], &[v("O O")]).is_err());
        let err = ner_metrics(&[v("O S-PER")], &[v("O O")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("S-PER") && err.contains("sentence 1, token 2"),
            "{err}"
        );
    }
}
