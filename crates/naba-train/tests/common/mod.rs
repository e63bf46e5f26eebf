//! Fixtures shared by the naba-train integration tests.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use candle_core::Tensor;
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

/// The largest absolute value of a tensor.
pub fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}
