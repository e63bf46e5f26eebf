//! Problems found in data files, counted and reported rather than crashed on or dropped.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One problem in a data file.
///
/// `line` is the 1-based line number in the file the corpus was read from (for a CSV record
/// that spans lines, the line it starts on). Whether the row was skipped or kept is fixed by the
/// [`kind`](IssueKind) — see [`IssueKind::skips_row`] — and the message says so too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIssue {
    /// 1-based line number in the source file.
    pub line: usize,
    /// What kind of problem; decides whether the row was skipped or kept.
    pub kind: IssueKind,
    /// A readable description naming the column or tag and what was done.
    pub message: String,
}

impl DataIssue {
    pub(crate) fn new(line: usize, kind: IssueKind, message: impl Into<String>) -> Self {
        DataIssue {
            line,
            kind,
            message: message.into(),
        }
    }
}

/// Kinds of data problems, and what the readers do about each.
///
/// | kind | what | done |
/// |---|---|---|
/// | `missing_column` | a CSV row with fewer fields than the header, a JSONL object without a configured field, a CoNLL line with one column | **skipped** (CoNLL: that token line is skipped, the rest of the sentence kept) |
/// | `malformed_row` | a JSONL line that is not a JSON object, a CSV row that is not valid UTF-8 | **skipped** |
/// | `empty_text` | the text field is empty or whitespace (and no usable fallback field) | **skipped** |
/// | `text_from_fallback` | the text field is empty, the fallback field (e.g. `title`) was used | kept |
/// | `empty_target` | the target column (stance pairs) is empty | **skipped** |
/// | `missing_label` | the label field is empty | **skipped** |
/// | `unknown_label` | the label (after the label map) is not in the provided label set | kept (scored; the model cannot get it right) |
/// | `invalid_tag` | a CoNLL tag that is not `O`, `B-X` or `I-X` | kept, the tag is read as `O` |
/// | `iob_start` | a sentence whose first entity tag is `I-X` | kept as written |
/// | `iob_transition` | `I-X` after `O` or after `B-Y`/`I-Y` of another type | kept as written |
/// | `missing_id` | the id field is empty; the id `L<line>` is used | kept |
/// | `duplicate_id` | an id seen before in the same file | kept |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// A row lacks a configured column or field. Skipped.
    MissingColumn,
    /// A row that cannot be parsed at all. Skipped.
    MalformedRow,
    /// Empty text. Skipped.
    EmptyText,
    /// Empty text, replaced by the fallback field. Kept.
    TextFromFallback,
    /// Empty target. Skipped.
    EmptyTarget,
    /// Empty label. Skipped.
    MissingLabel,
    /// A label outside the provided label set. Kept.
    UnknownLabel,
    /// A malformed CoNLL tag, read as `O`. Kept.
    InvalidTag,
    /// A sentence starting (its first entity) with `I-`. Kept.
    IobStart,
    /// `I-X` after `O` or after another type. Kept.
    IobTransition,
    /// Empty id, replaced by `L<line>`. Kept.
    MissingId,
    /// An id already used in the file. Kept.
    DuplicateId,
}

impl IssueKind {
    /// Whether a row (or CoNLL token line) with this issue was left out of the corpus.
    pub fn skips_row(self) -> bool {
        matches!(
            self,
            IssueKind::MissingColumn
                | IssueKind::MalformedRow
                | IssueKind::EmptyText
                | IssueKind::EmptyTarget
                | IssueKind::MissingLabel
        )
    }

    /// The snake_case name used in metrics.json.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::MissingColumn => "missing_column",
            IssueKind::MalformedRow => "malformed_row",
            IssueKind::EmptyText => "empty_text",
            IssueKind::TextFromFallback => "text_from_fallback",
            IssueKind::EmptyTarget => "empty_target",
            IssueKind::MissingLabel => "missing_label",
            IssueKind::UnknownLabel => "unknown_label",
            IssueKind::InvalidTag => "invalid_tag",
            IssueKind::IobStart => "iob_start",
            IssueKind::IobTransition => "iob_transition",
            IssueKind::MissingId => "missing_id",
            IssueKind::DuplicateId => "duplicate_id",
        }
    }
}

impl std::fmt::Display for IssueKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of data issues, as written in metrics.json under `data_issues`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IssueSummary {
    /// Number of issues.
    pub total: usize,
    /// Issues whose row (or CoNLL line) was skipped.
    pub skipped: usize,
    /// Issues whose row was kept and scored.
    pub kept: usize,
    /// Count per kind (snake_case names).
    pub by_kind: BTreeMap<String, usize>,
    /// Every issue, in file order.
    pub issues: Vec<DataIssue>,
}

impl IssueSummary {
    /// Summarise a list of issues.
    pub fn from_issues(issues: &[DataIssue]) -> Self {
        let mut by_kind = BTreeMap::new();
        let mut skipped = 0;
        for issue in issues {
            *by_kind.entry(issue.kind.as_str().to_string()).or_insert(0) += 1;
            if issue.kind.skips_row() {
                skipped += 1;
            }
        }
        IssueSummary {
            total: issues.len(),
            skipped,
            kept: issues.len() - skipped,
            by_kind,
            issues: issues.to_vec(),
        }
    }
}
