//! Every kind of bad input named in the spine issue gets a one-line error that names the
//! problem, a non-zero exit code and no panic; and a good run prints one JSON object per input
//! whose entity texts are exact slices of the input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../naba-tasks/tests/fixtures/parity")
        .join(name)
}

fn naba(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_naba"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run naba");
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(data) = stdin {
            let _ = pipe.write_all(data);
        }
    }
    child.wait_with_output().expect("wait")
}

/// Asserts a clean failure: non-zero exit, no panic, and a single stderr line containing `needle`.
fn assert_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "`{needle}` not in: {stderr}");
}

/// A copy of a fixture model the test may damage.
fn copy_model(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// A copy of the XLM-R NER fixture with one `config.json` field changed.
fn model_with_config(key: &str, value: serde_json::Value) -> tempfile::TempDir {
    let dir = copy_model("xlmr-token-cls");
    let cfg = dir.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&cfg, v.to_string()).unwrap();
    dir
}

fn ner_model() -> String {
    fixture("bert-token-cls").to_string_lossy().into_owned()
}

#[test]
fn empty_and_whitespace_text() {
    assert_error(
        &naba(
            &["predict", "--task", "ner", "--model", &ner_model(), ""],
            None,
        ),
        "empty",
    );
    assert_error(
        &naba(
            &[
                "predict",
                "--task",
                "ner",
                "--model",
                &ner_model(),
                " \t\n ",
            ],
            None,
        ),
        "empty or only whitespace",
    );
    let out = naba(
        &[
            "predict",
            "--task",
            "ner",
            "--model",
            &ner_model(),
            "--format",
            "jsonl",
        ],
        Some("{\"text\": \"نص\"}\n{\"id\": \"b\", \"text\": \"   \"}\n".as_bytes()),
    );
    assert_error(&out, "input \"b\"");
}

#[test]
fn invalid_utf8() {
    let out = naba(
        &["predict", "--task", "ner", "--model", &ner_model()],
        Some(b"\xd8\xa7 \xff\xfe bad\n"),
    );
    assert_error(&out, "not valid UTF-8");
}

#[test]
fn ten_megabyte_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    // 10 MiB of UTF-8 (two bytes per Arabic letter), one line.
    std::fs::write(&path, "ب".repeat(5 * 1024 * 1024)).unwrap();
    let out = naba(
        &[
            "predict",
            "--task",
            "ner",
            "--model",
            &ner_model(),
            "--input",
            &path.to_string_lossy(),
        ],
        None,
    );
    assert_error(&out, "over the limit");
}

#[test]
fn missing_input_file() {
    let out = naba(
        &[
            "predict",
            "--task",
            "ner",
            "--model",
            &ner_model(),
            "--input",
            "/nonexistent/news.txt",
        ],
        None,
    );
    assert_error(&out, "cannot read input file /nonexistent/news.txt");
}

#[test]
fn truncated_safetensors() {
    let dir = copy_model("xlmr-token-cls");
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let out = naba(
        &[
            "predict",
            "--task",
            "ner",
            "--model",
            &dir.path().to_string_lossy(),
            "سلام",
        ],
        None,
    );
    assert_error(&out, "truncated or corrupt");
}

#[test]
fn config_that_does_not_match_the_weights() {
    let dir = model_with_config("intermediate_size", 96.into());
    let out = naba(
        &[
            "predict",
            "--task",
            "ner",
            "--model",
            &dir.path().to_string_lossy(),
            "سلام",
        ],
        None,
    );
    assert_error(&out, "weights do not match config.json");
}

#[test]
fn unknown_model_type() {
    let dir = model_with_config("model_type", "gpt2".into());
    let out = naba(
        &[
            "predict",
            "--task",
            "ner",
            "--model",
            &dir.path().to_string_lossy(),
            "سلام",
        ],
        None,
    );
    assert_error(&out, "unsupported model_type `gpt2`");
}

#[test]
fn unknown_decoding_names_the_choices() {
    let out = naba(
        &[
            "predict",
            "--task",
            "ner",
            "--model",
            &ner_model(),
            "--decoding",
            "crf",
            "نص",
        ],
        None,
    );
    // A usage error: clap's message (plus its pointer to --help), exit code 2.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown decoding `crf`: expected argmax or iob2"),
        "{stderr}"
    );
}

#[test]
fn wrong_task_for_the_head_and_missing_target() {
    let seq = fixture("bert-seq-cls").to_string_lossy().into_owned();
    assert_error(
        &naba(&["predict", "--task", "ner", "--model", &seq, "نص"], None),
        "use --task topic or stance",
    );
    assert_error(
        &naba(
            &["predict", "--task", "stance", "--model", &seq, "نص"],
            None,
        ),
        "needs a target",
    );
}

#[test]
fn predictions_come_in_input_order_with_exact_slices() {
    let text = "زار Joe Biden مدينة موسكو\nذَهَبَ مُحَمَّدٌ إِلَى القَاهِرَةِ\n";
    let out = naba(
        &[
            "predict",
            "--task",
            "ner",
            "--model",
            &ner_model(),
            "--normalize",
            "all",
            "--aggregation",
            "first",
        ],
        Some(text.as_bytes()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let inputs: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    for (i, (line, input)) in lines.iter().zip(&inputs).enumerate() {
        assert_eq!(line["id"], serde_json::json!(i));
        assert_eq!(line["windows"], serde_json::json!(1));
        let chars: Vec<char> = input.chars().collect();
        for e in line["entities"].as_array().unwrap() {
            let (s, t) = (
                e["start"].as_u64().unwrap() as usize,
                e["end"].as_u64().unwrap() as usize,
            );
            let slice: String = chars[s..t].iter().collect();
            assert_eq!(e["text"].as_str().unwrap(), slice);
            assert!(["PERS", "LOC", "ORG", "MISC"].contains(&e["type"].as_str().unwrap()));
        }
    }
    let seq = fixture("bert-seq-cls").to_string_lossy().into_owned();
    let out = naba(
        &[
            "predict",
            "--task",
            "stance",
            "--model",
            &seq,
            "--target",
            "الهدف",
            "--top-k",
            "2",
            "نص",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["labels"].as_array().unwrap().len(), 2);
    assert_eq!(v["target"], "الهدف");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["predict", "--help"],
        vec!["eval", "--help"],
        vec!["train", "--help"],
        vec!["lexical", "--help"],
        vec!["serve", "--help"],
        vec!["models", "--help"],
        vec!["models", "fetch", "--help"],
        vec!["models", "list", "--help"],
    ] {
        let out = naba(&args, None);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}
