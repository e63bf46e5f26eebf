//! Stance toward a target over a text longer than the model's window: the decision rests on
//! the sentences that take a side, and the output names them with offsets into the text sent.
//! Runs the tiny `bert-seq-cls` parity checkpoint (labels agree / disagree / other, 64-token
//! window).

mod common;

use common::{pipeline, probs};
use naba_models::{HeadKind, LoadOptions, Model};
use naba_tasks::{
    ClassifyInput, ClassifyOptions, ClassifyOutput, Pipeline, Relatedness, RelatednessParams,
};
use std::path::PathBuf;

const TARGET: &str = "روسيا تدخلت في الانتخابات الأمريكية";

fn long_text() -> String {
    let sentences = [
        "  الرئيس الأمريكي جو بايدن أجرى اتصالاً هاتفياً مع نظيره الروسي فلاديمير بوتين يوم الثلاثاء.",
        "عاجل",
        "وقال البيت الأبيض إن بايدن أثار قضية التدخل في الانتخابات الأمريكية وهجمات القرصنة الأخيرة.",
        "ونفى الكرملين مراراً أي تدخل روسي في الانتخابات، ووصف الاتهامات بأنها لا أساس لها من الصحة.",
        "وتأتي المكالمة بعد أسابيع من فرض عقوبات جديدة على شركات روسية في قطاع التكنولوجيا.\n",
        "وأكد مسؤولون في واشنطن أن الأدلة على التدخل قاطعة وأنها ستعرض على الكونغرس قريباً؟",
        "من جهته، قال المتحدث باسم الكرملين إن موسكو مستعدة للحوار مع الإدارة الجديدة دون شروط مسبقة.",
        "وختم البيان بالقول إن الطرفين اتفقا على مواصلة الاتصالات.",
    ];
    sentences.join(" ")
}

fn stance(p: &Pipeline, text: &str, target: &str) -> ClassifyOutput {
    p.classify(
        &[ClassifyInput {
            text,
            target: Some(target),
        }],
        &ClassifyOptions::default(),
    )
    .pop()
    .expect("one output")
    .expect("classified")
}

fn slice(text: &str, start: usize, end: usize) -> String {
    text.chars().skip(start).take(end - start).collect()
}

#[test]
fn long_text_stance_names_the_sentences_it_rests_on() {
    let p = pipeline();
    let labels = p.model().config.labels.clone();
    let text = long_text();
    let whole = stance(&p, &text, TARGET);
    assert!(whole.windows > 1, "the text must need several windows");
    assert!(!whole.evidence.is_empty() && whole.evidence.len() <= 5);
    let sentence_starts: Vec<usize> = naba_text::split_sentences(&text)
        .iter()
        .map(|s| s.0)
        .collect();
    for e in &whole.evidence {
        assert_eq!(
            e.text,
            slice(&text, e.start, e.end),
            "evidence text is its slice"
        );
        assert!(
            sentence_starts.contains(&e.start),
            "evidence starts a sentence"
        );
        assert!(
            e.text.split_whitespace().count() >= 8,
            "short sentences are joined"
        );
        assert!(!e.text.starts_with(' ') && !e.text.ends_with(' '));
    }
    let mut seen: Vec<(usize, usize)> = whole.evidence.iter().map(|e| (e.start, e.end)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), whole.evidence.len(), "no passage twice");
    let sum: f32 = whole.evidence.iter().map(|e| e.weight).sum();
    let weights_sum_to_one = (sum - 1.0).abs() < 1e-5;
    let total: f32 = whole.labels.iter().map(|l| l.score).sum();
    assert!((total - 1.0).abs() < 1e-5, "softmax scores sum to 1");

    // Each evidence passage classified on its own agrees with what the evidence says of it,
    // and (when the evidence voted) the decision is their weighted mean.
    let mut mean = vec![0f32; labels.len()];
    let other = labels
        .iter()
        .position(|l| l == "other")
        .expect("other label");
    for e in &whole.evidence {
        let alone = stance(&p, &e.text, TARGET);
        assert_eq!(alone.labels[0].label, e.label);
        assert!((alone.labels[0].score - e.score).abs() < 1e-4);
        let pr = probs(&alone, &labels);
        if weights_sum_to_one {
            assert!(1.0 - pr[other] >= 0.5, "a voter takes a side");
            let relevance = 1.0 - pr[other];
            let total_relevance: f32 = whole
                .evidence
                .iter()
                .map(|x| 1.0 - probs(&stance(&p, &x.text, TARGET), &labels)[other])
                .sum();
            assert!((e.weight - relevance / total_relevance).abs() < 1e-4);
        }
        for (m, x) in mean.iter_mut().zip(&pr) {
            *m += e.weight * x;
        }
    }
    if weights_sum_to_one {
        let got = probs(&whole, &labels);
        for (g, m) in got.iter().zip(&mean) {
            assert!(
                (g - m).abs() < 1e-4,
                "decision {got:?} vs weighted evidence {mean:?}"
            );
        }
        for w in whole.evidence.windows(2) {
            assert!(w[0].weight >= w[1].weight, "heaviest first");
        }
    }
}

#[test]
fn a_text_within_one_window_is_its_own_evidence() {
    let p = pipeline();
    let text = "  روسيا تنفي أي تدخل في الانتخابات. ";
    let out = stance(&p, text, TARGET);
    assert_eq!(out.windows, 1);
    assert_eq!(out.evidence.len(), 1);
    let e = &out.evidence[0];
    assert_eq!(e.text, text.trim());
    assert_eq!((e.start, e.end), (2, 2 + text.trim().chars().count()));
    assert_eq!(e.label, out.labels[0].label);
    assert_eq!(e.weight, 1.0);
}

#[test]
fn topic_has_no_evidence() {
    let p = pipeline();
    let out = p
        .classify(
            &[ClassifyInput {
                text: &long_text(),
                target: None,
            }],
            &ClassifyOptions::default(),
        )
        .pop()
        .expect("one output")
        .expect("classified");
    assert!(out.evidence.is_empty());
    assert!(out.windows > 1);
}

#[test]
fn several_long_and_short_inputs_keep_their_order() {
    let p = pipeline();
    let long = long_text();
    let inputs = [
        ClassifyInput {
            text: "روسيا تنفي التدخل",
            target: Some(TARGET),
        },
        ClassifyInput {
            text: &long,
            target: Some(TARGET),
        },
        ClassifyInput {
            text: "   ",
            target: Some(TARGET),
        },
        ClassifyInput {
            text: &long,
            target: None,
        },
    ];
    let out = p.classify(&inputs, &ClassifyOptions::default());
    assert_eq!(out.len(), 4);
    // Batched with padding, scores move in the last float digits only.
    let same = |a: &ClassifyOutput, b: &ClassifyOutput| {
        assert_eq!(a.windows, b.windows);
        assert_eq!(a.labels.len(), b.labels.len());
        for (x, y) in a.labels.iter().zip(&b.labels) {
            assert_eq!(x.label, y.label);
            assert!((x.score - y.score).abs() < 1e-4);
        }
        let spans = |o: &ClassifyOutput| {
            o.evidence
                .iter()
                .map(|e| (e.start, e.end, e.label.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(spans(a), spans(b));
    };
    same(
        out[0].as_ref().expect("short"),
        &stance(&p, inputs[0].text, TARGET),
    );
    same(out[1].as_ref().expect("long"), &stance(&p, &long, TARGET));
    assert!(out[2].is_err(), "an empty text is refused, alone");
    assert!(out[3].as_ref().expect("topic").evidence.is_empty());
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/bert-seq-cls")
}

/// The stance pipeline with a gate whose curve is `bias` (weight 1): far below zero judges
/// every sentence unrelated, far above judges every one related. The tiny checkpoint is its
/// own encoder.
fn gated(bias: f32) -> Pipeline {
    let params = RelatednessParams {
        encoder: fixture_dir().to_string_lossy().into_owned(),
        prefix: String::new(),
        weight: 1.0,
        bias,
        fitted_on: "test".into(),
    };
    let encoder = pipeline();
    pipeline().with_relatedness(Some(Relatedness::new(params, encoder)))
}

#[test]
fn a_long_text_that_does_not_concern_the_target_is_neither() {
    let p = gated(-100.0);
    let text = long_text();
    let out = stance(&p, &text, TARGET);
    assert_eq!(out.labels[0].label, "other", "{:?}", out.labels);
    let related = out.related.expect("the gate's verdict is reported");
    assert!(related < 0.5, "{related}");
    assert!((out.labels[0].score - (1.0 - related)).abs() < 1e-5);
    assert_eq!(out.evidence.len(), 3, "the closest passages are shown");
    for e in &out.evidence {
        assert_eq!(slice(&text, e.start, e.end), e.text);
        assert!(e.related.is_some_and(|r| r <= related));
    }
}

#[test]
fn when_every_passage_is_related_the_gate_changes_nothing_but_the_report() {
    let text = long_text();
    let plain = stance(&pipeline(), &text, TARGET);
    let out = stance(&gated(100.0), &text, TARGET);
    assert_eq!(out.labels, plain.labels);
    assert_eq!(out.related, Some(1.0));
    assert_eq!(out.evidence.len(), plain.evidence.len());
    for (a, b) in out.evidence.iter().zip(&plain.evidence) {
        assert_eq!((a.start, a.end, a.weight), (b.start, b.end, b.weight));
        assert_eq!(a.related, Some(1.0));
    }
    // A text within one window is read whole, with or without a gate.
    let short = stance(&gated(-100.0), "روسيا نفت التدخل.", TARGET);
    assert!(short.related.is_none());
}

#[test]
fn a_gate_file_beside_the_model_is_read_and_its_encoder_loaded() {
    let dir = std::env::temp_dir().join(format!("naba-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(fixture_dir()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let opts = LoadOptions {
        head_hint: Some(HeadKind::SequenceClassification),
        ..LoadOptions::default()
    };
    let model = Model::load(&dir.to_string_lossy(), &opts).unwrap();
    assert!(Relatedness::for_model(&model, &opts).unwrap().is_none());
    let params = serde_json::json!({
        "encoder": fixture_dir(), "prefix": "", "weight": 2.0, "bias": -1.0
    });
    std::fs::write(
        dir.join(naba_tasks::relatedness::FILE_NAME),
        params.to_string(),
    )
    .unwrap();
    let gate = Relatedness::for_model(&model, &opts)
        .unwrap()
        .expect("a gate");
    assert_eq!(gate.params().weight, 2.0);
    let params = serde_json::json!({
        "encoder": dir.join("missing"), "prefix": "", "weight": 2.0, "bias": -1.0
    });
    std::fs::write(
        dir.join(naba_tasks::relatedness::FILE_NAME),
        params.to_string(),
    )
    .unwrap();
    let err = Relatedness::for_model(&model, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs the encoder"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
