//! CoNLL reader for NER: `token TAG` lines, a blank line between sentences.

use crate::error::{EvalError, Result};
use crate::issues::{DataIssue, IssueKind};
use crate::labels::{split_tag, LabelMap};
use crate::read::join_set;
use crate::sample::{sample_in_order, SampleInfo};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Options for [`read_conll`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConllOptions {
    /// Applied to every tag (whole tag first, then the entity type; see [`LabelMap`]).
    pub label_map: LabelMap,
    /// The model's tags after mapping, given as full tags (`B-PER`) or bare types (`PER`); `O`
    /// is always known. Tags outside it are kept and reported as `unknown_label`.
    pub label_set: Option<BTreeSet<String>>,
}

/// One sentence of a CoNLL file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NerSentence {
    /// `L<line>` of its first token line.
    pub id: String,
    /// 1-based line number of its first token.
    pub line: usize,
    /// Tokens (first column).
    pub tokens: Vec<String>,
    /// Gold tags (last column, after the label map; malformed tags read as `O`).
    pub tags: Vec<String>,
    /// The line number of each token.
    pub token_lines: Vec<usize>,
    /// Each token's line exactly as in the file (without the line break), used to write
    /// `predictions.conll` as the input with one column appended.
    pub raw_lines: Vec<String>,
}

/// A CoNLL file as read, with its issues.
#[derive(Clone, Debug, Default)]
pub struct NerCorpus {
    /// The file it was read from.
    pub source: PathBuf,
    /// Sentences in file order.
    pub sentences: Vec<NerSentence>,
    /// Every data issue, in file order.
    pub issues: Vec<DataIssue>,
    /// Set by [`NerCorpus::sample`].
    pub sample: Option<SampleInfo>,
}

impl NerCorpus {
    /// Number of tokens in all sentences.
    pub fn token_count(&self) -> usize {
        self.sentences.iter().map(|s| s.tokens.len()).sum()
    }

    /// Gold tags, one vector per sentence.
    pub fn gold_tags(&self) -> Vec<Vec<String>> {
        self.sentences.iter().map(|s| s.tags.clone()).collect()
    }

    /// Entity types found in the gold tags, sorted.
    pub fn entity_types(&self) -> BTreeSet<String> {
        self.sentences
            .iter()
            .flat_map(|s| s.tags.iter())
            .filter_map(|t| split_tag(t).map(|(_, k)| k.to_string()))
            .collect()
    }

    /// Keep a deterministic sample of `limit` sentences in file order; `None` keeps all.
    pub fn sample(mut self, limit: Option<usize>, seed: u64) -> Self {
        if let Some(limit) = limit {
            let population = self.sentences.len();
            self.sentences = sample_in_order(self.sentences, Some(limit), seed);
            self.sample = Some(SampleInfo {
                limit,
                seed,
                population,
                kept: self.sentences.len(),
            });
        }
        self
    }
}

/// Read a CoNLL file.
///
/// * Columns are separated by spaces or tabs; the first is the token, the **last** is the tag,
///   others are ignored.
/// * A blank line ends a sentence; `-DOCSTART-` lines are skipped (and also end a sentence).
/// * A line with a single column is skipped and reported (`missing_column`); the rest of its
///   sentence is kept.
/// * A tag that is not `O`, `B-X` or `I-X` is read as `O` and reported (`invalid_tag`).
/// * A tag outside [`ConllOptions::label_set`] is kept and reported (`unknown_label`).
/// * `I-X` starting a sentence, after `O`, or after another type is kept as written and
///   reported (`iob_start`, `iob_transition`): strict IOB2 scoring does not count it as an
///   entity, lenient (conlleval) scoring does.
///
/// # Errors
/// When the file cannot be read or is not UTF-8.
pub fn read_conll(path: &Path, opts: &ConllOptions) -> Result<NerCorpus> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::io("read", path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| EvalError::Parse {
        path: path.to_path_buf(),
        format: "CoNLL".into(),
        line: 0,
        message: format!("the file is not UTF-8 ({e}); convert it to UTF-8 first"),
    })?;
    Ok(parse_conll(&text, path, opts))
}

/// Parse CoNLL text (see [`read_conll`]); `source` is recorded in the corpus.
pub fn parse_conll(text: &str, source: &Path, opts: &ConllOptions) -> NerCorpus {
    let mut corpus = NerCorpus {
        source: source.to_path_buf(),
        ..Default::default()
    };
    let mut current: Option<NerSentence> = None;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with("-DOCSTART-") {
            if let Some(s) = current.take() {
                finish_sentence(s, &mut corpus.issues, &mut corpus.sentences);
            }
            continue;
        }
        let cols: Vec<&str> = trimmed.split_whitespace().collect();
        let (Some(&token), Some(&raw_tag)) = (cols.first(), cols.last()) else {
            continue;
        };
        if cols.len() < 2 {
            corpus.issues.push(DataIssue::new(
                line_no,
                IssueKind::MissingColumn,
                format!(
                    "line skipped: `{trimmed}` has one column, expected `token TAG`; the rest of \
                     the sentence is kept"
                ),
            ));
            continue;
        }
        let mapped = opts.label_map.map_tag(raw_tag);
        let tag = if mapped == "O" || split_tag(&mapped).is_some() {
            mapped
        } else {
            corpus.issues.push(DataIssue::new(
                line_no,
                IssueKind::InvalidTag,
                format!("token kept, tag `{mapped}` is not O, B-TYPE or I-TYPE and is read as O"),
            ));
            "O".to_string()
        };
        if let Some(set) = &opts.label_set {
            let known = tag == "O"
                || set.contains(&tag)
                || split_tag(&tag).is_some_and(|(_, kind)| set.contains(kind));
            if !known {
                let from = if tag != raw_tag {
                    format!(" (mapped from `{raw_tag}`)")
                } else {
                    String::new()
                };
                corpus.issues.push(DataIssue::new(
                    line_no,
                    IssueKind::UnknownLabel,
                    format!(
                        "token kept: tag `{tag}`{from} is not one of the model's labels ({}); add \
                         a label map entry if it has another name",
                        join_set(set)
                    ),
                ));
            }
        }
        let s = current.get_or_insert_with(|| NerSentence {
            id: format!("L{line_no}"),
            line: line_no,
            tokens: Vec::new(),
            tags: Vec::new(),
            token_lines: Vec::new(),
            raw_lines: Vec::new(),
        });
        s.tokens.push(token.to_string());
        s.tags.push(tag);
        s.token_lines.push(line_no);
        s.raw_lines.push(raw.to_string());
    }
    if let Some(s) = current.take() {
        finish_sentence(s, &mut corpus.issues, &mut corpus.sentences);
    }
    // Issues were pushed in two passes (per line, then per sentence): restore file order.
    corpus.issues.sort_by_key(|i| i.line);
    corpus
}

/// Check the IOB2 transitions of a finished sentence and store it.
fn finish_sentence(s: NerSentence, issues: &mut Vec<DataIssue>, out: &mut Vec<NerSentence>) {
    let mut prev: Option<(&str, &str)> = None; // (prefix, type) of the previous tag, None = O
    for (j, tag) in s.tags.iter().enumerate() {
        let cur = split_tag(tag);
        if let Some(("I", kind)) = cur {
            let line = s.token_lines[j];
            match prev {
                None if j == 0 => issues.push(DataIssue::new(
                    line,
                    IssueKind::IobStart,
                    format!("sentence kept: it starts with `{tag}` (IOB2 entities start with B-)"),
                )),
                None => issues.push(DataIssue::new(
                    line,
                    IssueKind::IobTransition,
                    format!("sentence kept: `{tag}` follows `O` (IOB2 entities start with B-)"),
                )),
                Some((p, k)) if k != kind => issues.push(DataIssue::new(
                    line,
                    IssueKind::IobTransition,
                    format!("sentence kept: `{tag}` follows `{p}-{k}`, another entity type"),
                )),
                Some(_) => {}
            }
        }
        prev = cur;
    }
    out.push(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sentences_and_reports_problems() {
        let text = "-DOCSTART- -X- O O\n\nالقاهرة B-LOC\nمدينة O\n\n\
                    محمد POS I-PERS\nعلي I-PERS\nفي O\nI-ORG\nبنك I-ORG\nمصر I-LOC\nX FOO\n\
                    \r\nكلمة B-MISC\n";
        let opts = ConllOptions {
            label_map: LabelMap::parse("PERS=PER").unwrap(),
            label_set: Some(BTreeSet::from([
                "PER".to_string(),
                "LOC".to_string(),
                "ORG".to_string(),
            ])),
        };
        let c = parse_conll(text, Path::new("t.txt"), &opts);
        assert_eq!(c.sentences.len(), 3);
        assert_eq!(c.sentences[0].tokens, ["القاهرة", "مدينة"]);
        assert_eq!(c.sentences[0].line, 3);
        assert_eq!(c.sentences[0].id, "L3");
        assert_eq!(
            c.sentences[1].tags,
            ["I-PER", "I-PER", "O", "I-ORG", "I-LOC", "O"]
        );
        assert_eq!(c.sentences[1].raw_lines[0], "محمد POS I-PERS");
        let kinds: Vec<(usize, IssueKind)> = c.issues.iter().map(|i| (i.line, i.kind)).collect();
        assert_eq!(
            kinds,
            [
                (6, IssueKind::IobStart),
                (9, IssueKind::MissingColumn),
                (10, IssueKind::IobTransition),
                (11, IssueKind::IobTransition),
                (12, IssueKind::InvalidTag),
                (14, IssueKind::UnknownLabel),
            ]
        );
        assert_eq!(c.token_count(), 9);
    }
}
