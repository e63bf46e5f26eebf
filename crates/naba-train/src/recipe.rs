//! A training recipe: everything that decides the trained model, in one TOML file that ships
//! beside the model (`models/<name>/recipe.toml`). Command-line flags may override a few fields;
//! the recipe actually used (after overrides) is written next to the checkpoint and into the
//! model card.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the model learns to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// One label per word (NER), read from CoNLL files.
    TokenClassification,
    /// One label per text (topic), read from CSV/TSV/JSONL.
    SequenceClassification,
    /// One label per (target, text) pair (stance), read from CSV/TSV/JSONL.
    PairClassification,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::TokenClassification => "token-classification",
            Task::SequenceClassification => "sequence-classification",
            Task::PairClassification => "pair-classification",
        }
    }
}

/// The whole recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The model's name (`ner-anercorp`); also the default output folder's name.
    pub name: String,
    pub task: Task,
    /// The encoder to start from: `multilingual-e5-small-q4` (the pinned base, fetched by
    /// `naba models fetch`) or a Hugging Face-layout directory.
    pub base: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub data: DataSpec,
    #[serde(default)]
    pub model: ModelSpec,
    #[serde(default)]
    pub optim: OptimSpec,
    /// Where checkpoints and the trained model go (overridden by `--out`).
    #[serde(default)]
    pub out: Option<PathBuf>,
}

fn default_seed() -> u64 {
    13
}

/// Data files and how to read them. Relative paths are taken from the current directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub train: PathBuf,
    /// More CoNLL training files, appended whole after dev is carved from `train` (they are
    /// never carved from, so dev stays the same split with or without them): pseudo-labelled
    /// text for self-training (`scripts/ner_pseudo_labels.py`), or other labelled data.
    /// Token classification only.
    #[serde(default)]
    pub extra_train: Vec<PathBuf>,
    /// A dev file; without one, `dev_fraction` of the training examples (seeded) are held out.
    #[serde(default)]
    pub dev: Option<PathBuf>,
    #[serde(default = "default_dev_fraction")]
    pub dev_fraction: f64,
    /// Seeds the carving of that held-out dev (default: the recipe's `seed`). Pinned, runs with
    /// other training seeds (`--seed`) are chosen on one and the same dev split.
    #[serde(default)]
    pub dev_seed: Option<u64>,
    /// Token classification: join runs of consecutive sentences into examples of up to
    /// `max_length` sub-words, so every sentence is learned with its neighbours around it, as
    /// serving reads whole articles. Costs nothing per token. A carved dev split is then made of
    /// blocks of consecutive sentences (packed the same way), and dev and test files are packed
    /// too, so checkpoints are chosen with the context they will be used with.
    #[serde(default)]
    pub pack_sentences: bool,
    /// Token classification with a carved dev: dev takes blocks of this many consecutive
    /// sentences (default 10 with `pack_sentences`, else 1). Set it to 10 without packing to
    /// train a baseline on exactly the split a packed run uses.
    #[serde(default)]
    pub dev_block: Option<usize>,
    /// Files scored once with the best checkpoint at the end, for the model card. Never used
    /// for any choice.
    #[serde(default)]
    pub test: Vec<PathBuf>,
    /// The label set in id order. For token classification give full IOB2 tags (`O` first).
    pub labels: Vec<String>,
    /// Text column (classification).
    #[serde(default)]
    pub text_column: Option<String>,
    /// Column read when the text column is empty (the ANT corpus' `title`).
    #[serde(default)]
    pub text_fallback: Option<String>,
    /// Rows kept from the train file, by column value (`{ split = "train" }`): one file can
    /// hold every split, as the ANT corpus does. Likewise `dev_filter` and `test_filter`.
    #[serde(default)]
    pub train_filter: BTreeMap<String, String>,
    #[serde(default)]
    pub dev_filter: BTreeMap<String, String>,
    #[serde(default)]
    pub test_filter: BTreeMap<String, String>,
    /// Target column (pair classification; the target goes first).
    #[serde(default)]
    pub target_column: Option<String>,
    /// Label column (classification).
    #[serde(default)]
    pub label_column: Option<String>,
    /// Sub-words per window, special tokens included; longer examples are cut at word
    /// boundaries (token classification) or truncated (classification).
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Classification: score dev (and test) by the mean F1 of these labels instead of the
    /// macro-F1 of all, when the data set's own metric does (Mawqif: Favor and Against).
    #[serde(default)]
    pub score_labels: Vec<String>,
    /// Put before every text, as serving will (E5 was trained with `query: `).
    #[serde(default)]
    pub prefix: String,
    /// Use at most this many training examples (for smoke runs).
    #[serde(default)]
    pub limit_train: Option<usize>,
}

fn default_dev_fraction() -> f64 {
    0.1
}

fn default_max_length() -> usize {
    256
}

/// Which parts train.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// How many of the top encoder layers train: 0 is the head only, the number of layers is
    /// all of them. Embeddings always stay frozen (96M of E5's 117M parameters are the word
    /// table), and the frozen layers' outputs are computed once and cached.
    #[serde(default = "default_train_layers")]
    pub train_layers: usize,
    /// 0 (default): the trained layers' weights change directly. `r > 0`: they stay as the base
    /// has them and each of their six linear layers (query, key, value, attention output,
    /// intermediate, output) learns a rank-`r` change instead (low-rank adapters, LoRA), with
    /// their biases and layer norms frozen; the head trains as always. The parts then store the
    /// adapters (a few MB for all 12 layers at rank 8), and assembly merges them into the
    /// weights, so the checkpoint is an ordinary one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lora_rank: usize,
    /// Dropout on hidden states inside trained layers and before the head.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Label every sub-word of a word (continuations get the `I-` tag) instead of the first.
    #[serde(default)]
    pub label_all_subwords: bool,
    /// SentencePiece often writes a word as a bare `▁` piece (the space) and then the word's
    /// pieces. A transformers-style pipeline (naba-tasks) makes that bare piece a word of its
    /// own and the next piece another, so with this on the bare piece learns the word's tag
    /// and the next piece the word's inside tag (`I-X`, or `O`): grouping then yields the
    /// right entity. Off: the bare piece is ignored and the next piece is the first sub-word.
    #[serde(default)]
    pub label_lone_space: bool,
    /// Storage type of the committed parts: `f16`, `bf16`, `f32`, `q8` (int8 rows with
    /// f32 scales; half of f16's size), or `q4d` (the change from the base in 4 bits, groups
    /// of 32 with f16 scales; a quarter of f16's size, for runs that train many layers).
    #[serde(default = "default_parts_dtype")]
    pub parts_dtype: String,
    /// Classification: the window serving reads long texts in, written to config.json as
    /// `naba.window` (default `data.max_length`, what training read). Choose it on dev.
    #[serde(default)]
    pub window: Option<usize>,
    /// NER: the passage length in words (consecutive sentences) `naba eval` reads a
    /// sentence-split corpus in by default, written to config.json as `naba.pack_words`; for
    /// models trained with `data.pack_sentences`. Choose it on dev.
    #[serde(default)]
    pub pack_words: Option<usize>,
}

fn default_train_layers() -> usize {
    4
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn default_dropout() -> f64 {
    0.1
}

fn default_parts_dtype() -> String {
    "f16".into()
}

impl DataSpec {
    /// Sentences per block of a carved dev split: `dev_block`, else 10 when packing, else 1.
    pub fn dev_block(&self) -> usize {
        let default = if self.pack_sentences {
            crate::data::DEV_BLOCK
        } else {
            1
        };
        self.dev_block.unwrap_or(default)
    }
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            train_layers: default_train_layers(),
            lora_rank: 0,
            dropout: default_dropout(),
            label_all_subwords: false,
            label_lone_space: false,
            parts_dtype: default_parts_dtype(),
            window: None,
            pack_words: None,
        }
    }
}

/// Optimiser and schedule.
/// Which engine trains the encoder layers (see [`OptimSpec::engine`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainEngine {
    #[default]
    Fast,
    Reference,
}

impl TrainEngine {
    fn is_fast(&self) -> bool {
        *self == TrainEngine::Fast
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrainEngine::Fast => "fast",
            TrainEngine::Reference => "reference",
        }
    }
}

/// What the fast engine's big products multiply in (see [`OptimSpec::precision`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainPrecision {
    #[default]
    Auto,
    F32,
    Bf16,
}

impl TrainPrecision {
    fn is_auto(&self) -> bool {
        *self == TrainPrecision::Auto
    }

    /// The products this machine runs for the setting: `auto` is the inference engine's choice
    /// ([`naba_kernels::Precision::best`]), `bf16` needs AVX512-BF16 and is f32 without it.
    pub fn resolve(self) -> naba_kernels::Precision {
        use naba_kernels::Precision;
        let wanted = match self {
            TrainPrecision::Auto => Precision::best(),
            TrainPrecision::F32 => Precision::F32,
            TrainPrecision::Bf16 => Precision::Bf16,
        };
        crate::fast::runnable(wanted)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSpec {
    /// What computes the trained layers' forward and backward passes. `fast` (default): the
    /// hand-written passes over packed batches (`naba_train::fast`; CPU, f32, GELU, weights
    /// trained directly), falling back to `reference` where they do not apply (adapters, GPU).
    /// `reference`: candle's autograd over padded batches, what trained every model before
    /// the fast engine; the same seed reproduces those models bit for bit only with it.
    #[serde(default, skip_serializing_if = "TrainEngine::is_fast")]
    pub engine: TrainEngine,
    /// What the fast engine's big matrix products multiply in; weights, gradients and
    /// optimiser state are f32 either way. `auto` (default): bf16 where the CPU has
    /// AVX512-BF16 (unless `NABA_PRECISION=f32`), else f32. `f32`, or `bf16` (f32 on a CPU
    /// without it). The same seed gives the same model only with the same products, so a
    /// model trained in bf16 is reproduced on a CPU that has it.
    #[serde(default, skip_serializing_if = "TrainPrecision::is_auto")]
    pub precision: TrainPrecision,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Examples per micro-batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before one optimiser step.
    #[serde(default = "default_one")]
    pub grad_accum: usize,
    /// Peak learning rate of the head.
    #[serde(default = "default_lr_head")]
    pub lr_head: f64,
    /// Peak learning rate of the top trained encoder layer.
    #[serde(default = "default_lr_encoder")]
    pub lr_encoder: f64,
    /// Each layer below the top trains at this factor of the one above (1.0: all equal).
    #[serde(default = "default_one_f")]
    pub layer_lr_decay: f64,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Fraction of all steps spent warming up linearly from 0; the rest decays linearly to 0.
    #[serde(default = "default_warmup")]
    pub warmup_fraction: f64,
    /// Global gradient-norm clip (0 disables).
    #[serde(default = "default_one_f")]
    pub grad_clip: f64,
    #[serde(default)]
    pub label_smoothing: f64,
    /// Loss weight per label (token classification: per entity type such as `MISC`, or per full
    /// tag such as `B-MISC`); unlisted labels weigh 1.
    #[serde(default)]
    pub class_weights: BTreeMap<String, f64>,
    /// Epochs without a better dev score before stopping (0: never stop early).
    #[serde(default = "default_patience")]
    pub patience: usize,
    /// Save the resumable state every this many optimiser steps (0: only at epoch ends).
    #[serde(default = "default_save_every")]
    pub save_every: usize,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
}

fn default_epochs() -> usize {
    4
}
fn default_batch() -> usize {
    16
}
fn default_one() -> usize {
    1
}
fn default_one_f() -> f64 {
    1.0
}
fn default_lr_head() -> f64 {
    1e-3
}
fn default_lr_encoder() -> f64 {
    1e-4
}
fn default_wd() -> f64 {
    0.01
}
fn default_warmup() -> f64 {
    0.1
}
fn default_patience() -> usize {
    3
}
fn default_save_every() -> usize {
    200
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl Default for OptimSpec {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

impl Recipe {
    /// Reads and checks a recipe file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the recipe {}", path.display()))?;
        let r: Recipe = toml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid recipe (see crates/naba-train/src/recipe.rs for the fields)",
                path.display()
            )
        })?;
        r.validate()?;
        Ok(r)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.data.labels.len() < 2 {
            bail!("the recipe's data.labels must name at least two labels");
        }
        if self.task == Task::TokenClassification {
            if !self.data.labels.iter().any(|l| l == "O") {
                bail!("token classification needs the tag `O` in data.labels");
            }
            for l in &self.data.labels {
                if l != "O" && !(l.starts_with("B-") || l.starts_with("I-")) {
                    bail!("data.labels holds `{l}`: token-classification tags must be O, B-X or I-X (IOB2)");
                }
            }
        }
        for l in &self.data.score_labels {
            if !self.data.labels.contains(l) {
                bail!("data.score_labels names `{l}`, which is not in data.labels");
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for l in &self.data.labels {
            if !seen.insert(l) {
                bail!("data.labels names `{l}` twice");
            }
        }
        if !(0.0..1.0).contains(&self.data.dev_fraction) {
            bail!(
                "data.dev_fraction must be in [0, 1), got {}",
                self.data.dev_fraction
            );
        }
        if self.data.dev.is_none() && self.data.dev_fraction <= 0.0 {
            bail!("give data.dev or a data.dev_fraction above 0: the trainer picks checkpoints on dev");
        }
        if (self.data.pack_sentences || self.data.dev_block.is_some())
            && self.task != Task::TokenClassification
        {
            bail!("data.pack_sentences and data.dev_block are for token classification (CoNLL sentences)");
        }
        if !self.data.extra_train.is_empty() && self.task != Task::TokenClassification {
            bail!("data.extra_train is for token classification (CoNLL files); for classification, join the rows into data.train");
        }
        if self.data.dev_block == Some(0) {
            bail!("data.dev_block must be at least 1 sentence");
        }
        if self.model.pack_words.is_some() && self.task != Task::TokenClassification {
            bail!("model.pack_words is for token classification: classification reads whole texts in windows (model.window)");
        }
        if self.model.lora_rank > 0 && self.model.train_layers == 0 {
            bail!("model.lora_rank adapts the trained layers, but model.train_layers is 0: name how many top layers to adapt (all 12 is usual with adapters)");
        }
        if self.model.window.is_some_and(|w| w < 8) {
            bail!("model.window must be at least 8 tokens");
        }
        if self.data.max_length < 8 {
            bail!("data.max_length {} is too short", self.data.max_length);
        }
        let o = &self.optim;
        if o.epochs == 0 || o.batch_size == 0 || o.grad_accum == 0 {
            bail!("optim.epochs, optim.batch_size and optim.grad_accum must be at least 1");
        }
        if !(0.0..1.0).contains(&self.model.dropout) {
            bail!("model.dropout must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&o.label_smoothing) {
            bail!("optim.label_smoothing must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&o.warmup_fraction) {
            bail!("optim.warmup_fraction must be in [0, 1]");
        }
        if o.lr_head <= 0.0 || o.lr_encoder < 0.0 {
            bail!("learning rates must be positive");
        }
        match self.model.parts_dtype.as_str() {
            "f16" | "bf16" | "f32" | "q8" | "q4d" => {}
            other => bail!("model.parts_dtype `{other}`: use f16, bf16, f32, q8 or q4d"),
        }
        for (k, w) in &o.class_weights {
            if *w <= 0.0 {
                bail!("optim.class_weights.{k} must be positive");
            }
        }
        Ok(())
    }

    /// The recipe as TOML, as written next to the model.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// A classification's headline score, by which checkpoints (and a lexical member's share)
    /// are chosen on dev: the mean F1 of `data.score_labels` when the recipe names them (Mawqif's
    /// Favor and Against), else macro-F1.
    pub fn headline(&self, m: &naba_eval::ClassificationMetrics) -> f64 {
        if self.data.score_labels.is_empty() {
            return m.macro_avg.f1;
        }
        let chosen: Vec<&str> = self.data.score_labels.iter().map(String::as_str).collect();
        m.mean_f1(&chosen)
    }

    /// The loss weight of each label id.
    pub fn label_weights(&self) -> Vec<f64> {
        self.data
            .labels
            .iter()
            .map(|l| {
                if let Some(w) = self.optim.class_weights.get(l) {
                    return *w;
                }
                let ty = l
                    .strip_prefix("B-")
                    .or_else(|| l.strip_prefix("I-"))
                    .unwrap_or(l);
                self.optim.class_weights.get(ty).copied().unwrap_or(1.0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_recipe_gets_defaults_and_weights() {
        let r: Recipe = toml::from_str(
            r#"name = "x"
            task = "token-classification"
            base = "b"
            [data]
            train = "t.txt"
            labels = ["O", "B-MISC", "I-MISC", "B-LOC"]
            [optim]
            class_weights = { MISC = 2.0, B-LOC = 3.0 }
            "#,
        )
        .unwrap();
        r.validate().unwrap();
        assert_eq!(r.optim.epochs, 4);
        assert_eq!(r.label_weights(), vec![1.0, 2.0, 2.0, 3.0]);
        let back: Recipe = toml::from_str(&r.to_toml().unwrap()).unwrap();
        assert_eq!(back.data.labels, r.data.labels);
    }

    #[test]
    fn score_labels_must_be_labels() {
        let mut r: Recipe = toml::from_str(
            r#"name = "x"
            task = "pair-classification"
            base = "b"
            [data]
            train = "t.csv"
            labels = ["Favor", "Against", "None"]
            score_labels = ["Favor", "Against"]
            "#,
        )
        .unwrap();
        r.validate().unwrap();
        r.data.score_labels.push("Neutral".into());
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("`Neutral`") && e.contains("data.labels"), "{e}");
        r.data.score_labels.pop();
        // Passages of sentences mean nothing to a classifier of whole texts.
        r.model.pack_words = Some(100);
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("model.pack_words"), "{e}");
    }

    #[test]
    fn rejects_non_iob_tags() {
        let r: Recipe = toml::from_str(
            r#"name = "x"
            task = "token-classification"
            base = "b"
            [data]
            train = "t.txt"
            labels = ["O", "PER"]
            "#,
        )
        .unwrap();
        assert!(r.validate().unwrap_err().to_string().contains("IOB2"));
    }
}
