//! Zero-shot classification by embeddings: a document (in all its windows) and the candidate
//! labels' descriptions are embedded with the E5 base encoder, both with E5's `query: ` prefix
//! (the symmetric use E5 recommends for classification; it also won on dev data), and each
//! label scores by the mean cosine similarity of its descriptions. Scores are calibrated so
//! they mean the same from one request to the next:
//!
//! - single-label: a softmax over the labels of similarity / [`Calibration::temperature`];
//! - multi-label: each label on its own, `sigmoid((similarity - threshold) / scale)`.
//!
//! The constants were fitted on dev splits only (see [`Calibration::E5_SMALL`]). Label
//! embeddings are cached: a service asks about the same labels again and again.

use crate::pipeline::{Pipeline, TaskError};
use crate::scores::LabelScore;
use std::collections::HashMap;
use std::sync::Mutex;

/// A candidate label and the descriptions it is matched by (itself when none is given).
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotLabel {
    pub name: String,
    pub descriptions: Vec<String>,
}

/// How similarities become scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Single-label softmax temperature.
    pub temperature: f32,
    /// Multi-label: the similarity that scores 0.5.
    pub threshold: f32,
    /// Multi-label: how fast the score rises around the threshold.
    pub scale: f32,
}

impl Calibration {
    /// For multilingual-e5-small, fitted by `scripts/zero_shot_calibrate.py` on the ASND dev
    /// split (567 posts, 12 labels) with `evaluation/zero-shot/asnd.labels`: the temperature
    /// minimises the single-label log loss (1.478 at 0.008); threshold and scale are a
    /// one-feature logistic regression of "this is the document's label" on the similarity.
    /// E5's similarities crowd into a narrow band (about 0.75-0.90), hence the small values.
    pub const E5_SMALL: Calibration = Calibration {
        temperature: 0.008,
        threshold: 0.863,
        scale: 0.016,
    };
}

/// Zero-shot results for one document.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotOutput {
    /// Every label, best first, with its calibrated score.
    pub labels: Vec<LabelScore>,
    /// Mean cosine similarity of each label's descriptions, in the labels' order as given.
    pub similarities: Vec<f32>,
    /// Windows the document was read in.
    pub windows: usize,
}

/// The most labels one call may ask about, and the longest description: a label costs an
/// encoder pass, and a caller must not be able to make one request cost thousands.
pub const MAX_LABELS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// How many label descriptions the cache keeps before it starts over.
const CACHE_LIMIT: usize = 10_000;

/// Embedding zero-shot over a bare encoder's pipeline.
pub struct EmbeddingZeroShot {
    pipeline: Pipeline,
    calibration: Calibration,
    cache: Mutex<HashMap<String, Vec<f32>>>,
}

impl EmbeddingZeroShot {
    pub fn new(pipeline: Pipeline, calibration: Calibration) -> Self {
        Self {
            pipeline,
            calibration,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Scores of `labels` for each text, in input order; each text fails on its own.
    pub fn classify(
        &self,
        texts: &[&str],
        labels: &[ZeroShotLabel],
        multi_label: bool,
    ) -> Result<Vec<Result<ZeroShotOutput, TaskError>>, TaskError> {
        check_labels(labels)?;
        let label_vectors = self.label_vectors(labels)?;
        let windows: Vec<usize> = texts
            .iter()
            .map(|t| self.pipeline.windows(t, None).map_or(0, |w| w.len()))
            .collect();
        // `query: ` on both sides: on the ASND dev split it beat `passage: ` for the document
        // (macro-F1 0.49 against 0.39, with the label's best description).
        let docs = self.pipeline.embed(texts, "query: ");
        Ok(docs
            .into_iter()
            .zip(windows)
            .map(|(doc, windows)| {
                let doc = doc?;
                let similarities: Vec<f32> = label_vectors
                    .iter()
                    .map(|descs| {
                        // The mean over a label's descriptions, not the best one: on the
                        // ASND dev split 0.54 macro-F1 against 0.49.
                        descs.iter().map(|d| dot(&doc, d)).sum::<f32>() / descs.len().max(1) as f32
                    })
                    .collect();
                let scores = calibrate(&similarities, multi_label, &self.calibration);
                let mut out: Vec<LabelScore> = labels
                    .iter()
                    .zip(scores)
                    .map(|(l, score)| LabelScore {
                        label: l.name.clone(),
                        score,
                    })
                    .collect();
                out.sort_by(|a, b| b.score.total_cmp(&a.score));
                Ok(ZeroShotOutput {
                    labels: out,
                    similarities,
                    windows,
                })
            })
            .collect())
    }

    /// Each label's description embeddings, from the cache where it has them.
    fn label_vectors(&self, labels: &[ZeroShotLabel]) -> Result<Vec<Vec<Vec<f32>>>, TaskError> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let missing: Vec<&str> = labels
            .iter()
            .flat_map(|l| l.descriptions.iter().map(String::as_str))
            .filter(|d| !cache.contains_key(*d))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            if cache.len() + missing.len() > CACHE_LIMIT {
                cache.clear();
            }
            for (d, v) in missing.iter().zip(self.pipeline.embed(&missing, "query: ")) {
                cache.insert((*d).to_string(), v?);
            }
        }
        Ok(labels
            .iter()
            .map(|l| {
                l.descriptions
                    .iter()
                    .filter_map(|d| cache.get(d).cloned())
                    .collect()
            })
            .collect())
    }
}

/// Calibrated scores from similarities (see the module documentation).
pub fn calibrate(similarities: &[f32], multi_label: bool, c: &Calibration) -> Vec<f32> {
    if multi_label {
        return similarities
            .iter()
            .map(|s| 1.0 / (1.0 + (-(s - c.threshold) / c.scale).exp()))
            .collect();
    }
    let max = similarities
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = similarities
        .iter()
        .map(|s| ((s - max) / c.temperature).exp())
        .collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Refuses what would make a call meaningless or too costly, naming the limit.
pub fn check_labels(labels: &[ZeroShotLabel]) -> Result<(), TaskError> {
    let bad = |m: String| Err(TaskError::Labels(m));
    if labels.is_empty() {
        return bad(
            "no candidate labels: give at least one (two for a single-label choice)".into(),
        );
    }
    if labels.len() > MAX_LABELS {
        return bad(format!(
            "{} candidate labels, over the limit of {MAX_LABELS}",
            labels.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in labels {
        if l.name.trim().is_empty() {
            return bad("a candidate label is empty".into());
        }
        if !seen.insert(l.name.as_str()) {
            return bad(format!("the label `{}` is given twice", l.name));
        }
        if l.descriptions.is_empty() || l.descriptions.iter().any(|d| d.trim().is_empty()) {
            return bad(format!("the label `{}` has an empty description", l.name));
        }
        if let Some(d) = l
            .descriptions
            .iter()
            .find(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            return bad(format!(
                "a description of `{}` has {} characters, over the limit of \
                 {MAX_DESCRIPTION_CHARS}",
                l.name,
                d.chars().count()
            ));
        }
    }
    Ok(())
}

/// Labels from a comma list: `رياضة,اقتصاد,سياسة`; each label is its own description.
pub fn labels_from_list(list: &str) -> Vec<ZeroShotLabel> {
    list.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| ZeroShotLabel {
            name: l.to_string(),
            descriptions: vec![l.to_string()],
        })
        .collect()
}

/// Labels from a file: one label per line, `label: description | another description`, or a
/// bare `label` that is its own description; blank lines and `#` comments are skipped.
pub fn labels_from_file(text: &str) -> Vec<ZeroShotLabel> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| match line.split_once(':') {
            Some((name, descs)) => ZeroShotLabel {
                name: name.trim().to_string(),
                descriptions: descs
                    .split('|')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect(),
            },
            None => ZeroShotLabel {
                name: line.to_string(),
                descriptions: vec![line.to_string()],
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_label_scores_sum_to_one_and_keep_the_order() {
        let c = Calibration::E5_SMALL;
        let s = calibrate(&[0.80, 0.85, 0.79], false, &c);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(s[1] > s[0] && s[0] > s[2]);
        let m = calibrate(&[c.threshold, c.threshold + 0.1], true, &c);
        assert!((m[0] - 0.5).abs() < 1e-6 && m[1] > 0.99);
    }

    #[test]
    fn label_files_and_lists_parse_and_bad_labels_are_named() {
        let labels = labels_from_file("# topics\nرياضة: كرة القدم | مباراة\n\nاقتصاد\n");
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0].descriptions, vec!["كرة القدم", "مباراة"]);
        assert_eq!(labels[1].descriptions, vec!["اقتصاد"]);
        assert_eq!(labels_from_list(" a, ,b ").len(), 2);
        let err = |l: &[ZeroShotLabel]| check_labels(l).unwrap_err().to_string();
        assert!(err(&[]).contains("no candidate labels"));
        let many = labels_from_list(
            &(0..101)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        assert!(err(&many).contains("limit of 100"));
        assert!(err(&labels_from_list("a,a")).contains("twice"));
        let empty = ZeroShotLabel {
            name: "x".into(),
            descriptions: vec![" ".into()],
        };
        assert!(err(&[empty]).contains("empty description"));
    }
}
