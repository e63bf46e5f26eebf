//! `naba lexical` end to end: fit a TF-IDF member from a recipe, choose its share on dev from
//! `naba eval`'s predictions, and see `naba predict` blend it (and `--no-lexical` not); bad
//! recipes and prediction files get one clear error line. Runs the tiny `bert-seq-cls` parity
//! checkpoint (labels agree / disagree / other).

use std::path::Path;
use std::process::{Command, Output};

fn naba(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_naba"))
        .args(args)
        .output()
        .expect("run naba")
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "naba failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(needle), "`{needle}` not in: {stderr}");
}

/// `naba lexical` with settings that fit the six-text fixture corpus, plus `args`.
fn fit(recipe: &str, out: &str, args: &[&str]) -> Output {
    let mut all = vec!["lexical", "--recipe", recipe, "--out", out];
    all.extend_from_slice(&["--epochs", "20", "--lr", "0.05", "--batch-size", "2"]);
    all.extend_from_slice(&["--buckets-log2", "12"]);
    all.extend_from_slice(args);
    naba(&all)
}

fn member_params(dir: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(dir).join("lexical.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A copy of the fixture model, a JSONL corpus with train and dev rows, and a recipe over it.
fn setup(dir: &Path, task: &str) -> (String, String, String) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../naba-tasks/tests/fixtures/parity/bert-seq-cls");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    let texts = [
        ("نؤيد القرار ونوافق عليه", "agree"),
        ("نوافق على الخطة وندعمها بقوة", "agree"),
        ("نرفض القرار ونعارضه", "disagree"),
        ("نعارض الخطة ونرفضها بشدة", "disagree"),
        ("الطقس معتدل اليوم", "other"),
        ("افتتح معرض الكتاب أبوابه", "other"),
    ];
    let mut rows = String::new();
    for split in ["train", "dev"] {
        for (i, (t, l)) in texts.iter().enumerate() {
            let text = format!("{t} {split} {i}");
            let row =
                serde_json::json!({"text": text, "label": l, "split": split, "target": "القرار"});
            rows.push_str(&format!("{row}\n"));
        }
    }
    let data = dir.join("data.jsonl");
    std::fs::write(&data, rows).unwrap();
    let target = if task == "pair-classification" {
        "target_column = \"target\"\n"
    } else {
        ""
    };
    let recipe = format!(
        "name = \"t\"\ntask = \"{task}\"\nbase = \"{}\"\n[data]\ntrain = \"{}\"\n\
         train_filter = {{ split = \"train\" }}\ndev = \"{}\"\ndev_filter = {{ split = \"dev\" }}\n\
         labels = [\"agree\", \"disagree\", \"other\"]\ntext_column = \"text\"\n\
         label_column = \"label\"\n{target}",
        model.display(),
        data.display(),
        data.display()
    );
    let recipe_path = dir.join("recipe.toml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    (s(&model), s(&data), s(&recipe_path))
}

#[test]
fn fit_choose_on_dev_and_predict_with_the_member() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data, recipe) = setup(tmp.path(), "sequence-classification");
    let report = tmp.path().join("dev-report");
    ok(naba(&[
        "eval",
        "--task",
        "topic",
        "--data",
        &data,
        "--filter",
        "split=dev",
        "--text-col",
        "text",
        "--label-col",
        "label",
        "--model",
        &model,
        "--report-dir",
        &report.to_string_lossy(),
    ]));
    let preds = report.join("predictions.jsonl");
    let out = fit(
        &recipe,
        &model,
        &["--dev-predictions", &preds.to_string_lossy()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(stderr.contains("chosen on dev (6 rows)"), "{stderr}");
    let params = member_params(&model);
    let mix = params["mix"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&mix), "{params}");
    assert_eq!(
        params["labels"],
        serde_json::json!(["agree", "disagree", "other"])
    );
    // Running the model here instead (its member left out) reads dev as `naba eval` did.
    let elsewhere = tmp.path().join("via-model").to_string_lossy().into_owned();
    ok(fit(&recipe, &elsewhere, &["--model", &model]));
    let again = member_params(&elsewhere);
    assert_eq!(again["mix"], params["mix"], "{again}");

    // A given share, so the blend must show in predictions.
    ok(fit(&recipe, &model, &["--mix", "0.8"]));
    let text = "نعارض الخطة ونرفضها";
    let score =
        |stdout: String| -> serde_json::Value { serde_json::from_str(stdout.trim()).unwrap() };
    let with = score(ok(naba(&[
        "predict", "--task", "topic", "--model", &model, text,
    ])));
    let without = score(ok(naba(&[
        "predict",
        "--task",
        "topic",
        "--model",
        &model,
        "--no-lexical",
        text,
    ])));
    assert_ne!(with["labels"], without["labels"]);
    assert_eq!(with["labels"][0]["label"], "disagree", "{with}");
}

#[test]
fn a_stance_member_reads_text_against_target() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _, recipe) = setup(tmp.path(), "pair-classification");
    ok(fit(&recipe, &model, &["--mix", "0.8"]));
    let params = member_params(&model);
    assert_eq!(params["pairs"], true, "{params}");
    let text = "نعارض الخطة ونرفضها";
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "predict",
            "--task",
            "stance",
            "--model",
            &model,
            "--target",
            "القرار",
        ];
        args.extend_from_slice(extra);
        args.push(text);
        serde_json::from_str(ok(naba(&args)).trim()).unwrap()
    };
    assert_ne!(run(&[])["labels"], run(&["--no-lexical"])["labels"]);
}

#[test]
fn bad_recipes_and_prediction_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let ner = tmp.path().join("ner.toml");
    std::fs::write(
        &ner,
        "name = \"n\"\ntask = \"token-classification\"\nbase = \"b\"\n[data]\n\
         train = \"train.txt\"\nlabels = [\"O\", \"B-PERS\", \"I-PERS\"]\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("out").to_string_lossy().into_owned();
    let ner = ner.to_string_lossy().into_owned();
    one_error(
        &naba(&[
            "lexical", "--recipe", &ner, "--mix", "0.5", "--out", &out_dir,
        ]),
        "pair-classification (stance)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, recipe) = setup(tmp.path(), "sequence-classification");
    let preds = tmp.path().join("preds.jsonl");
    std::fs::write(&preds, "{\"line\": 1, \"scores\": {\"agree\": 1.0}}\n").unwrap();
    one_error(
        &naba(&[
            "lexical",
            "--recipe",
            &recipe,
            "--dev-predictions",
            &preds.to_string_lossy(),
            "--out",
            &out_dir,
            "--epochs",
            "1",
        ]),
        "has no prediction for data line",
    );
    let bad_range = naba(&[
        "lexical",
        "--recipe",
        &recipe,
        "--mix",
        "0.5",
        "--out",
        &out_dir,
        "--word-ngrams",
        "3-1",
    ]);
    let stderr = String::from_utf8_lossy(&bad_range.stderr);
    assert!(
        !bad_range.status.success() && stderr.contains("1 <= LOW <= HIGH <= 8"),
        "{stderr}"
    );
    one_error(
        &naba(&[
            "lexical", "--recipe", &recipe, "--mix", "2", "--out", &out_dir,
        ]),
        "--mix must lie in [0, 1]",
    );
}
