//! Low-rank adapters (`model.lora_rank`): they start as the base's function, only they and the
//! head train, the parts hold the adapters, and assembly merges them into an ordinary checkpoint
//! that computes what the trained network computes.

use candle_core::DType;
use naba_models::{LoadOptions, Model, SourceKind};
use naba_train::checkpoint::{self, load_tensors, PartsManifest, PARTS_FILE, PARTS_MANIFEST};
use naba_train::net::{HeadType, Mode, TrainNet, Trainable, LORA_A, LORA_B};
use naba_train::trainer::{BEST_PARTS_DIR, MODEL_DIR};
use naba_train::{train, Recipe, Stop};

mod common;
use common::{fixture_conll, fixture_model, max_diff, opts};

fn recipe(lora_rank: usize, train_layers: usize) -> Recipe {
    let text = format!(
        r#"name = "tiny-lora"
task = "token-classification"
base = "{}"
seed = 7
[data]
train = "{}"
dev_fraction = 0.25
labels = ["O", "B-PERS", "I-PERS", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
max_length = 60
[model]
train_layers = {train_layers}
lora_rank = {lora_rank}
parts_dtype = "q8"
[optim]
epochs = 4
batch_size = 4
lr_head = 0.01
lr_encoder = 0.01
warmup_fraction = 0.1
patience = 0
save_every = 0
"#,
        fixture_model().display(),
        fixture_conll().display()
    );
    toml::from_str(&text).expect("recipe parses")
}

#[test]
fn adapters_start_as_the_base_and_are_all_that_trains_below_the_head() {
    let base = checkpoint::open_base(fixture_model().to_str().unwrap(), false).unwrap();
    let load = |t: Trainable| {
        TrainNet::load(
            &base.weights,
            &base.config,
            &base.prefix,
            HeadType::Token,
            9,
            t,
            1,
        )
        .unwrap()
    };
    let plain = load(0.into());
    let adapted = load(Trainable {
        layers: 2,
        lora_rank: 2,
    });
    let rows = vec![vec![2u32, 10, 20, 30, 40, 3], vec![2u32, 11, 12, 3]];
    let d = max_diff(
        &plain.full_forward(&rows, Mode::Train).unwrap(),
        &adapted.full_forward(&rows, Mode::Train).unwrap(),
    );
    assert!(
        d < 1e-6,
        "B = 0 should leave the base's function, moved by {d}"
    );

    let names: Vec<&str> = adapted.trainable().map(|p| p.name.as_str()).collect();
    let adapters = names
        .iter()
        .filter(|n| n.ends_with(LORA_A) || n.ends_with(LORA_B))
        .count();
    // Two layers, six linear layers each, two matrices per adapter.
    assert_eq!(adapters, 24, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.ends_with(LORA_A) || n.ends_with(LORA_B) || n.starts_with("classifier.")),
        "frozen weights among the trainable: {names:?}"
    );
}

#[test]
fn adapter_run_learns_and_assembles_into_the_network_it_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(2, 2);
    r.validate().unwrap();
    let out = train(&r, &opts(tmp.path())).unwrap();
    assert_eq!(out.stop, Stop::Completed);
    let h = &out.meta.history;
    assert!(
        h[3].train_loss < h[0].train_loss,
        "loss did not fall: {:?}",
        h.iter().map(|e| e.train_loss).collect::<Vec<_>>()
    );

    // The parts hold adapters, not weights; the manifest names the weights they change.
    let parts = tmp.path().join(BEST_PARTS_DIR);
    let (stored, _) = load_tensors(&parts.join(PARTS_FILE)).unwrap();
    let query = "bert.encoder.layer.1.attention.self.query";
    assert!(stored.contains_key(&format!("{query}{LORA_A}")));
    assert!(stored.contains_key(&format!("{query}{LORA_B}")));
    assert!(!stored.contains_key(&format!("{query}.weight")));
    let manifest: PartsManifest =
        serde_json::from_str(&std::fs::read_to_string(parts.join(PARTS_MANIFEST)).unwrap())
            .unwrap();
    assert!(manifest.tensors.contains(&format!("{query}.weight")));
    assert!(!manifest.tensors.iter().any(|n| n.contains(".lora_")));

    // The assembled checkpoint is an ordinary one and computes what the trained net computes.
    let model = Model::load_dir(
        "tiny-lora",
        &tmp.path().join(MODEL_DIR),
        SourceKind::Directory,
        &LoadOptions {
            precision: naba_kernels::Precision::F32,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let base = checkpoint::open_base(fixture_model().to_str().unwrap(), false).unwrap();
    let net = TrainNet::load(
        &base.weights,
        &base.config,
        &base.prefix,
        HeadType::Token,
        9,
        Trainable {
            layers: 2,
            lora_rank: 2,
        },
        1,
    )
    .unwrap();
    naba_train::trainer::load_parts_into(&net, &base, &parts).unwrap();
    let rows = vec![vec![2u32, 10, 20, 30, 3]];
    let ours = net.full_forward(&rows, Mode::Infer).unwrap();
    let batch = naba_models::Batch::from_rows(&rows, None, 0, &candle_core::Device::Cpu).unwrap();
    let theirs = model
        .head
        .forward(&model.encoder.forward(&batch).unwrap())
        .unwrap()
        .unwrap();
    let d = max_diff(&ours, &theirs);
    assert!(d < 1e-4, "merged adapters changed logits by {d}");
    // And training moved the weights away from the base's.
    let merged = checkpoint::load_parts(&parts.join(PARTS_FILE), &|n| base.tensor_for(n)).unwrap();
    let w = &merged[&format!("{query}.weight")];
    let w0 = base
        .tensor_for(&format!("{query}.weight"))
        .unwrap()
        .unwrap();
    assert!(max_diff(w, &w0.to_dtype(DType::F32).unwrap()) > 1e-4);
}

#[test]
fn adapters_need_layers_to_adapt_and_a_rank_below_the_width() {
    let e = recipe(4, 0).validate().unwrap_err().to_string();
    assert!(e.contains("train_layers is 0"), "{e}");
    let base = checkpoint::open_base(fixture_model().to_str().unwrap(), false).unwrap();
    let wide = base.config.hidden_size;
    let e = TrainNet::load(
        &base.weights,
        &base.config,
        &base.prefix,
        HeadType::Token,
        9,
        Trainable {
            layers: 1,
            lora_rank: wide,
        },
        1,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("lora_rank"), "{e}");
}
