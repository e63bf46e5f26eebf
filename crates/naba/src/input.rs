//! Reading the texts to label: command-line arguments, a file, or standard input, as plain lines
//! or JSONL; every problem is reported with the line it is on before any model work starts.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::io::{IsTerminal, Read};
use std::path::Path;

/// One input document.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub id: serde_json::Value,
    pub text: String,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSONL when the first non-blank line starts with `{`, else plain lines.
    Auto,
    /// One text per line; blank lines are skipped.
    Lines,
    /// One JSON object per line with `text` and optional `id` and `target`.
    Jsonl,
}

#[derive(Deserialize)]
struct JsonDoc {
    text: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
    target: Option<String>,
}

/// Reads the documents from `texts` (arguments), else `file` (`-` is stdin), else stdin.
pub fn read_docs(texts: &[String], file: Option<&Path>, format: Format) -> Result<Vec<Doc>> {
    if !texts.is_empty() {
        return Ok(texts
            .iter()
            .enumerate()
            .map(|(i, t)| Doc {
                id: i.into(),
                text: t.clone(),
                target: None,
            })
            .collect());
    }
    let (bytes, origin) = match file {
        Some(p) if p != Path::new("-") => (
            std::fs::read(p).with_context(|| format!("cannot read input file {}", p.display()))?,
            p.display().to_string(),
        ),
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("no input: pass texts as arguments, --input FILE, or pipe text on stdin");
            }
            let mut buf = Vec::new();
            stdin
                .lock()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            (buf, "stdin".to_string())
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{origin} is not valid UTF-8 (first bad byte at offset {}): save it as UTF-8",
            e.utf8_error().valid_up_to()
        )
    })?;
    parse(&text, &origin, format)
}

fn parse(text: &str, origin: &str, format: Format) -> Result<Vec<Doc>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let format = match format {
        Format::Auto => {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if first.trim_start().starts_with('{') {
                Format::Jsonl
            } else {
                Format::Lines
            }
        }
        f => f,
    };
    let mut docs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let lineno = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        match format {
            Format::Jsonl => {
                let d: JsonDoc = serde_json::from_str(line)
                    .with_context(|| format!("{origin} line {lineno}: not a JSON object"))?;
                let text = match d.text {
                    Some(serde_json::Value::String(s)) => s,
                    Some(_) => bail!("{origin} line {lineno}: `text` must be a string"),
                    None => bail!("{origin} line {lineno}: no `text` field"),
                };
                docs.push(Doc {
                    id: d.id.unwrap_or_else(|| docs.len().into()),
                    text,
                    target: d.target,
                });
            }
            _ => docs.push(Doc {
                id: docs.len().into(),
                text: line.to_string(),
                target: None,
            }),
        }
    }
    if docs.is_empty() {
        bail!("{origin} holds no text to label");
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_with_ids_and_targets() {
        let docs = parse(
            "{\"id\": \"a\", \"text\": \"نص\", \"target\": \"هدف\"}\n\n{\"text\": \"ثان\"}\n",
            "t",
            Format::Auto,
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].id, serde_json::json!("a"));
        assert_eq!(docs[0].target.as_deref(), Some("هدف"));
        assert_eq!(docs[1].id, serde_json::json!(1));
    }

    #[test]
    fn bad_jsonl_names_the_line() {
        let err = parse(
            "{\"text\": \"a\"}\n{\"txt\": 1}\n",
            "f.jsonl",
            Format::Jsonl,
        )
        .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn plain_lines_skip_blanks() {
        let docs = parse("أ\n\n  \nب\n", "t", Format::Lines).unwrap();
        assert_eq!(
            docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["أ", "ب"]
        );
        assert!(parse("\n \n", "t", Format::Lines).is_err());
    }
}
