//! What the tests over the tiny `bert-seq-cls` parity checkpoint (labels agree / disagree /
//! other, 64-token window) share.
#![allow(dead_code)]

use naba_models::{HeadKind, LoadOptions, Model};
use naba_tasks::{ClassifyOutput, Pipeline, PipelineOptions};
use std::path::PathBuf;

pub fn pipeline() -> Pipeline {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/bert-seq-cls");
    let opts = LoadOptions {
        head_hint: Some(HeadKind::SequenceClassification),
        ..LoadOptions::default()
    };
    let model = Model::load(&dir.to_string_lossy(), &opts).expect("load model");
    Pipeline::new(model, &PipelineOptions::default()).expect("pipeline")
}

/// An output's scores in `labels` order.
pub fn probs(out: &ClassifyOutput, labels: &[String]) -> Vec<f32> {
    labels
        .iter()
        .map(|l| {
            out.labels
                .iter()
                .find(|s| &s.label == l)
                .map(|s| s.score)
                .expect("every label scored")
        })
        .collect()
}
