//! Averages the weights of several runs of one recipe family (a "model soup"):
//! `cargo run --release -p naba-train --example soup -- OUT_DIR q8|q4d|f16|bf16|f32 PARTS_DIR...`.
//! Fine-tunes that start from the same base and the same head seed tend to land in one basin,
//! so their mean can score like an ensemble at the cost of one model. Every input must train
//! the same tensors over the same base with the same labels; the first input's config.json is
//! kept. Choose a soup on dev only, as any other run.

use anyhow::{bail, ensure, Context, Result};
use naba_train::checkpoint::{self, PartsManifest, PARTS_FILE, PARTS_MANIFEST};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        bail!("usage: soup OUT_DIR q8|q4d|f16|bf16|f32 PARTS_DIR PARTS_DIR...");
    }
    let (out, dtype, inputs) = (Path::new(&args[1]), &args[2], &args[3..]);
    let read = |dir: &str| -> Result<(PartsManifest, serde_json::Value)> {
        let dir = Path::new(dir);
        let m = serde_json::from_str(&std::fs::read_to_string(dir.join(PARTS_MANIFEST))?)
            .with_context(|| format!("{} has no parts manifest", dir.display()))?;
        let c = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
        Ok((m, c))
    };
    let (manifest, config) = read(&inputs[0])?;
    for other in &inputs[1..] {
        let (m, c) = read(other)?;
        ensure!(
            m.base == manifest.base && m.tensors == manifest.tensors,
            "{other} trains other tensors or another base than {}",
            inputs[0]
        );
        ensure!(
            c["id2label"] == config["id2label"],
            "{other} has other labels than {}",
            inputs[0]
        );
    }
    let base = checkpoint::open_base(&manifest.base, false)?;
    let all = inputs
        .iter()
        .map(|dir| {
            checkpoint::load_parts(&Path::new(dir).join(PARTS_FILE), &|n| base.tensor_for(n))
        })
        .collect::<Result<Vec<_>>>()?;
    let stored = checkpoint::parse_dtype(dtype)?;
    let mut tensors = Vec::new();
    for name in &manifest.tensors {
        let mut sum = None;
        for parts in &all {
            let t = parts
                .get(name)
                .with_context(|| format!("parts lack `{name}`"))?;
            sum = Some(match sum {
                None => t.clone(),
                Some(s) => (s + t)?,
            });
        }
        let mean = (sum.context("no inputs")? / all.len() as f64)?;
        let b = base.tensor_for(name)?;
        tensors.extend(checkpoint::store_part(name, &mean, stored, b.as_ref())?);
    }
    std::fs::create_dir_all(out)?;
    checkpoint::save_tensors(&out.join(PARTS_FILE), &tensors, None)?;
    let mut m = manifest;
    m.dtype = dtype.clone();
    checkpoint::write_atomic(
        &out.join(PARTS_MANIFEST),
        serde_json::to_string_pretty(&m)?.as_bytes(),
    )?;
    std::fs::copy(
        Path::new(&inputs[0]).join("config.json"),
        out.join("config.json"),
    )?;
    eprintln!(
        "mean of {} runs: {} tensors written to {}",
        all.len(),
        m.tensors.len(),
        out.display()
    );
    Ok(())
}
