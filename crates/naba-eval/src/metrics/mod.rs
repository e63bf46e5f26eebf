//! Metrics with the definitions of scikit-learn (classification) and seqeval (NER).
//!
//! Every division by zero gives 0 (scikit-learn's and seqeval's `zero_division=0`).

pub(crate) mod classification;
pub(crate) mod ner;
mod stats;

pub use classification::{
    classification_metrics, mean_f1_of_labels, ClassificationMetrics, ConfusionMatrix,
};
pub use ner::{
    conlleval_entities, ner_metrics, strict_iob2_entities, Entity, EntityScores, NerMetrics,
};
pub use stats::{percentile, LatencySummary, RunStats};

use serde::{Deserialize, Serialize};

/// Precision, recall and F1 of one label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelScores {
    /// tp / (tp + fp), 0 when nothing was predicted.
    pub precision: f64,
    /// tp / (tp + fn), 0 when the label has no gold items.
    pub recall: f64,
    /// 2·P·R / (P + R), 0 when P + R = 0.
    pub f1: f64,
    /// Number of gold items (examples or entities) with this label.
    pub support: u64,
}

/// An average of precision, recall and F1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Averages {
    /// Averaged precision.
    pub precision: f64,
    /// Averaged recall.
    pub recall: f64,
    /// Averaged F1 (for macro and weighted: the mean of per-label F1, not the F1 of the means).
    pub f1: f64,
}

/// Counts of one label: true positives, predicted, gold.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Counts {
    pub tp: f64,
    pub pred: f64,
    pub gold: f64,
}

pub(crate) fn div0(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Per-label scores from counts, as scikit-learn's and seqeval's `_prf_divide` do.
pub(crate) fn scores_of(c: Counts) -> LabelScores {
    let precision = div0(c.tp, c.pred);
    let recall = div0(c.tp, c.gold);
    let denom = precision + recall;
    let f1 = if denom == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / denom
    };
    LabelScores {
        precision,
        recall,
        f1,
        support: c.gold as u64,
    }
}

/// Micro, macro and weighted averages over labels (all labels given are averaged: callers
/// pass the labels present in gold or predictions).
pub(crate) fn averages(per_label: &[(Counts, LabelScores)]) -> (Averages, Averages, Averages) {
    let mut total = Counts::default();
    for (c, _) in per_label {
        total.tp += c.tp;
        total.pred += c.pred;
        total.gold += c.gold;
    }
    let micro_s = scores_of(total);
    let micro = Averages {
        precision: micro_s.precision,
        recall: micro_s.recall,
        f1: micro_s.f1,
    };
    let n = per_label.len() as f64;
    let mut macro_avg = Averages::default();
    let mut weighted = Averages::default();
    for (c, s) in per_label {
        macro_avg.precision += s.precision;
        macro_avg.recall += s.recall;
        macro_avg.f1 += s.f1;
        weighted.precision += s.precision * c.gold;
        weighted.recall += s.recall * c.gold;
        weighted.f1 += s.f1 * c.gold;
    }
    if n > 0.0 {
        macro_avg.precision /= n;
        macro_avg.recall /= n;
        macro_avg.f1 /= n;
    }
    if total.gold > 0.0 {
        weighted.precision /= total.gold;
        weighted.recall /= total.gold;
        weighted.f1 /= total.gold;
    } else {
        weighted = Averages::default();
    }
    (micro, macro_avg, weighted)
}
