//! Finding a checkpoint by hub repo id through `hf-hub`, honouring `HF_HUB_CACHE`, `HF_HOME`
//! and `HF_HUB_OFFLINE` as the Python `huggingface_hub` does. Offline, only the local cache is
//! read; online, missing files are downloaded into that same cache.

use crate::error::{ModelError, Result};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// The hub cache directory: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    home_dir().join(".cache").join("huggingface").join("hub")
}

pub(crate) fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// True when `HF_HUB_OFFLINE` is set to a true value (1, true, yes, on).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Whether `s` looks like `owner/name` (or `name`) as the hub spells repo ids.
pub fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The files a checkpoint directory may hold; the first of each group that exists is enough.
const WANTED: &[&[&str]] = &[
    &["config.json"],
    &["model.safetensors", "pytorch_model.bin"],
    &["tokenizer.json", "vocab.txt"],
];
const OPTIONAL: &[&str] = &["tokenizer_config.json", "special_tokens_map.json"];

/// Resolves `repo_id` at `revision` (a branch, tag or commit; default `main`) to the snapshot
/// directory that holds its files.
pub fn resolve(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    let revision = revision.unwrap_or("main").to_string();
    let cache = Cache::new(cache_dir());
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.clone());
    let cached = cache.repo(repo.clone());
    let from_cache = |file: &str| -> Option<PathBuf> {
        cached.get(file).or_else(|| {
            // A commit hash has no entry under refs/: its snapshot folder is named after it.
            let p = cache_dir()
                .join(repo.folder_name())
                .join("snapshots")
                .join(&revision)
                .join(file);
            p.is_file().then_some(p)
        })
    };
    let mut found = Vec::new();
    let mut api_error = None;
    for group in WANTED {
        let mut got = group.iter().find_map(|f| from_cache(f));
        if got.is_none() && !offline() {
            match download(&cache, &repo, group) {
                Ok(p) => got = p,
                Err(e) => api_error = Some(e),
            }
        }
        match got {
            Some(p) => found.push(p),
            None => {
                let why = if offline() {
                    "HF_HUB_OFFLINE is set, so only the local cache was searched".to_string()
                } else {
                    match &api_error {
                        Some(e) => format!("the hub could not be reached ({e})"),
                        None => "the hub has no such file".to_string(),
                    }
                };
                return Err(ModelError::NotFound(format!(
                    "hub model `{repo_id}` (revision {revision}): no {} in {} and {why}; \
                     download it where the hub is reachable, or pass a local directory",
                    group.join(" or "),
                    cache_dir().display(),
                )));
            }
        }
    }
    if !offline() {
        for f in OPTIONAL {
            if from_cache(f).is_none() {
                let _ = download(&cache, &repo, &[f]);
            }
        }
    }
    let dir = found
        .first()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .ok_or_else(|| ModelError::NotFound(format!("hub model `{repo_id}`: empty snapshot")))?;
    Ok(dir)
}

fn download(
    cache: &Cache,
    repo: &Repo,
    group: &[&str],
) -> std::result::Result<Option<PathBuf>, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(false)
        .build()
        .map_err(|e| e.to_string())?;
    let api_repo = api.repo(repo.clone());
    let mut last = None;
    for f in group {
        match api_repo.get(f) {
            Ok(p) => return Ok(Some(p)),
            Err(e) => last = Some(e.to_string()),
        }
    }
    match last {
        Some(e) if e.contains("404") => Ok(None),
        Some(e) => Err(e),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_id_shapes() {
        assert!(looks_like_repo_id(
            "CAMeL-Lab/bert-base-arabic-camelbert-mix-ner"
        ));
        assert!(looks_like_repo_id("bert-base-multilingual-cased"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("../x"));
        assert!(!looks_like_repo_id("has space/x"));
    }
}
