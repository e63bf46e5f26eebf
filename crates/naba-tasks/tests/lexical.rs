//! A topic model with a TF-IDF member: the pipeline's labels are the stated average of the
//! encoder's probabilities and the member's, stance inputs are left to the encoder, and a member
//! whose labels are not the model's is refused. Runs the tiny `bert-seq-cls` parity checkpoint
//! (labels agree / disagree / other).

mod common;

use common::{pipeline, probs};
use naba_tasks::lexical::{featurize, fit, FeatureSpec, FitOptions, Lexical, LexicalParams};
use naba_tasks::{ClassifyInput, ClassifyOptions, ClassifyOutput, Pipeline};

/// A member fitted on a few texts per label of the fixture (agree, disagree, other).
fn member(labels: &[&str], mix: f32) -> Lexical {
    member_for(labels, mix, None)
}

/// The same, read against `target` when one is given (a stance member).
fn member_for(labels: &[&str], mix: f32, target: Option<&str>) -> Lexical {
    let spec = FeatureSpec {
        buckets: 1 << 12,
        ..FeatureSpec::default()
    };
    let docs = [
        ("نؤيد القرار ونوافق عليه تماما", 0),
        ("نوافق على الخطة وندعمها", 0),
        ("نرفض القرار ونعارضه بشدة", 1),
        ("نعارض الخطة ونرفضها", 1),
        ("الطقس معتدل اليوم في المدينة", 2),
        ("افتتح معرض الكتاب أبوابه", 2),
    ];
    let texts: Vec<(&str, Option<&str>)> = docs.iter().map(|(t, _)| (*t, target)).collect();
    let (xs, idf) = featurize(&spec, &texts);
    let ys: Vec<usize> = docs.iter().map(|(_, y)| *y).collect();
    let opts = FitOptions {
        epochs: 20,
        lr: 0.05,
        batch_size: 2,
        ..FitOptions::default()
    };
    let (w, b) = fit(&xs, &ys, 3, spec.buckets, &opts, |_, _, _, _| {}).expect("fit");
    let params = LexicalParams {
        features: spec,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        mix,
        pairs: target.is_some(),
        fitted_on: "test".into(),
    };
    Lexical::new(params, idf, w, b).expect("member")
}

fn classify(p: &Pipeline, text: &str, target: Option<&str>) -> ClassifyOutput {
    p.classify(
        &[ClassifyInput { text, target }],
        &ClassifyOptions::default(),
    )
    .pop()
    .expect("one output")
    .expect("classified")
}

#[test]
fn topic_scores_are_the_stated_average_of_encoder_and_member() {
    let plain = pipeline();
    let labels = plain.model().config.labels.clone();
    let names: Vec<&str> = labels.iter().map(String::as_str).collect();
    let m = member(&names, 0.3);
    let blended = pipeline()
        .with_lexical(Some(m.clone()))
        .expect("labels agree");
    assert_eq!(blended.lexical_mix(), Some(0.3));
    // One short text and one read in several windows.
    let long = "نرفض القرار ونعارضه بشدة. ".repeat(40);
    for text in ["نؤيد القرار ونوافق عليه", long.as_str()] {
        let p = probs(&classify(&plain, text, None), &labels);
        let q = m.probabilities(text, None);
        let got = probs(&classify(&blended, text, None), &labels);
        for i in 0..labels.len() {
            let want = 0.7 * p[i] + 0.3 * q[i];
            assert!(
                (got[i] - want).abs() < 1e-5,
                "{}: {} vs {want}",
                labels[i],
                got[i]
            );
        }
        assert!((got.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
}

#[test]
fn stance_inputs_are_read_by_the_encoder_alone() {
    let plain = pipeline();
    let labels = plain.model().config.labels.clone();
    let names: Vec<&str> = labels.iter().map(String::as_str).collect();
    let blended = pipeline()
        .with_lexical(Some(member(&names, 0.5)))
        .expect("labels agree");
    let (text, target) = ("نؤيد القرار ونوافق عليه", Some("القرار"));
    assert_eq!(
        probs(&classify(&plain, text, target), &labels),
        probs(&classify(&blended, text, target), &labels)
    );
}

#[test]
fn a_stance_member_blends_with_short_pairs_only() {
    let plain = pipeline();
    let labels = plain.model().config.labels.clone();
    let names: Vec<&str> = labels.iter().map(String::as_str).collect();
    let target = "القرار";
    let m = member_for(&names, 0.5, Some(target));
    let blended = pipeline()
        .with_lexical(Some(m.clone()))
        .expect("labels agree");
    let text = "نعارض الخطة ونرفضها";
    let p = probs(&classify(&plain, text, Some(target)), &labels);
    let q = m.probabilities(text, Some(target));
    let got = probs(&classify(&blended, text, Some(target)), &labels);
    for i in 0..labels.len() {
        assert!((got[i] - (0.5 * p[i] + 0.5 * q[i])).abs() < 1e-5);
    }
    // A topic input, and a long text read sentence by sentence, are the encoder's alone.
    assert_eq!(
        probs(&classify(&plain, text, None), &labels),
        probs(&classify(&blended, text, None), &labels)
    );
    let long = "نعارض الخطة ونرفضها بشدة ولا نقبل بها. ".repeat(30);
    let (a, b) = (
        classify(&plain, &long, Some(target)),
        classify(&blended, &long, Some(target)),
    );
    assert!(a.windows > 1);
    assert_eq!(a.labels, b.labels);
}

#[test]
fn a_member_with_other_labels_is_refused_with_what_to_do() {
    let err = pipeline()
        .with_lexical(Some(member(&["sport", "economy", "culture"], 0.5)))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("naba lexical"), "{err}");
    assert!(err.contains("sport"), "{err}");
}
