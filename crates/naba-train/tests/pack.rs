//! `data.pack_sentences`: dev carved in blocks of consecutive sentences, runs of consecutive
//! sentences packed into windows, and a tiny run that trains on packs.

use naba_train::data::{
    carve_dev, carve_dev_blocks, encode_words, pack_sentences, read_conll_sentences,
};
use naba_train::{train, Recipe, Stop};

mod common;
use common::{fixture_conll, fixture_model, opts};

#[test]
fn dev_blocks_are_whole_runs_of_consecutive_sentences() {
    for (n, block) in [(23, 10), (95, 10), (7, 3)] {
        let (train, dev) = carve_dev_blocks(n, 0.25, 13, block);
        let mut all: Vec<usize> = train.iter().chain(&dev).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "a partition of 0..{n}");
        assert!(!dev.is_empty());
        // Every dev sentence's whole block is in dev.
        for &i in &dev {
            let b = i / block;
            for j in b * block..((b + 1) * block).min(n) {
                assert!(dev.contains(&j), "{j} is in {i}'s block but not in dev");
            }
        }
        assert_eq!(carve_dev_blocks(n, 0.25, 13, block), (train, dev), "seeded");
    }
    // About the fraction of the blocks, as the single-sentence carve takes of the sentences.
    let (_, dev) = carve_dev_blocks(1000, 0.1, 13, 10);
    assert_eq!(dev.len(), 100);
    assert_eq!(carve_dev(1000, 0.1, 13).1.len(), 100);
}

#[test]
fn packs_join_consecutive_sentences_within_the_window() {
    let sentences = read_conll_sentences(&fixture_conll()).unwrap();
    let tok = naba_models::tokenizer::load(&fixture_model()).unwrap();
    let max_len = 24;
    let all: Vec<usize> = (0..sentences.len()).collect();
    let packs = pack_sentences(&sentences, &all, &tok, max_len, "").unwrap();
    assert!(packs.len() < sentences.len(), "short sentences are joined");
    // Nothing lost or reordered.
    let joined: Vec<&String> = packs.iter().flat_map(|p| &p.tokens).collect();
    let original: Vec<&String> = sentences.iter().flat_map(|s| &s.tokens).collect();
    assert_eq!(joined, original);
    let tags: Vec<&String> = packs.iter().flat_map(|p| &p.tags).collect();
    assert_eq!(
        tags,
        sentences.iter().flat_map(|s| &s.tags).collect::<Vec<_>>()
    );
    for p in &packs {
        assert_eq!(p.tokens.len(), p.tags.len());
        assert_eq!(p.tokens.len(), p.token_lines.len());
        let (ids, _, _) = encode_words(&tok, &p.tokens, 0, p.tokens.len(), "", false).unwrap();
        assert!(ids.len() <= max_len, "a pack of {} sub-words", ids.len());
    }
    // A gap in the indices ends a pack: sentences 0-2 and 5-6 are never joined.
    let packs = pack_sentences(&sentences, &[0, 1, 2, 5, 6], &tok, 200, "").unwrap();
    assert_eq!(packs.len(), 2);
    let first: usize = sentences[..3].iter().map(|s| s.tokens.len()).sum();
    assert_eq!(packs[0].tokens.len(), first);
    assert_eq!(packs[1].line, sentences[5].line);
    assert!(pack_sentences(&sentences, &[999], &tok, 200, "").is_err());
}

#[test]
fn a_recipe_with_packed_sentences_trains() {
    let text = format!(
        r#"name = "tiny-packed"
task = "token-classification"
base = "{}"
seed = 7
[data]
train = "{}"
dev_fraction = 0.25
pack_sentences = true
labels = ["O", "B-PERS", "I-PERS", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
max_length = 40
[model]
train_layers = 1
parts_dtype = "f32"
[optim]
epochs = 2
batch_size = 2
lr_head = 0.01
lr_encoder = 0.003
patience = 0
save_every = 0
"#,
        fixture_model().display(),
        fixture_conll().display()
    );
    let r: Recipe = toml::from_str(&text).unwrap();
    r.validate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = train(&r, &opts(&tmp.path().join("run"))).unwrap();
    assert_eq!(out.stop, Stop::Completed);
    assert_eq!(out.meta.history.len(), 2);
    // Classification recipes refuse the option.
    let bad = text.replace("token-classification", "sequence-classification");
    let err = toml::from_str::<Recipe>(&bad)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("pack_sentences"), "{err}");
    let zero = text.replace("pack_sentences = true", "dev_block = 0");
    let err = toml::from_str::<Recipe>(&zero)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("dev_block"), "{err}");
}

#[test]
fn extra_training_files_are_appended_after_the_dev_carve() {
    let conll = fixture_conll();
    let text = |extra: &str| {
        format!(
            r#"name = "tiny-extra"
task = "token-classification"
base = "{}"
seed = 7
[data]
train = "{}"
{extra}
dev_fraction = 0.25
labels = ["O", "B-PERS", "I-PERS", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
max_length = 40
[model]
train_layers = 1
parts_dtype = "f32"
[optim]
epochs = 1
batch_size = 2
lr_head = 0.01
lr_encoder = 0.003
patience = 0
save_every = 0
"#,
            fixture_model().display(),
            conll.display()
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = |recipe: &str, dir: &str| {
        let r: Recipe = toml::from_str(recipe).unwrap();
        r.validate().unwrap();
        train(&r, &opts(&tmp.path().join(dir))).unwrap()
    };
    let plain = run(&text(""), "plain");
    let with = run(
        &text(&format!(
            "extra_train = [{:?}]",
            conll.display().to_string()
        )),
        "extra",
    );
    // The whole extra file trains: the fixture again, so more steps than its carved 75%.
    let n = read_conll_sentences(&conll).unwrap().len();
    assert!(
        with.step >= plain.step + n / 2 - 1,
        "{} steps with the extra file, {} without ({n} sentences, batch 2)",
        with.step,
        plain.step
    );
    let card = std::fs::read_to_string(tmp.path().join("extra/README.md")).unwrap();
    assert!(card.contains("also trained on"), "{card}");

    // A missing file is named; classification recipes refuse the option.
    let missing = text("extra_train = [\"no/such/pseudo.txt\"]");
    let r: Recipe = toml::from_str(&missing).unwrap();
    let err = format!(
        "{:#}",
        train(&r, &opts(&tmp.path().join("missing"))).unwrap_err()
    );
    assert!(err.contains("no/such/pseudo.txt"), "{err}");
    let err = toml::from_str::<Recipe>(
        &missing.replace("token-classification", "sequence-classification"),
    )
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("extra_train"), "{err}");
}
