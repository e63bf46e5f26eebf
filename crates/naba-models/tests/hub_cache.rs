//! Loading by hub repo id from a cache laid out exactly as the hub lays it out
//! (`models--owner--name/{blobs,refs,snapshots}` with snapshot files linking to blobs), with
//! `HF_HUB_OFFLINE=1`. One test function: it sets process environment variables.

use naba_models::{HeadKind, LoadOptions, Model, SourceKind};
use std::path::{Path, PathBuf};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../naba-tasks/tests/fixtures/parity/xlmr-token-cls")
}

/// Lays out `repo_id` in `cache` the way huggingface_hub does: each file's bytes in
/// `blobs/<sha256>`, the snapshot entry a relative symlink to it, and `refs/main` naming the commit.
fn lay_out(cache: &Path, repo_id: &str) {
    use sha2::{Digest, Sha256};
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        let bytes = std::fs::read(fixture_dir().join(name)).unwrap();
        let blob = hex::encode(Sha256::digest(&bytes));
        std::fs::write(repo.join("blobs").join(&blob), &bytes).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&blob), snapshot.join(name))
            .unwrap();
    }
}

#[test]
fn loads_by_repo_id_from_an_offline_hub_cache() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");
    lay_out(&cache, "naba-test/tiny-ner");
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", home.path());
    let opts = LoadOptions {
        head_hint: Some(HeadKind::TokenClassification),
        ..LoadOptions::default()
    };

    // HF_HOME/hub, default revision `main` through refs/main.
    let m = Model::load("naba-test/tiny-ner", &opts).expect("load from HF_HOME cache");
    assert_eq!(m.config.head, HeadKind::TokenClassification);
    assert!(m.dir.ends_with(Path::new("snapshots").join(COMMIT)));
    assert!(
        matches!(m.source, SourceKind::Hub { ref repo_id, .. } if repo_id == "naba-test/tiny-ner")
    );

    // HF_HUB_CACHE wins over HF_HOME; a commit hash as revision finds its snapshot directly.
    let other = tempfile::tempdir().unwrap();
    lay_out(other.path(), "naba-test/other");
    std::env::set_var("HF_HUB_CACHE", other.path());
    let by_commit = LoadOptions {
        revision: Some(COMMIT.into()),
        ..opts.clone()
    };
    Model::load("naba-test/other", &by_commit).expect("load by commit from HF_HUB_CACHE");
    let err = Model::load("naba-test/tiny-ner", &opts)
        .err()
        .expect("not in HF_HUB_CACHE")
        .to_string();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(err.contains("naba-test/tiny-ner"), "{err}");

    // An unknown revision is not silently replaced by another.
    let bad_rev = LoadOptions {
        revision: Some("v9".into()),
        ..opts
    };
    assert!(Model::load("naba-test/other", &bad_rev).is_err());
    std::env::remove_var("HF_HUB_CACHE");
    std::env::remove_var("HF_HOME");
    std::env::remove_var("HF_HUB_OFFLINE");
}
