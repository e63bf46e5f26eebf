//! Intel AMX (Advanced Matrix Extensions, Xeon from Sapphire Rapids on): eight tile registers
//! of up to 16 rows × 64 bytes and a unit that adds to a 16 × 16 tile of int32 sums the
//! products of a 16 × 64 tile of bytes and a 64 × 16 one in one instruction (`tdpbusd`),
//! sixteen times the multiply-adds of a 512-bit `vpdpbusd`.
//!
//! What every AMX kernel needs lives here: detection (the CPU's bits, and Linux's permission:
//! the tile state is 8 KB a thread, so a process must ask for it before its first tile
//! instruction), the tile configuration, and the blocks of int8 and bf16 sums that
//! [`crate::int8`] and [`crate::bf16`] put their epilogues around. Rust has no stable AMX
//! intrinsics or target features, so the instructions are inline assembly, reached only after
//! [`int8_supported`] or [`bf16_supported`] said yes.

use std::sync::OnceLock;

/// Rows of a block: two tiles of 16.
pub const ROWS: usize = 32;
/// Columns of a block: one panel of [`crate::int8`] or [`crate::bf16`], two tiles of 16.
pub const COLS: usize = 32;
/// `u32`s of `k` one step of a block sums (quads of int8, pairs of bf16): 64 bytes, a tile's
/// row.
pub const KQ_STEP: usize = 16;

/// Whether this CPU and OS run AMX-INT8 tiles, unless `NABA_AMX=off` turns AMX off (to compare
/// with the AVX-512 paths it replaces).
pub fn int8_supported() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| tiles_allowed() && has_bit(25))
}

/// Whether this CPU and OS run AMX-BF16 tiles (f32 sums of bf16 pairs), unless `NABA_AMX=off`.
pub fn bf16_supported() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| tiles_allowed() && has_bit(22))
}

/// AMX-TILE is there, not turned off, and Linux let this process use it. Asked once.
fn tiles_allowed() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let off = std::env::var("NABA_AMX").is_ok_and(|v| matches!(v.as_str(), "off" | "0"));
        !off && has_bit(24) && permission()
    })
}

/// Bit `bit` of cpuid leaf 7's EDX (22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8).
#[cfg(target_arch = "x86_64")]
fn has_bit(bit: u32) -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // cpuid is always there on x86-64; leaf 7 only where leaf 0 says so.
    #[allow(unused_unsafe)]
    let max_leaf = unsafe { __cpuid(0).eax };
    #[allow(unused_unsafe)]
    let edx = unsafe { __cpuid_count(7, 0).edx };
    max_leaf >= 7 && (edx >> bit) & 1 == 1
}

#[cfg(not(target_arch = "x86_64"))]
fn has_bit(_bit: u32) -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn permission() -> bool {
    // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): granted for the whole process,
    // threads started later included; refused by kernels before 5.16 or a hypervisor that
    // hides the state, and then the tiles must not be touched.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain syscall with integer arguments; it changes only this process's
    // permission to use the tile state.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn permission() -> bool {
    false
}

/// One 32 × 32 block of sums with tile multiply `$op`: tiles 0-3 the four 16 × 16 corners, 4-5
/// the two row halves of `$a`, 6-7 the two column halves of `$panel`, 64 bytes of `k` a step.
/// Used only where the tiles are configured (a `Tiles` lives on this thread: it is not
/// Send), `kq` is a multiple of 16 and the slices were checked: every load then reads 16 rows
/// of 64 bytes inside `$a` (rows 0..32, `u32`s q..q+16 < kq) and `$panel`, and the stores
/// write 16 rows of 64 bytes inside the 32 × 32 `$sums`.
#[cfg(target_arch = "x86_64")]
macro_rules! block {
    ($op:literal, $a:expr, $kq:expr, $panel:expr, $sums:expr) => {{
        use std::arch::asm;
        let (ap, bp, kq, c) = ($a.as_ptr(), $panel.as_ptr(), $kq, $sums);
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        let mut q = 0;
        while q < kq {
            asm!(
                "tileloadd tmm4, [{a0} + {lda}*1]",
                "tileloadd tmm5, [{a1} + {lda}*1]",
                "tileloadd tmm6, [{b0} + {ldb}*1]",
                "tileloadd tmm7, [{b1} + {ldb}*1]",
                concat!($op, " tmm0, tmm4, tmm6"),
                concat!($op, " tmm1, tmm4, tmm7"),
                concat!($op, " tmm2, tmm5, tmm6"),
                concat!($op, " tmm3, tmm5, tmm7"),
                a0 = in(reg) ap.add(q),
                a1 = in(reg) ap.add(16 * kq + q),
                lda = in(reg) 4 * kq,
                b0 = in(reg) bp.add(q * COLS),
                b1 = in(reg) bp.add(q * COLS + 16),
                ldb = in(reg) 4 * COLS,
                options(nostack, readonly)
            );
            q += KQ_STEP;
        }
        asm!(
            "tilestored [{c00} + {ldc}*1], tmm0",
            "tilestored [{c01} + {ldc}*1], tmm1",
            "tilestored [{c10} + {ldc}*1], tmm2",
            "tilestored [{c11} + {ldc}*1], tmm3",
            c00 = in(reg) c,
            c01 = in(reg) c.add(16),
            c10 = in(reg) c.add(16 * COLS),
            c11 = in(reg) c.add(16 * COLS + 16),
            ldc = in(reg) 4 * COLS,
            options(nostack)
        );
    }};
}

/// The tile configuration of the blocks, loaded on this thread for as long as it lives.
/// Dropping it releases the tiles, so a thread that ran a product saves and restores no tile
/// state at its next context switch.
pub struct Tiles(std::marker::PhantomData<*const ()>);

/// `ldtilecfg`'s 64-byte operand: palette 1, then each tile's bytes a row and rows.
#[repr(C, align(64))]
struct Config([u8; 64]);

impl Tiles {
    /// Every one of the eight tiles as 16 rows of 64 bytes: sums 0-3, rows 4-5, columns 6-7.
    ///
    /// # Panics
    /// When neither [`int8_supported`] nor [`bf16_supported`].
    pub fn load() -> Self {
        assert!(
            int8_supported() || bf16_supported(),
            "AMX tiles on a CPU or OS without them"
        );
        let mut cfg = Config([0; 64]);
        cfg.0[0] = 1;
        for t in 0..8 {
            cfg.0[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            cfg.0[48 + t] = 16;
        }
        // SAFETY: AMX is there and this process may use it (asserted); cfg is a valid
        // palette-1 configuration, 64-byte aligned.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        }
        Tiles(std::marker::PhantomData)
    }

    /// `sums[i · 32 + j]` = Σ over `kq` quads of row `i` of `a` (unsigned bytes, `kq` quads a row,
    /// 32 rows) times column `j` of `panel` (signed bytes, quad `q` of column `j` at
    /// `panel[q · 32 + j]`): the layouts of [`crate::int8`]'s rows and panels.
    ///
    /// # Panics
    /// When AMX-INT8 is missing, `kq` is not a positive multiple of [`KQ_STEP`] or the slices
    /// are short.
    pub fn int8_sums(&self, a: &[u32], kq: usize, panel: &[u32], sums: &mut [i32; ROWS * COLS]) {
        assert!(int8_supported(), "AMX int8 sums on a CPU without AMX-INT8");
        check(a, kq, panel);
        // SAFETY: AMX-INT8 is there; see `block` for the rest.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            block!("tdpbusd", a, kq, panel, sums.as_mut_ptr());
        }
    }

    /// `sums[i · 32 + j]` = Σ over `kq` pairs of row `i` of `a` times column `j` of `panel`,
    /// in bf16 with f32 sums: the layouts of [`crate::bf16`]'s rows and panels.
    ///
    /// # Panics
    /// When AMX-BF16 is missing, `kq` is not a positive multiple of [`KQ_STEP`] or the slices
    /// are short.
    pub fn bf16_sums(&self, a: &[u32], kq: usize, panel: &[u32], sums: &mut [f32; ROWS * COLS]) {
        assert!(bf16_supported(), "AMX bf16 sums on a CPU without AMX-BF16");
        check(a, kq, panel);
        // SAFETY: AMX-BF16 is there; see `block` for the rest.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            block!("tdpbf16ps", a, kq, panel, sums.as_mut_ptr());
        }
    }

    /// [`Tiles::int8_sums`] of `mr ≤ 32` rows (`a` holds `mr · kq`), into `scratch`'s sums; rows
    /// past `mr` are zeros.
    pub fn int8_block<'s>(
        &self,
        a: &[u32],
        kq: usize,
        panel: &[u32],
        scratch: &'s mut Scratch<i32>,
    ) -> &'s [i32; ROWS * COLS] {
        let a = padded(a, kq, &mut scratch.rows);
        self.int8_sums(a, kq, panel, &mut scratch.sums);
        &scratch.sums
    }

    /// [`Tiles::bf16_sums`] of `mr ≤ 32` rows, as [`Tiles::int8_block`].
    pub fn bf16_block<'s>(
        &self,
        a: &[u32],
        kq: usize,
        panel: &[u32],
        scratch: &'s mut Scratch<f32>,
    ) -> &'s [f32; ROWS * COLS] {
        let a = padded(a, kq, &mut scratch.rows);
        self.bf16_sums(a, kq, panel, &mut scratch.sums);
        &scratch.sums
    }
}

/// A block's buffers, made once per run of blocks and reused by each: a copy of a short
/// block's rows, padded to the 32 the tiles read, and the sums the tiles store (`i32` for
/// int8, `f32` for bf16).
pub struct Scratch<T> {
    rows: Vec<u32>,
    sums: Box<[T; ROWS * COLS]>,
}

impl<T: Copy + Default> Default for Scratch<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            sums: Box::new([T::default(); ROWS * COLS]),
        }
    }
}

/// `a` (`mr ≤ 32` rows of `kq`) as the 32 rows a block reads: itself when whole, else copied
/// into `scratch` and padded with zero rows, whose sums are computed and never stored.
fn padded<'a>(a: &'a [u32], kq: usize, scratch: &'a mut Vec<u32>) -> &'a [u32] {
    if a.len() >= ROWS * kq {
        return a;
    }
    scratch.clear();
    scratch.extend_from_slice(a);
    scratch.resize(ROWS * kq, 0);
    scratch
}

fn check(a: &[u32], kq: usize, panel: &[u32]) {
    assert!(kq > 0 && kq.is_multiple_of(KQ_STEP), "AMX sums: kq = {kq}");
    assert!(a.len() >= ROWS * kq && panel.len() >= kq * COLS);
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured in `load`; releasing them only returns them to
        // their initial state.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }
}
