//! Commands without `--model` use the installed default of their task, found as `naba serve`
//! finds it (a card with `"default": true`, else the first installed of the task), and name it
//! on stderr and in the eval report; only when none is installed do they stop, saying how to
//! install one.

use std::path::Path;
use std::process::{Command, Output};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../naba-tasks/tests/fixtures/parity")
        .join(name)
}

/// Copies a fixture checkpoint to `dir/name`, with a card marking it default when asked.
fn install(dir: &Path, fixture_name: &str, name: &str, default: bool) {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).expect("mkdir");
    for entry in std::fs::read_dir(fixture(fixture_name)).expect("fixture") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let file = path.file_name().expect("a name");
            std::fs::copy(&path, to.join(file)).expect("copy");
        }
    }
    if default {
        std::fs::write(to.join("model_card.json"), r#"{"default": true}"#).expect("card");
    }
}

fn naba(models_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_naba"))
        .args(args)
        .env("NABA_MODELS_DIR", models_dir)
        .env_remove("NABA_MODEL")
        .output()
        .expect("naba runs")
}

#[test]
fn predict_uses_the_default_of_its_task_and_says_which() {
    let dir = tempfile::tempdir().expect("temp dir");
    install(dir.path(), "bert-seq-cls", "topic-a", false);
    install(dir.path(), "xlmr-seq-cls", "topic-b", true);
    install(dir.path(), "bert-token-cls", "ner-x", false);
    let out = naba(
        dir.path(),
        &["predict", "--task", "topic", "أعلنت وزارة الصحة"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("default topic model `topic-b`"), "{err}");
    // topic-b is the 4-label checkpoint: its labels answer.
    let line: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap_or_default())
            .expect("a JSON line");
    assert_eq!(line["labels"].as_array().map(Vec::len), Some(4), "{line}");

    // No card says default: the first installed of the task answers.
    let out = naba(
        dir.path(),
        &["predict", "--task", "ner", "زار جو بايدن موسكو"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("default NER model `ner-x`"), "{err}");

    install(dir.path(), "bert-seq-cls", "stance-x", false);
    let out = naba(
        dir.path(),
        &[
            "predict",
            "--task",
            "stance",
            "--target",
            "الحوار",
            "نص الخبر",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("default stance model `stance-x`"), "{err}");
}

#[test]
fn eval_uses_the_default_and_the_report_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    install(dir.path(), "bert-token-cls", "ner-x", true);
    let data = dir.path().join("mini.txt");
    std::fs::write(&data, "زار O\nجو B-PERS\nبايدن I-PERS\nموسكو B-LOC\n").expect("data");
    let report = dir.path().join("report");
    let out = naba(
        dir.path(),
        &[
            "eval",
            "--task",
            "ner",
            "--data",
            &data.to_string_lossy(),
            "--report-dir",
            &report.to_string_lossy(),
            "--bootstrap",
            "0",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("default NER model `ner-x`"), "{err}");
    let metrics = std::fs::read_to_string(report.join("metrics.json")).expect("metrics.json");
    assert!(
        metrics.contains("ner-x"),
        "the report names the model: {metrics}"
    );
}

#[test]
fn with_none_installed_the_error_says_how_to_get_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    install(dir.path(), "bert-token-cls", "ner-x", true);
    let out = naba(
        dir.path(),
        &["predict", "--task", "stance", "--target", "ت", "نص"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no stance model is installed") && err.contains("naba models fetch"),
        "{err}"
    );
}
