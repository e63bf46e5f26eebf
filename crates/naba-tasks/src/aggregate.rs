//! Turning per-token label scores into entities, exactly as the Hugging Face
//! `transformers` token-classification (NER) pipeline does (checked against
//! transformers 5.17).
//!
//! The pipeline's post-processing, which [`aggregate`] and [`aggregate_windows`] reproduce:
//!
//! 1. **Gather.** Special tokens (`special_tokens_mask == 1`: CLS/SEP, `<s>`/`</s>`,
//!    padding) are dropped. Every other token keeps its scores, its character offsets, its
//!    position in the encoding (`index`) and an `is_subword` flag (see below).
//! 2. **Label tokens or words.**
//!    * `none` and `simple`: each token takes the label of its highest score
//!      (`argmax`, first one on ties) and that score.
//!    * `first`, `average`, `max`: tokens are first gathered into words; a word starts at
//!      every token whose `is_subword` flag is false (and at the very first token). The word
//!      takes the label of its first token's argmax (`first`), of the token whose best score
//!      is highest (`max`, first such token on ties), or of the argmax of the per-label mean
//!      of its tokens' scores (`average`). A word spans from its first token's start to its
//!      last token's end.
//! 3. **Group** (every strategy but `none`). Adjacent tokens/words are merged into one
//!    entity while the tag of the next one equals the tag of the previous one and the next
//!    one is not a `B-`: the tag is the label without a leading `B-` or `I-`, and a label
//!    with neither prefix counts as an `I-` of itself. So `B-PER I-PER` merge, `B-PER B-PER`
//!    do not, `I-PER` after `O` starts a new entity, `S-PER S-PER` merge (their tag is
//!    `S-PER` itself), and in BIOES `B-PER I-PER E-PER` the `E-PER` starts a second entity.
//!    A group's label is its first member's label with everything up to and including the
//!    first `-` removed (`B-PER` → `PER`, `E-PER` → `PER`, `PER` → `PER`, `B-X-Y` → `X-Y`),
//!    its score is the mean of the members' scores, and it spans from the first member's
//!    start to the last member's end.
//! 4. **Filter.** Entities whose label (`none`) or group label (other strategies) is in
//!    `ignore_labels` are dropped, *after* grouping; `["O"]` is the pipeline's default
//!    ([`DEFAULT_IGNORE_LABELS`]). Note that for grouped strategies the test is on the
//!    stripped label: ignoring `"PER"` drops `B-PER` groups, ignoring `"B-PER"` does not.
//! 5. **Windows.** With `stride`, the text is encoded as several overlapping windows. Each
//!    window goes through steps 1–4 on its own; the entities of all windows are then
//!    concatenated and, when there is more than one window, merged by
//!    [`merge_overlapping_entities`]. Token rows from two windows are never merged.
//!
//! ## `is_subword`
//!
//! * If the tokenizer model has a non-empty `continuing_subword_prefix` (WordPiece's `##`,
//!   or a BPE model that sets one): a token is a sub-word when its vocabulary piece and the
//!   text it covers differ in length (in Unicode scalar values):
//!   `token.chars().count() != end - start`. `"##ab"` covering `"ab"` is a sub-word. This is
//!   a length test, not a prefix test: a word-initial piece whose text was changed in length
//!   by normalisation (e.g. Arabic diacritics stripped by a BERT normaliser) also counts as
//!   a sub-word, exactly as in transformers.
//! * Otherwise (SentencePiece/Unigram, byte-level BPE such as RoBERTa's, WordLevel): a
//!   heuristic on the text. A token is a sub-word unless it starts at offset 0, or the
//!   character just before its start is an ASCII space `' '`, or the character at its start
//!   is one. Only U+0020 counts; a tab or newline does not.
//! * The unknown token (`unk_token_id`) is never a sub-word.
//!
//! ## Where naba differs
//!
//! Only in [`Entity::word`]: transformers fills `word` by decoding the tokens
//! (`convert_tokens_to_string`), which may lower-case, drop diacritics or change spaces.
//! naba makes it exactly `sentence[start..end]` in characters, so an entity's text is always
//! a slice of the input. The label, score, start, end and index are the pipeline's.
//!
//! One addition, off unless asked for: [`Decoding::Iob2`] ([`aggregate_windows_decoded`])
//! replaces step 2's independent argmax by the most probable label sequence of the window
//! that is valid IOB2 (Viterbi over log-probabilities; `I-x` only after `B-x` or `I-x`).
//! Grouping and everything after it are unchanged.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::scores::{numpy_argmax, numpy_max, numpy_nanmean};

/// The labels the pipeline ignores unless told otherwise.
pub const DEFAULT_IGNORE_LABELS: &[&str] = &["O"];

/// How token predictions are fused into entities (the pipeline's `aggregation_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregationStrategy {
    /// One entity per token, labels as predicted (`B-PER`), with `index`. The pipeline's
    /// default.
    #[default]
    None,
    /// Group adjacent tokens with the same tag; words may be split between entities.
    Simple,
    /// As `simple`, but each word takes the label of its first token.
    First,
    /// As `simple`, but each word takes the argmax of its tokens' mean scores.
    Average,
    /// As `simple`, but each word takes the label of its most confident token.
    Max,
}

impl AggregationStrategy {
    /// Every strategy, in the order transformers lists them.
    pub const ALL: [Self; 5] = [
        Self::None,
        Self::Simple,
        Self::First,
        Self::Average,
        Self::Max,
    ];

    /// The lower-case name used by transformers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Simple => "simple",
            Self::First => "first",
            Self::Average => "average",
            Self::Max => "max",
        }
    }

    /// Whether the strategy works on whole words (`first`, `average`, `max`) and so uses
    /// the `is_subword` decision.
    pub fn is_word_based(self) -> bool {
        matches!(self, Self::First | Self::Average | Self::Max)
    }
}

impl fmt::Display for AggregationStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that names no [`AggregationStrategy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown aggregation strategy `{input}`: expected one of none, simple, first, average, max"
)]
pub struct ParseAggregationStrategyError {
    /// The string that was given.
    pub input: String,
}

impl FromStr for AggregationStrategy {
    type Err = ParseAggregationStrategyError;

    /// Parses `none`, `simple`, `first`, `average` or `max`, ignoring ASCII case as
    /// transformers does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == lower)
            .ok_or_else(|| ParseAggregationStrategyError {
                input: s.to_owned(),
            })
    }
}

/// How each token's or word's label is chosen from its scores before grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoding {
    /// Each token or word takes its own best label, as transformers does. An `I-PER` may
    /// then follow `O` or `B-LOC`; grouping makes it an entity of its own.
    #[default]
    Argmax,
    /// The most probable label sequence of each window in which every `I-x` follows a `B-x`
    /// or an `I-x` (IOB2), by Viterbi over the log-probabilities. Labels named neither `B-`
    /// nor `I-` are unconstrained, so a label set without `I-` labels decodes as `argmax`.
    Iob2,
}

impl Decoding {
    /// Every decoding, in the order `--help` lists them.
    pub const ALL: [Self; 2] = [Self::Argmax, Self::Iob2];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Argmax => "argmax",
            Self::Iob2 => "iob2",
        }
    }
}

impl fmt::Display for Decoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that names no [`Decoding`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown decoding `{input}`: expected argmax or iob2")]
pub struct ParseDecodingError {
    /// The string that was given.
    pub input: String,
}

impl FromStr for Decoding {
    type Err = ParseDecodingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == lower)
            .ok_or_else(|| ParseDecodingError {
                input: s.to_owned(),
            })
    }
}

/// One token of one encoding (one window) with its label probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScores<'a> {
    /// The vocabulary piece, as `convert_ids_to_tokens`/`id_to_token` gives it
    /// (e.g. `"##ab"` or `"▁كتب"`), not decoded text. Only its length is used, and only
    /// when the tokenizer has a `continuing_subword_prefix`.
    pub token: &'a str,
    /// Start of the token in the sentence, in characters (Unicode scalar values), as the
    /// fast tokenizer's `offset_mapping` reports it.
    pub start: usize,
    /// End (exclusive) of the token in the sentence, in characters.
    pub end: usize,
    /// The token is special (`special_tokens_mask == 1`: CLS/SEP, `<s>`/`</s>`, padding)
    /// and is dropped. Its scores and offsets are not looked at.
    pub special: bool,
    /// The token is the tokenizer's unknown token (`unk_token_id`): never a sub-word.
    pub unk: bool,
    /// Probabilities over the labels (softmax already applied), one per label.
    pub scores: &'a [f32],
    /// Position of the token in its encoding (special tokens included), reported as
    /// [`Entity::index`] by [`AggregationStrategy::None`].
    pub index: usize,
}

/// An entity (or, with [`AggregationStrategy::None`], a labelled token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// The label: transformers' `entity` (full label, e.g. `B-PER`) for
    /// [`AggregationStrategy::None`], its `entity_group` (prefix stripped, e.g. `PER`)
    /// otherwise.
    pub label: String,
    /// The token's probability for the label, or the mean over the grouped tokens/words.
    pub score: f32,
    /// Exactly `sentence[start..end]` counted in characters. **Differs from transformers**,
    /// whose `word` is a tokenizer decode of the pieces (possibly lower-cased or otherwise
    /// normalised); naba promises that an entity's text is a slice of the input.
    pub word: String,
    /// Start of the entity in the sentence, in characters.
    pub start: usize,
    /// End (exclusive) of the entity in the sentence, in characters.
    pub end: usize,
    /// Position of the token in its encoding; only for [`AggregationStrategy::None`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// Why token rows could not be aggregated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    /// The label list (`id2label`) is empty.
    #[error("the model has no labels (id2label is empty)")]
    NoLabels,
    /// A token's score row does not have one score per label.
    #[error("token at index {index} has {found} scores but there are {expected} labels")]
    ScoreLength {
        /// The token's [`TokenScores::index`].
        index: usize,
        /// Number of labels.
        expected: usize,
        /// Number of scores in the row.
        found: usize,
    },
    /// A non-special token's offsets are reversed or run past the end of the sentence.
    #[error(
        "token at index {index} has offsets {start}..{end}, outside a sentence of {chars} characters"
    )]
    Offsets {
        /// The token's [`TokenScores::index`].
        index: usize,
        /// Its start offset.
        start: usize,
        /// Its end offset.
        end: usize,
        /// Length of the sentence in characters.
        chars: usize,
    },
    /// Several windows with [`AggregationStrategy::None`]: transformers refuses `stride`
    /// without aggregation, because per-token results of overlapping windows cannot be
    /// merged.
    #[error(
        "{windows} overlapping windows need an aggregation strategy other than `none` (transformers refuses stride with `none`)"
    )]
    WindowsWithoutAggregation {
        /// Number of windows given.
        windows: usize,
    },
}

/// Turns the token rows of one encoding into entities with the pipeline's semantics (see the
/// [module documentation](self)).
///
/// * `sentence`: the original text; offsets index its characters.
/// * `tokens`: every token of the encoding in order, special tokens included (flagged).
/// * `id2label`: label names by score position.
/// * `continuing_subword_prefix`: the tokenizer model's prefix (`Some("##")` for WordPiece);
///   `None` or `Some("")` selects the space heuristic for `is_subword`.
/// * `ignore_labels`: labels to drop; pass [`DEFAULT_IGNORE_LABELS`] for the pipeline's
///   default `["O"]`.
///
/// Entities come out in token order. Errors (never panics) on an empty `id2label`, a score
/// row whose length differs from `id2label`'s, or offsets of a non-special token that are
/// reversed or past the end of `sentence`.
pub fn aggregate(
    sentence: &str,
    tokens: &[TokenScores<'_>],
    id2label: &[String],
    continuing_subword_prefix: Option<&str>,
    strategy: AggregationStrategy,
    ignore_labels: &[&str],
) -> Result<Vec<Entity>, AggregateError> {
    aggregate_windows(
        sentence,
        &[tokens],
        id2label,
        continuing_subword_prefix,
        strategy,
        ignore_labels,
    )
}

/// Like [`aggregate`], for a text encoded as several overlapping windows (the pipeline's
/// `stride`, i.e. `return_overflowing_tokens`): each window is aggregated and filtered on
/// its own, the results are concatenated in window order, and with more than one window
/// they go through [`merge_overlapping_entities`]. Offsets in every window index the same
/// `sentence`.
///
/// [`AggregationStrategy::None`] is refused for more than one window, as transformers
/// refuses `stride` with `none`. No windows give no entities.
pub fn aggregate_windows<'a, W>(
    sentence: &str,
    windows: &[W],
    id2label: &[String],
    continuing_subword_prefix: Option<&str>,
    strategy: AggregationStrategy,
    ignore_labels: &[&str],
) -> Result<Vec<Entity>, AggregateError>
where
    W: AsRef<[TokenScores<'a>]>,
{
    aggregate_windows_decoded(
        sentence,
        windows,
        id2label,
        continuing_subword_prefix,
        strategy,
        Decoding::Argmax,
        ignore_labels,
    )
}

/// [`aggregate_windows`] with a choice of how labels are decoded: [`Decoding::Argmax`] is
/// transformers' behaviour, [`Decoding::Iob2`] decodes each window's tokens (strategies
/// `none`, `simple`) or words (`first`, `average`, `max`, each word's row being the one its
/// strategy reads) as the best valid IOB2 sequence. Scores stay the probabilities of the
/// chosen labels.
pub fn aggregate_windows_decoded<'a, W>(
    sentence: &str,
    windows: &[W],
    id2label: &[String],
    continuing_subword_prefix: Option<&str>,
    strategy: AggregationStrategy,
    decoding: Decoding,
    ignore_labels: &[&str],
) -> Result<Vec<Entity>, AggregateError>
where
    W: AsRef<[TokenScores<'a>]>,
{
    if id2label.is_empty() {
        return Err(AggregateError::NoLabels);
    }
    if windows.len() > 1 && strategy == AggregationStrategy::None {
        return Err(AggregateError::WindowsWithoutAggregation {
            windows: windows.len(),
        });
    }
    let text = Sentence::new(sentence);
    let prefix = continuing_subword_prefix.filter(|p| !p.is_empty());
    let mut entities = Vec::new();
    for window in windows {
        entities.extend(aggregate_window(
            &text,
            window.as_ref(),
            id2label,
            prefix,
            strategy,
            decoding,
            ignore_labels,
        )?);
    }
    if windows.len() > 1 {
        entities = merge_overlapping_entities(entities);
    }
    Ok(entities)
}

/// Merges the entities of overlapping windows as the pipeline does
/// (`aggregate_overlapping_entities`):
///
/// the entities are sorted by start (stably, so on equal starts the earlier window comes
/// first) and walked while holding a current entity. An entity whose start lies inside the
/// held one (`held.start <= start < held.end`) replaces it if it is longer, or as long with a
/// strictly higher score; otherwise it is dropped. An entity starting outside the held one
/// emits the held one and becomes held. Note that a later entity is compared with the held
/// (winning) entity, not with its neighbour. This is what transformers does, including its
/// quirk that an empty entity (`start == end`) at the front is emitted twice.
pub fn merge_overlapping_entities(mut entities: Vec<Entity>) -> Vec<Entity> {
    if entities.is_empty() {
        return entities;
    }
    entities.sort_by_key(|e| e.start);
    let mut merged = Vec::with_capacity(entities.len());
    let mut iter = entities.into_iter();
    let Some(mut held) = iter.next() else {
        return merged;
    };
    // transformers starts its loop at the first entity, the one already held. It overlaps
    // itself and never replaces itself, unless it is empty: then it is emitted once here
    // and held again.
    if held.start >= held.end {
        merged.push(held.clone());
    }
    for entity in iter {
        if held.start <= entity.start && entity.start < held.end {
            let length = entity.end.saturating_sub(entity.start);
            let held_length = held.end.saturating_sub(held.start);
            if length > held_length || (length == held_length && entity.score > held.score) {
                held = entity;
            }
        } else {
            merged.push(std::mem::replace(&mut held, entity));
        }
    }
    merged.push(held);
    merged
}

/// The sentence with a character → byte index, for slicing by character offsets.
struct Sentence<'s> {
    text: &'s str,
    /// Byte offset of every character, plus the text length at the end.
    bounds: Vec<usize>,
}

impl<'s> Sentence<'s> {
    fn new(text: &'s str) -> Self {
        let bounds = text
            .char_indices()
            .map(|(byte, _)| byte)
            .chain(std::iter::once(text.len()))
            .collect();
        Self { text, bounds }
    }

    fn chars(&self) -> usize {
        self.bounds.len() - 1
    }

    /// `sentence[start:end]` in characters with Python's clamping (empty if reversed).
    fn slice(&self, start: usize, end: usize) -> &'s str {
        let n = self.chars();
        let (start, end) = (start.min(n), end.min(n));
        if end <= start {
            return "";
        }
        &self.text[self.bounds[start]..self.bounds[end]]
    }

    fn char_at(&self, index: usize) -> Option<char> {
        if index >= self.chars() {
            return None;
        }
        self.text[self.bounds[index]..].chars().next()
    }
}

/// A kept token, ready for labelling (transformers' "pre-entity").
struct PreEntity<'a> {
    scores: &'a [f32],
    start: usize,
    end: usize,
    index: usize,
    is_subword: bool,
}

/// A labelled token or word before grouping.
struct Labelled<'a> {
    label: usize,
    score: f32,
    /// The scores the label was chosen from (the token's, or the word's per its strategy);
    /// borrowed unless it is a mean.
    row: Cow<'a, [f32]>,
    start: usize,
    end: usize,
    index: Option<usize>,
}

fn aggregate_window(
    sentence: &Sentence<'_>,
    tokens: &[TokenScores<'_>],
    id2label: &[String],
    prefix: Option<&str>,
    strategy: AggregationStrategy,
    decoding: Decoding,
    ignore_labels: &[&str],
) -> Result<Vec<Entity>, AggregateError> {
    let pre = gather_pre_entities(sentence, tokens, id2label.len(), prefix)?;
    let mut labelled: Vec<Labelled> = if strategy.is_word_based() {
        aggregate_words(&pre, strategy)
    } else {
        pre.iter()
            .map(|p| {
                let (label, score) = best(p.scores);
                Labelled {
                    label,
                    score,
                    row: Cow::Borrowed(p.scores),
                    start: p.start,
                    end: p.end,
                    index: Some(p.index),
                }
            })
            .collect()
    };
    if decoding == Decoding::Iob2 {
        relabel_iob2(&mut labelled, id2label);
    }
    let entities = if strategy == AggregationStrategy::None {
        labelled
            .iter()
            .map(|l| Entity {
                label: id2label[l.label].clone(),
                score: l.score,
                word: sentence.slice(l.start, l.end).to_owned(),
                start: l.start,
                end: l.end,
                index: l.index,
            })
            .collect()
    } else {
        group_entities(sentence, &labelled, id2label)
    };
    Ok(entities
        .into_iter()
        .filter(|e| !ignore_labels.contains(&e.label.as_str()))
        .collect())
}

fn gather_pre_entities<'a>(
    sentence: &Sentence<'_>,
    tokens: &[TokenScores<'a>],
    num_labels: usize,
    prefix: Option<&str>,
) -> Result<Vec<PreEntity<'a>>, AggregateError> {
    let mut pre = Vec::with_capacity(tokens.len());
    for token in tokens {
        if token.scores.len() != num_labels {
            return Err(AggregateError::ScoreLength {
                index: token.index,
                expected: num_labels,
                found: token.scores.len(),
            });
        }
        if token.special {
            continue;
        }
        if token.start > token.end || token.end > sentence.chars() {
            return Err(AggregateError::Offsets {
                index: token.index,
                start: token.start,
                end: token.end,
                chars: sentence.chars(),
            });
        }
        pre.push(PreEntity {
            scores: token.scores,
            start: token.start,
            end: token.end,
            index: token.index,
            is_subword: is_subword(sentence, token, prefix),
        });
    }
    Ok(pre)
}

/// The pipeline's `is_subword` decision (see the module documentation).
fn is_subword(sentence: &Sentence<'_>, token: &TokenScores<'_>, prefix: Option<&str>) -> bool {
    if token.unk {
        return false;
    }
    match prefix {
        Some(_) => token.token.chars().count() != token.end - token.start,
        None => {
            token.start > 0
                && sentence.char_at(token.start - 1) != Some(' ')
                && sentence.char_at(token.start) != Some(' ')
        }
    }
}

/// Argmax label and its score; rows are non-empty (checked against `id2label`).
fn best(scores: &[f32]) -> (usize, f32) {
    let label = numpy_argmax(scores).unwrap_or(0);
    (label, scores.get(label).copied().unwrap_or(f32::NAN))
}

/// Gathers tokens into words (a new word at every token that is not a sub-word) and labels
/// each word.
fn aggregate_words<'a>(pre: &[PreEntity<'a>], strategy: AggregationStrategy) -> Vec<Labelled<'a>> {
    let mut words = Vec::new();
    let mut word_start = 0;
    for i in 1..=pre.len() {
        if i == pre.len() || !pre[i].is_subword {
            if let Some(word) = aggregate_word(&pre[word_start..i], strategy) {
                words.push(word);
            }
            word_start = i;
        }
    }
    words
}

fn aggregate_word<'a>(
    tokens: &[PreEntity<'a>],
    strategy: AggregationStrategy,
) -> Option<Labelled<'a>> {
    let first = tokens.first()?;
    let last = tokens.last()?;
    let (label, score, row) = match strategy {
        AggregationStrategy::Max => {
            // Python's max(key=...): the first token whose best score is strictly greater
            // than every earlier one; NumPy's max propagates NaN.
            let mut chosen = first;
            let mut chosen_key = numpy_max(first.scores).unwrap_or(f32::NAN);
            for token in &tokens[1..] {
                let key = numpy_max(token.scores).unwrap_or(f32::NAN);
                if key > chosen_key {
                    chosen = token;
                    chosen_key = key;
                }
            }
            let (label, score) = best(chosen.scores);
            (label, score, Cow::Borrowed(chosen.scores))
        }
        AggregationStrategy::Average => {
            let mean = mean_rows(tokens);
            let (label, score) = best(&mean);
            (label, score, Cow::Owned(mean))
        }
        // First, and (unreachable) None/Simple.
        _ => {
            let (label, score) = best(first.scores);
            (label, score, Cow::Borrowed(first.scores))
        }
    };
    Some(Labelled {
        label,
        score,
        row,
        start: first.start,
        end: last.end,
        index: None,
    })
}

/// `np.nanmean(np.stack(rows), axis=0)` in float32, with NumPy's summation order: down a
/// column of a C-ordered matrix NumPy adds row after row, except when there is one column,
/// where the reduction is contiguous and pairwise.
fn mean_rows(tokens: &[PreEntity<'_>]) -> Vec<f32> {
    let width = tokens.first().map_or(0, |t| t.scores.len());
    if width == 1 {
        let column: Vec<f32> = tokens.iter().map(|t| t.scores[0]).collect();
        return vec![numpy_nanmean(&column)];
    }
    let mut sums = vec![0.0f32; width];
    let mut counts = vec![0usize; width];
    for token in tokens {
        for ((sum, count), &v) in sums.iter_mut().zip(counts.iter_mut()).zip(token.scores) {
            if !v.is_nan() {
                *sum += v;
                *count += 1;
            }
        }
    }
    sums.into_iter()
        .zip(counts)
        .map(|(sum, count)| sum / count as f32)
        .collect()
}

/// Replaces the argmax labels of one window by its most probable valid IOB2 sequence.
fn relabel_iob2(labelled: &mut [Labelled<'_>], id2label: &[String]) {
    let rows: Vec<&[f32]> = labelled.iter().map(|l| l.row.as_ref()).collect();
    let Some(path) = iob2_viterbi(&rows, id2label) else {
        return;
    };
    for (l, label) in labelled.iter_mut().zip(path) {
        l.label = label;
        l.score = l.row.get(label).copied().unwrap_or(f32::NAN);
    }
}

/// The label sequence maximising the sum of log-probabilities in which every `I-x` follows
/// `B-x` or `I-x`; `None` when there are no rows or no valid sequence (a label set of `I-`
/// labels only), and the caller keeps argmax.
fn iob2_viterbi(rows: &[&[f32]], id2label: &[String]) -> Option<Vec<usize>> {
    // Which labels may start a window, and which may follow which: an `I-x` only after `B-x`
    // or `I-x`; every other label anywhere.
    let n_labels = id2label.len();
    let inside: Vec<Option<&str>> = id2label.iter().map(|l| l.strip_prefix("I-")).collect();
    let tag: Vec<Option<&str>> = id2label
        .iter()
        .map(|l| l.strip_prefix("B-").or_else(|| l.strip_prefix("I-")))
        .collect();
    let can_start: Vec<bool> = inside.iter().map(Option::is_none).collect();
    let can_follow: Vec<bool> = (0..n_labels * n_labels)
        .map(|k| {
            let (prev, cur) = (k / n_labels, k % n_labels);
            inside[cur].is_none() || inside[cur] == tag[prev]
        })
        .collect();
    // NaN or zero probabilities must not win, nor poison the sums.
    let log = |p: f32| {
        if p.is_nan() {
            f64::NEG_INFINITY
        } else {
            f64::from(p.max(0.0)).ln()
        }
    };
    let first = rows.first()?;
    let mut score: Vec<f64> = (0..n_labels)
        .map(|j| {
            if can_start[j] {
                log(first.get(j).copied().unwrap_or(f32::NAN))
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let mut back: Vec<Vec<usize>> = Vec::with_capacity(rows.len());
    for row in &rows[1..] {
        let mut next = vec![f64::NEG_INFINITY; n_labels];
        let mut from = vec![0usize; n_labels];
        for (j, (slot, origin)) in next.iter_mut().zip(from.iter_mut()).enumerate() {
            let emit = log(row.get(j).copied().unwrap_or(f32::NAN));
            for (i, &prev) in score.iter().enumerate() {
                // `>` keeps the lowest label index on ties, as argmax does.
                if can_follow[i * n_labels + j] && prev + emit > *slot {
                    *slot = prev + emit;
                    *origin = i;
                }
            }
        }
        score = next;
        back.push(from);
    }
    let mut label = (0..n_labels)
        .filter(|&j| score[j] > f64::NEG_INFINITY)
        .fold(None, |acc: Option<usize>, j| match acc {
            Some(a) if score[a] >= score[j] => Some(a),
            _ => Some(j),
        })?;
    let mut path = vec![label; rows.len()];
    for (k, from) in back.iter().enumerate().rev() {
        label = from[label];
        path[k] = label;
    }
    Some(path)
}

/// B/I tag of a label as the pipeline's `get_tag` reads it: `B-x` → (B, x), `I-x` → (I, x),
/// anything else → (I, whole label).
fn get_tag(label: &str) -> (bool, &str) {
    if let Some(tag) = label.strip_prefix("B-") {
        (true, tag)
    } else if let Some(tag) = label.strip_prefix("I-") {
        (false, tag)
    } else {
        (false, label)
    }
}

/// Label of a group: the first member's label after its first `-` (whole label if none).
fn group_label(label: &str) -> &str {
    label.split_once('-').map_or(label, |(_, rest)| rest)
}

fn group_entities(
    sentence: &Sentence<'_>,
    labelled: &[Labelled<'_>],
    id2label: &[String],
) -> Vec<Entity> {
    let mut groups = Vec::new();
    let mut group_start = 0;
    for i in 1..=labelled.len() {
        let split = i == labelled.len() || {
            let (is_b, tag) = get_tag(&id2label[labelled[i].label]);
            let (_, last_tag) = get_tag(&id2label[labelled[i - 1].label]);
            is_b || tag != last_tag
        };
        if split {
            if let Some(group) = group_sub_entities(sentence, &labelled[group_start..i], id2label) {
                groups.push(group);
            }
            group_start = i;
        }
    }
    groups
}

fn group_sub_entities(
    sentence: &Sentence<'_>,
    members: &[Labelled<'_>],
    id2label: &[String],
) -> Option<Entity> {
    let first = members.first()?;
    let last = members.last()?;
    let scores: Vec<f32> = members.iter().map(|m| m.score).collect();
    Some(Entity {
        label: group_label(&id2label[first.label]).to_owned(),
        score: numpy_nanmean(&scores),
        word: sentence.slice(first.start, last.end).to_owned(),
        start: first.start,
        end: last.end,
        index: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token row; `special` rows get offsets (0, 0).
    struct Row {
        token: &'static str,
        start: usize,
        end: usize,
        special: bool,
        unk: bool,
        scores: Vec<f32>,
    }

    fn tok(token: &'static str, start: usize, end: usize, scores: &[f32]) -> Row {
        Row {
            token,
            start,
            end,
            special: false,
            unk: false,
            scores: scores.to_vec(),
        }
    }

    fn special(token: &'static str, width: usize) -> Row {
        Row {
            token,
            start: 0,
            end: 0,
            special: true,
            unk: false,
            scores: vec![1.0 / width as f32; width],
        }
    }

    fn rows_to_tokens(rows: &[Row]) -> Vec<TokenScores<'_>> {
        rows.iter()
            .enumerate()
            .map(|(index, r)| TokenScores {
                token: r.token,
                start: r.start,
                end: r.end,
                special: r.special,
                unk: r.unk,
                scores: &r.scores,
                index,
            })
            .collect()
    }

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// One-hot-ish probabilities: `p` on `label`, the rest spread evenly.
    fn p(width: usize, label: usize, prob: f32) -> Vec<f32> {
        let rest = (1.0 - prob) / (width - 1) as f32;
        (0..width)
            .map(|i| if i == label { prob } else { rest })
            .collect()
    }

    fn run(
        sentence: &str,
        rows: &[Row],
        id2label: &[String],
        prefix: Option<&str>,
        strategy: AggregationStrategy,
    ) -> Vec<Entity> {
        aggregate(
            sentence,
            &rows_to_tokens(rows),
            id2label,
            prefix,
            strategy,
            DEFAULT_IGNORE_LABELS,
        )
        .expect("aggregate")
    }

    fn summary(entities: &[Entity]) -> Vec<(String, String, usize, usize)> {
        entities
            .iter()
            .map(|e| (e.label.clone(), e.word.clone(), e.start, e.end))
            .collect()
    }

    fn s(label: &str, word: &str, start: usize, end: usize) -> (String, String, usize, usize) {
        (label.to_owned(), word.to_owned(), start, end)
    }

    const IOB: &[&str] = &["O", "B-PER", "I-PER", "B-LOC", "I-LOC"];

    /// "Microsoft company" as WordPiece: Micro ##soft com ##pany, with CLS/SEP.
    fn microsoft(l: [usize; 4]) -> Vec<Row> {
        vec![
            special("[CLS]", 5),
            tok("Micro", 0, 5, &p(5, l[0], 0.9)),
            tok("##soft", 5, 9, &p(5, l[1], 0.6)),
            tok("com", 10, 13, &p(5, l[2], 0.7)),
            tok("##pany", 13, 17, &p(5, l[3], 0.8)),
            special("[SEP]", 5),
        ]
    }

    #[test]
    fn strategy_parse_and_display() {
        for strategy in AggregationStrategy::ALL {
            assert_eq!(strategy.to_string().parse(), Ok(strategy));
        }
        assert_eq!("SIMPLE".parse(), Ok(AggregationStrategy::Simple));
        let err = "mean".parse::<AggregationStrategy>().unwrap_err();
        assert!(err.to_string().contains("`mean`"));
        assert!(err.to_string().contains("average"));
        assert_eq!(AggregationStrategy::default(), AggregationStrategy::None);
    }

    #[test]
    fn none_reports_tokens_with_index_and_drops_specials_and_o() {
        let l = labels(IOB);
        let rows = microsoft([1, 2, 0, 3]);
        let e = run(
            "Microsoft company",
            &rows,
            &l,
            Some("##"),
            AggregationStrategy::None,
        );
        assert_eq!(
            summary(&e),
            vec![
                s("B-PER", "Micro", 0, 5),
                s("I-PER", "soft", 5, 9),
                s("B-LOC", "pany", 13, 17)
            ]
        );
        let idx: Vec<Option<usize>> = e.iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![Some(1), Some(2), Some(4)]);
        assert_eq!(e[0].score, 0.9);
        assert_eq!(e[2].score, 0.8);
    }

    #[test]
    fn simple_groups_b_i_and_splits_words() {
        let l = labels(IOB);
        // Micro=B-PER, ##soft=I-LOC: simple splits the word.
        let rows = microsoft([1, 4, 0, 0]);
        let e = run(
            "Microsoft company",
            &rows,
            &l,
            Some("##"),
            AggregationStrategy::Simple,
        );
        assert_eq!(
            summary(&e),
            vec![s("PER", "Micro", 0, 5), s("LOC", "soft", 5, 9)]
        );
        assert!(e.iter().all(|e| e.index.is_none()));

        let rows = microsoft([1, 2, 2, 2]);
        let e = run(
            "Microsoft company",
            &rows,
            &l,
            Some("##"),
            AggregationStrategy::Simple,
        );
        assert_eq!(summary(&e), vec![s("PER", "Microsoft company", 0, 17)]);
        // Mean of 0.9, 0.6, 0.7, 0.8 in float32.
        assert_eq!(e[0].score, ((0.9f32 + 0.6) + 0.7 + 0.8) / 4.0);
    }

    #[test]
    fn first_average_max_force_word_agreement() {
        let l = labels(IOB);
        let sentence = "Microsoft company";
        // Micro: B-PER 0.9, ##soft: I-LOC 0.6 -> first keeps PER for the whole word.
        let rows = microsoft([1, 4, 0, 0]);
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::First);
        assert_eq!(summary(&e), vec![s("PER", "Microsoft", 0, 9)]);
        assert_eq!(e[0].score, 0.9);
        // max picks the most confident token (Micro, 0.9).
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::Max);
        assert_eq!(summary(&e), vec![s("PER", "Microsoft", 0, 9)]);
        assert_eq!(e[0].score, 0.9);

        // Now ##soft is the confident one.
        let mut rows = microsoft([1, 4, 0, 0]);
        rows[1].scores = p(5, 1, 0.5);
        rows[2].scores = p(5, 4, 0.95);
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::Max);
        assert_eq!(summary(&e), vec![s("LOC", "Microsoft", 0, 9)]);
        assert_eq!(e[0].score, 0.95);
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::First);
        assert_eq!(summary(&e), vec![s("PER", "Microsoft", 0, 9)]);
        assert_eq!(e[0].score, 0.5);
        // average: PER = (0.5 + 0.0125) / 2, LOC(I) = (0.125 + 0.95) / 2 -> I-LOC.
        let e = run(
            sentence,
            &rows,
            &l,
            Some("##"),
            AggregationStrategy::Average,
        );
        assert_eq!(summary(&e), vec![s("LOC", "Microsoft", 0, 9)]);
        let expected = (rows[1].scores[4] + rows[2].scores[4]) / 2.0;
        assert_eq!(e[0].score, expected);
    }

    #[test]
    fn consecutive_b_tags_stay_separate_and_i_continues() {
        let l = labels(IOB);
        let sentence = "Ali Omar Sami";
        let rows = vec![
            special("[CLS]", 5),
            tok("Ali", 0, 3, &p(5, 1, 0.9)),
            tok("Omar", 4, 8, &p(5, 1, 0.8)),
            tok("Sami", 9, 13, &p(5, 2, 0.7)),
            special("[SEP]", 5),
        ];
        for strategy in [
            AggregationStrategy::Simple,
            AggregationStrategy::First,
            AggregationStrategy::Average,
            AggregationStrategy::Max,
        ] {
            let e = run(sentence, &rows, &l, Some("##"), strategy);
            assert_eq!(
                summary(&e),
                vec![s("PER", "Ali", 0, 3), s("PER", "Omar Sami", 4, 13)],
                "{strategy}"
            );
        }
    }

    #[test]
    fn i_without_b_starts_an_entity_and_o_separates() {
        let l = labels(IOB);
        let sentence = "x Ali y Cairo";
        let rows = vec![
            tok("x", 0, 1, &p(5, 0, 0.9)),
            tok("Ali", 2, 5, &p(5, 2, 0.8)),
            tok("y", 6, 7, &p(5, 0, 0.9)),
            tok("Cairo", 8, 13, &p(5, 4, 0.6)),
        ];
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::Simple);
        assert_eq!(
            summary(&e),
            vec![s("PER", "Ali", 2, 5), s("LOC", "Cairo", 8, 13)]
        );
        // I-PER directly after I-LOC: different tags, new entity.
        let rows = vec![
            tok("Ali", 0, 3, &p(5, 4, 0.8)),
            tok("y", 4, 5, &p(5, 2, 0.9)),
        ];
        let e = run("Ali y", &rows, &l, Some("##"), AggregationStrategy::Simple);
        assert_eq!(
            summary(&e),
            vec![s("LOC", "Ali", 0, 3), s("PER", "y", 4, 5)]
        );
    }

    #[test]
    fn bioes_follows_transformers_get_tag() {
        let l = labels(&["O", "B-PER", "I-PER", "E-PER", "S-PER", "S-LOC"]);
        let sentence = "a b c d e f";
        let rows = vec![
            tok("a", 0, 1, &p(6, 1, 0.9)),   // B-PER
            tok("b", 2, 3, &p(6, 2, 0.9)),   // I-PER  -> merges with B
            tok("c", 4, 5, &p(6, 3, 0.9)),   // E-PER  -> tag "E-PER" != "PER": new group
            tok("d", 6, 7, &p(6, 4, 0.9)),   // S-PER  -> new group
            tok("e", 8, 9, &p(6, 4, 0.9)),   // S-PER  -> same tag "S-PER", not B: merges
            tok("f", 10, 11, &p(6, 5, 0.9)), // S-LOC -> new group
        ];
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::Simple);
        assert_eq!(
            summary(&e),
            vec![
                s("PER", "a b", 0, 3),
                s("PER", "c", 4, 5),
                s("PER", "d e", 6, 9),
                s("LOC", "f", 10, 11),
            ]
        );
    }

    #[test]
    fn plain_labels_merge_adjacent_same_label() {
        let l = labels(&["O", "PERS", "LOC", "ORG-GOV"]);
        let sentence = "a b c d";
        let rows = vec![
            tok("a", 0, 1, &p(4, 1, 0.9)),
            tok("b", 2, 3, &p(4, 1, 0.7)),
            tok("c", 4, 5, &p(4, 2, 0.9)),
            tok("d", 6, 7, &p(4, 3, 0.9)),
        ];
        let e = run(sentence, &rows, &l, None, AggregationStrategy::Simple);
        // A plain label with a dash loses everything up to its first dash, as in transformers.
        assert_eq!(
            summary(&e),
            vec![
                s("PERS", "a b", 0, 3),
                s("LOC", "c", 4, 5),
                s("GOV", "d", 6, 7)
            ]
        );
        // Plain label after B- of the same tag continues it.
        let l = labels(&["O", "B-PER", "PER"]);
        let rows = vec![tok("a", 0, 1, &p(3, 1, 0.9)), tok("b", 2, 3, &p(3, 2, 0.9))];
        let e = run("a b", &rows, &l, None, AggregationStrategy::Simple);
        assert_eq!(summary(&e), vec![s("PER", "a b", 0, 3)]);
    }

    #[test]
    fn ignore_labels_apply_after_grouping() {
        let l = labels(IOB);
        let rows = microsoft([1, 2, 3, 4]);
        let tokens = rows_to_tokens(&rows);
        let sentence = "Microsoft company";
        let all = aggregate(
            sentence,
            &tokens,
            &l,
            Some("##"),
            AggregationStrategy::Simple,
            &[],
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        // Grouped strategies test the stripped label.
        let e = aggregate(
            sentence,
            &tokens,
            &l,
            Some("##"),
            AggregationStrategy::Simple,
            &["PER"],
        )
        .unwrap();
        assert_eq!(summary(&e), vec![s("LOC", "company", 10, 17)]);
        let e = aggregate(
            sentence,
            &tokens,
            &l,
            Some("##"),
            AggregationStrategy::Simple,
            &["B-PER"],
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        // `none` tests the full label.
        let e = aggregate(
            sentence,
            &tokens,
            &l,
            Some("##"),
            AggregationStrategy::None,
            &["B-PER", "I-LOC"],
        )
        .unwrap();
        let got: Vec<&str> = e.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(got, ["I-PER", "B-LOC"]);
        // With no ignore list, O groups come out too.
        let rows = microsoft([0, 0, 1, 0]);
        let e = aggregate(
            sentence,
            &rows_to_tokens(&rows),
            &l,
            Some("##"),
            AggregationStrategy::Simple,
            &[],
        )
        .unwrap();
        assert_eq!(
            summary(&e),
            vec![
                s("O", "Microsoft", 0, 9),
                s("PER", "com", 10, 13),
                s("O", "pany", 13, 17)
            ]
        );
    }

    #[test]
    fn arabic_offsets_are_characters() {
        // "ذهب محمد إلى القاهرة" with WordPiece pieces; offsets count characters.
        let sentence = "ذهب محمد إلى القاهرة";
        let l = labels(IOB);
        let rows = vec![
            special("[CLS]", 5),
            tok("ذهب", 0, 3, &p(5, 0, 0.9)),
            tok("محم", 4, 7, &p(5, 1, 0.8)),
            tok("##د", 7, 8, &p(5, 2, 0.6)),
            tok("إلى", 9, 12, &p(5, 0, 0.9)),
            tok("ال", 13, 15, &p(5, 3, 0.7)),
            tok("##قاهرة", 15, 20, &p(5, 0, 0.55)),
            special("[SEP]", 5),
        ];
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::First);
        assert_eq!(
            summary(&e),
            vec![s("PER", "محمد", 4, 8), s("LOC", "القاهرة", 13, 20)]
        );
        let chars: Vec<char> = sentence.chars().collect();
        for entity in &e {
            let slice: String = chars[entity.start..entity.end].iter().collect();
            assert_eq!(entity.word, slice);
        }
        // simple leaves the ##قاهرة piece as O.
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::Simple);
        assert_eq!(
            summary(&e),
            vec![s("PER", "محمد", 4, 8), s("LOC", "ال", 13, 15)]
        );
    }

    #[test]
    fn length_rule_counts_normalised_first_pieces_as_subwords() {
        // A BERT normaliser that strips diacritics turns "كَتَبَ" (6 chars) into the piece
        // "كتب" (3): lengths differ, so transformers treats it as a sub-word and glues it to
        // the previous word under word strategies.
        let sentence = "علي كَتَبَ";
        let l = labels(IOB);
        let rows = vec![
            tok("علي", 0, 3, &p(5, 1, 0.9)),
            tok("كتب", 4, 10, &p(5, 0, 0.9)),
        ];
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::First);
        assert_eq!(summary(&e), vec![s("PER", "علي كَتَبَ", 0, 10)]);
        // An unknown token is never a sub-word.
        let mut rows = rows;
        rows[1].unk = true;
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::First);
        assert_eq!(summary(&e), vec![s("PER", "علي", 0, 3)]);
    }

    #[test]
    fn fallback_heuristic_uses_ascii_spaces_only() {
        // SentencePiece-style pieces, no continuing prefix: a token continues a word unless it
        // starts the text, follows a ' ', or starts with one.
        let sentence = "محمد\tعلي-سالم";
        let l = labels(IOB);
        let rows = vec![
            special("<s>", 5),
            tok("▁محمد", 0, 4, &p(5, 1, 0.9)),
            tok("▁علي", 5, 8, &p(5, 0, 0.9)), // after a tab: still a sub-word
            tok("-", 8, 9, &p(5, 0, 0.9)),
            tok("سالم", 9, 13, &p(5, 0, 0.9)),
            special("</s>", 5),
        ];
        let e = run(sentence, &rows, &l, None, AggregationStrategy::First);
        assert_eq!(summary(&e), vec![s("PER", "محمد\tعلي-سالم", 0, 13)]);
        // With a space, the words separate. A token that starts on the space itself is not
        // a sub-word either.
        let sentence = "محمد علي";
        let rows = vec![
            tok("▁محمد", 0, 4, &p(5, 1, 0.9)),
            tok("▁", 4, 5, &p(5, 0, 0.9)),
            tok("علي", 5, 8, &p(5, 0, 0.9)),
        ];
        let e = run(sentence, &rows, &l, None, AggregationStrategy::First);
        assert_eq!(summary(&e), vec![s("PER", "محمد", 0, 4)]);
        let e = run(sentence, &rows, &l, Some(""), AggregationStrategy::First);
        assert_eq!(summary(&e), vec![s("PER", "محمد", 0, 4)]);
    }

    #[test]
    fn leading_subword_starts_a_word() {
        let sentence = "abc";
        let l = labels(IOB);
        let rows = vec![
            tok("##a", 0, 1, &p(5, 1, 0.9)),
            tok("##bc", 1, 3, &p(5, 4, 0.95)),
        ];
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::First);
        assert_eq!(summary(&e), vec![s("PER", "abc", 0, 3)]);
        let e = run(sentence, &rows, &l, Some("##"), AggregationStrategy::Max);
        assert_eq!(summary(&e), vec![s("LOC", "abc", 0, 3)]);
    }

    #[test]
    fn ties_take_the_first_label_and_token() {
        let l = labels(IOB);
        let rows = vec![
            tok("a", 0, 1, &[0.1, 0.4, 0.1, 0.4, 0.0]),
            tok("##b", 1, 2, &[0.1, 0.1, 0.1, 0.3, 0.4]),
        ];
        let e = run("ab", &rows, &l, Some("##"), AggregationStrategy::Max);
        // Both tokens peak at 0.4: the first token wins, and within it the first label.
        assert_eq!(summary(&e), vec![s("PER", "ab", 0, 2)]);
        assert_eq!(e[0].score, 0.4);
    }

    #[test]
    fn errors_instead_of_panics() {
        let rows = vec![tok("a", 0, 1, &[0.5, 0.5])];
        let tokens = rows_to_tokens(&rows);
        let none = AggregationStrategy::None;
        assert_eq!(
            aggregate("a", &tokens, &[], None, none, &[]),
            Err(AggregateError::NoLabels)
        );
        let three = labels(&["O", "B-PER", "I-PER"]);
        assert_eq!(
            aggregate("a", &tokens, &three, None, none, &[]),
            Err(AggregateError::ScoreLength {
                index: 0,
                expected: 3,
                found: 2
            })
        );
        let two = labels(&["O", "PER"]);
        let rows = vec![tok("abc", 0, 3, &[0.5, 0.5])];
        let err = aggregate("a", &rows_to_tokens(&rows), &two, None, none, &[]).unwrap_err();
        assert!(matches!(err, AggregateError::Offsets { chars: 1, .. }));
        let rows = vec![tok("a", 1, 0, &[0.5, 0.5])];
        assert!(aggregate("ab", &rows_to_tokens(&rows), &two, None, none, &[]).is_err());
        // Empty input, empty rows.
        for strategy in AggregationStrategy::ALL {
            assert_eq!(aggregate("", &[], &two, None, strategy, &[]), Ok(vec![]));
        }
        let rows = vec![tok("a", 0, 1, &[])];
        assert!(aggregate("a", &rows_to_tokens(&rows), &two, None, none, &[]).is_err());
        // Windows without aggregation.
        let rows = vec![tok("a", 0, 1, &[0.5, 0.5])];
        let t = rows_to_tokens(&rows);
        assert_eq!(
            aggregate_windows("a", &[t.clone(), t], &two, None, none, &[]),
            Err(AggregateError::WindowsWithoutAggregation { windows: 2 })
        );
    }

    #[test]
    fn nan_scores_do_not_panic() {
        let l = labels(IOB);
        let rows = vec![
            tok("a", 0, 1, &[0.1, f32::NAN, 0.1, 0.1, 0.1]),
            tok("##b", 1, 2, &[f32::NAN; 5]),
        ];
        for strategy in AggregationStrategy::ALL {
            let e = run("ab", &rows, &l, Some("##"), strategy);
            assert!(!e.is_empty(), "{strategy}");
        }
    }

    #[test]
    fn windows_are_merged_like_transformers() {
        // Two windows over "Ali lives in Cairo now": the first sees "Ali lives in Cai", the
        // second "in Cairo now". The overlap's entities are resolved by length then score.
        let sentence = "Ali lives in Cairo now";
        let l = labels(IOB);
        let w1 = vec![
            special("[CLS]", 5),
            tok("Ali", 0, 3, &p(5, 1, 0.9)),
            tok("lives", 4, 9, &p(5, 0, 0.9)),
            tok("in", 10, 12, &p(5, 0, 0.9)),
            tok("Cai", 13, 16, &p(5, 3, 0.99)),
            special("[SEP]", 5),
        ];
        let w2 = vec![
            special("[CLS]", 5),
            tok("in", 10, 12, &p(5, 0, 0.9)),
            tok("Cai", 13, 16, &p(5, 3, 0.7)),
            tok("##ro", 16, 18, &p(5, 4, 0.7)),
            tok("now", 19, 22, &p(5, 0, 0.9)),
            special("[SEP]", 5),
            special("[PAD]", 5),
        ];
        let windows = [rows_to_tokens(&w1), rows_to_tokens(&w2)];
        let e = aggregate_windows(
            sentence,
            &windows,
            &l,
            Some("##"),
            AggregationStrategy::Simple,
            DEFAULT_IGNORE_LABELS,
        )
        .unwrap();
        // "Cai" (13..16, 0.99) and "Cairo" (13..18, 0.7): the longer one wins.
        assert_eq!(
            summary(&e),
            vec![s("PER", "Ali", 0, 3), s("LOC", "Cairo", 13, 18)]
        );
        assert_eq!(e[1].score, 0.7);
    }

    fn ent(start: usize, end: usize, score: f32, label: &str) -> Entity {
        Entity {
            label: label.to_owned(),
            score,
            word: String::new(),
            start,
            end,
            index: None,
        }
    }

    #[test]
    fn merge_overlapping_rules() {
        assert!(merge_overlapping_entities(vec![]).is_empty());
        // Same span: higher score wins; equal score: earlier (first window) wins.
        let m = merge_overlapping_entities(vec![ent(0, 3, 0.5, "a"), ent(0, 3, 0.6, "b")]);
        assert_eq!(m, vec![ent(0, 3, 0.6, "b")]);
        let m = merge_overlapping_entities(vec![ent(0, 3, 0.5, "a"), ent(0, 3, 0.5, "b")]);
        assert_eq!(m, vec![ent(0, 3, 0.5, "a")]);
        // Sorted by start; a shorter overlapping entity is dropped.
        let m = merge_overlapping_entities(vec![
            ent(10, 12, 0.9, "c"),
            ent(0, 5, 0.5, "a"),
            ent(2, 4, 0.9, "b"),
        ]);
        assert_eq!(m, vec![ent(0, 5, 0.5, "a"), ent(10, 12, 0.9, "c")]);
        // Compared with the held entity, not the neighbour: (0,5) holds, (4,6) is shorter
        // and dropped, (5,7) starts outside (0,5) and is kept.
        let m = merge_overlapping_entities(vec![
            ent(0, 5, 0.5, "a"),
            ent(4, 6, 0.9, "b"),
            ent(5, 7, 0.9, "c"),
        ]);
        assert_eq!(m, vec![ent(0, 5, 0.5, "a"), ent(5, 7, 0.9, "c")]);
        // transformers' quirk: an empty first entity is emitted twice.
        let m = merge_overlapping_entities(vec![ent(0, 0, 0.5, "a"), ent(3, 4, 0.5, "b")]);
        assert_eq!(
            m,
            vec![
                ent(0, 0, 0.5, "a"),
                ent(0, 0, 0.5, "a"),
                ent(3, 4, 0.5, "b")
            ]
        );
    }

    #[test]
    fn entity_serialises_without_absent_index() {
        let e = ent(0, 3, 0.5, "PER");
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("index"));
        let back: Entity = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn decoding_parse_and_display() {
        for d in Decoding::ALL {
            assert_eq!(d.to_string().parse(), Ok(d));
        }
        assert_eq!("IOB2".parse(), Ok(Decoding::Iob2));
        let err = "crf".parse::<Decoding>().unwrap_err();
        assert!(err.to_string().contains("`crf`"));
        assert_eq!(Decoding::default(), Decoding::Argmax);
    }

    /// Every label sequence of `n` positions over `width` labels.
    fn all_paths(n: usize, width: usize) -> Vec<Vec<usize>> {
        (0..width.pow(n as u32))
            .map(|mut code| {
                (0..n)
                    .map(|_| {
                        let l = code % width;
                        code /= width;
                        l
                    })
                    .collect()
            })
            .collect()
    }

    fn valid_iob2(path: &[usize], id2label: &[String]) -> bool {
        path.iter().enumerate().all(|(k, &l)| {
            let Some(tag) = id2label[l].strip_prefix("I-") else {
                return true;
            };
            let prev = k.checked_sub(1).map(|j| id2label[path[j]].as_str());
            prev.is_some_and(|p| p == format!("B-{tag}") || p == format!("I-{tag}"))
        })
    }

    #[test]
    fn iob2_viterbi_finds_the_best_valid_path_by_brute_force() {
        let l = labels(IOB);
        // A small linear congruential generator: the test is deterministic.
        let mut state = 0x2545_f491_u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as f32 / (1u64 << 31) as f32).max(1e-4)
        };
        for n in 1..=4 {
            for _ in 0..50 {
                let rows: Vec<Vec<f32>> = (0..n)
                    .map(|_| {
                        let raw: Vec<f32> = (0..l.len()).map(|_| next()).collect();
                        let sum: f32 = raw.iter().sum();
                        raw.into_iter().map(|v| v / sum).collect()
                    })
                    .collect();
                let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
                let got = iob2_viterbi(&refs, &l).expect("a valid path exists");
                assert!(valid_iob2(&got, &l), "{got:?} is not valid IOB2");
                let logp = |path: &[usize]| -> f64 {
                    path.iter()
                        .zip(&rows)
                        .map(|(&j, r)| f64::from(r[j]).ln())
                        .sum()
                };
                let best = all_paths(n, l.len())
                    .into_iter()
                    .filter(|path| valid_iob2(path, &l))
                    .map(|path| logp(&path))
                    .fold(f64::NEG_INFINITY, f64::max);
                assert!((logp(&got) - best).abs() < 1e-9, "{got:?} for {rows:?}");
            }
        }
    }

    #[test]
    fn iob2_viterbi_keeps_a_valid_argmax_and_needs_inside_labels() {
        let l = labels(IOB);
        let rows = [p(5, 1, 0.9), p(5, 2, 0.8), p(5, 0, 0.7), p(5, 3, 0.6)];
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        assert_eq!(iob2_viterbi(&refs, &l), Some(vec![1, 2, 0, 3]));
        assert_eq!(iob2_viterbi(&[], &l), None);
        // Only inside labels: nothing may start a sequence, so argmax is kept.
        let only_inside = labels(&["I-PER", "I-LOC"]);
        assert_eq!(iob2_viterbi(&[&[0.6, 0.4]], &only_inside), None);
    }

    #[test]
    fn iob2_decoding_repairs_what_argmax_groups_wrongly() {
        let l = labels(IOB);
        // "Ali Baba went": argmax says B-PER, I-LOC, O; B-PER I-PER is the better valid path
        // (0.8 * 0.35 against B-LOC I-LOC's 0.1 * 0.45).
        let rows = vec![
            special("<s>", 5),
            tok("\u{2581}Ali", 0, 3, &[0.05, 0.8, 0.0, 0.1, 0.05]),
            tok("\u{2581}Baba", 4, 8, &[0.1, 0.05, 0.35, 0.05, 0.45]),
            tok("\u{2581}went", 9, 13, &p(5, 0, 0.9)),
            special("</s>", 5),
        ];
        let tokens = rows_to_tokens(&rows);
        let decode = |decoding| {
            aggregate_windows_decoded(
                "Ali Baba went",
                &[&tokens[..]],
                &l,
                None,
                AggregationStrategy::First,
                decoding,
                DEFAULT_IGNORE_LABELS,
            )
            .expect("aggregate")
        };
        let argmax = decode(Decoding::Argmax);
        assert_eq!(
            summary(&argmax),
            vec![s("PER", "Ali", 0, 3), s("LOC", "Baba", 4, 8)]
        );
        let iob2 = decode(Decoding::Iob2);
        assert_eq!(summary(&iob2), vec![s("PER", "Ali Baba", 0, 8)]);
        // The score is the mean of the chosen labels' probabilities, not of the argmax ones.
        assert!((iob2[0].score - (0.8 + 0.35) / 2.0).abs() < 1e-6);
        // An I- after O starts nothing under iob2: it becomes B- or O, whichever is likelier.
        let rows = vec![
            tok("\u{2581}in", 0, 2, &p(5, 0, 0.9)),
            tok("\u{2581}Paris", 3, 8, &[0.1, 0.05, 0.05, 0.3, 0.5]),
        ];
        let tokens = rows_to_tokens(&rows);
        let e = aggregate_windows_decoded(
            "in Paris",
            &[&tokens[..]],
            &l,
            None,
            AggregationStrategy::Simple,
            Decoding::Iob2,
            DEFAULT_IGNORE_LABELS,
        )
        .expect("aggregate");
        assert_eq!(summary(&e), vec![s("LOC", "Paris", 3, 8)]);
        assert!((e[0].score - 0.3).abs() < 1e-6);
    }
}
