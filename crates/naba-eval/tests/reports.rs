//! Report writing, metrics.json layout, and comparison.

use naba_eval::read::{parse_conll, read_delimited_from};
use naba_eval::{
    compare, read_metrics, BootstrapConfig, ClassPrediction, ColumnOptions, ConllOptions,
    EvalOptions, Report, RunInfo, RunStats,
};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const CSV: &str = "ID,text,target,stance\n\
1,نص أول,Women,Favor\n\
2,\"نص\nثان\",Women,Against\n\
3,نص ثالث,COVID,None\n\
4,,COVID,Favor\n\
5,نص خامس,COVID,Favor\n\
6,نص سادس,Women,Against\n";

fn class_corpus() -> naba_eval::ClassificationCorpus {
    let opts = ColumnOptions {
        target: Some("target".into()),
        id: Some("ID".into()),
        ..ColumnOptions::new("text", "stance")
    };
    read_delimited_from(CSV.as_bytes(), Path::new("mawqif.csv"), b',', &opts).expect("csv")
}

fn class_report(preds: &[&str], model: &str) -> Report {
    let corpus = class_corpus();
    let predictions: Vec<ClassPrediction> = preds
        .iter()
        .map(|p| {
            ClassPrediction::with_scores(
                *p,
                [("Favor".to_string(), 0.7), ("Against".to_string(), 0.3)],
            )
        })
        .collect();
    let timings = vec![Duration::from_millis(12); predictions.len()];
    let opts = EvalOptions {
        bootstrap: BootstrapConfig {
            resamples: 200,
            seed: 1,
        },
        selected_labels: vec!["Favor".into(), "Against".into()],
        run: Some(RunStats::from_timings(&timings, 40, None).expect("timings")),
        shard: None,
    };
    Report::classification(
        &corpus,
        &predictions,
        RunInfo::new(model, "mawqif.csv"),
        &opts,
    )
    .expect("report")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

#[test]
fn classification_report_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("a");
    let report = class_report(&["Favor", "Favor", "None", "Favor", "Against"], "model-a");
    report.write(&dir).expect("write");
    for f in [
        "metrics.json",
        "report.md",
        "confusion_matrix.svg",
        "f1_by_label.svg",
        "errors.jsonl",
        "predictions.jsonl",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let m = read_json(&dir.join("metrics.json"));
    assert_eq!(m["task"], "classification");
    assert_eq!(m["model"], "model-a");
    assert_eq!(m["examples"], 5);
    assert!((m["accuracy"]["value"].as_f64().expect("acc") - 0.8).abs() < 1e-12);
    assert_eq!(m["accuracy"]["ci95"].as_array().expect("ci").len(), 2);
    assert!(m["macro_f1"]["value"].is_f64());
    assert_eq!(m["selected_f1"]["labels"][0], "Favor");
    assert_eq!(m["data_issues"]["total"], 1);
    assert_eq!(m["data_issues"]["issues"][0]["line"], 6);
    assert_eq!(m["data_issues"]["issues"][0]["kind"], "empty_text");
    assert_eq!(m["run"]["documents"], 5);
    assert_eq!(m["bootstrap"]["resamples"], 200);
    assert!(m["per_label"]["Against"]["f1_ci95"].is_array());
    assert_eq!(m["confusion_matrix"]["labels"][0], "Against");

    let errors = std::fs::read_to_string(dir.join("errors.jsonl")).expect("errors");
    let lines: Vec<Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "2");
    assert_eq!(lines[0]["gold"], "Against");
    assert_eq!(lines[0]["predicted"], "Favor");
    assert_eq!(lines[0]["text"], "نص\nثان");
    assert_eq!(lines[0]["target"], "Women");
    let preds = std::fs::read_to_string(dir.join("predictions.jsonl")).expect("preds");
    assert_eq!(preds.lines().count(), 5);
    let first: Value = serde_json::from_str(preds.lines().next().expect("line")).expect("json");
    assert_eq!(first["scores"]["Favor"], 0.7);

    let md = std::fs::read_to_string(dir.join("report.md")).expect("md");
    assert!(md.contains("| accuracy | 0.8000 |") && md.contains("mean F1 of Favor, Against"));
    // Reading back gives the same struct.
    assert_eq!(read_metrics(&dir).expect("read back"), report.metrics);
    // No temporary directories are left beside the report.
    let names: Vec<String> = std::fs::read_dir(root.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn compare_two_reports() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    class_report(&["Favor", "Favor", "None", "Favor", "Against"], "model-a")
        .write(&a)
        .expect("a");
    class_report(&["Against", "Favor", "Favor", "None", "None"], "model-b")
        .write(&b)
        .expect("b");
    let c = compare(&a, &b).expect("compare");
    assert_eq!(c.task, "classification");
    let acc = &c.headlines[0];
    assert_eq!(acc.name, "accuracy");
    assert!((acc.delta.expect("delta") - (0.0 - 0.8)).abs() < 1e-12);
    assert!(acc.outside_a_ci, "0.0 is outside A's interval");
    assert!(c.per_label.iter().any(|r| r.name == "None"));
    let md = c.to_markdown();
    assert!(md.contains("outside A's 95% bootstrap interval"));
    assert!(md.contains("| accuracy | 0.8000 |"));
    assert!(md.contains('⚑'));

    // A NER report cannot be compared with a classification one.
    let n = root.path().join("n");
    ner_report().write(&n).expect("ner");
    let err = compare(&a, &n).unwrap_err().to_string();
    assert!(
        err.contains("classification") && err.contains("ner"),
        "{err}"
    );
}

const CONLL: &str = "-DOCSTART- O\n\nمحمد B-PERS\nعلي I-PERS\nفي O\nالقاهرة B-LOC\n\n\
بنك\tI-ORG\nمصر\tI-ORG\n";

fn ner_report() -> Report {
    let corpus = parse_conll(CONLL, Path::new("t.txt"), &ConllOptions::default());
    let preds = vec![
        vec!["B-PERS".into(), "I-PERS".into(), "O".into(), "B-ORG".into()],
        vec!["B-ORG".into(), "I-ORG".into()],
    ];
    Report::ner(
        &corpus,
        &preds,
        RunInfo::new("ner-model", "t.txt"),
        &EvalOptions::default(),
    )
    .expect("ner report")
}

#[test]
fn ner_report_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("ner");
    ner_report().write(&dir).expect("write");
    let m = read_json(&dir.join("metrics.json"));
    assert_eq!(m["task"], "ner");
    assert_eq!(m["scheme"], "IOB2");
    // strict: gold PERS, LOC (I-ORG start is no entity); predicted PERS, ORG, ORG → 1 tp
    assert!((m["micro_precision"]["value"].as_f64().expect("p") - 1.0 / 3.0).abs() < 1e-12);
    assert!((m["micro_recall"]["value"].as_f64().expect("r") - 0.5).abs() < 1e-12);
    // lenient: gold PERS, LOC, ORG → 2 tp of 3 and 3
    assert!((m["lenient_micro_f1"]["value"].as_f64().expect("f") - 2.0 / 3.0).abs() < 1e-12);
    assert!(m["per_type"]["PERS"]["f1_ci95"].is_array());
    assert!(m["macro_f1"]["ci95"].is_array());
    assert_eq!(m["data_issues"]["by_kind"]["iob_start"], 1);
    assert_eq!(m["token_confusion_matrix"]["labels"][0], "LOC");

    let conll = std::fs::read_to_string(dir.join("predictions.conll")).expect("conll");
    assert_eq!(
        conll,
        "محمد B-PERS B-PERS\nعلي I-PERS I-PERS\nفي O O\nالقاهرة B-LOC B-ORG\n\n\
         بنك\tI-ORG\tB-ORG\nمصر\tI-ORG\tI-ORG\n\n"
    );
    let errors = std::fs::read_to_string(dir.join("errors.jsonl")).expect("errors");
    let lines: Vec<Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["missed"][0]["text"], "القاهرة");
    assert_eq!(lines[0]["spurious"][0]["type"], "ORG");
    let svg = std::fs::read_to_string(dir.join("f1_by_label.svg")).expect("svg");
    assert!(svg.contains("PERS"));
}

#[test]
fn mismatched_predictions_are_an_error_that_says_what_to_do() {
    let corpus = class_corpus();
    let err = Report::classification(
        &corpus,
        &[ClassPrediction::new("Favor")],
        RunInfo::new("m", "d"),
        &EvalOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("gold has 5") && err.contains("one prediction per gold item"),
        "{err}"
    );
}
