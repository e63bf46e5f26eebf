//! Reports: metrics.json, report.md, SVG charts, errors.jsonl and predictions, written
//! atomically into a directory.

mod markdown;
mod schema;
mod svg;
mod time;
mod write;

pub(crate) use markdown::{cell as md_cell, ci as md_ci};
pub use schema::{
    BootstrapInfo, ClassificationScores, Estimate, LabelEntry, MetricsFile, NerScores, SelectedF1,
    TaskScores, SCHEMA_VERSION,
};
pub use svg::{confusion_matrix_svg, f1_bar_chart_svg};
pub use time::now_rfc3339;
pub use write::{read_metrics, write_dir_atomically};

use crate::bootstrap::{bootstrap_ci, BootstrapConfig, Ci95};
use crate::error::{EvalError, Result};
use crate::issues::{DataIssue, IssueSummary};
use crate::labels::split_tag;
use crate::metrics::{classification_metrics, strict_iob2_entities, Entity, RunStats};
use crate::read::{ClassificationCorpus, NerCorpus};
use crate::shard::{ShardInfo, ShardPart};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File names inside a report directory.
pub mod files {
    /// Scores, intervals, data issues, run statistics (see METRICS.md).
    pub const METRICS: &str = "metrics.json";
    /// The same for people, with tables.
    pub const REPORT: &str = "report.md";
    /// Confusion matrix (classification: labels; NER: entity types per token).
    pub const CONFUSION_SVG: &str = "confusion_matrix.svg";
    /// Per-label (or per-type) F1 bars with their intervals.
    pub const F1_SVG: &str = "f1_by_label.svg";
    /// One JSON line per wrong prediction (NER: per sentence with any wrong tag).
    pub const ERRORS: &str = "errors.jsonl";
    /// Classification predictions: id, gold, predicted, scores.
    pub const PREDICTIONS_JSONL: &str = "predictions.jsonl";
    /// NER predictions: the CoNLL input with a predicted-tag column appended.
    pub const PREDICTIONS_CONLL: &str = "predictions.conll";
    /// Shard reports only: every scored item with its position in the whole job, everything
    /// `naba eval merge` needs to rebuild the unsharded report.
    pub const SHARD_ITEMS: &str = "shard_items.jsonl";
}

/// Who and what was evaluated; goes into metrics.json.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// Model name or path.
    pub model: String,
    /// Data file path as the user gave it.
    pub data_path: String,
    /// Version of naba (defaults to this crate's version, which is the workspace's).
    pub naba_version: String,
    /// RFC 3339 UTC time (defaults to now).
    pub timestamp: String,
    /// The label map applied, in `a=b,c=d` form, if any.
    pub label_map: Option<String>,
    /// Settings that change the predictions (`decoding`, `pack_words`, ...), so a report says
    /// how to reproduce it.
    pub settings: std::collections::BTreeMap<String, String>,
}

impl RunInfo {
    /// Info with the current time and this crate's version.
    pub fn new(model: impl Into<String>, data_path: impl Into<String>) -> Self {
        RunInfo {
            model: model.into(),
            data_path: data_path.into(),
            naba_version: env!("CARGO_PKG_VERSION").to_string(),
            timestamp: now_rfc3339(),
            label_map: None,
            settings: Default::default(),
        }
    }
}

/// Scoring options.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalOptions {
    /// Bootstrap resamples and seed.
    pub bootstrap: BootstrapConfig,
    /// Labels whose mean F1 is reported as `selected_f1` (classification only), e.g.
    /// `["Favor", "Against"]` for Mawqif. Empty: not reported.
    pub selected_labels: Vec<String>,
    /// Throughput and latency of the run, if measured.
    pub run: Option<RunStats>,
    /// Set when the corpus is one shard of a larger job (`--shard I/N`): the report is then
    /// marked as a shard and keeps `shard_items.jsonl` for [`crate::merge_shards`].
    pub shard: Option<ShardPart>,
}

/// A classification prediction: the label and, optionally, a score per label.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassPrediction {
    /// Predicted label (in the model's label names).
    pub label: String,
    /// Score (e.g. probability) per label; may be empty.
    pub scores: BTreeMap<String, f64>,
}

impl ClassPrediction {
    /// A prediction without scores.
    pub fn new(label: impl Into<String>) -> Self {
        ClassPrediction {
            label: label.into(),
            scores: BTreeMap::new(),
        }
    }

    /// A prediction with a score per label.
    pub fn with_scores(
        label: impl Into<String>,
        scores: impl IntoIterator<Item = (String, f64)>,
    ) -> Self {
        ClassPrediction {
            label: label.into(),
            scores: scores.into_iter().collect(),
        }
    }
}

/// A finished evaluation: [`Report::metrics`] is what goes into metrics.json;
/// [`Report::write`] writes the whole report directory atomically.
#[derive(Clone, Debug)]
pub struct Report {
    /// The metrics.json content.
    pub metrics: MetricsFile,
    records: Records,
    shard: Option<ShardPart>,
}

#[derive(Clone, Debug)]
enum Records {
    Classification(Vec<ClassRecord>),
    Ner(Vec<NerRecord>),
}

#[derive(Clone, Debug)]
struct ClassRecord {
    id: String,
    line: usize,
    text: String,
    target: Option<String>,
    gold: String,
    pred: ClassPrediction,
}

#[derive(Clone, Debug)]
struct NerRecord {
    id: String,
    line: usize,
    tokens: Vec<String>,
    gold: Vec<String>,
    pred: Vec<String>,
    token_lines: Vec<usize>,
    raw_lines: Vec<String>,
}

/// A line of a classification shard's `shard_items.jsonl`.
#[derive(Serialize, Deserialize)]
pub(crate) struct ClassItem {
    pub(crate) position: usize,
    pub(crate) id: String,
    pub(crate) line: usize,
    pub(crate) text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<String>,
    pub(crate) gold: String,
    pub(crate) predicted: String,
    #[serde(default, with = "exact_scores")]
    pub(crate) scores: BTreeMap<String, f64>,
    #[serde(default)]
    pub(crate) ms: Option<f64>,
}

/// Scores written as decimal strings: serde_json's default number parser may land one unit in
/// the last place off, and the merged `predictions.jsonl` should repeat the unsharded run's
/// scores bit for bit. Rust's own float formatting and parsing round-trip exactly.
mod exact_scores {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub(crate) fn serialize<S: Serializer>(
        scores: &BTreeMap<String, f64>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(scores.iter().map(|(k, v)| (k, v.to_string())))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<BTreeMap<String, f64>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| match v.parse::<f64>() {
                Ok(x) => Ok((k, x)),
                Err(_) => Err(D::Error::custom(format!(
                    "score `{v}` of label `{k}` is not a number"
                ))),
            })
            .collect()
    }
}

/// A line of an NER shard's `shard_items.jsonl`.
#[derive(Serialize, Deserialize)]
pub(crate) struct NerItem {
    pub(crate) position: usize,
    pub(crate) id: String,
    pub(crate) line: usize,
    pub(crate) tokens: Vec<String>,
    pub(crate) gold: Vec<String>,
    pub(crate) predicted: Vec<String>,
    pub(crate) token_lines: Vec<usize>,
    pub(crate) raw_lines: Vec<String>,
    #[serde(default)]
    pub(crate) ms: Option<f64>,
}

fn est(value: f64, cis: &[Ci95], i: usize) -> Estimate {
    Estimate {
        value,
        ci95: cis.get(i).copied(),
    }
}

fn bootstrap_info(cfg: &BootstrapConfig, unit: &str) -> BootstrapInfo {
    BootstrapInfo {
        method: "percentile".into(),
        resamples: cfg.resamples,
        seed: cfg.seed,
        confidence: 0.95,
        unit: unit.into(),
    }
}

/// Checks that a shard part describes exactly the `items` scored.
fn check_shard(part: Option<&ShardPart>, items: usize) -> Result<()> {
    let Some(p) = part else {
        return Ok(());
    };
    if p.positions.len() != items {
        return Err(EvalError::LengthMismatch {
            what: format!("positions of shard {}", p.shard),
            gold: items,
            predicted: p.positions.len(),
        });
    }
    if !p.latency_ms.is_empty() && p.latency_ms.len() != items {
        return Err(EvalError::LengthMismatch {
            what: format!("latencies of shard {}", p.shard),
            gold: items,
            predicted: p.latency_ms.len(),
        });
    }
    Ok(())
}

impl Report {
    /// Score a classification (or stance) run: `predictions[i]` is the model's answer for
    /// `corpus.examples[i]`.
    ///
    /// # Errors
    /// When the numbers differ or there are no examples.
    pub fn classification(
        corpus: &ClassificationCorpus,
        predictions: &[ClassPrediction],
        info: RunInfo,
        opts: &EvalOptions,
    ) -> Result<Report> {
        let gold: Vec<&str> = corpus.examples.iter().map(|e| e.label.as_str()).collect();
        let pred: Vec<&str> = predictions.iter().map(|p| p.label.as_str()).collect();
        check_shard(opts.shard.as_ref(), gold.len())?;
        let encoded = crate::metrics::classification::Encoded::new(&gold, &pred)?;
        let m = encoded.metrics(&vec![1; gold.len()]);
        let labels: Vec<String> = m.per_label.keys().cloned().collect();
        let selected: Vec<&str> = opts.selected_labels.iter().map(String::as_str).collect();
        let cis = bootstrap_ci(gold.len(), &opts.bootstrap, |w| {
            let r = encoded.metrics(w);
            let mut v = vec![
                r.accuracy,
                r.macro_avg.f1,
                r.micro.f1,
                r.weighted.f1,
                r.macro_avg.precision,
                r.macro_avg.recall,
                r.mean_f1(&selected),
            ];
            v.extend(
                labels
                    .iter()
                    .map(|l| r.per_label.get(l).map_or(0.0, |s| s.f1)),
            );
            v
        });
        let per_label = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let s = m.per_label.get(l).copied().unwrap_or_default();
                (l.clone(), LabelEntry::new(s, cis.get(7 + i).copied()))
            })
            .collect();
        let scores = ClassificationScores {
            examples: m.examples,
            accuracy: est(m.accuracy, &cis, 0),
            macro_f1: est(m.macro_avg.f1, &cis, 1),
            micro_f1: est(m.micro.f1, &cis, 2),
            weighted_f1: est(m.weighted.f1, &cis, 3),
            macro_precision: est(m.macro_avg.precision, &cis, 4),
            macro_recall: est(m.macro_avg.recall, &cis, 5),
            selected_f1: (!selected.is_empty()).then(|| SelectedF1 {
                labels: opts.selected_labels.clone(),
                value: m.mean_f1(&selected),
                ci95: cis.get(6).copied(),
            }),
            per_label,
            confusion_matrix: m.confusion.clone(),
        };
        let records = corpus
            .examples
            .iter()
            .zip(predictions)
            .map(|(e, p)| ClassRecord {
                id: e.id.clone(),
                line: e.line,
                text: e.text.clone(),
                target: e.target.clone(),
                gold: e.label.clone(),
                pred: p.clone(),
            })
            .collect();
        Ok(Report {
            metrics: metrics_file(
                info,
                corpus.sample.clone(),
                opts,
                "example",
                TaskScores::Classification(scores),
                &corpus.issues,
            ),
            records: Records::Classification(records),
            shard: opts.shard.clone(),
        })
    }

    /// Score an NER run: `predictions[i]` are the model's IOB2 tags for the tokens of
    /// `corpus.sentences[i]`.
    ///
    /// # Errors
    /// When the numbers of sentences or tokens differ, there are no tokens, or a predicted tag
    /// is not IOB2.
    pub fn ner(
        corpus: &NerCorpus,
        predictions: &[Vec<String>],
        info: RunInfo,
        opts: &EvalOptions,
    ) -> Result<Report> {
        let gold: Vec<Vec<String>> = corpus.gold_tags();
        check_shard(opts.shard.as_ref(), gold.len())?;
        let counts = crate::metrics::ner::NerCounts::new(&gold, predictions)?;
        let m = counts.metrics(&vec![1; counts.sentences()]);
        let types: Vec<String> = m.strict.per_type.keys().cloned().collect();
        let cis = bootstrap_ci(counts.sentences(), &opts.bootstrap, |w| {
            let r = counts.metrics(w);
            let mut v = vec![
                r.strict.micro.f1,
                r.strict.micro.precision,
                r.strict.micro.recall,
                r.strict.macro_avg.f1,
                r.strict.macro_avg.precision,
                r.strict.macro_avg.recall,
                r.strict.weighted.f1,
                r.lenient.micro.f1,
                r.lenient.micro.precision,
                r.lenient.micro.recall,
                r.token_accuracy,
            ];
            v.extend(
                types
                    .iter()
                    .map(|t| r.strict.per_type.get(t).map_or(0.0, |s| s.f1)),
            );
            v
        });
        let per_type = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let s = m.strict.per_type.get(t).copied().unwrap_or_default();
                (t.clone(), LabelEntry::new(s, cis.get(11 + i).copied()))
            })
            .collect();
        let type_of = |tag: &String| split_tag(tag).map_or("O", |(_, k)| k).to_string();
        let flat_gold: Vec<String> = gold.iter().flatten().map(type_of).collect();
        let flat_pred: Vec<String> = predictions.iter().flatten().map(type_of).collect();
        let token_confusion = classification_metrics(&flat_gold, &flat_pred)?.confusion;
        let scores = NerScores {
            sentences: m.sentences,
            tokens: m.tokens,
            scheme: "IOB2".into(),
            micro_f1: est(m.strict.micro.f1, &cis, 0),
            micro_precision: est(m.strict.micro.precision, &cis, 1),
            micro_recall: est(m.strict.micro.recall, &cis, 2),
            macro_f1: est(m.strict.macro_avg.f1, &cis, 3),
            macro_precision: est(m.strict.macro_avg.precision, &cis, 4),
            macro_recall: est(m.strict.macro_avg.recall, &cis, 5),
            weighted_f1: est(m.strict.weighted.f1, &cis, 6),
            lenient_micro_f1: est(m.lenient.micro.f1, &cis, 7),
            lenient_micro_precision: est(m.lenient.micro.precision, &cis, 8),
            lenient_micro_recall: est(m.lenient.micro.recall, &cis, 9),
            token_accuracy: est(m.token_accuracy, &cis, 10),
            per_type,
            lenient_per_type: m.lenient.per_type.clone(),
            token_confusion_matrix: token_confusion,
        };
        let records = corpus
            .sentences
            .iter()
            .zip(predictions)
            .map(|(s, p)| NerRecord {
                id: s.id.clone(),
                line: s.line,
                tokens: s.tokens.clone(),
                gold: s.tags.clone(),
                pred: p.clone(),
                token_lines: s.token_lines.clone(),
                raw_lines: s.raw_lines.clone(),
            })
            .collect();
        Ok(Report {
            metrics: metrics_file(
                info,
                corpus.sample.clone(),
                opts,
                "sentence",
                TaskScores::Ner(scores),
                &corpus.issues,
            ),
            records: Records::Ner(records),
            shard: opts.shard.clone(),
        })
    }

    /// report.md as a string.
    pub fn markdown(&self) -> String {
        markdown::report(&self.metrics)
    }

    /// The name and content of every file of the report directory.
    ///
    /// # Errors
    /// When metrics.json cannot be serialised (it always can; NaN never occurs).
    pub fn files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let json = serde_json::to_string_pretty(&self.metrics).map_err(|e| EvalError::Json {
            path: PathBuf::from(files::METRICS),
            message: format!("cannot serialise the metrics: {e}"),
        })?;
        let (confusion, bars) = match &self.metrics.scores {
            TaskScores::Classification(s) => (
                confusion_matrix_svg(
                    &s.confusion_matrix,
                    "Confusion matrix (rows: gold, columns: predicted)",
                ),
                f1_bar_chart_svg(
                    &bar_items(&s.per_label),
                    "F1 per label (bars: 95% bootstrap interval)",
                ),
            ),
            TaskScores::Ner(s) => (
                confusion_matrix_svg(
                    &s.token_confusion_matrix,
                    "Token entity types (rows: gold, columns: predicted)",
                ),
                f1_bar_chart_svg(
                    &bar_items(&s.per_type),
                    "Strict IOB2 F1 per entity type (bars: 95% bootstrap interval)",
                ),
            ),
        };
        let mut out = vec![
            (files::METRICS, (json + "\n").into_bytes()),
            (files::REPORT, self.markdown().into_bytes()),
            (files::CONFUSION_SVG, confusion.into_bytes()),
            (files::F1_SVG, bars.into_bytes()),
        ];
        match &self.records {
            Records::Classification(rows) => {
                out.push((files::ERRORS, class_errors(rows).into_bytes()));
                out.push((
                    files::PREDICTIONS_JSONL,
                    class_predictions(rows).into_bytes(),
                ));
            }
            Records::Ner(rows) => {
                out.push((files::ERRORS, ner_errors(rows).into_bytes()));
                out.push((files::PREDICTIONS_CONLL, ner_conll(rows).into_bytes()));
            }
        }
        if let Some(part) = &self.shard {
            out.push((
                files::SHARD_ITEMS,
                shard_items(&self.records, part)?.into_bytes(),
            ));
        }
        Ok(out)
    }

    /// Write the report into `dir` atomically (see [`write_dir_atomically`]): the files go
    /// into a hidden temporary sibling directory which is renamed to `dir` once complete, so
    /// an interrupted run never leaves a half-written report. An existing report at `dir` is
    /// replaced; an existing non-empty directory without metrics.json is refused.
    ///
    /// # Errors
    /// When writing or renaming fails, or `dir` is not a report.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let files = self.files()?;
        write_dir_atomically(dir, |tmp| {
            for (name, bytes) in &files {
                let path = tmp.join(name);
                std::fs::write(&path, bytes).map_err(|e| EvalError::io("write", &path, e))?;
            }
            Ok(())
        })
    }
}

fn metrics_file(
    info: RunInfo,
    sample: Option<crate::sample::SampleInfo>,
    opts: &EvalOptions,
    unit: &str,
    scores: TaskScores,
    issues: &[DataIssue],
) -> MetricsFile {
    MetricsFile {
        schema_version: SCHEMA_VERSION,
        naba_version: info.naba_version,
        timestamp: info.timestamp,
        model: info.model,
        data_path: info.data_path,
        label_map: info.label_map,
        settings: info.settings,
        sample,
        bootstrap: bootstrap_info(&opts.bootstrap, unit),
        scores,
        data_issues: IssueSummary::from_issues(issues),
        run: opts.run,
        shard: opts.shard.as_ref().map(ShardInfo::new),
        merged_from: Vec::new(),
    }
}

/// One line per scored item, in the shard's order, with its position in the whole job and
/// every field the merged report's records need.
fn shard_items(records: &Records, part: &ShardPart) -> Result<String> {
    let position = |i: usize| part.positions.get(i).copied().unwrap_or(usize::MAX);
    let ms = |i: usize| part.latency_ms.get(i).copied();
    let mut out = String::new();
    let mut push = |item: std::result::Result<String, serde_json::Error>| {
        let line = item.map_err(|e| EvalError::Json {
            path: PathBuf::from(files::SHARD_ITEMS),
            message: format!("cannot serialise an item: {e}"),
        })?;
        out.push_str(&line);
        out.push('\n');
        Ok::<(), EvalError>(())
    };
    match records {
        Records::Classification(rows) => {
            for (i, r) in rows.iter().enumerate() {
                push(serde_json::to_string(&ClassItem {
                    position: position(i),
                    id: r.id.clone(),
                    line: r.line,
                    text: r.text.clone(),
                    target: r.target.clone(),
                    gold: r.gold.clone(),
                    predicted: r.pred.label.clone(),
                    scores: r.pred.scores.clone(),
                    ms: ms(i),
                }))?;
            }
        }
        Records::Ner(rows) => {
            for (i, r) in rows.iter().enumerate() {
                push(serde_json::to_string(&NerItem {
                    position: position(i),
                    id: r.id.clone(),
                    line: r.line,
                    tokens: r.tokens.clone(),
                    gold: r.gold.clone(),
                    predicted: r.pred.clone(),
                    token_lines: r.token_lines.clone(),
                    raw_lines: r.raw_lines.clone(),
                    ms: ms(i),
                }))?;
            }
        }
    }
    Ok(out)
}

fn bar_items(per: &BTreeMap<String, LabelEntry>) -> Vec<(String, f64, Option<Ci95>)> {
    per.iter()
        .map(|(l, e)| (l.clone(), e.f1, e.f1_ci95))
        .collect()
}

fn jsonl(lines: impl Iterator<Item = Value>) -> String {
    let mut out = String::new();
    for v in lines {
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

fn class_errors(rows: &[ClassRecord]) -> String {
    jsonl(rows.iter().filter(|r| r.gold != r.pred.label).map(|r| {
        let mut v = json!({
            "id": r.id,
            "line": r.line,
            "gold": r.gold,
            "predicted": r.pred.label,
            "text": r.text,
        });
        if let Some(t) = &r.target {
            v["target"] = json!(t);
        }
        if !r.pred.scores.is_empty() {
            v["scores"] = json!(r.pred.scores);
        }
        v
    }))
}

fn class_predictions(rows: &[ClassRecord]) -> String {
    jsonl(rows.iter().map(|r| {
        json!({
            "id": r.id,
            "line": r.line,
            "gold": r.gold,
            "predicted": r.pred.label,
            "correct": r.gold == r.pred.label,
            "scores": r.pred.scores,
        })
    }))
}

fn entity_json(e: &Entity, tokens: &[String]) -> Value {
    let text = tokens
        .get(e.start..e.end.min(tokens.len()))
        .map(|t| t.join(" "))
        .unwrap_or_default();
    json!({ "type": e.kind, "start": e.start, "end": e.end, "text": text })
}

fn ner_errors(rows: &[NerRecord]) -> String {
    jsonl(rows.iter().filter(|r| r.gold != r.pred).map(|r| {
        let gold = strict_iob2_entities(&r.gold).unwrap_or_default();
        let pred = strict_iob2_entities(&r.pred).unwrap_or_default();
        let missed: Vec<Value> = gold
            .iter()
            .filter(|e| !pred.contains(e))
            .map(|e| entity_json(e, &r.tokens))
            .collect();
        let spurious: Vec<Value> = pred
            .iter()
            .filter(|e| !gold.contains(e))
            .map(|e| entity_json(e, &r.tokens))
            .collect();
        json!({
            "id": r.id,
            "line": r.line,
            "tokens": r.tokens,
            "gold": r.gold,
            "predicted": r.pred,
            "missed": missed,
            "spurious": spurious,
        })
    }))
}

/// The CoNLL input with the predicted tag appended to each token line (tab-separated when the
/// line uses tabs, else a space); a blank line after each sentence. `-DOCSTART-` lines and
/// skipped lines of the input are not repeated.
fn ner_conll(rows: &[NerRecord]) -> String {
    let mut out = String::new();
    for r in rows {
        for (i, pred) in r.pred.iter().enumerate() {
            match r.raw_lines.get(i) {
                Some(raw) => {
                    out.push_str(raw);
                    out.push(if raw.contains('\t') { '\t' } else { ' ' });
                }
                None => {
                    out.push_str(r.tokens.get(i).map_or("", String::as_str));
                    out.push(' ');
                    out.push_str(r.gold.get(i).map_or("", String::as_str));
                    out.push(' ');
                }
            }
            out.push_str(pred);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}
