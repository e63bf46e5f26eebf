//! Parity with Python transformers on tiny random checkpoints with real tokenizers: token ids,
//! offsets, logits (to 1e-4) and the pipelines' outputs (labels, spans, scores) for every
//! aggregation strategy, including a text longer than the window read with a stride. The
//! fixtures and the script that makes them are described in `tests/fixtures/parity/README.md`.

use naba_models::{HeadKind, LoadOptions, Model};
use naba_tasks::aggregate::AggregationStrategy;
use naba_tasks::{ClassifyInput, ClassifyOptions, NerOptions, Pipeline, PipelineOptions};
use serde_json::Value;
use std::path::PathBuf;

const LOGIT_TOL: f32 = 1e-4;
const SCORE_TOL: f32 = 1e-4;

fn fixture(name: &str) -> (PathBuf, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name);
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    (dir, serde_json::from_str(&text).expect("json"))
}

fn pipeline(dir: &std::path::Path, stride: Option<usize>) -> Pipeline {
    let hint = if dir.ends_with("bert-token-cls") || dir.ends_with("xlmr-token-cls") {
        HeadKind::TokenClassification
    } else {
        HeadKind::SequenceClassification
    };
    // Parity with transformers is the f32 path's; bf16 products are held to it elsewhere.
    let opts = LoadOptions {
        head_hint: Some(hint),
        precision: naba_models::Precision::F32,
        ..LoadOptions::default()
    };
    let model = Model::load(&dir.to_string_lossy(), &opts).expect("load model");
    Pipeline::new(
        model,
        &PipelineOptions {
            stride,
            batch_size: 4,
            ..PipelineOptions::default()
        },
    )
    .expect("pipeline")
}

fn f32s(v: &Value) -> Vec<f32> {
    let mut out = Vec::new();
    match v {
        Value::Array(a) => a.iter().for_each(|x| out.extend(f32s(x))),
        Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN) as f32),
        _ => {}
    }
    out
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max |diff| {worst} > {tol}");
}

/// Ids, type ids, char offsets and first-window logits of every input.
fn check_encodings_and_logits(p: &Pipeline, inputs: &[Value], paired: bool) {
    for input in inputs {
        let name = input["name"].as_str().unwrap();
        let (text, target) = if paired {
            (input["text_pair"].as_str().unwrap(), input["text"].as_str())
        } else {
            (input["text"].as_str().unwrap(), None)
        };
        if name == "long_pair" {
            // transformers cuts a pair longest-first; naba windows the text (the second) and
            // cuts a target that would leave it no room to its first half-window of sub-words.
            let target = target.expect("a pair has a target");
            let (windows, _) = p
                .window_logits(text, Some(target))
                .expect("a long target is cut, not refused");
            let prefix = &p.model().config.naba.prefix;
            let whole = p
                .model()
                .tokenizer
                .encode(format!("{prefix}{target}"), false)
                .expect("tokenize");
            for w in &windows {
                let part = |seq: usize| -> Vec<u32> {
                    (0..w.len())
                        .filter(|&i| {
                            w.get_sequence_ids()[i] == Some(seq)
                                && w.get_special_tokens_mask()[i] == 0
                        })
                        .map(|i| w.get_ids()[i])
                        .collect()
                };
                let kept = part(0);
                assert!(kept.len() < whole.len(), "{name}: the target was cut");
                assert_eq!(
                    kept,
                    whole.get_ids()[..kept.len()],
                    "{name}: its start is kept"
                );
                assert!(!part(1).is_empty(), "{name}: every window holds text");
            }
            let out = p.classify(
                &[ClassifyInput {
                    text,
                    target: Some(target),
                }],
                &ClassifyOptions::default(),
            );
            let cut = out[0]
                .as_ref()
                .expect("classified")
                .target_truncated
                .expect("the answer says the target was cut");
            assert_eq!(cut.total, whole.len(), "{name}: target tokens");
            let specials = p
                .model()
                .tokenizer
                .get_post_processor()
                .map_or(4, |pp| tokenizers::PostProcessor::added_tokens(pp, true));
            assert_eq!(
                cut.kept,
                (p.window() - specials) / 2,
                "{name}: half the window"
            );
            continue;
        }
        let (windows, logits) = p.window_logits(text, target).expect("run");
        let enc = &windows[0];
        let ids = u32s(&input["input_ids"]);
        assert_eq!(enc.get_ids(), ids.as_slice(), "{name}: input ids");
        if !input["token_type_ids"].is_null() {
            assert_eq!(
                enc.get_type_ids(),
                u32s(&input["token_type_ids"]).as_slice(),
                "{name}: type ids"
            );
        }
        let offsets: Vec<(usize, usize)> = input["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o[0].as_u64().unwrap() as usize,
                    o[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        let specials = u32s(&input["special_tokens_mask"]);
        for (i, ((got, want), special)) in enc
            .get_offsets()
            .iter()
            .zip(&offsets)
            .zip(&specials)
            .enumerate()
        {
            if *special == 0 {
                assert_eq!(got, want, "{name}: char offsets of token {i}");
            }
        }
        assert_close(
            &logits[0],
            &f32s(&input["logits"]),
            LOGIT_TOL,
            &format!("{name}: logits"),
        );
    }
}

/// The entity list must be equal: same labels, spans and (to 1e-4) scores, and our `text` is the
/// exact slice of the input.
fn check_entities(got: &naba_tasks::NerOutput, want: &Value, text: &str, what: &str) {
    let want = want.as_array().unwrap();
    let summary = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|e| {
                let label = e.get("entity_group").or_else(|| e.get("entity")).unwrap();
                format!("{}@{}..{}", label.as_str().unwrap(), e["start"], e["end"])
            })
            .collect()
    };
    let ours: Vec<String> = got
        .entities
        .iter()
        .map(|e| format!("{}@{}..{}", e.label, e.start, e.end))
        .collect();
    assert_eq!(ours, summary(want), "{what}: entity list");
    let chars: Vec<char> = text.chars().collect();
    for (e, w) in got.entities.iter().zip(want) {
        let ws = w["score"].as_f64().unwrap() as f32;
        assert!(
            (e.score - ws).abs() <= SCORE_TOL,
            "{what}: score {} vs {ws}",
            e.score
        );
        let slice: String = chars[e.start..e.end].iter().collect();
        assert_eq!(e.text, slice, "{what}: entity text must be the input slice");
    }
}

fn token_model(name: &str) {
    let (dir, expected) = fixture(name);
    let stride = expected["stride"].as_u64().map(|s| s as usize);
    let p = pipeline(&dir, stride);
    let inputs = expected["inputs"].as_array().unwrap();
    check_encodings_and_logits(&p, inputs, false);
    for input in inputs {
        let name = input["name"].as_str().unwrap();
        let text = input["text"].as_str().unwrap();
        for strategy in ["none", "simple", "first", "average", "max"] {
            let agg: AggregationStrategy = strategy.parse().unwrap();
            let opts = NerOptions {
                aggregation: agg,
                trim: false,
                ..NerOptions::default()
            };
            let got = p.ner(&[text], &opts).pop().unwrap();
            if name == "long" {
                // Compared with the pipeline run with the same stride over all of the text.
                let want = &input["stride"]["pipeline"][strategy];
                let got = got.expect("long text");
                assert!(got.windows > 1, "long text read in one window");
                if want["ok"].as_bool() == Some(true) {
                    check_entities(
                        &got,
                        &want["output"],
                        text,
                        &format!("{name}/{strategy}/stride"),
                    );
                }
            } else {
                let got = got.expect("ner");
                assert_eq!(got.windows, 1);
                check_entities(
                    &got,
                    &input["pipeline"][strategy],
                    text,
                    &format!("{name}/{strategy}"),
                );
            }
        }
    }
}

fn sequence_model(name: &str) {
    let (dir, expected) = fixture(name);
    let p = pipeline(&dir, None);
    let inputs = expected["inputs"].as_array().unwrap();
    let pairs = expected["pairs"].as_array().unwrap();
    check_encodings_and_logits(&p, inputs, false);
    check_encodings_and_logits(&p, pairs, true);
    let all = inputs
        .iter()
        .map(|i| (i, false))
        .chain(pairs.iter().map(|i| (i, true)));
    for (input, paired) in all {
        let name = input["name"].as_str().unwrap();
        if name.starts_with("long") {
            continue; // transformers truncates; naba combines windows (tested in the unit tests)
        }
        let ci = if paired {
            ClassifyInput {
                text: input["text_pair"].as_str().unwrap(),
                target: input["text"].as_str(),
            }
        } else {
            ClassifyInput {
                text: input["text"].as_str().unwrap(),
                target: None,
            }
        };
        let got = p
            .classify(&[ci], &ClassifyOptions::default())
            .pop()
            .unwrap()
            .expect("classify");
        let want = input["pipeline"].as_array().unwrap();
        let labels: Vec<&str> = got.labels.iter().map(|l| l.label.as_str()).collect();
        let want_labels: Vec<&str> = want.iter().map(|l| l["label"].as_str().unwrap()).collect();
        assert_eq!(labels, want_labels, "{name}: label order");
        let scores: Vec<f32> = got.labels.iter().map(|l| l.score).collect();
        let want_scores: Vec<f32> = want
            .iter()
            .map(|l| l["score"].as_f64().unwrap() as f32)
            .collect();
        assert_close(&scores, &want_scores, SCORE_TOL, &format!("{name}: scores"));
    }
}

#[test]
fn bert_token_classification_from_vocab_txt_and_pytorch_bin() {
    token_model("bert-token-cls");
}

#[test]
fn xlmr_token_classification_bioes() {
    token_model("xlmr-token-cls");
}

#[test]
fn bert_sequence_classification_single_and_pairs() {
    sequence_model("bert-seq-cls");
}

#[test]
fn xlmr_sequence_classification_multi_label() {
    sequence_model("xlmr-seq-cls");
}
