//! Tiny end-to-end runs on the random BERT token-classification fixture: the loss falls, a
//! checkpoint round-trips through naba-models, resume continues exactly, the same seed gives the
//! same weights, and the training forward matches the inference forward.

use naba_models::{LoadOptions, Model, SourceKind};
use naba_train::checkpoint::{load_tensors, PARTS_FILE};
use naba_train::net::{HeadType, Mode, TrainNet};
use naba_train::recipe::TrainPrecision;
use naba_train::trainer::{BEST_PARTS_DIR, MODEL_DIR};
use naba_train::{train, Recipe, Stop};
use std::path::Path;

mod common;
use common::{fixture_conll, fixture_model, opts};

fn recipe(epochs: usize, dtype: &str) -> Recipe {
    let text = format!(
        r#"name = "tiny"
task = "token-classification"
base = "{}"
seed = 7
[data]
train = "{}"
dev_fraction = 0.25
labels = ["O", "B-PERS", "I-PERS", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
max_length = 60
[model]
train_layers = 1
dropout = 0.1
parts_dtype = "{dtype}"
[optim]
epochs = {epochs}
batch_size = 4
grad_accum = 2
lr_head = 0.01
lr_encoder = 0.003
warmup_fraction = 0.1
patience = 0
save_every = 0
class_weights = {{ ORG = 2.0 }}
"#,
        fixture_model().display(),
        fixture_conll().display()
    );
    let r: Recipe = toml::from_str(&text).expect("recipe parses");
    r.validate().expect("recipe is valid");
    r
}

fn parts(out: &Path) -> Vec<(String, Vec<f32>)> {
    let (t, _) = load_tensors(&out.join(BEST_PARTS_DIR).join(PARTS_FILE)).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                t.to_dtype(candle_core::DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn training_forward_matches_inference_forward() {
    let model = Model::load(
        fixture_model().to_str().unwrap(),
        &LoadOptions {
            head_hint: Some(naba_models::HeadKind::TokenClassification),
            precision: naba_kernels::Precision::F32,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let base = naba_train::checkpoint::open_base(fixture_model().to_str().unwrap(), false).unwrap();
    let net = TrainNet::load(
        &base.weights,
        &base.config,
        &base.prefix,
        HeadType::Token,
        model.config.labels.len(),
        2,
        1,
    )
    .unwrap();
    let rows = vec![vec![2u32, 10, 20, 30, 40, 3], vec![2u32, 11, 12, 3]];
    let train_logits = net.full_forward(&rows, Mode::Train).unwrap();
    let infer_logits = net.full_forward(&rows, Mode::Infer).unwrap();
    let batch = naba_models::Batch::from_rows(&rows, None, 0, &candle_core::Device::Cpu).unwrap();
    let hidden = model.encoder.forward(&batch).unwrap();
    let reference = model.head.forward(&hidden).unwrap().unwrap();
    // Padded positions differ by design (never read); compare real tokens only.
    for (r, row) in rows.iter().enumerate() {
        let n = row.len();
        let a = train_logits.get(r).unwrap().narrow(0, 0, n).unwrap();
        let b = infer_logits.get(r).unwrap().narrow(0, 0, n).unwrap();
        let c = reference.get(r).unwrap().narrow(0, 0, n).unwrap();
        let d1 = (&a - &b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let d2 = (&b - &c)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d1 < 1e-5, "train vs inference forward differ by {d1}");
        assert!(d2 < 1e-5, "inference forward vs naba-models differ by {d2}");
    }
}

#[test]
fn tiny_run_learns_round_trips_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let r = recipe(4, "f32");
    let out = train(&r, &opts(&a)).unwrap();
    assert_eq!(out.stop, Stop::Completed);
    let h = &out.meta.history;
    assert_eq!(h.len(), 4);
    assert!(
        h[3].train_loss < h[0].train_loss,
        "loss did not fall: {:?}",
        h.iter().map(|e| e.train_loss).collect::<Vec<_>>()
    );
    // The assembled checkpoint loads with naba-models and gives the trained net's logits.
    let model = Model::load_dir(
        "tiny",
        &a.join(MODEL_DIR),
        SourceKind::Directory,
        &LoadOptions {
            precision: naba_kernels::Precision::F32,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(model.config.labels, r.data.labels);
    let base =
        naba_train::checkpoint::open_base(a.join(MODEL_DIR).to_str().unwrap(), false).unwrap();
    let net = TrainNet::load(
        &base.weights,
        &base.config,
        &base.prefix,
        HeadType::Token,
        9,
        1,
        1,
    )
    .unwrap();
    naba_train::trainer::load_parts_into(&net, &base, &a.join(BEST_PARTS_DIR)).unwrap();
    let rows = vec![vec![2u32, 10, 20, 30, 3]];
    let ours = net.full_forward(&rows, Mode::Infer).unwrap();
    let batch = naba_models::Batch::from_rows(&rows, None, 0, &candle_core::Device::Cpu).unwrap();
    let theirs = model
        .head
        .forward(&model.encoder.forward(&batch).unwrap())
        .unwrap()
        .unwrap();
    let d = (ours - theirs)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "round trip changed logits by {d}");
    assert!(a.join("README.md").is_file());

    // Same seed, same model.
    let b = tmp.path().join("b");
    train(&r, &opts(&b)).unwrap();
    assert_eq!(parts(&a), parts(&b), "same seed gave different weights");

    // Stopped mid-epoch (step 2), then at an epoch's last step (3), then resumed to the end:
    // the same model as the run that never stopped.
    let c = tmp.path().join("c");
    let mut o = opts(&c);
    o.max_steps = Some(2);
    let first = train(&r, &o).unwrap();
    assert_eq!(first.stop, Stop::MaxSteps);
    assert_eq!(first.step, 2);
    let mut o = opts(&c);
    o.resume = true;
    o.max_steps = Some(3);
    let first = train(&r, &o).unwrap();
    assert_eq!(first.step, 3);
    let mut o = opts(&c);
    o.resume = true;
    let second = train(&r, &o).unwrap();
    assert_eq!(second.stop, Stop::Completed);
    assert_eq!(second.step, out.step);
    assert_eq!(parts(&a), parts(&c), "resume did not continue exactly");

    // A state from one recipe is not resumed with another.
    let mut other = r.clone();
    other.optim.lr_head = 0.02;
    let mut o = opts(&c);
    o.resume = true;
    let e = match train(&other, &o) {
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    };
    assert!(e.contains("another recipe"), "{e}");

    // The reference engine (candle's autograd) still trains, and names itself. Without dropout
    // (whose masks the engines draw in different orders for ragged rows) the two follow the
    // same path: the same maths, summed in another order.
    // The fast engine's products are f32 for this comparison; bf16's are checked after it.
    assert!(out.engine.starts_with("fast, "), "{}", out.engine);
    let mut no_dropout = r.clone();
    no_dropout.model.dropout = 0.0;
    no_dropout.optim.precision = TrainPrecision::F32;
    let fast = train(&no_dropout, &opts(&tmp.path().join("e"))).unwrap();
    assert_eq!(fast.engine, "fast, f32 products");
    let mut reference = no_dropout.clone();
    reference.optim.engine = naba_train::recipe::TrainEngine::Reference;
    let slow = train(&reference, &opts(&tmp.path().join("d"))).unwrap();
    assert_eq!(slow.engine, "reference");
    let (hf, hr) = (&fast.meta.history, &slow.meta.history);
    assert!(hr[3].train_loss < hr[0].train_loss);
    for (f, r) in hf.iter().zip(hr) {
        assert!(
            (f.train_loss - r.train_loss).abs() < 1e-3 * r.train_loss.abs().max(1.0),
            "epoch {}: fast loss {} vs reference {}",
            f.epoch,
            f.train_loss,
            r.train_loss
        );
    }
    // bf16 products (where the CPU has them) follow the same path to within their rounding.
    if naba_kernels::bf16::supported() {
        let mut bf16 = no_dropout.clone();
        bf16.optim.precision = TrainPrecision::Bf16;
        let half = train(&bf16, &opts(&tmp.path().join("f"))).unwrap();
        assert_eq!(half.engine, "fast, bf16 products");
        for (f, r) in half.meta.history.iter().zip(hr) {
            assert!(
                (f.train_loss - r.train_loss).abs() < 3e-2 * r.train_loss.abs().max(1.0),
                "epoch {}: bf16 loss {} vs reference {}",
                f.epoch,
                f.train_loss,
                r.train_loss
            );
        }
    }
}

#[test]
fn sequence_classification_trains_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        r#"name = "tiny-seq"
task = "sequence-classification"
base = "{}"
[data]
train = "{}"
dev_fraction = 0.25
labels = ["neg", "pos"]
text_column = "text"
label_column = "label"
max_length = 32
[model]
train_layers = 2
parts_dtype = "f16"
[optim]
epochs = 3
batch_size = 4
lr_head = 0.01
lr_encoder = 0.003
save_every = 0
"#,
        fixture_model().display(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny.csv")
            .display()
    );
    let r: Recipe = toml::from_str(&text).unwrap();
    let out = train(&r, &opts(tmp.path())).unwrap();
    assert_eq!(out.meta.history.len(), 3);
    let model = Model::load_dir(
        "tiny-seq",
        &tmp.path().join(MODEL_DIR),
        SourceKind::Directory,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        model.head_kind(),
        naba_models::HeadKind::SequenceClassification
    );
    assert_eq!(model.config.labels, vec!["neg", "pos"]);
}

/// One JSONL file holding every split (as the ANT corpus does), read through the recipe's
/// filters; q8 parts assemble into a model that loads, and the trained window is recorded.
#[test]
fn one_file_splits_by_filter_and_q8_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny.csv"),
    )
    .unwrap();
    let mut jsonl = String::new();
    for (i, line) in csv.lines().skip(1).enumerate() {
        let (text, label) = line.rsplit_once(',').unwrap();
        let split = ["train", "train", "dev", "test"][i % 4];
        jsonl.push_str(
            &serde_json::json!({"body": "", "title": text, "topic": label, "split": split})
                .to_string(),
        );
        jsonl.push('\n');
    }
    let data = tmp.path().join("all.jsonl");
    std::fs::write(&data, jsonl).unwrap();
    let text = format!(
        r#"name = "tiny-split"
task = "sequence-classification"
base = "{base}"
[data]
train = "{data}"
train_filter = {{ split = "train" }}
dev = "{data}"
dev_filter = {{ split = "dev" }}
test = ["{data}"]
test_filter = {{ split = "test" }}
labels = ["neg", "pos"]
text_column = "body"
text_fallback = "title"
label_column = "topic"
score_labels = ["pos"]
max_length = 24
[model]
train_layers = 1
parts_dtype = "q8"
[optim]
epochs = 1
batch_size = 4
save_every = 0
"#,
        base = fixture_model().display(),
        data = data.display(),
    );
    let r: Recipe = toml::from_str(&text).unwrap();
    let out_dir = tmp.path().join("out");
    let out = train(&r, &opts(&out_dir)).unwrap();
    assert_eq!(out.tests.len(), 1);
    let parts = out_dir.join(BEST_PARTS_DIR);
    let (raw, _) = load_tensors(&parts.join(PARTS_FILE)).unwrap();
    assert!(raw.values().any(|t| t.dtype() == candle_core::DType::U8));
    let model = Model::load_dir(
        "tiny-split",
        &out_dir.join(MODEL_DIR),
        SourceKind::Directory,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(model.config.naba.window, Some(24));
    let bad = r#"name = "x"
task = "sequence-classification"
base = "b"
[data]
train = "t"
labels = ["neg", "pos"]
"#;
    let mut r2: Recipe = toml::from_str(bad).unwrap();
    r2.data.train = data.clone();
    r2.data.text_column = Some("body".into());
    r2.data.label_column = Some("topic".into());
    r2.data.train_filter = [("split".to_string(), "nowhere".to_string())].into();
    r2.base = fixture_model().display().to_string();
    r2.model.train_layers = 1;
    let e = train(&r2, &opts(&tmp.path().join("out2")))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(e.contains("no usable rows"), "{e}");
}
