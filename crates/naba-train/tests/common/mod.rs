//! Fixtures shared by the naba-train integration tests.

use naba_train::TrainOptions;
use std::path::{Path, PathBuf};

/// The random BERT token-classification checkpoint of naba-tasks' parity fixtures.
pub fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../naba-tasks/tests/fixtures/parity/bert-token-cls")
}

/// A tiny CoNLL file of 23 sentences.
pub fn fixture_conll() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny.conll")
}

/// Options of a quiet run into `out` that finishes (assembly and test scoring).
pub fn opts(out: &Path) -> TrainOptions {
    TrainOptions {
        out: out.to_path_buf(),
        resume: false,
        max_steps: None,
        progress: false,
        stop: None,
        command: "test".into(),
        finish: true,
    }
}
