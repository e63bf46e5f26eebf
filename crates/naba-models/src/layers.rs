//! The building blocks whose weights may be stored dense (f32, f16, bf16) or quantized (Q8_0,
//! Q4_0): a linear layer and an embedding table. The encoder only sees these types, so a faster
//! arithmetic later changes this file and not the model definition.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};
use std::sync::Arc;

/// `y = x Wᵀ + b` with `W` of shape `[out, in]`, as PyTorch stores it.
#[derive(Debug, Clone)]
pub enum Linear {
    Dense(candle_nn::Linear),
    Quantized {
        weight: QMatMul,
        bias: Option<Tensor>,
    },
}

impl Linear {
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear::Dense(candle_nn::Linear::new(weight, bias))
    }

    pub fn quantized(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        Ok(Linear::Quantized {
            weight: QMatMul::from_arc(weight)?,
            bias,
        })
    }

    /// The weight as a dense f32 `[out, in]` tensor (4-bit weights are expanded).
    pub fn dense_weight(&self) -> Result<Tensor> {
        match self {
            Linear::Dense(l) => l.weight().to_dtype(DType::F32),
            Linear::Quantized { weight, .. } => match weight {
                QMatMul::QTensor(q) => q.dequantize(&candle_core::Device::Cpu),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(DType::F32),
            },
        }
    }

    pub fn is_dense(&self) -> bool {
        matches!(self, Linear::Dense(_))
    }

    pub fn bias(&self) -> Option<&Tensor> {
        match self {
            Linear::Dense(l) => l.bias(),
            Linear::Quantized { bias, .. } => bias.as_ref(),
        }
    }

    /// Re-stores a dense layer in a block-quantized format (Q8_0, Q4_0, ...); quantized layers
    /// are returned unchanged.
    pub fn quantize(&self, dtype: GgmlDType) -> Result<Self> {
        match self {
            Linear::Dense(l) => {
                let w = l.weight().to_dtype(DType::F32)?;
                let q = QTensor::quantize(&w, dtype)?;
                Linear::quantized(Arc::new(q), l.bias().cloned())
            }
            Linear::Quantized { .. } => Ok(self.clone()),
        }
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Dense(l) => l.forward(xs),
            Linear::Quantized { weight, bias } => {
                // Quantized kernels take and give f32; keep the caller's dtype at the boundary.
                let dtype = xs.dtype();
                let ys = weight.forward(&xs.to_dtype(DType::F32)?)?;
                let ys = match bias {
                    Some(b) => ys.broadcast_add(&b.to_dtype(DType::F32)?)?,
                    None => ys,
                };
                ys.to_dtype(dtype)
            }
        }
    }
}

/// A lookup table of `[rows, hidden]`.
#[derive(Debug, Clone)]
pub enum Embedding {
    Dense(Tensor),
    /// Rows are dequantized on lookup, so a 250k-row vocabulary stays at 4 bits in memory.
    Quantized {
        table: Arc<QTensor>,
        dtype: DType,
    },
}

impl Embedding {
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Embedding::Dense(table) => {
                let mut dims = ids.dims().to_vec();
                dims.push(table.dim(1)?);
                table.index_select(&ids.flatten_all()?, 0)?.reshape(dims)
            }
            Embedding::Quantized { table, dtype } => table.embedding(ids)?.to_dtype(*dtype),
        }
    }

    pub fn rows(&self) -> Result<usize> {
        match self {
            Embedding::Dense(t) => t.dim(0),
            Embedding::Quantized { table, .. } => table.shape().dim(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quantized_linear_tracks_dense() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (64, 64), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 64, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64), &dev)?;
        let dense = Linear::dense(w, Some(b));
        let q8 = dense.quantize(GgmlDType::Q8_0)?;
        let a = dense.forward(&x)?;
        let c = q8.forward(&x)?;
        assert_eq!(a.dims(), c.dims());
        let rel = ((a.clone() - c)?.sqr()?.sum_all()?.to_scalar::<f32>()?
            / a.sqr()?.sum_all()?.to_scalar::<f32>()?)
        .sqrt();
        assert!(rel < 0.02, "Q8_0 relative error {rel}");
        Ok(())
    }

    #[test]
    fn quantized_embedding_matches_dequantized_rows() -> Result<()> {
        let dev = Device::Cpu;
        let table = Tensor::randn(0f32, 1.0, (10, 32), &dev)?;
        let q = Arc::new(QTensor::quantize(&table, GgmlDType::Q4_0)?);
        let deq = q.dequantize(&dev)?;
        let ids = Tensor::new(&[[3u32, 7], [0, 9]], &dev)?;
        let got = Embedding::Quantized {
            table: q,
            dtype: DType::F32,
        }
        .forward(&ids)?;
        let want = Embedding::Dense(deq).forward(&ids)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        Ok(())
    }
}
