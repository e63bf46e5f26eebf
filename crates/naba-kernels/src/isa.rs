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
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            out.push(Isa::Avx2Fma);
        }
        out
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2+fma",
        }
    }
}
