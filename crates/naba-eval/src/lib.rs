//! # naba-eval
//!
//! The library side of `naba eval`: corpus readers, metrics equal to seqeval and scikit-learn,
//! bootstrap intervals, reports and charts. It knows nothing of models, training or HTTP: the
//! caller reads a corpus, runs its model, and hands the predictions (and timings) back here.
//!
//! * **Readers** ([`read`]): CoNLL for NER, JSONL and CSV/TSV for classification and stance,
//!   with column options, a [`LabelMap`] and a label set. Bad rows are counted and reported as
//!   [`DataIssue`]s with line numbers; [`IssueKind`] documents which are skipped and which kept.
//!   `--limit`/`--seed` sampling: [`ClassificationCorpus::sample`], [`NerCorpus::sample`],
//!   [`sample_in_order`].
//! * **Metrics** ([`metrics`]): accuracy, macro/micro/weighted F1, per-label scores and the
//!   confusion matrix as scikit-learn computes them; entity-level strict IOB2 and lenient
//!   (conlleval) scores as seqeval computes them; token accuracy; the mean F1 of chosen labels;
//!   throughput and latency ([`RunStats`]). Agreement with seqeval and scikit-learn is tested
//!   against fixtures made by `scripts/make_metric_fixtures.py`.
//! * **Bootstrap** ([`bootstrap`]): seeded percentile intervals (1000 resamples by default) for
//!   every headline figure, resampling documents or sentences.
//! * **Reports** ([`report`]): [`Report`] builds metrics.json (fields in `METRICS.md`),
//!   report.md, two SVG charts, errors.jsonl and predictions, and writes them atomically.
//! * **Comparison** ([`compare()`]): two reports side by side, with differences flagged when B
//!   falls outside A's interval.
//! * **Shards** ([`Shard`], [`merge_shards`]): one job split over machines by item position,
//!   each shard report keeping its items so that the merged report equals an unsharded run's.
//!
//! ```no_run
//! use naba_eval::{ClassificationCorpus, ColumnOptions, ClassPrediction, EvalOptions, Report, RunInfo};
//! # fn main() -> naba_eval::Result<()> {
//! let opts = ColumnOptions {
//!     target: Some("s1".into()),
//!     ..ColumnOptions::new("s2", "stance")
//! };
//! let corpus = ClassificationCorpus::read("ans/test.csv".as_ref(), None, &opts)?.sample(Some(100), 42);
//! let predictions: Vec<ClassPrediction> = corpus
//!     .examples
//!     .iter()
//!     .map(|_| ClassPrediction::new("agree")) // the model goes here
//!     .collect();
//! let report = Report::classification(
//!     &corpus,
//!     &predictions,
//!     RunInfo::new("my-model", "ans/test.csv"),
//!     &EvalOptions::default(),
//! )?;
//! report.write("reports/ans-test".as_ref())?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod bootstrap;
pub mod compare;
mod error;
mod issues;
mod labels;
mod merge;
pub mod metrics;
pub mod read;
pub mod report;
mod sample;
mod shard;

pub use bootstrap::{bootstrap_ci, BootstrapConfig, Ci95, DEFAULT_RESAMPLES, DEFAULT_SEED};
pub use compare::{compare, compare_metrics, Comparison, DeltaRow, ReportRef};
pub use error::{EvalError, Result};
pub use issues::{DataIssue, IssueKind, IssueSummary};
pub use labels::LabelMap;
pub use merge::merge_shards;
pub use metrics::{
    classification_metrics, mean_f1_of_labels, ner_metrics, percentile, Averages,
    ClassificationMetrics, ConfusionMatrix, EntityScores, LabelScores, NerMetrics, RunStats,
};
pub use read::{
    read_conll, read_delimited, read_jsonl, ClassificationCorpus, ClassificationExample,
    ColumnOptions, ConllOptions, DataFormat, NerCorpus, NerSentence,
};
pub use report::{
    read_metrics, write_dir_atomically, ClassPrediction, EvalOptions, MetricsFile, Report, RunInfo,
};
pub use sample::{sample_in_order, sample_indices, SampleInfo, SplitMix64};
pub use shard::{job_digest, JobItems, MergedShard, Shard, ShardInfo, ShardPart};
