//! The kernels as candle custom ops, so model code keeps passing `Tensor`s: a layer's weights
//! are prepared once ([`FusedLinear`], [`LayerNormOp`]) and applied with `apply_op*_no_bwd`.
//! CPU and f32 only; callers keep candle's own ops for other devices and types. Inference only:
//! none of these has a backward pass.

use crate::linear::Epilogue;
use crate::packed::PackedMatrix;
use crate::{attention, norm, Isa, Precision};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Error, Layout, Result, Shape, Tensor};
use std::sync::Arc;

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        return Err(Error::Msg(format!("{what}: expects f32 storage")));
    };
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| Error::Msg(format!("{what}: expects a contiguous tensor")))?;
    Ok(&v[a..b])
}

fn dims2(l: &Layout, what: &str) -> Result<(usize, usize)> {
    match l.dims() {
        [a, b] => Ok((*a, *b)),
        d => Err(Error::Msg(format!(
            "{what}: expects a matrix, got shape {d:?}"
        ))),
    }
}

fn host_vec(t: &Tensor) -> Result<Arc<[f32]>> {
    Ok(t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into())
}

/// `y = x Wᵀ + b`, then GELU if asked, for `x` of `[rows, in]`; the weight is packed once, here,
/// for the product kernel of this CPU and the precision asked for ([`PackedMatrix`]).
#[derive(Debug, Clone)]
pub struct FusedLinear {
    weight: PackedMatrix,
    bias: Option<Arc<[f32]>>,
    epilogue: Epilogue,
}

impl FusedLinear {
    /// `weight` `[out, in]`, `bias` `[out]`; products in `precision` where the CPU has it
    /// (f32 otherwise).
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        epilogue: Epilogue,
        precision: Precision,
    ) -> Result<Self> {
        let (out, inp) = weight.dims2()?;
        let weight = weight
            .to_dtype(candle_core::DType::F32)?
            .contiguous()?
            .to_device(&candle_core::Device::Cpu)?;
        // Packed straight from the tensor's own storage: five models load side by side, and a
        // second copy of each weight would raise the peak by their whole size.
        let packed = {
            let (storage, layout) = weight.storage_and_layout();
            let candle_core::Storage::Cpu(cpu) = &*storage else {
                return Err(Error::Msg("linear: the weight is not on the CPU".into()));
            };
            PackedMatrix::pack_for(
                Isa::best(),
                precision,
                f32_slice(cpu, layout, "linear weight")?,
                out,
                inp,
            )
        };
        let bias = bias.map(host_vec).transpose()?;
        if let Some(b) = &bias {
            if b.len() != out {
                return Err(Error::Msg(format!(
                    "linear: bias of {} for {out} outputs",
                    b.len()
                )));
            }
        }
        Ok(Self {
            weight: packed,
            bias,
            epilogue,
        })
    }

    /// Several layers that read the same input as one (Q, K and V): their weights stacked by
    /// rows, their biases concatenated, so one product replaces three.
    pub fn stacked(parts: &[(&Tensor, Option<&Tensor>)], precision: Precision) -> Result<Self> {
        let ws: Vec<Tensor> = parts.iter().map(|(w, _)| (*w).clone()).collect();
        let weight = Tensor::cat(&ws, 0)?;
        let bias = if parts.iter().any(|(_, b)| b.is_some()) {
            let mut bs = Vec::with_capacity(parts.len());
            for (w, b) in parts {
                bs.push(match b {
                    Some(b) => (*b).clone(),
                    None => Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?,
                });
            }
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Self::new(&weight, bias.as_ref(), Epilogue::None, precision)
    }

    pub fn out_features(&self) -> usize {
        self.weight.out_features()
    }

    /// What this layer's products multiply in.
    pub fn precision(&self) -> Precision {
        self.weight.precision()
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for FusedLinear {
    fn name(&self) -> &'static str {
        "naba-fused-linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, k) = dims2(xl, "linear input")?;
        let n = self.weight.out_features();
        if k != self.weight.in_features() {
            return Err(Error::Msg(format!(
                "linear: input has {k} features but the weight takes {}",
                self.weight.in_features()
            )));
        }
        let x = f32_slice(xs, xl, "linear input")?;
        let mut out = vec![0f32; m * n];
        self.weight
            .linear(x, self.bias.as_deref(), &mut out, m, self.epilogue);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `LN(x + residual) · gamma + beta` by rows (the residual is optional).
#[derive(Debug, Clone)]
pub struct LayerNormOp {
    gamma: Arc<[f32]>,
    beta: Arc<[f32]>,
    eps: f32,
    isa: Isa,
}

impl LayerNormOp {
    pub fn new(gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Self> {
        let gamma = host_vec(gamma)?;
        let beta = host_vec(beta)?;
        if gamma.len() != beta.len() {
            return Err(Error::Msg(
                "layer norm: gamma and beta differ in size".into(),
            ));
        }
        Ok(Self {
            gamma,
            beta,
            eps: eps as f32,
            isa: Isa::best(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }

    /// `LN(x + residual)`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        x.apply_op2_no_bwd(residual, self)
    }

    fn run(&self, x: &[f32], l: &Layout, residual: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let width = *l.dims().last().unwrap_or(&0);
        if width != self.gamma.len() {
            return Err(Error::Msg(format!(
                "layer norm: rows of {width} for a norm of {}",
                self.gamma.len()
            )));
        }
        let mut out = x.to_vec();
        norm::add_layer_norm(
            self.isa,
            &mut out,
            residual,
            &self.gamma,
            &self.beta,
            self.eps,
        );
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "naba-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(f32_slice(s, l, "layer norm")?, l, None)
    }
}

impl CustomOp2 for LayerNormOp {
    fn name(&self) -> &'static str {
        "naba-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l.dims() != rl.dims() {
            return Err(Error::Msg(format!(
                "layer norm: residual {:?} for input {:?}",
                rl.dims(),
                l.dims()
            )));
        }
        let r = f32_slice(rs, rl, "layer norm residual")?;
        self.run(f32_slice(s, l, "layer norm")?, l, Some(r))
    }
}

/// Multi-head attention of a packed `[tokens, 3·hidden]` QKV matrix (see
/// [`attention::packed_attention`]).
#[derive(Debug, Clone)]
pub struct PackedAttention {
    offsets: Arc<[usize]>,
    heads: usize,
    scale: f32,
    isa: Isa,
    /// Both products in bf16 on AMX tiles ([`attention::packed_attention_bf16`]).
    bf16: bool,
}

impl PackedAttention {
    /// `offsets`: where each sequence starts, then the total (`[0, len0, len0 + len1, …]`).
    pub fn new(offsets: Vec<usize>, heads: usize, scale: f32) -> Result<Self> {
        let total = offsets.last().copied().unwrap_or(0);
        attention::check_offsets(&offsets, total).map_err(Error::Msg)?;
        if heads == 0 {
            return Err(Error::Msg("attention needs at least one head".into()));
        }
        Ok(Self {
            offsets: offsets.into(),
            heads,
            scale,
            isa: Isa::best(),
            bf16: false,
        })
    }

    /// Attention for a model whose linear layers multiply in `products`: with int8 or bf16
    /// and AMX tiles, its two products run in bf16 on them too (within the 0.5 F1 points of
    /// the suite: README, Speed); f32 products keep f32 attention, the default.
    pub fn with_products(mut self, products: Precision) -> Self {
        self.bf16 = products != Precision::F32 && attention::bf16_supported();
        self
    }

    pub fn forward(&self, qkv: &Tensor) -> Result<Tensor> {
        qkv.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for PackedAttention {
    fn name(&self) -> &'static str {
        "naba-packed-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (tokens, width) = dims2(l, "attention input")?;
        let total = self.offsets.last().copied().unwrap_or(0);
        if tokens != total || width % 3 != 0 || (width / 3) % self.heads != 0 {
            return Err(Error::Msg(format!(
                "attention: input [{tokens}, {width}] does not fit {total} packed tokens of \
                 3 × hidden with {} heads",
                self.heads
            )));
        }
        let hidden = width / 3;
        let qkv = f32_slice(s, l, "attention input")?;
        let mut out = vec![0f32; tokens * hidden];
        if self.bf16 {
            attention::packed_attention_bf16(qkv, &self.offsets, self.heads, self.scale, &mut out);
        } else {
            attention::packed_attention(
                self.isa,
                qkv,
                &self.offsets,
                self.heads,
                self.scale,
                &mut out,
            );
        }
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }
}
