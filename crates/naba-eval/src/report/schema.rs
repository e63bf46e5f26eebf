//! The metrics.json schema (documented field by field in METRICS.md).

use crate::bootstrap::Ci95;
use crate::issues::IssueSummary;
use crate::metrics::{ConfusionMatrix, LabelScores, RunStats};
use crate::sample::SampleInfo;
use crate::shard::{MergedShard, ShardInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The version of the metrics.json layout; raised when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// A headline figure with its bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The figure on the full data.
    pub value: f64,
    /// Percentile bootstrap 95% interval `[lo, hi]`; `null` when bootstrapping was off.
    pub ci95: Option<Ci95>,
}

/// Scores of one label or entity type, with an interval for its F1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelEntry {
    /// Precision (0 when never predicted).
    pub precision: f64,
    /// Recall (0 when no gold items).
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Gold count.
    pub support: u64,
    /// Bootstrap 95% interval of F1.
    pub f1_ci95: Option<Ci95>,
}

impl LabelEntry {
    pub(crate) fn new(s: LabelScores, f1_ci95: Option<Ci95>) -> Self {
        LabelEntry {
            precision: s.precision,
            recall: s.recall,
            f1: s.f1,
            support: s.support,
            f1_ci95,
        }
    }
}

/// The mean F1 of chosen labels (e.g. Mawqif's official score, Favor and Against).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectedF1 {
    /// The labels averaged.
    pub labels: Vec<String>,
    /// Their mean F1.
    pub value: f64,
    /// Bootstrap 95% interval.
    pub ci95: Option<Ci95>,
}

/// Scores of a classification or stance run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationScores {
    /// Number of examples scored.
    pub examples: usize,
    /// Fraction correct.
    pub accuracy: Estimate,
    /// Unweighted mean of per-label F1 over all labels in gold or predictions.
    pub macro_f1: Estimate,
    /// Micro F1 (equals accuracy for single-label data).
    pub micro_f1: Estimate,
    /// Support-weighted mean of per-label F1.
    pub weighted_f1: Estimate,
    /// Unweighted mean of per-label precision.
    pub macro_precision: Estimate,
    /// Unweighted mean of per-label recall.
    pub macro_recall: Estimate,
    /// Mean F1 of chosen labels; `null` when none were chosen.
    pub selected_f1: Option<SelectedF1>,
    /// Per label (gold or predicted), sorted.
    pub per_label: BTreeMap<String, LabelEntry>,
    /// Rows gold, columns predicted.
    pub confusion_matrix: ConfusionMatrix,
}

/// Scores of an NER run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NerScores {
    /// Number of sentences scored.
    pub sentences: usize,
    /// Number of tokens scored.
    pub tokens: usize,
    /// The tagging scheme of strict matching (`IOB2`).
    pub scheme: String,
    /// Strict IOB2 entity micro F1 (the headline NER figure).
    pub micro_f1: Estimate,
    /// Strict micro precision.
    pub micro_precision: Estimate,
    /// Strict micro recall.
    pub micro_recall: Estimate,
    /// Strict macro F1 over entity types.
    pub macro_f1: Estimate,
    /// Strict macro precision.
    pub macro_precision: Estimate,
    /// Strict macro recall.
    pub macro_recall: Estimate,
    /// Strict support-weighted F1.
    pub weighted_f1: Estimate,
    /// seqeval default-mode (conlleval-style, lenient) micro F1.
    pub lenient_micro_f1: Estimate,
    /// Lenient micro precision.
    pub lenient_micro_precision: Estimate,
    /// Lenient micro recall.
    pub lenient_micro_recall: Estimate,
    /// Fraction of tokens with exactly the right tag.
    pub token_accuracy: Estimate,
    /// Strict per entity type.
    pub per_type: BTreeMap<String, LabelEntry>,
    /// Lenient per entity type (no intervals).
    pub lenient_per_type: BTreeMap<String, LabelScores>,
    /// Token-level confusion of entity types (`B-`/`I-` dropped, `O` kept); rows gold.
    pub token_confusion_matrix: ConfusionMatrix,
}

/// Task-specific scores; `task` in metrics.json says which.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskScores {
    /// Topic or stance classification.
    Classification(ClassificationScores),
    /// Named entities.
    Ner(NerScores),
}

impl TaskScores {
    /// `classification` or `ner`.
    pub fn task(&self) -> &'static str {
        match self {
            TaskScores::Classification(_) => "classification",
            TaskScores::Ner(_) => "ner",
        }
    }
}

/// How the intervals were made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapInfo {
    /// Always `percentile`.
    pub method: String,
    /// Number of resamples (0: no intervals).
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// Always 0.95.
    pub confidence: f64,
    /// What was resampled: `example` or `sentence`.
    pub unit: String,
}

/// Everything in metrics.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsFile {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Version of naba that wrote the report.
    pub naba_version: String,
    /// When the report was made, RFC 3339 UTC.
    pub timestamp: String,
    /// The model evaluated.
    pub model: String,
    /// The data file evaluated on.
    pub data_path: String,
    /// The label map applied to the data, `a=b,c=d`; `null` when none.
    pub label_map: Option<String>,
    /// Settings that change the predictions (`decoding`, `pack_words`, ...); omitted when none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, String>,
    /// `--limit`/`--seed` sampling; `null` when the whole file was used.
    pub sample: Option<SampleInfo>,
    /// Bootstrap settings.
    pub bootstrap: BootstrapInfo,
    /// `task` and its scores, flattened into this object.
    #[serde(flatten)]
    pub scores: TaskScores,
    /// Problems found in the data file.
    pub data_issues: IssueSummary,
    /// Throughput and latency; `null` when no timings were given.
    pub run: Option<RunStats>,
    /// Present only in a shard report (`--shard I/N`): which part of which job it covers, so
    /// that nobody mistakes its figures for the whole data set's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// Present only in a report made by `naba eval merge`: the shard reports it combines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<MergedShard>,
}
