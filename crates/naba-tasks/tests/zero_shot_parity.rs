//! Entailment zero-shot against transformers' zero-shot-classification pipeline on tiny random
//! NLI checkpoints (BERT with entailment first, XLM-R with contradiction first, and a DeBERTa-v2
//! laid out as mDeBERTa-v3 is, on candle-transformers), single- and
//! multi-label, English and Arabic templates, and a premise longer than the window, which both
//! truncate. `scripts/make_zero_shot_fixtures.py` made the checkpoints and the expected scores.

use candle_core::Device;
use naba_models::deberta::{is_deberta, DebertaClassifier};
use naba_models::{LoadOptions, Model};
use naba_tasks::zero_shot::{labels_from_list, EntailmentZeroShot, PairClassifier};
use naba_tasks::{Pipeline, PipelineOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
struct Expected {
    cases: BTreeMap<String, Vec<Case>>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    labels: Vec<String>,
    template: String,
    multi_label: bool,
    scores: BTreeMap<String, f64>,
}

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nli"))
}

fn check<P: PairClassifier>(name: &str, zs: &EntailmentZeroShot<P>, cases: &[Case]) -> usize {
    let mut checked = 0;
    for case in cases {
        let labels = labels_from_list(&case.labels.join(","));
        let got = zs
            .classify(
                &[case.text.as_str()],
                &labels,
                &case.template,
                case.multi_label,
            )
            .expect("labels are fine")
            .remove(0)
            .expect("scored");
        for l in &got.labels {
            let want = case.scores[&l.label];
            assert!(
                (f64::from(l.score) - want).abs() < 1e-4,
                "{name} {:?} multi={} {:?}: {} got {} want {want}",
                case.template,
                case.multi_label,
                case.text.chars().take(20).collect::<String>(),
                l.label,
                l.score
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn entailment_scores_equal_transformers_pipeline() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    let expected: Expected = serde_json::from_str(&text).expect("JSON");
    let mut checked = BTreeMap::new();
    for (name, cases) in &expected.cases {
        let dir = fixtures().join(name);
        let n = if is_deberta(&dir) {
            let model = DebertaClassifier::load(&dir, &Device::Cpu).expect("load DeBERTa");
            check(
                name,
                &EntailmentZeroShot::new(model).expect("an NLI model"),
                cases,
            )
        } else {
            let model = Model::load(&dir.to_string_lossy(), &f32_products()).expect("load");
            let pipeline = Pipeline::new(model, &PipelineOptions::default()).expect("pipeline");
            check(
                name,
                &EntailmentZeroShot::new(pipeline).expect("an NLI model"),
                cases,
            )
        };
        checked.insert(name.clone(), n);
    }
    assert_eq!(checked.len(), 3, "BERT, XLM-R and DeBERTa-v2: {checked:?}");
    // 4 texts x (3 + 2) labels x 2 templates x single and multi-label.
    assert!(checked.values().all(|&n| n == 80), "{checked:?}");
}

#[test]
fn a_model_without_entailment_labels_is_refused_by_name() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parity/xlmr-seq-cls"
    ));
    let model = Model::load(&dir.to_string_lossy(), &f32_products()).expect("load");
    let pipeline = Pipeline::new(model, &PipelineOptions::default()).expect("pipeline");
    let err = EntailmentZeroShot::new(pipeline).err().expect("refused");
    assert!(err.to_string().contains("NLI model"), "{err}");
}

/// Parity with transformers is the f32 path's; bf16 products are held to it elsewhere.
fn f32_products() -> LoadOptions {
    LoadOptions {
        precision: naba_models::Precision::F32,
        ..LoadOptions::default()
    }
}
