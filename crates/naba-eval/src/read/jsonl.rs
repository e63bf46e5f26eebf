//! JSONL reader: one JSON object per line; fields named by [`ColumnOptions`].

use super::{ClassificationCorpus, ColumnOptions, Field, RowChecker};
use crate::error::{EvalError, Result};
use crate::issues::{DataIssue, IssueKind};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Read a JSONL file. Top-level fields only; strings are taken as they are, numbers and
/// booleans as their JSON text; `null` counts as a missing field. Blank lines are ignored.
///
/// # Errors
/// When the file cannot be opened or read (bad rows are [`DataIssue`]s, not errors).
pub fn read_jsonl(path: &Path, opts: &ColumnOptions) -> Result<ClassificationCorpus> {
    let file = std::fs::File::open(path).map_err(|e| EvalError::io("open", path, e))?;
    read_jsonl_from(file, path, opts)
}

/// [`read_jsonl`] from any reader; `source` names it in messages and in the corpus.
///
/// # Errors
/// When reading fails.
pub fn read_jsonl_from<R: Read>(
    reader: R,
    source: &Path,
    opts: &ColumnOptions,
) -> Result<ClassificationCorpus> {
    let mut corpus = ClassificationCorpus {
        source: source.to_path_buf(),
        ..Default::default()
    };
    let mut checker = RowChecker::new(opts);
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| EvalError::io("read", source, e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            corpus.rows_read += 1;
            corpus.issues.push(DataIssue::new(
                line_no,
                IssueKind::MalformedRow,
                "row skipped: the line is not valid UTF-8",
            ));
            continue;
        };
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            continue;
        }
        corpus.rows_read += 1;
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                corpus.issues.push(DataIssue::new(
                    line_no,
                    IssueKind::MalformedRow,
                    "row skipped: the line is JSON but not an object",
                ));
                continue;
            }
            Err(e) => {
                corpus.issues.push(DataIssue::new(
                    line_no,
                    IssueKind::MalformedRow,
                    format!("row skipped: not valid JSON ({e})"),
                ));
                continue;
            }
        };
        let get = |name: &str| match object.get(name) {
            None | Some(Value::Null) => Field::Missing,
            Some(Value::String(s)) => Field::Value(s.clone()),
            Some(Value::Number(n)) => Field::Value(n.to_string()),
            Some(Value::Bool(b)) => Field::Value(b.to_string()),
            Some(other) => Field::Value(other.to_string()),
        };
        if !checker.passes_filter(&get) {
            corpus.filtered_out += 1;
            continue;
        }
        if let Some(example) = checker.check(line_no, &get, &mut corpus.issues) {
            corpus.examples.push(example);
        }
    }
    Ok(corpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::LabelMap;
    use std::path::PathBuf;

    fn opts() -> ColumnOptions {
        ColumnOptions {
            text: "text".into(),
            text_fallback: Some("title".into()),
            label: "category".into(),
            id: Some("docno".into()),
            label_map: LabelMap::parse("sport=sports").unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_rows_and_reports_problems() {
        let data = r#"{"docno":"a","category":"sport","text":"نص","title":"t"}
{"docno":"b","category":"culture","text":"","title":"عنوان"}

{"docno":"c","category":"culture","text":"  ","title":""}
not json
{"docno":"d","text":"x"}
[1,2]
{"docno":"a","category":"economy","text":"y"}
{"docno":7,"category":"economy","text":"z"}
"#;
        let c = read_jsonl_from(data.as_bytes(), &PathBuf::from("x.jsonl"), &opts()).unwrap();
        let ids: Vec<&str> = c.examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "a", "7"]);
        assert_eq!(c.examples[0].label, "sports");
        assert_eq!(c.examples[1].text, "عنوان");
        let kinds: Vec<(usize, IssueKind)> = c.issues.iter().map(|i| (i.line, i.kind)).collect();
        assert_eq!(
            kinds,
            [
                (2, IssueKind::TextFromFallback),
                (4, IssueKind::EmptyText),
                (5, IssueKind::MalformedRow),
                (6, IssueKind::MissingColumn),
                (7, IssueKind::MalformedRow),
                (8, IssueKind::DuplicateId),
            ]
        );
        assert_eq!(c.rows_read, 8);
        assert_eq!(c.skipped(), 4);
    }

    #[test]
    fn filters_rows() {
        let data = "{\"split\":\"test\",\"category\":\"a\",\"text\":\"x\"}\n\
                    {\"split\":\"train\",\"category\":\"a\",\"text\":\"y\"}\n";
        let mut o = opts();
        o.id = None;
        o.filter = vec![("split".into(), "test".into())];
        let c = read_jsonl_from(data.as_bytes(), &PathBuf::from("x.jsonl"), &o).unwrap();
        assert_eq!(c.examples.len(), 1);
        assert_eq!(c.examples[0].id, "L1");
        assert_eq!(c.filtered_out, 1);
        assert!(c.issues.is_empty());
    }
}
