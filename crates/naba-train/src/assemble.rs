//! The default models that ship with naba as parts (`models/<name>/` in the repository:
//! `parts.safetensors`, `parts.json`, `config.json`, model card, recipe), and their assembly
//! into complete Hugging Face-layout directories in naba's cache, where `naba predict --model
//! <dir>` and transformers can load them.

use crate::checkpoint::{self, PartsManifest, PARTS_FILE, PARTS_MANIFEST};
use anyhow::{Context, Result};
use naba_models::fetch;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One default model.
#[derive(Debug, Clone, Serialize)]
pub struct DefaultModel {
    pub name: String,
    pub task: String,
    pub labels: Vec<String>,
    /// The assembled directory in the cache (`<cache>/models/<name>`).
    pub path: PathBuf,
    /// Whether `path` holds a complete, current assembly.
    pub installed: bool,
    /// Where its parts live.
    pub parts: PathBuf,
}

const STAMP: &str = "naba-parts.sha256";

/// Where the shipped parts are: `NABA_MODELS_DIR`, else `./models`, else a `models/` folder
/// beside an ancestor of the running executable (a checkout's `target/release/naba`).
pub fn default_models_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NABA_MODELS_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let has_parts = |d: &Path| {
        std::fs::read_dir(d).ok().is_some_and(|mut it| {
            it.any(|e| e.is_ok_and(|e| e.path().join(PARTS_MANIFEST).is_file()))
        })
    };
    let cwd = PathBuf::from("models");
    if has_parts(&cwd) {
        return Some(cwd);
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .map(|a| a.join("models"))
        .find(|d| has_parts(d))
}

/// Every parts directory under `models_dir`, with where it is (or would be) assembled under
/// `cache_root` (see `naba_models::fetch::cache_root`).
pub fn list_default_models(models_dir: &Path, cache_root: &Path) -> Result<Vec<DefaultModel>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(models_dir)
        .with_context(|| format!("cannot read {}", models_dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(PARTS_MANIFEST).is_file())
        .collect();
    dirs.sort();
    for parts in dirs {
        let name = parts
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest: PartsManifest = serde_json::from_str(
            &std::fs::read_to_string(parts.join(PARTS_MANIFEST))
                .with_context(|| format!("cannot read {}", parts.join(PARTS_MANIFEST).display()))?,
        )
        .with_context(|| format!("{} is not a parts manifest", parts.display()))?;
        let config = naba_models::ModelConfig::from_file(&parts.join("config.json"))?;
        let path = cache_root.join("models").join(&name);
        let installed = is_current(&parts, &path);
        out.push(DefaultModel {
            name,
            task: manifest.task,
            labels: config.labels,
            path,
            installed,
            parts,
        });
    }
    Ok(out)
}

/// What an assembly was made from: the parts and the config (a changed `config.json`, say a
/// new `window`, makes the assembly stale too).
fn parts_digest(parts: &Path) -> Option<String> {
    let tensors = fetch::sha256_file(&parts.join(PARTS_FILE)).ok()?;
    let config = fetch::sha256_file(&parts.join("config.json")).ok()?;
    Some(format!("{tensors} {config}"))
}

fn is_current(parts: &Path, dir: &Path) -> bool {
    dir.join("model.safetensors").is_file()
        && std::fs::read_to_string(dir.join(STAMP))
            .ok()
            .zip(parts_digest(parts))
            .is_some_and(|(a, b)| a.trim() == b)
}

/// Assembles every default model under `models_dir` into `cache_root/models/<name>` (the base
/// encoder must be fetched first); models already assembled from the same parts are left as
/// they are. Returns the models with their directories.
pub fn assemble_default_models(
    models_dir: &Path,
    cache_root: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<DefaultModel>> {
    let mut models = list_default_models(models_dir, cache_root)?;
    for m in &mut models {
        if m.installed {
            log(&format!(
                "{} is already assembled in {}",
                m.name,
                m.path.display()
            ));
            copy_cards(&m.parts, &m.path)?;
            continue;
        }
        log(&format!("assembling {} into {}", m.name, m.path.display()));
        checkpoint::assemble(&m.parts, &m.path)
            .with_context(|| format!("cannot assemble {}", m.name))?;
        if let Some(d) = parts_digest(&m.parts) {
            checkpoint::write_atomic(&m.path.join(STAMP), d.as_bytes())?;
        }
        copy_cards(&m.parts, &m.path)?;
        m.installed = true;
    }
    Ok(models)
}

/// The model card (`README.md`), `model_card.json` (task, and `"default": true` for the
/// model a server answers a task with when none is named), a stance model's relatedness gate
/// (`relatedness.json`) and a topic model's TF-IDF member (`lexical.json` and
/// `lexical.safetensors`) go with the assembled model, and are refreshed on every run since
/// they change without the parts changing.
fn copy_cards(parts: &Path, dir: &Path) -> Result<()> {
    // The stance gate and the topic models' TF-IDF member (naba-tasks' relatedness and lexical
    // modules name these files).
    for f in [
        "README.md",
        "model_card.json",
        "relatedness.json",
        "lexical.json",
        "lexical.safetensors",
    ] {
        let src = parts.join(f);
        let dst = dir.join(f);
        if src.is_file() {
            let bytes =
                std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?;
            checkpoint::write_atomic(&dst, &bytes)?;
        } else if dst.is_file() {
            std::fs::remove_file(&dst)
                .with_context(|| format!("cannot remove {}", dst.display()))?;
        }
    }
    Ok(())
}
