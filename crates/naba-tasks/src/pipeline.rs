//! One `Pipeline` per loaded model: text in, labels or entities out. Long texts are cut into
//! overlapping windows (never truncated), windows of many documents are run through the encoder
//! together, shortest-padding first, and the results are put back per document.

use crate::aggregate::{
    aggregate_windows_decoded, AggregationStrategy, Decoding, Entity, TokenScores,
};
use crate::lexical::Lexical;
use crate::relatedness::Relatedness;
use crate::scores::{top_k, LabelScore, ScoreFunction};
use candle_core::Tensor;
use naba_models::{Batch, HeadKind, Model, ModelError, ProblemType};
use naba_text::{normalize, CharIndex, NormalizeOptions, Normalized};
use serde::Serialize;
use tokenizers::{Encoding, PostProcessor, TruncationDirection};

/// Why one document could not be processed. Other documents of the same call are unaffected.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("the text is empty or only whitespace")]
    EmptyText,
    #[error("the target is empty or only whitespace")]
    EmptyTarget,
    #[error("the text has {chars} characters, over the limit of {limit}")]
    TooLong { chars: usize, limit: usize },
    #[error("model `{model}` has {found} and cannot do {wanted}")]
    WrongHead {
        model: String,
        found: &'static str,
        wanted: &'static str,
    },
    #[error(
        "the target leaves no room for the text: it takes {target} of the model's {window} \
         tokens; shorten the target"
    )]
    TargetTooLong { target: usize, window: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Zero-shot candidate labels that cannot be used as given.
    #[error("{0}")]
    Labels(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Aggregate(#[from] crate::aggregate::AggregateError),
    #[error(transparent)]
    Score(#[from] crate::scores::ScoreError),
}

impl From<candle_core::Error> for TaskError {
    fn from(e: candle_core::Error) -> Self {
        TaskError::Model(ModelError::from(e))
    }
}

/// Settings fixed when the pipeline is built.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Tokens shared by consecutive windows of a long text; `None` picks a quarter of the window.
    pub stride: Option<usize>,
    /// Windows per encoder call.
    pub batch_size: usize,
    /// Longest text accepted, in characters.
    pub max_chars: usize,
    /// Tokens per window, special tokens included. `None`: the window the model was trained
    /// with (`naba.window` in its config.json), else the encoder's full length.
    pub window: Option<usize>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            stride: None,
            batch_size: 16,
            max_chars: 200_000,
            window: None,
        }
    }
}

/// Per-request settings for NER.
#[derive(Debug, Clone)]
pub struct NerOptions {
    pub aggregation: AggregationStrategy,
    /// How labels are chosen before grouping; `argmax` is transformers' behaviour.
    pub decoding: Decoding,
    pub normalize: NormalizeOptions,
    /// Labels never reported (transformers' `ignore_labels`, default `["O"]`).
    pub ignore_labels: Vec<String>,
    /// Trim white space and punctuation from the edges of entity spans. transformers keeps
    /// them (a SentencePiece word piece starts at the space before it, and a word runs up to
    /// the next space, so "بوتين،" keeps its comma); with `false` spans are exactly its spans.
    pub trim: bool,
}

impl Default for NerOptions {
    fn default() -> Self {
        Self {
            aggregation: AggregationStrategy::Simple,
            decoding: Decoding::Argmax,
            normalize: NormalizeOptions::default(),
            ignore_labels: vec!["O".into()],
            trim: true,
        }
    }
}

/// Per-request settings for classification.
#[derive(Debug, Clone, Default)]
pub struct ClassifyOptions {
    /// Labels to return, best first; `None` returns all.
    pub top_k: Option<usize>,
    pub normalize: NormalizeOptions,
    /// Overrides the function the model's `problem_type` implies.
    pub function: Option<ScoreFunction>,
}

/// Entities found in one document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NerOutput {
    pub entities: Vec<EntitySpan>,
    /// How many windows the text was read in.
    pub windows: usize,
}

/// An entity with character offsets into the text the caller sent; `text` is exactly that slice.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntitySpan {
    #[serde(rename = "type")]
    pub label: String,
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub score: f32,
}

/// Labels of one document, best first.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ClassifyOutput {
    pub labels: Vec<LabelScore>,
    pub windows: usize,
    /// Stance only: the passages that carried the decision, heaviest first. A text that fits
    /// one window is one passage; a longer one is read sentence by sentence and the sentences
    /// that take a stance toward the target decide.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
    /// Stance on a long text with a relatedness gate: the highest probability that one of its
    /// passages concerns the target. Below one half the text is judged not to concern it and
    /// the answer is the model's "neither" label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<f32>,
    /// Stance: set when the target was too long to leave the text room and only its start was
    /// read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_truncated: Option<TargetCut>,
}

/// A passage of the text a stance decision rests on. `start`/`end` are character offsets into
/// the text sent and `text` is exactly that slice.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The passage's own best label and its score.
    pub label: String,
    pub score: f32,
    /// The passage's share of the decision. The weights of all evidence sum to 1, except when
    /// no sentence of a long text takes a side: then every sentence had an equal share and
    /// only the three closest to taking one are shown.
    pub weight: f32,
    /// With a relatedness gate: the probability that this passage concerns the target. Only
    /// passages at one half or more may vote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<f32>,
}

/// One input to classify: a text, and for stance the target it is read against.
#[derive(Debug, Clone, Copy)]
pub struct ClassifyInput<'a> {
    pub text: &'a str,
    pub target: Option<&'a str>,
}

/// A (first, second) pair in one window of `window` tokens, the `truncate` side cut from the
/// right to fit; no overflow windows.
pub(crate) fn encode_pair_truncated(
    tokenizer: &tokenizers::Tokenizer,
    window: usize,
    a: &str,
    b: &str,
    truncate: PairSide,
) -> Result<Encoding, TaskError> {
    if a.trim().is_empty() || b.trim().is_empty() {
        return Err(TaskError::EmptyText);
    }
    let tok = |e: tokenizers::Error| TaskError::Tokenizer(e.to_string());
    let mut first = tokenizer.encode_char_offsets(a, false).map_err(tok)?;
    let mut second = tokenizer.encode_char_offsets(b, false).map_err(tok)?;
    second.set_type_ids(vec![1; second.len()]);
    let specials = tokenizer
        .get_post_processor()
        .map_or(4, |p| p.added_tokens(true));
    let (cut, kept) = match truncate {
        PairSide::First => (&mut first, second.len()),
        PairSide::Second => (&mut second, first.len()),
    };
    let room = window.saturating_sub(specials + kept);
    if room == 0 {
        return Err(TaskError::TargetTooLong {
            target: kept,
            window,
        });
    }
    if cut.len() > room {
        cut.truncate(room, 0, TruncationDirection::Right);
        cut.take_overflowing();
    }
    tokenizer
        .post_process(first, Some(second), true)
        .map_err(tok)
}

/// Runs encodings through `run` longest first in batches of `batch`; one result per encoding,
/// in input order.
pub(crate) fn batched_logits(
    encoded: Vec<Result<Encoding, TaskError>>,
    batch: usize,
    run: impl Fn(&[&Encoding]) -> Result<Vec<Vec<f32>>, String>,
) -> Vec<Result<Vec<f32>, TaskError>> {
    let mut order: Vec<usize> = (0..encoded.len()).filter(|&i| encoded[i].is_ok()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].as_ref().map_or(0, Encoding::len)));
    let mut out: Vec<Option<Result<Vec<f32>, TaskError>>> = encoded
        .iter()
        .map(|e| e.as_ref().err().map(|e| Err(clone_error(e))))
        .collect();
    for chunk in order.chunks(batch.max(1)) {
        let encs: Vec<&Encoding> = chunk
            .iter()
            .filter_map(|&i| encoded[i].as_ref().ok())
            .collect();
        match run(&encs) {
            Ok(rows) => {
                for (&i, row) in chunk.iter().zip(rows) {
                    out[i] = Some(Ok(row));
                }
            }
            Err(e) => {
                for &i in chunk {
                    out[i] = Some(Err(TaskError::Tokenizer(format!("model run failed: {e}"))));
                }
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or(Err(TaskError::EmptyText)))
        .collect()
}

/// Which side of a text pair gives way when the pair is longer than the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairSide {
    First,
    Second,
}

/// What a window run gives back.
#[derive(Clone, Copy)]
enum Rows {
    Logits,
    Embeddings,
}

/// A model ready to answer.
pub struct Pipeline {
    model: Model,
    window: usize,
    /// Text tokens a single-text window holds (the window less the special tokens).
    room: usize,
    stride: usize,
    batch_size: usize,
    max_chars: usize,
    pad_id: u32,
    subword_prefix: Option<String>,
    unk_id: Option<u32>,
    /// Stance only: asks whether a long text concerns the target before reading its stance.
    relatedness: Option<Box<Relatedness>>,
    /// A TF-IDF member whose probabilities are averaged with the encoder's: over texts for a
    /// topic member, over texts read whole against a target for a stance one.
    lexical: Option<Box<Lexical>>,
}

/// A text prepared for the model: normalised (with the map back), prefixed, windowed.
struct Prepared {
    normalized: Normalized,
    /// Characters of the model's input prefix in front of the text.
    prefix_chars: usize,
    windows: Vec<Encoding>,
    /// Per window, how many tokens of the text (not target, not specials) it holds.
    text_tokens: Vec<usize>,
    /// Set when the target had to be shortened to leave the text room.
    target_cut: Option<TargetCut>,
}

/// How a target too long to leave the text room in a window was shortened: its first
/// `kept` of `total` sub-word tokens were read (see [`Pipeline::classify`]).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct TargetCut {
    pub kept: usize,
    pub total: usize,
}

impl Pipeline {
    pub fn new(model: Model, opts: &PipelineOptions) -> Result<Self, TaskError> {
        let longest = model.config.max_tokens();
        let window = opts.window.or(model.config.naba.window).unwrap_or(longest);
        if window > longest {
            return Err(TaskError::Tokenizer(format!(
                "a window of {window} tokens is longer than the {longest} the encoder takes"
            )));
        }
        let specials = model
            .tokenizer
            .get_post_processor()
            .map_or(2, |p| p.added_tokens(false));
        let room = window.saturating_sub(specials);
        let stride = opts.stride.unwrap_or(room / 4);
        if room == 0 || stride >= room {
            return Err(TaskError::Tokenizer(format!(
                "stride {stride} must be smaller than the {room} text tokens a window holds"
            )));
        }
        let pad_id = naba_models::tokenizer::pad_id(&model.tokenizer, model.config.pad_token_id);
        let subword_prefix = naba_models::tokenizer::continuing_subword_prefix(&model.tokenizer);
        let unk_id = ["[UNK]", "<unk>"]
            .iter()
            .find_map(|t| model.tokenizer.token_to_id(t));
        Ok(Self {
            model,
            window,
            room,
            stride,
            batch_size: opts.batch_size.max(1),
            max_chars: opts.max_chars,
            pad_id,
            subword_prefix,
            unk_id,
            relatedness: None,
            lexical: None,
        })
    }

    /// Adds (or with `None` removes) the relatedness gate long stance texts pass first.
    pub fn with_relatedness(mut self, gate: Option<Relatedness>) -> Self {
        self.relatedness = gate.map(Box::new);
        self
    }

    /// Adds (or with `None` removes) the lexical member a single-label classifier averages its
    /// probabilities with. Its labels must be the model's, in the same order. A stance member
    /// blends with texts read in one piece; a long text read sentence by sentence is left to
    /// the encoder, as the member was fitted on whole short texts.
    pub fn with_lexical(mut self, member: Option<Lexical>) -> Result<Self, TaskError> {
        if let Some(m) = &member {
            if self.model.config.head != HeadKind::SequenceClassification
                || self.score_function() != ScoreFunction::Softmax
                || m.params.labels != self.model.config.labels
            {
                return Err(TaskError::Tokenizer(format!(
                    "the lexical member beside `{}` does not fit it: it needs a single-label \
                     classifier with the labels {:?}; refit it with `naba lexical` or delete it",
                    self.model.name, m.params.labels
                )));
            }
        }
        self.lexical = member.map(Box::new);
        Ok(self)
    }

    /// The lexical member's share of the average, when the pipeline has one.
    pub fn lexical_mix(&self) -> Option<f32> {
        self.lexical.as_ref().map(|m| m.params.mix)
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Tokens per window, special tokens included.
    pub fn window(&self) -> usize {
        self.window
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The windows a text is read in (token ids, type ids, offsets), as `ner` and `classify`
    /// make them: for benchmarks and diagnostics that feed other engines the same input.
    pub fn windows(&self, text: &str, target: Option<&str>) -> Result<Vec<Encoding>, TaskError> {
        Ok(self
            .prepare(text, target, &NormalizeOptions::default())?
            .windows)
    }

    /// Entities of each text, in input order; each text fails or succeeds on its own.
    pub fn ner(&self, texts: &[&str], opts: &NerOptions) -> Vec<Result<NerOutput, TaskError>> {
        if self.model.config.head != HeadKind::TokenClassification {
            return texts
                .iter()
                .map(|_| Err(self.wrong_head("named-entity recognition")))
                .collect();
        }
        let prepared: Vec<Result<Prepared, TaskError>> = texts
            .iter()
            .map(|t| self.prepare(t, None, &opts.normalize))
            .collect();
        let logits = self.run_windows(&prepared);
        let labels = &self.model.config.labels;
        let ignore: Vec<&str> = opts.ignore_labels.iter().map(String::as_str).collect();
        prepared
            .into_iter()
            .zip(logits)
            .zip(texts)
            .map(|((prep, logits), original)| {
                let prep = prep?;
                let logits = logits?;
                let n_labels = labels.len();
                // Rows of probabilities, one buffer per window, kept alive for the borrows below.
                let probs: Vec<Vec<f32>> = logits
                    .iter()
                    .map(|w| {
                        w.chunks(n_labels)
                            .flat_map(crate::scores::softmax)
                            .collect()
                    })
                    .collect();
                let sentence = prep.normalized.text.as_str();
                let rows: Vec<Vec<TokenScores>> = prep
                    .windows
                    .iter()
                    .zip(&probs)
                    .map(|(enc, p)| self.token_rows(enc, p, n_labels, prep.prefix_chars))
                    .collect();
                let entities = if rows.len() > 1 && opts.aggregation == AggregationStrategy::None {
                    // transformers refuses per-token output over several windows; naba gives
                    // each token the window in which it has the most context on both sides.
                    self.per_token_over_windows(sentence, &rows, labels, opts.decoding, &ignore)?
                } else {
                    aggregate_windows_decoded(
                        sentence,
                        &rows,
                        labels,
                        self.subword_prefix.as_deref(),
                        opts.aggregation,
                        opts.decoding,
                        &ignore,
                    )?
                };
                Ok(NerOutput {
                    entities: to_original(&prep.normalized, original, entities, opts.trim),
                    windows: prep.windows.len(),
                })
            })
            .collect()
    }

    /// Labels of each input, in input order. Windows of a long text are combined by averaging
    /// their label probabilities, each weighted by how many of the text's tokens it holds.
    pub fn classify(
        &self,
        inputs: &[ClassifyInput<'_>],
        opts: &ClassifyOptions,
    ) -> Vec<Result<ClassifyOutput, TaskError>> {
        if self.model.config.head != HeadKind::SequenceClassification {
            return inputs
                .iter()
                .map(|_| Err(self.wrong_head("classification")))
                .collect();
        }
        let function = opts.function.unwrap_or_else(|| self.score_function());
        let labels = &self.model.config.labels;
        // Every text (or, for stance on a text longer than one window, every sentence passage:
        // see `stance_by_sentences`) goes into one list run through the model together.
        let mut runs: Vec<Result<Prepared, TaskError>> = Vec::with_capacity(inputs.len());
        let plans: Vec<Plan> = inputs
            .iter()
            .map(|input| {
                let prep = self.prepare(input.text, input.target, &opts.normalize);
                if input.target.is_some() && prep.as_ref().is_ok_and(|p| p.windows.len() > 1) {
                    let whole_cut = prep.as_ref().ok().and_then(|p| p.target_cut);
                    let units = sentence_units(input.text)
                        .into_iter()
                        .map(|u| {
                            let text = &input.text[u.bytes.clone()];
                            runs.push(self.prepare(text, input.target, &opts.normalize));
                            (u, runs.len() - 1)
                        })
                        .collect();
                    Plan::Sentences(units, whole_cut)
                } else {
                    runs.push(prep);
                    Plan::Whole(runs.len() - 1)
                }
            })
            .collect();
        let logits = self.run_windows(&runs);
        // Each run's result is taken (not cloned) by the one plan that owns its index.
        let cuts: Vec<Option<TargetCut>> = runs
            .iter()
            .map(|r| r.as_ref().ok().and_then(|p| p.target_cut))
            .collect();
        let mut probs: Vec<Option<Combined>> = runs
            .into_iter()
            .zip(logits)
            .map(|(p, l)| Some(combine_windows(p, l, function, labels.len())))
            .collect();
        let mut take = |i: usize| probs[i].take().unwrap_or(Err(TaskError::EmptyText));
        let neither = neither_label(labels);
        inputs
            .iter()
            .zip(plans)
            .map(|(input, plan)| {
                let (p, windows, evidence, related, cut) = match plan {
                    Plan::Whole(i) => {
                        let (mut p, windows) = take(i)?;
                        // Softmax scores only: the member's are probabilities of one label.
                        if let (Some(member), ScoreFunction::Softmax) = (&self.lexical, function) {
                            if member.reads(input.target) {
                                member.blend(input.text, input.target, &mut p);
                            }
                        }
                        let evidence = match input.target {
                            Some(_) => whole_text_evidence(input.text, labels, &p),
                            None => Vec::new(),
                        };
                        (p, windows, evidence, None, cuts[i])
                    }
                    Plan::Sentences(units, whole_cut) => {
                        let cut = units.iter().find_map(|(_, i)| cuts[*i]).or(whole_cut);
                        let scored = units
                            .into_iter()
                            .map(|(u, i)| take(i).map(|(p, w)| (u, p, w)))
                            .collect::<Result<Vec<_>, TaskError>>()?;
                        let gate = match (&self.relatedness, input.target) {
                            (Some(gate), Some(target)) => {
                                let passages: Vec<&str> = scored
                                    .iter()
                                    .map(|(u, _, _)| &input.text[u.bytes.clone()])
                                    .collect();
                                Some(gate.passage_scores(target, &passages)?)
                            }
                            _ => None,
                        };
                        let (p, windows, evidence) = stance_by_sentences(
                            input.text,
                            &scored,
                            labels,
                            neither,
                            gate.as_deref(),
                        );
                        let related = gate.map(|g| g.iter().copied().fold(0.0, f32::max));
                        (p, windows, evidence, related, cut)
                    }
                };
                Ok(ClassifyOutput {
                    labels: top_k(labels, &p, opts.top_k)?,
                    windows,
                    evidence,
                    related,
                    target_truncated: cut,
                })
            })
            .collect()
    }

    /// Raw logits of each window of one text, for parity checks and diagnostics.
    pub fn window_logits(
        &self,
        text: &str,
        target: Option<&str>,
    ) -> Result<(Vec<Encoding>, Vec<Vec<f32>>), TaskError> {
        let prep = self.prepare(text, target, &NormalizeOptions::default());
        let mut logits = self.run_windows(std::slice::from_ref(&prep));
        let prep = prep?;
        let logits = logits.pop().unwrap_or(Ok(Vec::new()))?;
        Ok((prep.windows, logits))
    }

    fn score_function(&self) -> ScoreFunction {
        let pt = match self.model.config.problem_type {
            ProblemType::SingleLabel => "single_label_classification",
            ProblemType::MultiLabel => "multi_label_classification",
            ProblemType::Regression => "regression",
        };
        ScoreFunction::for_config(Some(pt), self.model.config.labels.len())
    }

    fn wrong_head(&self, wanted: &'static str) -> TaskError {
        TaskError::WrongHead {
            model: self.model.name.clone(),
            found: match self.model.config.head {
                HeadKind::None => "no task head (it is a bare encoder)",
                HeadKind::TokenClassification => "a token-classification (NER) head",
                HeadKind::SequenceClassification => "a sequence-classification head",
            },
            wanted,
        }
    }

    fn prepare(
        &self,
        text: &str,
        target: Option<&str>,
        norm: &NormalizeOptions,
    ) -> Result<Prepared, TaskError> {
        self.prepare_with(text, target, norm, &self.model.config.naba.prefix)
    }

    /// [`Pipeline::prepare`] with `prefix` in place of the model's own input prefix.
    fn prepare_with(
        &self,
        text: &str,
        target: Option<&str>,
        norm: &NormalizeOptions,
        prefix: &str,
    ) -> Result<Prepared, TaskError> {
        if text.trim().is_empty() {
            return Err(TaskError::EmptyText);
        }
        let chars = text.chars().count();
        if chars > self.max_chars {
            return Err(TaskError::TooLong {
                chars,
                limit: self.max_chars,
            });
        }
        let normalized = normalize(text, norm);
        let body = format!("{prefix}{}", normalized.text);
        let target = match target {
            Some(t) if t.trim().is_empty() => return Err(TaskError::EmptyTarget),
            Some(t) => Some(format!("{prefix}{}", normalize(t, norm).text)),
            None => None,
        };
        // With a target the text goes second, so truncation slides over the text alone.
        let (encoding, target_cut) = match &target {
            Some(t) => self.encode_pair(t, &body)?,
            None => (self.encode_single(&body)?, None),
        };
        let mut windows = vec![encoding.clone()];
        windows.extend(encoding.get_overflowing().iter().cloned());
        let text_seq = usize::from(target.is_some());
        let text_tokens = windows
            .iter()
            .map(|w| {
                (0..w.len())
                    .filter(|&i| {
                        w.get_sequence_ids()[i] == Some(text_seq)
                            && w.get_special_tokens_mask()[i] == 0
                    })
                    .count()
            })
            .collect();
        Ok(Prepared {
            normalized,
            prefix_chars: prefix.chars().count(),
            windows,
            text_tokens,
            target_cut,
        })
    }

    /// Encodes a text in windows of `self.window` tokens, specials included, consecutive
    /// windows sharing `self.stride` tokens: exactly what the tokenizer does with truncation
    /// (longest first, right) and overflowing set, done here on the one tokenizer every model
    /// of the process shares instead of on a copy of it per setting.
    fn encode_single(&self, body: &str) -> Result<Encoding, TaskError> {
        let tok = |e: tokenizers::Error| TaskError::Tokenizer(e.to_string());
        let tokenizer = &self.model.tokenizer;
        let mut enc = tokenizer.encode_char_offsets(body, false).map_err(tok)?;
        enc.truncate(self.room, self.stride, TruncationDirection::Right);
        tokenizer.post_process(enc, None, true).map_err(tok)
    }

    /// Encodes (target, text), windowing only the text. A text that fits beside the whole
    /// target is read with all of it. Otherwise the text is windowed, which needs more room
    /// than the stride (the tokenizer panics below that): a target that would leave less is
    /// cut to its first half-window of sub-words, the stated policy, reported as a
    /// [`TargetCut`]. Claims put their assertion first, and the window stays the one the model
    /// was trained with.
    fn encode_pair(
        &self,
        target: &str,
        body: &str,
    ) -> Result<(Encoding, Option<TargetCut>), TaskError> {
        let tok = |e: tokenizers::Error| TaskError::Tokenizer(e.to_string());
        let tokenizer = &self.model.tokenizer;
        let mut first = tokenizer.encode_char_offsets(target, false).map_err(tok)?;
        let specials = tokenizer
            .get_post_processor()
            .map_or(4, |p| p.added_tokens(true));
        let total = first.len();
        let mut second = tokenizer.encode_char_offsets(body, false).map_err(tok)?;
        if total + second.len() + specials <= self.window {
            second.set_type_ids(vec![1; second.len()]);
            let enc = tokenizer
                .post_process(first, Some(second), true)
                .map_err(tok)?;
            return Ok((enc, None));
        }
        let mut cut = None;
        if self.window.saturating_sub(total + specials) <= self.stride {
            let kept = self.window.saturating_sub(specials) / 2;
            if kept == 0 || self.window.saturating_sub(kept + specials) <= self.stride {
                return Err(TaskError::TargetTooLong {
                    target: total,
                    window: self.window,
                });
            }
            first.truncate(kept, 0, TruncationDirection::Right);
            first.take_overflowing();
            cut = Some(TargetCut { kept, total });
        }
        let room = self.window - first.len() - specials;
        // What the tokenizer gives the second sequence of a pair, before its template.
        second.set_type_ids(vec![1; second.len()]);
        second.truncate(room, self.stride, TruncationDirection::Right);
        let enc = tokenizer
            .post_process(first, Some(second), true)
            .map_err(tok)?;
        Ok((enc, cut))
    }

    /// Runs every window of every prepared text through encoder and head, in batches of
    /// similar length so little compute goes to padding. Returns per text, per window, the
    /// flattened logits (`[labels]` or `[tokens * labels]`).
    fn run_windows(
        &self,
        prepared: &[Result<Prepared, TaskError>],
    ) -> Vec<Result<Vec<Vec<f32>>, TaskError>> {
        self.run_windows_as(prepared, Rows::Logits)
    }

    /// Every window of every prepared text through the encoder, longest first in batches;
    /// per text, one row per window: its logits, or its pooled embedding.
    fn run_windows_as(
        &self,
        prepared: &[Result<Prepared, TaskError>],
        rows: Rows,
    ) -> Vec<Result<Vec<Vec<f32>>, TaskError>> {
        let mut jobs: Vec<(usize, usize, &Encoding)> = Vec::new();
        for (d, p) in prepared.iter().enumerate() {
            if let Ok(p) = p {
                for (w, enc) in p.windows.iter().enumerate() {
                    jobs.push((d, w, enc));
                }
            }
        }
        jobs.sort_by_key(|(_, _, e)| std::cmp::Reverse(e.len()));
        let mut out: Vec<Result<Vec<Vec<f32>>, TaskError>> = prepared
            .iter()
            .map(|p| Ok(vec![Vec::new(); p.as_ref().map_or(0, |p| p.windows.len())]))
            .collect();
        for chunk in jobs.chunks(self.batch_size) {
            let encs = chunk.iter().map(|(_, _, e)| *e);
            let result = match rows {
                Rows::Logits => self.logits(encs),
                Rows::Embeddings => self.embeddings(encs),
            };
            match result {
                Ok(rows) => {
                    for ((d, w, _), row) in chunk.iter().zip(rows) {
                        if let Some(Ok(slots)) = out.get_mut(*d) {
                            slots[*w] = row;
                        }
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for (d, _, _) in chunk {
                        out[*d] = Err(TaskError::Tokenizer(format!("model run failed: {msg}")));
                    }
                }
            }
        }
        for (slot, p) in out.iter_mut().zip(prepared) {
            if let Err(e) = p {
                *slot = Err(clone_error(e));
            }
        }
        out
    }

    /// The encoder's last hidden states for one padded batch of windows, and the batch.
    fn hidden(&self, encs: &[&Encoding]) -> Result<(Tensor, Batch), TaskError> {
        let ids: Vec<Vec<u32>> = encs.iter().map(|e| e.get_ids().to_vec()).collect();
        let types: Vec<Vec<u32>> = encs.iter().map(|e| e.get_type_ids().to_vec()).collect();
        let batch = Batch::from_rows(&ids, Some(&types), self.pad_id, self.model.encoder.device())?;
        let hidden = self.model.encoder.forward(&batch)?;
        Ok((hidden, batch))
    }

    /// E5 sentence embeddings of one batch of windows: hidden states mean-pooled over real
    /// tokens and L2-normalised (see `naba_models::mean_pool_normalized`).
    fn embeddings<'a>(
        &self,
        encs: impl Iterator<Item = &'a Encoding>,
    ) -> Result<Vec<Vec<f32>>, TaskError> {
        let encs: Vec<&Encoding> = encs.collect();
        let (hidden, batch) = self.hidden(&encs)?;
        let pooled = naba_models::mean_pool_normalized(&hidden, &batch.attention_mask)?;
        Ok(pooled.to_vec2::<f32>()?)
    }

    /// Sentence embeddings of `texts`, each read with `prefix` in front (E5 wants `query: ` or
    /// `passage: `) in all its windows: each window pooled as E5 defines, the windows averaged,
    /// weighted by the text tokens each holds, and L2-normalised again; with the number of
    /// windows. For any encoder, head or not. Each text fails or succeeds on its own.
    pub fn embed(&self, texts: &[&str], prefix: &str) -> Vec<Result<(Vec<f32>, usize), TaskError>> {
        let prepared: Vec<Result<Prepared, TaskError>> = texts
            .iter()
            .map(|t| self.prepare_with(t, None, &NormalizeOptions::default(), prefix))
            .collect();
        let rows = self.run_windows_as(&prepared, Rows::Embeddings);
        prepared
            .iter()
            .zip(rows)
            .map(|(p, rows)| {
                let rows = rows?;
                let weights: Vec<f32> = match p {
                    Ok(p) => p.text_tokens.iter().map(|&n| n.max(1) as f32).collect(),
                    Err(e) => return Err(clone_error(e)),
                };
                let dim = rows.first().map_or(0, Vec::len);
                let mut mean = vec![0f32; dim];
                for (row, w) in rows.iter().zip(&weights) {
                    for (m, x) in mean.iter_mut().zip(row) {
                        *m += w * x;
                    }
                }
                let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                Ok((mean.into_iter().map(|x| x / norm).collect(), weights.len()))
            })
            .collect()
    }

    /// Logits of text pairs, each read in one window as transformers' zero-shot pipeline reads
    /// a (premise, hypothesis) pair: the model's input prefix (if any) on both, and the side
    /// named by `truncate` cut from the right when the pair does not fit (`only_first` /
    /// `only_second`). Each pair fails or succeeds on its own.
    pub fn pair_logits(
        &self,
        pairs: &[(&str, &str)],
        truncate: PairSide,
    ) -> Vec<Result<Vec<f32>, TaskError>> {
        let prefix = &self.model.config.naba.prefix;
        let encoded: Vec<Result<Encoding, TaskError>> = pairs
            .iter()
            .map(|(a, b)| {
                encode_pair_truncated(
                    &self.model.tokenizer,
                    self.window,
                    &format!("{prefix}{a}"),
                    &format!("{prefix}{b}"),
                    truncate,
                )
            })
            .collect();
        batched_logits(encoded, self.batch_size, |encs| {
            self.logits(encs.iter().copied()).map_err(|e| e.to_string())
        })
    }

    /// Logits of one batch of windows (as [`Pipeline::windows`] makes them), real tokens
    /// only, flattened: `[labels]` or `[tokens * labels]` per window. What `ner` and `classify`
    /// run per batch; public for benchmarks that time the model alone.
    pub fn logits<'a>(
        &self,
        encs: impl Iterator<Item = &'a Encoding>,
    ) -> Result<Vec<Vec<f32>>, TaskError> {
        let encs: Vec<&Encoding> = encs.collect();
        let (hidden, _) = self.hidden(&encs)?;
        let logits: Tensor = self
            .model
            .head
            .forward(&hidden)?
            .ok_or_else(|| self.wrong_head("classification or NER"))?;
        let mut rows = Vec::with_capacity(encs.len());
        for (i, e) in encs.iter().enumerate() {
            let row = logits.get(i)?;
            let row = if row.rank() == 2 {
                row.narrow(0, 0, e.len())?
            } else {
                row
            };
            rows.push(row.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(rows)
    }

    fn token_rows<'a>(
        &self,
        enc: &'a Encoding,
        probs: &'a [f32],
        n_labels: usize,
        prefix: usize,
    ) -> Vec<TokenScores<'a>> {
        let special = enc.get_special_tokens_mask();
        enc.get_tokens()
            .iter()
            .enumerate()
            .map(|(i, tok)| {
                let (s, e) = enc.get_offsets()[i];
                let in_prefix = s < prefix;
                TokenScores {
                    token: tok.as_str(),
                    start: s.saturating_sub(prefix),
                    end: e.saturating_sub(prefix),
                    special: special[i] == 1 || in_prefix,
                    unk: Some(enc.get_ids()[i]) == self.unk_id,
                    scores: probs.get(i * n_labels..(i + 1) * n_labels).unwrap_or(&[]),
                    index: i,
                }
            })
            .collect()
    }

    fn per_token_over_windows(
        &self,
        sentence: &str,
        rows: &[Vec<TokenScores>],
        labels: &[String],
        decoding: Decoding,
        ignore: &[&str],
    ) -> Result<Vec<Entity>, TaskError> {
        // Identify a token by its offsets; keep, for each, the row whose window gives it the
        // largest distance to a window edge.
        let mut best: std::collections::BTreeMap<(usize, usize), (usize, TokenScores)> =
            Default::default();
        for w in rows {
            let real: Vec<&TokenScores> = w.iter().filter(|t| !t.special).collect();
            let n = real.len();
            for (k, t) in real.into_iter().enumerate() {
                let margin = k.min(n - 1 - k);
                let entry = best.entry((t.start, t.end)).or_insert((margin, *t));
                if margin > entry.0 {
                    *entry = (margin, *t);
                }
            }
        }
        let merged: Vec<TokenScores> = best.into_values().map(|(_, t)| t).collect();
        Ok(aggregate_windows_decoded(
            sentence,
            &[merged],
            labels,
            self.subword_prefix.as_deref(),
            AggregationStrategy::None,
            decoding,
            ignore,
        )?)
    }
}

/// Maps entities found in the normalised text back onto the text the caller sent.
fn to_original(
    norm: &Normalized,
    original: &str,
    entities: Vec<Entity>,
    trim: bool,
) -> Vec<EntitySpan> {
    let index = CharIndex::new(original);
    let chars: Vec<char> = if trim {
        original.chars().collect()
    } else {
        Vec::new()
    };
    entities
        .into_iter()
        .map(|e| {
            let (mut start, mut end) = norm.to_original_span(e.start, e.end);
            if trim {
                (start, end) = trimmed(&chars, start, end);
            }
            let text = index
                .char_span_to_byte_span(start, end)
                .ok()
                .and_then(|r| original.get(r))
                .unwrap_or_default()
                .to_string();
            EntitySpan {
                label: e.label,
                text,
                start,
                end,
                score: e.score,
            }
        })
        .collect()
}

/// The span without white space or punctuation at its edges; unchanged if nothing would remain.
fn trimmed(chars: &[char], start: usize, end: usize) -> (usize, usize) {
    let edge = |c: char| c.is_whitespace() || is_punctuation(c);
    let (mut s, mut e) = (start, end.min(chars.len()));
    while s < e && edge(chars[s]) {
        s += 1;
    }
    while e > s && edge(chars[e - 1]) {
        e -= 1;
    }
    if s < e {
        (s, e)
    } else {
        (start, end)
    }
}

/// ASCII punctuation and the Arabic and typographic marks news text uses around names.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || "،؛؟۔«»“”‘’„…–—·".contains(c)
}

fn clone_error(e: &TaskError) -> TaskError {
    match e {
        TaskError::EmptyText => TaskError::EmptyText,
        TaskError::EmptyTarget => TaskError::EmptyTarget,
        TaskError::TooLong { chars, limit } => TaskError::TooLong {
            chars: *chars,
            limit: *limit,
        },
        other => TaskError::Tokenizer(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::trimmed;

    #[test]
    fn trimming_drops_edge_space_and_punctuation_only() {
        let chars: Vec<char> = " «فلاديمير بوتين»، قال".chars().collect();
        let (s, e) = trimmed(&chars, 0, 18);
        assert_eq!(chars[s..e].iter().collect::<String>(), "فلاديمير بوتين");
        // Nothing but punctuation: the span is left as it was rather than emptied.
        let (s, e) = trimmed(&chars, 17, 18);
        assert_eq!((s, e), (17, 18));
    }
}

/// How one classification input is read: whole (the index of its run), or as sentence
/// passages (each with the index of its run).
enum Plan {
    Whole(usize),
    /// With the cut of the target as the whole text was read, if any.
    Sentences(Vec<(Unit, usize)>, Option<TargetCut>),
}

/// A passage of a long text read on its own for stance: whole sentences, at least
/// [`MIN_UNIT_WORDS`] words unless the text ends first.
#[derive(Debug)]
struct Unit {
    chars: std::ops::Range<usize>,
    bytes: std::ops::Range<usize>,
}

/// Sentences shorter than this are joined to the next one: a heading or a dateline alone says
/// little about a stance.
const MIN_UNIT_WORDS: usize = 8;
/// A sentence whose probability of taking a side (1 - P(neither)) is below this does not vote.
const MIN_RELEVANCE: f32 = 0.5;
/// At most this many sentences decide, the most stance-bearing first.
const MAX_EVIDENCE: usize = 5;
/// A passage whose probability of concerning the target is below this does not vote.
const RELATED: f32 = 0.5;

fn sentence_units(text: &str) -> Vec<Unit> {
    let index = CharIndex::new(text);
    let byte = |c: usize| index.char_to_byte(c).unwrap_or(text.len());
    let mut units = Vec::new();
    let mut open: Option<(usize, usize, usize)> = None; // (start char, end char, words)
    for (s, e) in naba_text::split_sentences(text) {
        let words = text[byte(s)..byte(e)].split_whitespace().count();
        let (start, _, w) = open.unwrap_or((s, e, 0));
        open = Some((start, e, w + words));
        if w + words >= MIN_UNIT_WORDS {
            units.push(Unit {
                chars: start..e,
                bytes: byte(start)..byte(e),
            });
            open = None;
        }
    }
    if let Some((start, e, _)) = open {
        match units.last_mut() {
            // A short tail joins the sentence before it.
            Some(last) => {
                last.chars.end = e;
                last.bytes.end = byte(e);
            }
            None => units.push(Unit {
                chars: start..e,
                bytes: byte(start)..byte(e),
            }),
        }
    }
    units
}

/// The label meaning "no stance" (ANS `other`, Mawqif `None`), found by name.
fn neither_label(labels: &[String]) -> Option<usize> {
    labels.iter().position(|l| {
        matches!(
            l.to_lowercase().as_str(),
            "other" | "none" | "neither" | "neutral" | "unrelated"
        )
    })
}

/// A text's label scores with its windows combined, and how many windows it took.
type Combined = Result<(Vec<f32>, usize), TaskError>;

/// Averages a text's window scores, each weighted by its share of the text's tokens.
fn combine_windows(
    prep: Result<Prepared, TaskError>,
    logits: Result<Vec<Vec<f32>>, TaskError>,
    function: ScoreFunction,
    n_labels: usize,
) -> Combined {
    let prep = prep?;
    let logits = logits?;
    let total: usize = prep.text_tokens.iter().sum::<usize>().max(1);
    let mut combined = vec![0f32; n_labels];
    for (w, n) in logits.iter().zip(&prep.text_tokens) {
        let weight = if prep.windows.len() == 1 {
            1.0
        } else {
            *n as f32 / total as f32
        };
        for (c, s) in combined.iter_mut().zip(function.apply(w)) {
            *c += weight * s;
        }
    }
    Ok((combined, prep.windows.len()))
}

fn best(labels: &[String], p: &[f32]) -> (String, f32) {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, s)| (labels[i].clone(), *s))
        .unwrap_or_default()
}

/// A text read in one window is its own evidence: the whole of it (edge spaces left out).
fn whole_text_evidence(text: &str, labels: &[String], p: &[f32]) -> Vec<Evidence> {
    let lead = text.len() - text.trim_start().len();
    let trimmed = text.trim();
    let start = text[..lead].chars().count();
    let (label, score) = best(labels, p);
    vec![Evidence {
        start,
        end: start + trimmed.chars().count(),
        text: trimmed.to_string(),
        label,
        score,
        weight: 1.0,
        related: None,
    }]
}

/// Stance of a long text from its sentences: each passage is read with the target, the ones
/// most likely to take a side (at most [`MAX_EVIDENCE`], each at least [`MIN_RELEVANCE`]) vote
/// with their probabilities weighted by that likelihood, and they are the evidence. When no
/// passage takes a side, all passages vote equally (which favours "neither") and the few
/// closest to taking one are shown.
///
/// With `related` (each passage's probability of concerning the target, from the relatedness
/// gate) only passages at one half or more may vote. When none is, the text does not concern
/// the target: the answer is "neither" with the probability that no passage concerns it, the
/// rest spread as the passages' own scores spread it, and the evidence is the passages that
/// came closest. Returns the scores, the windows read and the evidence.
fn stance_by_sentences(
    text: &str,
    scored: &[(Unit, Vec<f32>, usize)],
    labels: &[String],
    neither: Option<usize>,
    related: Option<&[f32]>,
) -> (Vec<f32>, usize, Vec<Evidence>) {
    let windows = scored.iter().map(|(_, _, w)| w).sum();
    let relevance = |p: &[f32]| match neither {
        Some(n) => 1.0 - p[n],
        None => p.iter().copied().fold(0.0, f32::max),
    };
    let related_to = |i: usize| related.map(|r| r[i]);
    let eligible = |i: usize| related_to(i).is_none_or(|r| r >= RELATED);
    let mean_of = |members: &[usize]| {
        let share = 1.0 / members.len().max(1) as f32;
        let mut mean = vec![0f32; labels.len()];
        for &i in members {
            for (m, s) in mean.iter_mut().zip(&scored[i].1) {
                *m += share * s;
            }
        }
        (mean, share)
    };
    let all: Vec<usize> = (0..scored.len()).collect();
    // Passages by relevance, highest first.
    let mut order: Vec<(usize, f32)> = all.iter().map(|&i| (i, relevance(&scored[i].1))).collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    let members: Vec<usize> = all.iter().copied().filter(|&i| eligible(i)).collect();
    let (combined, voters) = match (related, neither) {
        (Some(r), Some(n)) if members.is_empty() => {
            let top = r.iter().copied().fold(0.0, f32::max);
            let (mean, share) = mean_of(&all);
            let sided: f32 = mean
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != n)
                .map(|(_, s)| s)
                .sum();
            let combined = mean
                .iter()
                .enumerate()
                .map(|(k, s)| match k == n {
                    true => 1.0 - top,
                    false if sided > 0.0 => top * s / sided,
                    false => top / (labels.len() - 1).max(1) as f32,
                })
                .collect();
            let mut closest: Vec<usize> = all.clone();
            closest.sort_by(|&a, &b| r[b].total_cmp(&r[a]));
            (
                combined,
                closest.into_iter().take(3).map(|i| (i, share)).collect(),
            )
        }
        _ => {
            let mut voters: Vec<(usize, f32)> = order
                .iter()
                .copied()
                .filter(|&(i, r)| r >= MIN_RELEVANCE && eligible(i))
                .take(MAX_EVIDENCE)
                .collect();
            let mut combined = vec![0f32; labels.len()];
            if voters.is_empty() {
                let pool = if members.is_empty() { &all } else { &members };
                let (mean, share) = mean_of(pool);
                combined = mean;
                voters = order
                    .iter()
                    .filter(|(i, _)| pool.contains(i))
                    .take(3)
                    .map(|&(i, _)| (i, share))
                    .collect();
            } else {
                let total: f32 = voters.iter().map(|(_, r)| r).sum();
                for (i, r) in voters.iter_mut() {
                    *r /= total;
                    for (c, s) in combined.iter_mut().zip(&scored[*i].1) {
                        *c += *r * s;
                    }
                }
            }
            (combined, voters)
        }
    };
    let evidence = voters
        .into_iter()
        .map(|(i, weight)| {
            let (unit, p, _) = &scored[i];
            let (label, score) = best(labels, p);
            Evidence {
                start: unit.chars.start,
                end: unit.chars.end,
                text: text[unit.bytes.clone()].to_string(),
                label,
                score,
                weight,
                related: related_to(i),
            }
        })
        .collect();
    (combined, windows, evidence)
}

#[cfg(test)]
mod stance_tests {
    use super::*;

    type Scored = Vec<(Unit, Vec<f32>, usize)>;

    /// Three passages of one text, each with (agree, disagree, other) probabilities.
    fn three() -> (String, Scored, Vec<String>) {
        let parts = [
            "الجملة الأولى هنا.",
            " الجملة الثانية هنا.",
            " الجملة الثالثة هنا.",
        ];
        let text: String = parts.concat();
        let probs = [
            vec![0.05, 0.90, 0.05],
            vec![0.70, 0.10, 0.20],
            vec![0.10, 0.10, 0.80],
        ];
        let (mut c, mut b) = (0, 0);
        let scored = parts
            .iter()
            .zip(probs)
            .map(|(p, probs)| {
                let n = p.chars().count();
                let unit = Unit {
                    chars: c..c + n,
                    bytes: b..b + p.len(),
                };
                c += n;
                b += p.len();
                (unit, probs, 1)
            })
            .collect();
        let labels = ["agree", "disagree", "other"].map(String::from).to_vec();
        (text, scored, labels)
    }

    fn argmax(p: &[f32]) -> usize {
        (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap()
    }

    #[test]
    fn without_a_gate_the_most_sided_passages_decide() {
        let (text, scored, labels) = three();
        let (p, windows, evidence) = stance_by_sentences(&text, &scored, &labels, Some(2), None);
        assert_eq!(windows, 3);
        assert_eq!(argmax(&p), 1, "{p:?}");
        assert_eq!(evidence.len(), 2);
        assert!(evidence.iter().all(|e| e.related.is_none()));
        assert_eq!(&text[scored[0].0.bytes.clone()], evidence[0].text);
    }

    #[test]
    fn only_related_passages_vote() {
        let (text, scored, labels) = three();
        let related = [0.1, 0.9, 0.6];
        let (p, _, evidence) =
            stance_by_sentences(&text, &scored, &labels, Some(2), Some(&related));
        assert_eq!(
            argmax(&p),
            0,
            "the unrelated disagreeing passage is left out: {p:?}"
        );
        assert_eq!(evidence.len(), 1);
        assert_eq!(evidence[0].related, Some(0.9));
        assert!((evidence[0].weight - 1.0).abs() < 1e-6);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn related_passages_that_take_no_side_share_the_vote_equally() {
        let (text, scored, labels) = three();
        let related = [0.1, 0.2, 0.7];
        let (p, _, evidence) =
            stance_by_sentences(&text, &scored, &labels, Some(2), Some(&related));
        assert_eq!(p, scored[2].1, "the one related passage alone");
        assert_eq!(evidence.len(), 1);
        assert_eq!(evidence[0].start, scored[2].0.chars.start);
    }

    #[test]
    fn a_text_with_no_related_passage_is_neither() {
        let (text, scored, labels) = three();
        let related = [0.3, 0.1, 0.2];
        let (p, _, evidence) =
            stance_by_sentences(&text, &scored, &labels, Some(2), Some(&related));
        assert_eq!(argmax(&p), 2, "{p:?}");
        assert!(
            (p[2] - 0.7).abs() < 1e-6,
            "P(neither) = 1 - the best relatedness"
        );
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // Sided mass split as the passages' mean splits it: agree 0.85/3, disagree 1.1/3.
        assert!(p[1] > p[0]);
        let shown: Vec<Option<f32>> = evidence.iter().map(|e| e.related).collect();
        assert_eq!(shown, [Some(0.3), Some(0.2), Some(0.1)], "closest first");
    }
}
