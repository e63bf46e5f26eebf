//! Entailment zero-shot against transformers' zero-shot-classification pipeline on tiny random
//! NLI checkpoints (BERT with entailment first, XLM-R with contradiction first), single- and
//! multi-label, English and Arabic templates, and a premise longer than the window, which both
//! truncate. `scripts/make_zero_shot_fixtures.py` made the checkpoints and the expected scores.

use naba_models::{LoadOptions, Model};
use naba_tasks::zero_shot::{labels_from_list, EntailmentZeroShot};
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

#[test]
fn entailment_scores_equal_transformers_pipeline() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    let expected: Expected = serde_json::from_str(&text).expect("JSON");
    let mut checked = 0;
    for (name, cases) in &expected.cases {
        let dir = fixtures().join(name);
        let model = Model::load(&dir.to_string_lossy(), &LoadOptions::default()).expect("load");
        let zs = EntailmentZeroShot::new(
            Pipeline::new(model, &PipelineOptions::default()).expect("pipeline"),
        )
        .expect("an NLI model");
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
    }
    assert!(checked > 100, "only {checked} scores compared");
}

#[test]
fn a_model_without_entailment_labels_is_refused_by_name() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parity/xlmr-seq-cls"
    ));
    let model = Model::load(&dir.to_string_lossy(), &LoadOptions::default()).expect("load");
    let pipeline = Pipeline::new(model, &PipelineOptions::default()).expect("pipeline");
    let err = EntailmentZeroShot::new(pipeline).err().expect("refused");
    assert!(err.to_string().contains("NLI model"), "{err}");
}
