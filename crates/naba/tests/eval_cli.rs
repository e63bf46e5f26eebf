//! `naba eval` end to end on small files with bad rows in them: the report directory holds every
//! promised file, metrics.json the documented fields, bad data is counted with line numbers, and
//! `compare` reads two reports.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../naba-tasks/tests/fixtures/parity")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn naba(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_naba"))
        .args(args)
        .output()
        .expect("run naba");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `naba eval --task ner` of `data` with `model` into `report`, plus `extra` flags.
fn eval_ner(data: &Path, model: &str, report: &Path, extra: &[&str]) -> (bool, String, String) {
    let (d, r) = (data.to_string_lossy(), report.to_string_lossy());
    let mut args = vec!["eval", "--task", "ner", "--data", &d, "--model", model];
    args.extend(["--report-dir", &r]);
    args.extend(extra);
    naba(&args)
}

fn metrics(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn ner_report_with_bad_sentences() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mini.txt");
    std::fs::write(
        &data,
        "زار O\nجو B-PERS\nبايدن I-PERS\nموسكو B-LOC\n\nفي O\nمصر I-LOC\n\nشركة B-ORG\nأبل I-ORG\nالكبرى B-FOO\n",
    )
    .unwrap();
    let report = tmp.path().join("report");
    let (ok, _, err) = eval_ner(
        &data,
        &fixture("bert-token-cls"),
        &report,
        &["--bootstrap", "200"],
    );
    assert!(ok, "{err}");
    for f in [
        "metrics.json",
        "report.md",
        "errors.jsonl",
        "predictions.conll",
        "confusion_matrix.svg",
        "f1_by_label.svg",
    ] {
        assert!(report.join(f).is_file(), "{f} missing");
    }
    let m = metrics(&report);
    for k in ["micro_f1", "macro_f1", "per_type", "token_accuracy"] {
        assert!(!m[k].is_null(), "metrics.json lacks {k}");
    }
    let ci = m["micro_f1"]["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= m["micro_f1"]["value"].as_f64().unwrap());
    let issues = m["data_issues"].to_string();
    assert!(
        issues.contains("\"line\":7"),
        "I- start at line 7 not reported: {issues}"
    );
    assert!(
        issues.contains("\"line\":11"),
        "unknown tag at line 11 not reported: {issues}"
    );
    let conll = std::fs::read_to_string(report.join("predictions.conll")).unwrap();
    let first = conll.lines().next().unwrap();
    assert_eq!(
        first.split_whitespace().count(),
        3,
        "a predicted column is appended: {first}"
    );
}

#[test]
fn packed_passages_are_scored_per_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mini.txt");
    let sentences = [
        "زار O\nجو B-PERS\nبايدن I-PERS\nموسكو B-LOC",
        "في O\nمصر B-LOC",
        "شركة B-ORG\nأبل I-ORG",
    ];
    std::fs::write(&data, sentences.join("\n\n") + "\n").unwrap();
    for pack in ["0", "50"] {
        let report = tmp.path().join(format!("report-{pack}"));
        let (ok, _, err) = eval_ner(
            &data,
            &fixture("bert-token-cls"),
            &report,
            &["--bootstrap", "0", "--pack-words", pack],
        );
        assert!(ok, "{err}");
        assert_eq!(
            settings(&report)["pack_words"],
            pack,
            "the report says how it read"
        );
        let conll = std::fs::read_to_string(report.join("predictions.conll")).unwrap();
        let blocks: Vec<&str> = conll.trim_end().split("\n\n").collect();
        assert_eq!(
            blocks.len(),
            3,
            "one block per sentence, packed or not:\n{conll}"
        );
        for (block, gold) in blocks.iter().zip(sentences) {
            assert_eq!(block.lines().count(), gold.lines().count());
            // Each sentence's own tags are valid IOB2: an entity cut by a sentence boundary
            // starts again with B- in the next sentence.
            let mut prev = "O".to_string();
            for line in block.lines() {
                let tag = line.split_whitespace().last().unwrap_or("O").to_string();
                if let Some(t) = tag.strip_prefix("I-") {
                    assert!(
                        prev.ends_with(t) && prev != "O",
                        "{tag} after {prev} in {block}"
                    );
                }
                prev = tag;
            }
        }
    }
}

fn settings(report: &Path) -> Value {
    metrics(report)["settings"].clone()
}

#[test]
fn pack_words_defaults_to_the_models_own_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mini.txt");
    std::fs::write(&data, "في O\nمصر B-LOC\n\nشركة B-ORG\nأبل I-ORG\n").unwrap();
    // A copy of the fixture model whose config.json carries `naba.pack_words`, as a model
    // trained with `data.pack_sentences` and `model.pack_words` does.
    let model = tmp.path().join("packed-model");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(fixture("bert-token-cls")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    let config_path = model.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["naba"] = serde_json::json!({ "pack_words": 40 });
    std::fs::write(&config_path, config.to_string()).unwrap();
    for (flag, expected) in [(None, "40"), (Some("0"), "0")] {
        let report = tmp.path().join(format!("report-{expected}"));
        let mut extra = vec!["--bootstrap", "0"];
        if let Some(f) = flag {
            extra.extend(["--pack-words", f]);
        }
        let (ok, _, err) = eval_ner(&data, &model.to_string_lossy(), &report, &extra);
        assert!(ok, "{err}");
        let s = settings(&report);
        assert_eq!(s["pack_words"], expected, "flag {flag:?}: {s}");
        assert_eq!(s["decoding"], "iob2");
    }
}

#[test]
fn stance_report_from_csv_and_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.csv");
    std::fs::write(
        &data,
        "s1,s2,stance\n\"ارتفاع الأسعار\",\"قال الوزير إن الأسعار\nارتفعت\",agree\n\"ارتفاع الأسعار\",\"نفت الحكومة\",disagree\n\"ارتفاع\",,other\n\"هدف\",\"نص\",unrelated\n\"هدف\",\"نص آخر\",other\n",
    )
    .unwrap();
    let run = |dir: &PathBuf, seed: &str| {
        naba(&[
            "eval",
            "--task",
            "stance",
            "--data",
            &data.to_string_lossy(),
            "--model",
            &fixture("bert-seq-cls"),
            "--text-col",
            "s2",
            "--target-col",
            "s1",
            "--label-col",
            "stance",
            "--seed",
            seed,
            "--report-dir",
            &dir.to_string_lossy(),
        ])
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (ok, _, err) = run(&a, "1");
    assert!(ok, "{err}");
    assert!(run(&b, "2").0);
    let m = metrics(&a);
    assert!(m["accuracy"]["value"].as_f64().is_some());
    assert!(m["macro_f1"]["value"].as_f64().is_some());
    let issues = m["data_issues"].to_string();
    assert!(
        issues.contains("empty"),
        "the empty text row is reported: {issues}"
    );
    assert!(
        issues.contains("unrelated"),
        "the unknown label is reported: {issues}"
    );
    assert!(a.join("predictions.jsonl").is_file());
    let (ok, out, err) = naba(&[
        "eval",
        "compare",
        &a.to_string_lossy(),
        &b.to_string_lossy(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("macro_f1"), "{out}");
}

#[test]
fn suite_entry_with_missing_data_says_where_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite.toml");
    std::fs::write(
        &suite,
        "[[dataset]]\nname = \"gone\"\ntask = \"ner\"\npath = \"nowhere/test.txt\"\nmodels = [\"x\"]\nsource = \"from the moon\"\n",
    )
    .unwrap();
    let (ok, out, _) = naba(&[
        "eval",
        "--suite",
        &suite.to_string_lossy(),
        "--report-dir",
        &tmp.path().join("r").to_string_lossy(),
    ]);
    assert!(!ok);
    assert!(out.contains("not found; get it: from the moon"), "{out}");
}
