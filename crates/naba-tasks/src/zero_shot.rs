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

use crate::pipeline::{batched_logits, encode_pair_truncated, PairSide, Pipeline, TaskError};
use crate::scores::LabelScore;
use naba_models::deberta::DebertaClassifier;
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
    /// Each label's raw score before calibration, in the labels' order as given: the mean
    /// cosine similarity of its descriptions (embedding), or its entailment logit (entailment).
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
        // `query: ` on both sides: on the ASND dev split it beat `passage: ` for the document
        // (macro-F1 0.49 against 0.39, with the label's best description).
        let docs = self.pipeline.embed(texts, "query: ");
        Ok(docs
            .into_iter()
            .map(|doc| {
                let (doc, windows) = doc?;
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
                cache.insert((*d).to_string(), v?.0);
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

/// The hypothesis template for labels in Arabic script, and for others (transformers' default).
pub const TEMPLATE_AR: &str = "هذا النص عن {}.";
pub const TEMPLATE_EN: &str = "This example is {}.";

/// The default template for `labels`: Arabic when any label is written in Arabic script.
pub fn default_template(labels: &[ZeroShotLabel]) -> &'static str {
    let arabic = labels.iter().any(|l| {
        l.name
            .chars()
            .any(|c| ('\u{0600}'..='\u{06FF}').contains(&c))
    });
    if arabic {
        TEMPLATE_AR
    } else {
        TEMPLATE_EN
    }
}

/// Zero-shot by entailment, with the semantics of transformers' zero-shot-classification
/// pipeline: each (text, template filled with a label) pair through a sequence-pair
/// classifier; single-label, a softmax across the labels of the entailment logits;
/// multi-label, per label a softmax of (contradiction, entailment) logits. The model is an
/// NLI checkpoint (labels `entailment` / `contradiction`, in any order, read from `id2label`;
/// the text is the premise, read first) or a naba stance model (`agree` as entailment,
/// `disagree` as contradiction; the hypothesis goes first, as its targets do).
pub struct EntailmentZeroShot<P: PairClassifier = Pipeline> {
    model: P,
    entail: usize,
    contradict: usize,
    hypothesis_first: bool,
}

/// A sequence-pair classifier entailment can run on: a naba pipeline (BERT, XLM-R), or a
/// DeBERTa-v2 on candle-transformers.
pub trait PairClassifier {
    fn name(&self) -> &str;
    /// `id2label`, in id order.
    fn labels(&self) -> &[String];
    fn pair_logits(
        &self,
        pairs: &[(&str, &str)],
        truncate: PairSide,
    ) -> Vec<Result<Vec<f32>, TaskError>>;
}

impl PairClassifier for Pipeline {
    fn name(&self) -> &str {
        &self.model().name
    }

    fn labels(&self) -> &[String] {
        &self.model().config.labels
    }

    fn pair_logits(
        &self,
        pairs: &[(&str, &str)],
        truncate: PairSide,
    ) -> Vec<Result<Vec<f32>, TaskError>> {
        Pipeline::pair_logits(self, pairs, truncate)
    }
}

impl PairClassifier for DebertaClassifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn pair_logits(
        &self,
        pairs: &[(&str, &str)],
        truncate: PairSide,
    ) -> Vec<Result<Vec<f32>, TaskError>> {
        let encoded = pairs
            .iter()
            .map(|(a, b)| encode_pair_truncated(&self.tokenizer, self.max_tokens, a, b, truncate))
            .collect();
        batched_logits(encoded, 16, |encs| {
            self.logits(encs).map_err(|e| e.to_string())
        })
    }
}

impl<P: PairClassifier> EntailmentZeroShot<P> {
    pub fn new(model: P) -> Result<Self, TaskError> {
        let labels: Vec<String> = model.labels().iter().map(|l| l.to_lowercase()).collect();
        let find = |pred: &dyn Fn(&str) -> bool| labels.iter().position(|l| pred(l));
        let nli = (
            find(&|l| l.starts_with("entail")),
            find(&|l| l.starts_with("contradict")),
        );
        let stance = (find(&|l| l == "agree"), find(&|l| l == "disagree"));
        let (entail, contradict, hypothesis_first) = match (nli, stance) {
            ((Some(e), Some(c)), _) => (e, c, false),
            (_, (Some(e), Some(c))) => (e, c, true),
            _ => {
                return Err(TaskError::Labels(format!(
                    "model `{}` has the labels {:?}: entailment zero-shot needs an NLI model \
                     (entailment and contradiction labels) or a naba stance model (agree and \
                     disagree)",
                    model.name(),
                    model.labels()
                )))
            }
        };
        Ok(Self {
            model,
            entail,
            contradict,
            hypothesis_first,
        })
    }

    pub fn model(&self) -> &P {
        &self.model
    }

    /// Scores of `labels` for each text under `template` (with one `{}` for the label).
    pub fn classify(
        &self,
        texts: &[&str],
        labels: &[ZeroShotLabel],
        template: &str,
        multi_label: bool,
    ) -> Result<Vec<Result<ZeroShotOutput, TaskError>>, TaskError> {
        check_labels(labels)?;
        check_template(template).map_err(TaskError::Labels)?;
        // A label's first description fills the template (its name when it has none, as in
        // transformers): a data set's label names can be slugs no model reads well.
        let hypotheses: Vec<String> = labels
            .iter()
            .map(|l| template.replacen("{}", l.descriptions.first().unwrap_or(&l.name), 1))
            .collect();
        let pairs: Vec<(&str, &str)> = texts
            .iter()
            .flat_map(|t| {
                hypotheses.iter().map(move |h| {
                    if self.hypothesis_first {
                        (h.as_str(), *t)
                    } else {
                        (*t, h.as_str())
                    }
                })
            })
            .collect();
        let side = if self.hypothesis_first {
            PairSide::Second
        } else {
            PairSide::First
        };
        let mut logits = self.model.pair_logits(&pairs, side).into_iter();
        let mut out = Vec::with_capacity(texts.len());
        for _ in texts {
            let rows: Result<Vec<Vec<f32>>, TaskError> = (&mut logits).take(labels.len()).collect();
            out.push(rows.map(|rows| self.scores(labels, &rows, multi_label)));
        }
        Ok(out)
    }

    fn scores(&self, labels: &[ZeroShotLabel], rows: &[Vec<f32>], multi: bool) -> ZeroShotOutput {
        let at = |r: &Vec<f32>, i: usize| r.get(i).copied().unwrap_or(f32::NEG_INFINITY);
        let entail: Vec<f32> = rows.iter().map(|r| at(r, self.entail)).collect();
        let scores: Vec<f32> = if multi {
            rows.iter()
                .map(|r| {
                    let (e, c) = (at(r, self.entail), at(r, self.contradict));
                    let m = e.max(c);
                    let (e, c) = ((e - m).exp(), (c - m).exp());
                    e / (e + c)
                })
                .collect()
        } else {
            crate::scores::softmax(&entail)
        };
        let mut ranked: Vec<LabelScore> = labels
            .iter()
            .zip(&scores)
            .map(|(l, &score)| LabelScore {
                label: l.name.clone(),
                score,
            })
            .collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        ZeroShotOutput {
            labels: ranked,
            similarities: entail,
            windows: 1,
        }
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

/// A hypothesis template must hold `{}` exactly once, where the label goes.
pub fn check_template(template: &str) -> Result<(), String> {
    if template.matches("{}").count() != 1 {
        return Err(format!(
            "the hypothesis template {template:?} must hold `{{}}` once, where the label goes"
        ));
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
