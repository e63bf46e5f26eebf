//! CSV and TSV reader built on the `csv` crate: a header row, RFC 4180 quoting (quoted fields
//! may span lines), a UTF-8 byte-order mark on the header is ignored.

use super::{ClassificationCorpus, ColumnOptions, Field, RowChecker};
use crate::error::{EvalError, Result};
use crate::issues::{DataIssue, IssueKind};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Read a CSV (`delimiter = b','`) or TSV (`b'\t'`) file with a header row.
///
/// Rows with fewer fields than a configured column needs are skipped and reported as
/// `missing_column`; rows that are not valid UTF-8 as `malformed_row`.
///
/// # Errors
/// When the file cannot be read, the header is unreadable, or a configured column (text, label,
/// target, id, fallback or filter) is not in the header.
pub fn read_delimited(
    path: &Path,
    delimiter: u8,
    opts: &ColumnOptions,
) -> Result<ClassificationCorpus> {
    let file = std::fs::File::open(path).map_err(|e| EvalError::io("open", path, e))?;
    read_delimited_from(file, path, delimiter, opts)
}

/// [`read_delimited`] from any reader; `source` names it in messages and in the corpus.
///
/// # Errors
/// As [`read_delimited`].
pub fn read_delimited_from<R: Read>(
    reader: R,
    source: &Path,
    delimiter: u8,
    opts: &ColumnOptions,
) -> Result<ClassificationCorpus> {
    let format = if delimiter == b'\t' { "TSV" } else { "CSV" };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(reader);
    let parse_err = |e: csv::Error| {
        let line = e.position().map_or(0, csv::Position::line);
        match e.into_kind() {
            csv::ErrorKind::Io(io) => EvalError::io("read", source, io),
            other => EvalError::Parse {
                path: source.to_path_buf(),
                format: format.to_string(),
                line,
                message: format!("{other:?}"),
            },
        }
    };
    let header: Vec<String> = rdr
        .byte_headers()
        .map_err(parse_err)?
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .trim()
                .to_string()
        })
        .collect();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        index.entry(h.as_str()).or_insert(i);
    }
    let resolve = |name: &str, role: &str| -> Result<usize> {
        index
            .get(name)
            .copied()
            .ok_or_else(|| EvalError::MissingColumn {
                path: source.to_path_buf(),
                column: name.to_string(),
                role: role.to_string(),
                available: header.join(", "),
            })
    };
    let mut columns: HashMap<String, usize> = HashMap::new();
    let mut wanted: Vec<(&str, &str)> = vec![(&opts.text, "text"), (&opts.label, "label")];
    if let Some(t) = &opts.target {
        wanted.push((t, "target"));
    }
    if let Some(i) = &opts.id {
        wanted.push((i, "id"));
    }
    if let Some(f) = &opts.text_fallback {
        wanted.push((f, "text fallback"));
    }
    for (col, _) in &opts.filter {
        wanted.push((col, "filter"));
    }
    for (name, role) in wanted {
        columns.insert(name.to_string(), resolve(name, role)?);
    }

    let mut corpus = ClassificationCorpus {
        source: source.to_path_buf(),
        ..Default::default()
    };
    let mut checker = RowChecker::new(opts);
    let mut record = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(parse_err(e)),
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        // A completely empty line between records is not a row.
        if record.len() == 1 && record.get(0).is_some_and(<[u8]>::is_empty) {
            continue;
        }
        corpus.rows_read += 1;
        let mut fields: Vec<Option<&str>> = Vec::with_capacity(record.len());
        let mut bad_utf8 = false;
        for f in record.iter() {
            match std::str::from_utf8(f) {
                Ok(s) => fields.push(Some(s)),
                Err(_) => {
                    fields.push(None);
                    bad_utf8 = true;
                }
            }
        }
        let get = |name: &str| match columns.get(name).and_then(|&i| fields.get(i)) {
            Some(Some(v)) => Field::Value((*v).to_string()),
            _ => Field::Missing,
        };
        if bad_utf8 {
            // Only a problem when a column we use is unreadable.
            let unreadable = columns
                .values()
                .any(|&i| matches!(fields.get(i), Some(None)));
            if unreadable {
                corpus.issues.push(DataIssue::new(
                    line,
                    IssueKind::MalformedRow,
                    "row skipped: a field is not valid UTF-8",
                ));
                continue;
            }
        }
        if !checker.passes_filter(&get) {
            corpus.filtered_out += 1;
            continue;
        }
        if let Some(example) = checker.check(line, &get, &mut corpus.issues) {
            corpus.examples.push(example);
        }
    }
    Ok(corpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    #[test]
    fn quoted_fields_span_lines_and_bom_is_ignored() {
        let data = "\u{feff}ID,text,target,stance\n\
                    1,\"سطر أول\nسطر ثان, مع فاصلة\",Women,Favor\n\
                    2,short,Women\n\
                    3,,Women,Against\n\
                    4,x,,Against\n\
                    5,y,COVID,\n\
                    6,z,COVID,Neutral\n";
        let opts = ColumnOptions {
            text: "text".into(),
            target: Some("target".into()),
            label: "stance".into(),
            id: Some("ID".into()),
            label_set: Some(BTreeSet::from(["Favor".to_string(), "Against".to_string()])),
            ..Default::default()
        };
        let c = read_delimited_from(data.as_bytes(), &PathBuf::from("m.csv"), b',', &opts).unwrap();
        assert_eq!(c.examples.len(), 2);
        assert_eq!(c.examples[0].text, "سطر أول\nسطر ثان, مع فاصلة");
        assert_eq!(c.examples[0].line, 2);
        assert_eq!(c.examples[0].target.as_deref(), Some("Women"));
        let kinds: Vec<(usize, IssueKind)> = c.issues.iter().map(|i| (i.line, i.kind)).collect();
        assert_eq!(
            kinds,
            [
                (4, IssueKind::MissingColumn),
                (5, IssueKind::EmptyText),
                (6, IssueKind::EmptyTarget),
                (7, IssueKind::MissingLabel),
                (8, IssueKind::UnknownLabel),
            ]
        );
        assert_eq!(c.rows_read, 6);
    }

    #[test]
    fn missing_header_column_is_an_error() {
        let data = "a,b\n1,2\n";
        let opts = ColumnOptions::new("text", "b");
        let err = read_delimited_from(data.as_bytes(), &PathBuf::from("x.csv"), b',', &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`text`") && err.contains("a, b"), "{err}");
    }

    #[test]
    fn tsv() {
        let data = "text\tlabel\nمرحبا\tpos\n";
        let c = read_delimited_from(
            data.as_bytes(),
            &PathBuf::from("x.tsv"),
            b'\t',
            &ColumnOptions::default(),
        )
        .unwrap();
        assert_eq!(c.examples[0].label, "pos");
        assert_eq!(c.examples[0].id, "L2");
    }
}
