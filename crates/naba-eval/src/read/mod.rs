//! Corpus readers: CoNLL for NER; JSONL, CSV and TSV for classification and stance.
//!
//! Readers never crash on bad rows and never drop them silently: each problem becomes a
//! [`DataIssue`] with the file's line number, and [`IssueKind`] documents whether the row was
//! skipped or kept. Only problems with the file as a whole (it cannot be opened, a configured
//! column is not in the header) are errors.

mod conll;
mod jsonl;
mod table;

pub use conll::{parse_conll, read_conll, ConllOptions, NerCorpus, NerSentence};
pub use jsonl::{read_jsonl, read_jsonl_from};
pub use table::{read_delimited, read_delimited_from};

use crate::error::{EvalError, Result};
use crate::issues::{DataIssue, IssueKind};
use crate::labels::LabelMap;
use crate::sample::{sample_in_order, SampleInfo};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// The file formats the readers know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// `token TAG` lines (last column is the tag), blank lines between sentences.
    Conll,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated, with a header row and RFC 4180 quoting.
    Csv,
    /// Tab-separated, with a header row (quoted fields allowed).
    Tsv,
}

impl DataFormat {
    /// Guess the format from the file extension: `.jsonl`/`.ndjson`/`.json` → JSONL, `.csv` →
    /// CSV, `.tsv`/`.tab` → TSV, `.conll`/`.txt`/`.iob`/`.bio` → CoNLL.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Some(DataFormat::Jsonl),
            "csv" => Some(DataFormat::Csv),
            "tsv" | "tab" => Some(DataFormat::Tsv),
            "conll" | "txt" | "iob" | "bio" | "conllu" => Some(DataFormat::Conll),
            _ => None,
        }
    }
}

/// Which columns (CSV/TSV) or fields (JSONL) hold what, and how labels are mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnOptions {
    /// The text column (the sentence, post or article). Default `text`.
    pub text: String,
    /// A column used when `text` is empty (e.g. `title` for the ANT corpus). The row is then
    /// kept with a `text_from_fallback` issue.
    pub text_fallback: Option<String>,
    /// The target column for stance pairs (the claim or topic the stance is toward).
    pub target: Option<String>,
    /// The gold label column. Default `label`.
    pub label: String,
    /// The id column; without one the id is `L<line>`.
    pub id: Option<String>,
    /// Maps data-set labels to model labels.
    pub label_map: LabelMap,
    /// The labels the model knows (after mapping). Gold labels outside it are kept and reported
    /// as `unknown_label`. `None` accepts every label.
    pub label_set: Option<BTreeSet<String>>,
    /// Keep only rows whose column equals the value (e.g. `("split", "test")`); other rows are
    /// counted in [`ClassificationCorpus::filtered_out`], not reported as issues.
    pub filter: Vec<(String, String)>,
}

impl Default for ColumnOptions {
    fn default() -> Self {
        ColumnOptions {
            text: "text".into(),
            text_fallback: None,
            target: None,
            label: "label".into(),
            id: None,
            label_map: LabelMap::default(),
            label_set: None,
            filter: Vec::new(),
        }
    }
}

impl ColumnOptions {
    /// Options with the given text and label columns.
    pub fn new(text: impl Into<String>, label: impl Into<String>) -> Self {
        ColumnOptions {
            text: text.into(),
            label: label.into(),
            ..Self::default()
        }
    }
}

/// One classification (or stance) example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassificationExample {
    /// From the id column, else `L<line>`.
    pub id: String,
    /// 1-based line number where the row starts.
    pub line: usize,
    /// The text, as in the file (not trimmed).
    pub text: String,
    /// The stance target, when a target column is configured.
    pub target: Option<String>,
    /// The gold label after the label map (trimmed).
    pub label: String,
}

/// A classification data set as read, with its issues.
#[derive(Clone, Debug, Default)]
pub struct ClassificationCorpus {
    /// The file it was read from.
    pub source: PathBuf,
    /// The examples kept, in file order.
    pub examples: Vec<ClassificationExample>,
    /// Every data issue, in file order.
    pub issues: Vec<DataIssue>,
    /// Data rows seen (header excluded), before filtering and skipping.
    pub rows_read: usize,
    /// Rows left out by [`ColumnOptions::filter`].
    pub filtered_out: usize,
    /// Set by [`ClassificationCorpus::sample`].
    pub sample: Option<SampleInfo>,
}

impl ClassificationCorpus {
    /// Read a JSONL, CSV or TSV file, the format taken from `format` or else the extension.
    ///
    /// # Errors
    /// When the format cannot be told, the file cannot be read, or a configured column is not in
    /// the header.
    pub fn read(path: &Path, format: Option<DataFormat>, opts: &ColumnOptions) -> Result<Self> {
        match format.or_else(|| DataFormat::from_path(path)) {
            Some(DataFormat::Jsonl) => read_jsonl(path, opts),
            Some(DataFormat::Csv) => read_delimited(path, b',', opts),
            Some(DataFormat::Tsv) => read_delimited(path, b'\t', opts),
            Some(DataFormat::Conll) => Err(EvalError::InvalidOption(format!(
                "{} is CoNLL (NER) data; read it with read_conll, or name a JSONL/CSV/TSV file \
                 for classification",
                path.display()
            ))),
            None => Err(EvalError::InvalidOption(format!(
                "cannot tell the format of {} from its extension; use .jsonl, .csv or .tsv, or \
                 give the format explicitly",
                path.display()
            ))),
        }
    }

    /// The distinct gold labels, sorted.
    pub fn labels(&self) -> BTreeSet<String> {
        self.examples.iter().map(|e| e.label.clone()).collect()
    }

    /// Number of issues whose row was skipped.
    pub fn skipped(&self) -> usize {
        self.issues.iter().filter(|i| i.kind.skips_row()).count()
    }

    /// Keep a deterministic sample of `limit` examples in file order (seeded shuffle, take
    /// `limit`, restore order); `None` keeps all. Issues are kept for the whole file.
    pub fn sample(mut self, limit: Option<usize>, seed: u64) -> Self {
        if let Some(limit) = limit {
            let population = self.examples.len();
            self.examples = sample_in_order(self.examples, Some(limit), seed);
            self.sample = Some(SampleInfo {
                limit,
                seed,
                population,
                kept: self.examples.len(),
            });
        }
        self
    }
}

/// Shared row-level checks for JSONL and CSV rows. `get` returns a field by name: `None` when
/// the row lacks it.
pub(crate) struct RowChecker<'a> {
    opts: &'a ColumnOptions,
    seen_ids: HashSet<String>,
}

/// A field lookup result: `Missing` when the row does not have the field at all.
pub(crate) enum Field {
    Missing,
    Value(String),
}

impl<'a> RowChecker<'a> {
    pub(crate) fn new(opts: &'a ColumnOptions) -> Self {
        RowChecker {
            opts,
            seen_ids: HashSet::new(),
        }
    }

    /// Whether the row passes the configured filter.
    pub(crate) fn passes_filter(&self, get: &dyn Fn(&str) -> Field) -> bool {
        self.opts.filter.iter().all(|(col, want)| match get(col) {
            Field::Value(v) => v.trim() == want,
            Field::Missing => false,
        })
    }

    /// Check one row; push issues; return the example when the row is kept.
    pub(crate) fn check(
        &mut self,
        line: usize,
        get: &dyn Fn(&str) -> Field,
        issues: &mut Vec<DataIssue>,
    ) -> Option<ClassificationExample> {
        let opts = self.opts;
        let mut missing: Vec<&str> = Vec::new();
        let mut fetch = |name: &'a str| match get(name) {
            Field::Value(v) => Some(v),
            Field::Missing => {
                missing.push(name);
                None
            }
        };
        let text = fetch(&opts.text);
        let label = fetch(&opts.label);
        let target = opts.target.as_deref().map(&mut fetch);
        let id = opts.id.as_deref().map(&mut fetch);
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
            issues.push(DataIssue::new(
                line,
                IssueKind::MissingColumn,
                format!("row skipped: it has no {}", names.join(", ")),
            ));
            return None;
        }
        let (Some(mut text), Some(label)) = (text, label) else {
            return None;
        };
        if text.trim().is_empty() {
            let fallback = opts.text_fallback.as_deref().and_then(|f| match get(f) {
                Field::Value(v) if !v.trim().is_empty() => Some((f, v)),
                _ => None,
            });
            match fallback {
                Some((name, v)) => {
                    issues.push(DataIssue::new(
                        line,
                        IssueKind::TextFromFallback,
                        format!("row kept: `{}` is empty, used `{name}` instead", opts.text),
                    ));
                    text = v;
                }
                None => {
                    issues.push(DataIssue::new(
                        line,
                        IssueKind::EmptyText,
                        format!("row skipped: `{}` is empty", opts.text),
                    ));
                    return None;
                }
            }
        }
        let target = match target.flatten() {
            Some(t) if t.trim().is_empty() => {
                issues.push(DataIssue::new(
                    line,
                    IssueKind::EmptyTarget,
                    format!(
                        "row skipped: target `{}` is empty",
                        opts.target.as_deref().unwrap_or_default()
                    ),
                ));
                return None;
            }
            other => other,
        };
        let raw_label = label.trim();
        if raw_label.is_empty() {
            issues.push(DataIssue::new(
                line,
                IssueKind::MissingLabel,
                format!("row skipped: label `{}` is empty", opts.label),
            ));
            return None;
        }
        let label = opts.label_map.map(raw_label).to_string();
        if let Some(set) = &opts.label_set {
            if !set.contains(&label) {
                let mapped = if label != raw_label {
                    format!(" (mapped from `{raw_label}`)")
                } else {
                    String::new()
                };
                issues.push(DataIssue::new(
                    line,
                    IssueKind::UnknownLabel,
                    format!(
                        "row kept: label `{label}`{mapped} is not one of the model's labels ({}); \
                         add a label map entry if it has another name",
                        join_set(set)
                    ),
                ));
            }
        }
        let id = match id.flatten() {
            Some(i) if !i.trim().is_empty() => i.trim().to_string(),
            Some(_) => {
                issues.push(DataIssue::new(
                    line,
                    IssueKind::MissingId,
                    format!("row kept: id is empty, using `L{line}`"),
                ));
                format!("L{line}")
            }
            None => format!("L{line}"),
        };
        if opts.id.is_some() && !self.seen_ids.insert(id.clone()) {
            issues.push(DataIssue::new(
                line,
                IssueKind::DuplicateId,
                format!("row kept: id `{id}` was used by an earlier row"),
            ));
        }
        Some(ClassificationExample {
            id,
            line,
            text,
            target,
            label,
        })
    }
}

pub(crate) fn join_set(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}
