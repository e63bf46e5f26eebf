//! Rewrites a parts directory in another storage type (for a run trained before its recipe
//! asked for `q8` or `q4d`):
//! `cargo run --release -p naba-train --example requantize -- IN_DIR OUT_DIR q8|q4d|f16|bf16|f32`.
//! The tensors are read as the run stored them and stored again; `parts.json` records the new
//! type. Evaluate the result: what ships is what is scored.

use anyhow::{bail, Context, Result};
use naba_train::checkpoint::{self, PartsManifest, PARTS_FILE, PARTS_MANIFEST};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(input), Some(out), Some(dtype)) = (args.get(1), args.get(2), args.get(3)) else {
        bail!("usage: requantize IN_DIR OUT_DIR q8|q4d|f16|bf16|f32");
    };
    let (input, out) = (Path::new(input), Path::new(out));
    let manifest: PartsManifest =
        serde_json::from_str(&std::fs::read_to_string(input.join(PARTS_MANIFEST))?)
            .context("not a parts manifest")?;
    let base = checkpoint::open_base(&manifest.base, false)?;
    let parts = checkpoint::load_parts(&input.join(PARTS_FILE), &|n| base.tensor_for(n))?;
    let stored = checkpoint::parse_dtype(dtype)?;
    let mut tensors = Vec::new();
    for name in &manifest.tensors {
        let t = parts
            .get(name)
            .with_context(|| format!("parts lack `{name}`"))?;
        let b = base.tensor_for(name)?;
        tensors.extend(checkpoint::store_part(name, t, stored, b.as_ref())?);
    }
    std::fs::create_dir_all(out)?;
    checkpoint::save_tensors(&out.join(PARTS_FILE), &tensors, None)?;
    let mut m = manifest;
    m.dtype = dtype.clone();
    checkpoint::write_atomic(
        &out.join(PARTS_MANIFEST),
        serde_json::to_string_pretty(&m)?.as_bytes(),
    )?;
    std::fs::copy(input.join("config.json"), out.join("config.json"))?;
    eprintln!("{} tensors written to {}", m.tensors.len(), out.display());
    Ok(())
}
