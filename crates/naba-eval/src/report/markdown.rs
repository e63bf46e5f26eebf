//! report.md.

use super::schema::{Estimate, LabelEntry, MetricsFile, TaskScores};
use crate::bootstrap::Ci95;
use crate::metrics::ConfusionMatrix;
use std::collections::BTreeMap;
use std::fmt::Write;

/// How many data issues report.md lists one by one (all are in metrics.json).
const ISSUES_LISTED: usize = 50;
/// Confusion matrices with more labels than this are left to the SVG.
const MAX_MATRIX_LABELS: usize = 25;

/// Escape text for a Markdown table cell.
pub(crate) fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

pub(crate) fn num(x: f64) -> String {
    format!("{x:.4}")
}

pub(crate) fn ci(c: Option<Ci95>) -> String {
    c.map_or_else(|| "–".to_string(), |[lo, hi]| format!("[{lo:.4}, {hi:.4}]"))
}

fn headline(out: &mut String, rows: &[(&str, &Estimate)]) {
    out.push_str("| metric | value | 95% CI |\n|---|---:|---|\n");
    for (name, e) in rows {
        let _ = writeln!(out, "| {name} | {} | {} |", num(e.value), ci(e.ci95));
    }
    out.push('\n');
}

fn per_label(out: &mut String, title: &str, per: &BTreeMap<String, LabelEntry>) {
    let _ = writeln!(
        out,
        "| {title} | precision | recall | F1 | F1 95% CI | support |\n|---|---:|---:|---:|---|---:|"
    );
    for (label, e) in per {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            cell(label),
            num(e.precision),
            num(e.recall),
            num(e.f1),
            ci(e.f1_ci95),
            e.support
        );
    }
    out.push('\n');
}

fn matrix(out: &mut String, m: &ConfusionMatrix) {
    if m.labels.len() > MAX_MATRIX_LABELS {
        let _ = writeln!(
            out,
            "{} labels: see `confusion_matrix.svg` and `confusion_matrix` in metrics.json.\n",
            m.labels.len()
        );
        return;
    }
    out.push_str("| gold \\ predicted |");
    for l in &m.labels {
        let _ = write!(out, " {} |", cell(l));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(m.labels.len()));
    out.push('\n');
    for (l, row) in m.labels.iter().zip(&m.matrix) {
        let _ = write!(out, "| **{}** |", cell(l));
        for v in row {
            let _ = write!(out, " {v} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

/// The whole report.md.
pub(crate) fn report(m: &MetricsFile) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# naba evaluation: {}\n", cell(&m.model));
    out.push_str("| | |\n|---|---|\n");
    let _ = writeln!(out, "| task | {} |", m.scores.task());
    let _ = writeln!(out, "| model | {} |", cell(&m.model));
    let _ = writeln!(out, "| data | `{}` |", cell(&m.data_path));
    if let Some(map) = &m.label_map {
        let _ = writeln!(out, "| label map | `{}` |", cell(map));
    }
    if !m.settings.is_empty() {
        let list: Vec<String> = m.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "| settings | `{}` |", cell(&list.join(", ")));
    }
    if let Some(s) = &m.sample {
        let _ = writeln!(
            out,
            "| sample | {} of {} (limit {}, seed {}) |",
            s.kept, s.population, s.limit, s.seed
        );
    }
    if let Some(sh) = &m.shard {
        let _ = writeln!(
            out,
            "| shard | **{}/{}: {} of the job's {} {}s only** (dealt in {}); `naba eval merge` \
             combines the {} shards into the whole job's report |",
            sh.index, sh.count, sh.items, sh.total, m.bootstrap.unit, sh.dealt, sh.count
        );
    }
    if !m.merged_from.is_empty() {
        let _ = writeln!(
            out,
            "| merged from | {} shards: {} |",
            m.merged_from.len(),
            m.merged_from
                .iter()
                .map(|s| format!("`{}`", cell(&s.report)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(out, "| time | {} |", m.timestamp);
    let _ = writeln!(out, "| naba | {} |", m.naba_version);
    let b = &m.bootstrap;
    if b.resamples > 0 {
        let _ = writeln!(
            out,
            "| intervals | 95% percentile bootstrap, {} resamples of {}s, seed {} |",
            b.resamples, b.unit, b.seed
        );
    } else {
        out.push_str("| intervals | off |\n");
    }
    out.push('\n');

    match &m.scores {
        TaskScores::Classification(s) => {
            let _ = writeln!(out, "## Scores ({} examples)\n", s.examples);
            let mut rows: Vec<(&str, &Estimate)> = vec![
                ("accuracy", &s.accuracy),
                ("macro F1", &s.macro_f1),
                ("micro F1", &s.micro_f1),
                ("weighted F1", &s.weighted_f1),
                ("macro precision", &s.macro_precision),
                ("macro recall", &s.macro_recall),
            ];
            let selected;
            if let Some(sel) = &s.selected_f1 {
                selected = (
                    format!("mean F1 of {}", cell(&sel.labels.join(", "))),
                    Estimate {
                        value: sel.value,
                        ci95: sel.ci95,
                    },
                );
                rows.push((&selected.0, &selected.1));
            }
            headline(&mut out, &rows);
            out.push_str("## Per label\n\n");
            per_label(&mut out, "label", &s.per_label);
            out.push_str("![F1 per label](f1_by_label.svg)\n\n");
            out.push_str("## Confusion matrix\n\nRows are gold labels, columns predicted.\n\n");
            matrix(&mut out, &s.confusion_matrix);
            out.push_str("![Confusion matrix](confusion_matrix.svg)\n\n");
        }
        TaskScores::Ner(s) => {
            let _ = writeln!(
                out,
                "## Scores ({} sentences, {} tokens)\n\nEntity scores use strict {} matching \
                 (seqeval `mode=\"strict\"`) unless marked lenient (seqeval's default, \
                 conlleval-style).\n",
                s.sentences, s.tokens, s.scheme
            );
            headline(
                &mut out,
                &[
                    ("micro F1", &s.micro_f1),
                    ("micro precision", &s.micro_precision),
                    ("micro recall", &s.micro_recall),
                    ("macro F1", &s.macro_f1),
                    ("macro precision", &s.macro_precision),
                    ("macro recall", &s.macro_recall),
                    ("weighted F1", &s.weighted_f1),
                    ("lenient micro F1", &s.lenient_micro_f1),
                    ("lenient micro precision", &s.lenient_micro_precision),
                    ("lenient micro recall", &s.lenient_micro_recall),
                    ("token accuracy", &s.token_accuracy),
                ],
            );
            out.push_str("## Per entity type (strict)\n\n");
            per_label(&mut out, "type", &s.per_type);
            out.push_str("![F1 per entity type](f1_by_label.svg)\n\n");
            out.push_str("## Per entity type (lenient)\n\n");
            out.push_str(
                "| type | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|\n",
            );
            for (t, e) in &s.lenient_per_type {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    cell(t),
                    num(e.precision),
                    num(e.recall),
                    num(e.f1),
                    e.support
                );
            }
            out.push_str("\n## Token confusion of entity types\n\nRows gold, columns predicted; `B-`/`I-` dropped.\n\n");
            matrix(&mut out, &s.token_confusion_matrix);
            out.push_str("![Token confusion](confusion_matrix.svg)\n\n");
        }
    }

    let d = &m.data_issues;
    out.push_str("## Data issues\n\n");
    if d.total == 0 {
        out.push_str("None.\n\n");
    } else {
        let _ = writeln!(
            out,
            "{} issues: {} rows or lines skipped, {} kept and scored.\n",
            d.total, d.skipped, d.kept
        );
        out.push_str("| kind | count |\n|---|---:|\n");
        for (k, n) in &d.by_kind {
            let _ = writeln!(out, "| {k} | {n} |");
        }
        out.push('\n');
        out.push_str("| line | kind | message |\n|---:|---|---|\n");
        for i in d.issues.iter().take(ISSUES_LISTED) {
            let _ = writeln!(out, "| {} | {} | {} |", i.line, i.kind, cell(&i.message));
        }
        if d.issues.len() > ISSUES_LISTED {
            let _ = writeln!(
                out,
                "\n{} more in metrics.json (`data_issues.issues`).",
                d.issues.len() - ISSUES_LISTED
            );
        }
        out.push('\n');
    }

    if let Some(r) = &m.run {
        out.push_str("## Run\n\n| | |\n|---|---|\n");
        let _ = writeln!(out, "| documents | {} |", r.documents);
        let _ = writeln!(out, "| tokens | {} |", r.tokens);
        if m.merged_from.is_empty() {
            let _ = writeln!(out, "| wall time | {:.2} s |", r.wall_seconds);
        } else {
            let _ = writeln!(
                out,
                "| wall time | {:.2} s (the {} shards' times added up) |",
                r.wall_seconds,
                m.merged_from.len()
            );
        }
        let _ = writeln!(out, "| documents/s | {:.2} |", r.documents_per_second);
        let _ = writeln!(out, "| tokens/s | {:.1} |", r.tokens_per_second);
        let l = &r.latency_ms;
        let _ = writeln!(
            out,
            "| latency p50 / p90 / p99 | {:.1} / {:.1} / {:.1} ms |",
            l.p50, l.p90, l.p99
        );
        let _ = writeln!(
            out,
            "| latency mean / max | {:.1} / {:.1} ms |",
            l.mean, l.max
        );
        out.push('\n');
    }
    out.push_str(
        "Files: `metrics.json` (all figures; fields in naba-eval's METRICS.md), `errors.jsonl` \
         (wrong predictions), ",
    );
    out.push_str(match m.scores {
        TaskScores::Classification(_) => "`predictions.jsonl` (every prediction).\n",
        TaskScores::Ner(_) => "`predictions.conll` (the input with a predicted-tag column).\n",
    });
    out
}
