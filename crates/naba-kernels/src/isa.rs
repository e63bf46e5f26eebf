//! Which instruction set the kernels use, detected once at run time so one binary runs fast on
//! a CPU with AVX2+FMA and correctly on one without (CI may run on either).

use std::sync::OnceLock;

/// A kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust that any CPU runs (the compiler may still vectorise it).
    Portable,
    /// x86-64 AVX2 with FMA.
    Avx2Fma,
    /// AVX2 and FMA, and AVX-512 (F, BW): everything [`Isa::Avx2Fma`] runs, with 16-wide
    /// versions of the kernels where they pay (softmax, GELU, the attention tile).
    Avx512,
}

impl Isa {
    /// The fastest family this CPU supports, unless `NABA_ISA=portable` asks for the plain one
    /// (to compare paths, or to rule a kernel out when hunting a bug).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let forced = std::env::var("NABA_ISA").ok();
            if forced.as_deref() == Some("portable") {
                return Isa::Portable;
            }
            Self::available().last().copied().unwrap_or(Isa::Portable)
        })
    }

    /// Every family this CPU can run, slowest first; tests run each kernel on all of them.
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                out.push(Isa::Avx2Fma);
                if has!("avx512f") && has!("avx512bw") {
                    out.push(Isa::Avx512);
                }
            }
        }
        out
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether the AVX2+FMA kernels may run (every family but the portable one).
    pub fn has_avx2(self) -> bool {
        matches!(self, Isa::Avx2Fma | Isa::Avx512)
    }
}

/// What the big matrix products multiply in; sums are f32 either way, and every other kernel
/// (layer norm, softmax, GELU) stays f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bf16 operands (8 bits of mantissa), on CPUs with AVX512-BF16 ([`crate::bf16`]).
    Bf16,
    /// int8 operands quantised per row and per output feature, on CPUs with AMX-INT8,
    /// AVX512-VNNI, AVX-VNNI or AVX2 ([`crate::int8`]); inference only (training runs bf16 or
    /// f32 in its place).
    Int8,
}

impl Precision {
    /// The fastest products this CPU has (`NABA_PRECISION=auto`, the default): int8 with
    /// AVX2 (through VNNI where the CPU has it), else bf16 with AVX512-BF16, else f32.
    /// `NABA_PRECISION=bf16`, `int8` or `f32` asks for one (a CPU without the instructions
    /// gets the next one down, f32 at the end, since emulating them would only be slower);
    /// `NABA_ISA=portable` means f32.
    /// The order is the rule, the fastest path that loses at most 0.5 F1 points on
    /// every set of the evaluation suite against f32: int8 lost at most 0.39 on VNNI and 0.31
    /// on the AVX2 path (7-bit weights), bf16 0.14 (README, Speed).
    pub fn best() -> Precision {
        static BEST: OnceLock<Precision> = OnceLock::new();
        *BEST.get_or_init(|| {
            let wanted = std::env::var("NABA_PRECISION").ok();
            match wanted.as_deref() {
                None | Some("" | "auto" | "bf16" | "f32" | "int8") => {}
                Some(other) => eprintln!(
                    "warning: NABA_PRECISION={other} is not auto, bf16, int8 or f32; using auto"
                ),
            }
            if wanted.as_deref() == Some("f32") || Isa::best() == Isa::Portable {
                return Precision::F32;
            }
            if wanted.as_deref() != Some("bf16") && crate::int8::supported() {
                return Precision::Int8;
            }
            if crate::bf16::supported() {
                Precision::Bf16
            } else {
                Precision::F32
            }
        })
    }

    /// [`Precision::name`], with the int8 path that runs it (`int8 (amx-int8)`), for reports.
    pub fn describe(self) -> String {
        match (self, crate::int8::paths().first()) {
            (Precision::Int8, Some(path)) => format!("int8 ({})", path.name()),
            _ => self.name().to_string(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}
