//! Side-by-side comparison of two reports.
//!
//! A difference is **flagged** when B's point estimate lies outside A's 95% bootstrap interval
//! (`b < lo` or `b > hi`). This is a quick screen, not a significance test: A's interval says
//! how much A's figure would move on other samples of the same kind of data, so a B outside it
//! differs by more than A's own sampling noise. When A has no interval nothing is flagged.

use crate::bootstrap::Ci95;
use crate::error::{EvalError, Result};
use crate::report::{read_metrics, Estimate, LabelEntry, MetricsFile, TaskScores};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The rule used for [`DeltaRow::outside_a_ci`], as printed in the Markdown.
pub const FLAG_RULE: &str =
    "⚑ marks a difference where B's point estimate lies outside A's 95% bootstrap interval.";

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportRef {
    /// The report directory or metrics.json given.
    pub path: PathBuf,
    /// Model name.
    pub model: String,
    /// Data file.
    pub data_path: String,
    /// When it was made.
    pub timestamp: String,
    /// Examples or sentences scored.
    pub documents: usize,
}

/// One compared figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaRow {
    /// Metric name (`macro_f1`) or label.
    pub name: String,
    /// A's value; `None` when A does not have it (a label only B saw).
    pub a: Option<f64>,
    /// B's value.
    pub b: Option<f64>,
    /// `b - a` when both exist.
    pub delta: Option<f64>,
    /// A's interval.
    pub a_ci95: Option<Ci95>,
    /// B's interval.
    pub b_ci95: Option<Ci95>,
    /// Whether B's value lies outside A's interval (false when either is missing).
    pub outside_a_ci: bool,
}

impl DeltaRow {
    fn new(name: &str, a: Option<(f64, Option<Ci95>)>, b: Option<(f64, Option<Ci95>)>) -> Self {
        let delta = match (a, b) {
            (Some((x, _)), Some((y, _))) => Some(y - x),
            _ => None,
        };
        let a_ci95 = a.and_then(|(_, c)| c);
        let outside = match (a_ci95, b) {
            (Some([lo, hi]), Some((y, _))) => y < lo || y > hi,
            _ => false,
        };
        DeltaRow {
            name: name.to_string(),
            a: a.map(|(x, _)| x),
            b: b.map(|(y, _)| y),
            delta,
            a_ci95,
            b_ci95: b.and_then(|(_, c)| c),
            outside_a_ci: outside,
        }
    }
}

/// Two reports side by side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// `classification` or `ner`.
    pub task: String,
    /// The baseline.
    pub a: ReportRef,
    /// The candidate.
    pub b: ReportRef,
    /// Headline figures.
    pub headlines: Vec<DeltaRow>,
    /// F1 per label (classification) or per entity type (NER, strict).
    pub per_label: Vec<DeltaRow>,
    /// Things that make the comparison less meaningful (different data, sizes, samples).
    pub warnings: Vec<String>,
    /// The flag rule, [`FLAG_RULE`].
    pub flag_rule: String,
}

/// Compare two report directories (or metrics.json files): A is the baseline, B the
/// candidate.
///
/// # Errors
/// When either cannot be read, or the tasks differ.
pub fn compare(a_dir: &Path, b_dir: &Path) -> Result<Comparison> {
    let a = read_metrics(a_dir)?;
    let b = read_metrics(b_dir)?;
    compare_metrics(&a, a_dir, &b, b_dir)
}

fn documents(m: &MetricsFile) -> usize {
    match &m.scores {
        TaskScores::Classification(s) => s.examples,
        TaskScores::Ner(s) => s.sentences,
    }
}

fn reference(m: &MetricsFile, path: &Path) -> ReportRef {
    ReportRef {
        path: path.to_path_buf(),
        model: m.model.clone(),
        data_path: m.data_path.clone(),
        timestamp: m.timestamp.clone(),
        documents: documents(m),
    }
}

fn e(x: &Estimate) -> Option<(f64, Option<Ci95>)> {
    Some((x.value, x.ci95))
}

fn label_rows(a: &BTreeMap<String, LabelEntry>, b: &BTreeMap<String, LabelEntry>) -> Vec<DeltaRow> {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .map(|n| {
            DeltaRow::new(
                n,
                a.get(n).map(|x| (x.f1, x.f1_ci95)),
                b.get(n).map(|x| (x.f1, x.f1_ci95)),
            )
        })
        .collect()
}

/// Compare two metrics files already read; the paths are for display.
///
/// # Errors
/// When the tasks differ.
pub fn compare_metrics(
    a: &MetricsFile,
    a_path: &Path,
    b: &MetricsFile,
    b_path: &Path,
) -> Result<Comparison> {
    let (headlines, per_label) = match (&a.scores, &b.scores) {
        (TaskScores::Classification(x), TaskScores::Classification(y)) => {
            let mut rows = vec![
                DeltaRow::new("accuracy", e(&x.accuracy), e(&y.accuracy)),
                DeltaRow::new("macro_f1", e(&x.macro_f1), e(&y.macro_f1)),
                DeltaRow::new("micro_f1", e(&x.micro_f1), e(&y.micro_f1)),
                DeltaRow::new("weighted_f1", e(&x.weighted_f1), e(&y.weighted_f1)),
                DeltaRow::new(
                    "macro_precision",
                    e(&x.macro_precision),
                    e(&y.macro_precision),
                ),
                DeltaRow::new("macro_recall", e(&x.macro_recall), e(&y.macro_recall)),
            ];
            if let (Some(p), Some(q)) = (&x.selected_f1, &y.selected_f1) {
                if p.labels == q.labels {
                    rows.push(DeltaRow::new(
                        &format!("selected_f1 ({})", p.labels.join(", ")),
                        Some((p.value, p.ci95)),
                        Some((q.value, q.ci95)),
                    ));
                }
            }
            (rows, label_rows(&x.per_label, &y.per_label))
        }
        (TaskScores::Ner(x), TaskScores::Ner(y)) => (
            vec![
                DeltaRow::new("micro_f1", e(&x.micro_f1), e(&y.micro_f1)),
                DeltaRow::new(
                    "micro_precision",
                    e(&x.micro_precision),
                    e(&y.micro_precision),
                ),
                DeltaRow::new("micro_recall", e(&x.micro_recall), e(&y.micro_recall)),
                DeltaRow::new("macro_f1", e(&x.macro_f1), e(&y.macro_f1)),
                DeltaRow::new("weighted_f1", e(&x.weighted_f1), e(&y.weighted_f1)),
                DeltaRow::new(
                    "lenient_micro_f1",
                    e(&x.lenient_micro_f1),
                    e(&y.lenient_micro_f1),
                ),
                DeltaRow::new("token_accuracy", e(&x.token_accuracy), e(&y.token_accuracy)),
            ],
            label_rows(&x.per_type, &y.per_type),
        ),
        (x, y) => {
            return Err(EvalError::Incomparable {
                a: a_path.to_path_buf(),
                b: b_path.to_path_buf(),
                reason: format!(
                    "one is a {} report and the other a {} report; compare reports of the same \
                     task",
                    x.task(),
                    y.task()
                ),
            })
        }
    };
    let mut warnings = Vec::new();
    if a.data_path != b.data_path {
        warnings.push(format!(
            "different data files (`{}` and `{}`): the scores are not directly comparable",
            a.data_path, b.data_path
        ));
    }
    if documents(a) != documents(b) {
        warnings.push(format!(
            "different numbers of documents scored ({} and {})",
            documents(a),
            documents(b)
        ));
    }
    if a.sample != b.sample {
        warnings.push("different --limit/--seed samples".to_string());
    }
    if a.label_map != b.label_map {
        warnings.push("different label maps".to_string());
    }
    if a.bootstrap.resamples == 0 {
        warnings.push("A has no bootstrap intervals, so no difference is flagged".to_string());
    }
    Ok(Comparison {
        task: a.scores.task().to_string(),
        a: reference(a, a_path),
        b: reference(b, b_path),
        headlines,
        per_label,
        warnings,
        flag_rule: FLAG_RULE.to_string(),
    })
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{v:.4}"))
}

fn table(out: &mut String, first: &str, rows: &[DeltaRow]) {
    let _ = writeln!(
        out,
        "| {first} | A | A 95% CI | B | B 95% CI | Δ (B − A) | outside A's CI |\n\
         |---|---:|---|---:|---|---:|:---:|"
    );
    for r in rows {
        let delta = r.delta.map_or_else(|| "–".into(), |d| format!("{d:+.4}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            crate::report::md_cell(&r.name),
            opt(r.a),
            crate::report::md_ci(r.a_ci95),
            opt(r.b),
            crate::report::md_ci(r.b_ci95),
            delta,
            if r.outside_a_ci { "⚑" } else { "" }
        );
    }
    out.push('\n');
}

impl Comparison {
    /// The comparison as Markdown: who is A and B, the flag rule, warnings, then headline and
    /// per-label tables.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# naba comparison ({})\n", self.task);
        for (side, r) in [("A", &self.a), ("B", &self.b)] {
            let _ = writeln!(
                out,
                "- **{side}**: {} on `{}` ({} documents, {}) — `{}`",
                crate::report::md_cell(&r.model),
                r.data_path,
                r.documents,
                r.timestamp,
                r.path.display()
            );
        }
        let _ = writeln!(out, "\n{FLAG_RULE}\n");
        for w in &self.warnings {
            let _ = writeln!(out, "> warning: {w}");
        }
        if !self.warnings.is_empty() {
            out.push('\n');
        }
        out.push_str("## Headline figures\n\n");
        table(&mut out, "metric", &self.headlines);
        out.push_str(if self.task == "ner" {
            "## F1 per entity type (strict)\n\n"
        } else {
            "## F1 per label\n\n"
        });
        table(&mut out, "label", &self.per_label);
        out
    }
}
