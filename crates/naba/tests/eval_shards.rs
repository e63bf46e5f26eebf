//! Sharded batch jobs (`--shard I/N`): an evaluation run in shards and merged with
//! `naba eval merge` gives the unsharded run's report, figures and intervals alike; `naba
//! predict` shards are disjoint and cover the input; bad `--shard` values and shards that do not
//! belong together are refused with errors that say what to do.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../naba-tasks/tests/fixtures/parity")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn naba(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_naba"))
        .args(args)
        .output()
        .expect("run naba")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "naba failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failure with exit code 2, no panic, and `needles` in its `error:` line.
fn refused(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "want exit code 2: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    for n in needles {
        assert!(line.contains(n), "`{n}` not in: {line}");
    }
    line.to_string()
}

fn metrics(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

/// metrics.json without what is expected to differ between an unsharded run and a merge: when
/// it was made, the timings, and the shard bookkeeping.
fn figures(dir: &Path) -> Value {
    let mut m = metrics(dir);
    let o = m.as_object_mut().unwrap();
    for k in ["timestamp", "run", "shard", "merged_from"] {
        o.remove(k);
    }
    m
}

/// Stance pairs: 23 rows, one with an empty text (a data issue the reports must agree on).
fn stance_csv(dir: &Path, name: &str, twist: &str) -> PathBuf {
    let words = [
        "الحكومة",
        "الأسعار",
        "الوزير",
        "ارتفعت",
        "نفى",
        "أكد",
        "الشركة",
        "الانتخابات",
        "المدينة",
        "الاقتصاد",
        "اللقاح",
        "الرئيس",
    ];
    let labels = ["agree", "disagree", "other"];
    let mut csv = String::from("s1,s2,stance\n");
    for i in 0..23 {
        let claim = format!("{} {}", words[i % 12], words[(i * 5 + 1) % 12]);
        let text = if i == 9 {
            String::new()
        } else {
            let n = 2 + i % 6;
            let t: Vec<&str> = (0..n).map(|k| words[(i * 7 + k * 3) % 12]).collect();
            t.join(" ")
        };
        let label = labels[(i * 2 + i / 3) % 3];
        csv.push_str(&format!("\"{claim}\",\"{text}{twist}\",{label}\n"));
    }
    let path = dir.join(name);
    std::fs::write(&path, csv).unwrap();
    path
}

fn eval_stance(data: &Path, model: &str, report: &Path, extra: &[&str]) -> Output {
    let (d, r) = (data.to_string_lossy(), report.to_string_lossy());
    let mut args = vec![
        "eval",
        "--task",
        "stance",
        "--data",
        &d,
        "--model",
        model,
        "--text-col",
        "s2",
        "--target-col",
        "s1",
        "--label-col",
        "stance",
        "--bootstrap",
        "300",
        "--seed",
        "7",
        "--batch-size",
        "3",
        "--report-dir",
        &r,
    ];
    args.extend(extra);
    naba(&args)
}

fn merge(dirs: &[&Path], out: &Path) -> Output {
    let mut args: Vec<String> = vec!["eval".into(), "merge".into()];
    args.extend(dirs.iter().map(|d| d.to_string_lossy().into_owned()));
    args.extend(["--report-dir".into(), out.to_string_lossy().into_owned()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    naba(&refs)
}

#[test]
fn stance_in_three_shards_merges_to_the_unsharded_report() {
    let tmp = tempfile::tempdir().unwrap();
    let data = stance_csv(tmp.path(), "pairs.csv", "");
    let model = fixture("bert-seq-cls");
    let whole = tmp.path().join("whole");
    ok(&eval_stance(&data, &model, &whole, &[]));
    let shards: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("s{i}"))).collect();
    for (i, dir) in shards.iter().enumerate() {
        // Different thread counts per shard: the split depends on positions only.
        let threads = (i + 1).to_string();
        let spec = format!("{i}/3");
        ok(&eval_stance(
            &data,
            &model,
            dir,
            &["--shard", &spec, "--threads", &threads],
        ));
        let m = metrics(dir);
        assert_eq!(m["shard"]["index"], i, "{}", m["shard"]);
        assert_eq!(m["shard"]["count"], 3);
        assert_eq!(m["shard"]["total"], 22, "the empty-text row is not an item");
        assert!(dir.join("shard_items.jsonl").is_file());
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(
            md.contains(&format!("{i}/3")),
            "report.md says it is a shard"
        );
    }
    // 22 examples in blocks of 3 (--batch-size), block b in shard b mod 3: blocks 0, 3, 6
    // (9 examples), 1, 4, 7 (3 + 3 + 1) and 2, 5.
    let sizes: Vec<u64> = shards
        .iter()
        .map(|d| metrics(d)["shard"]["items"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [9, 7, 6]);
    assert_eq!(
        metrics(&shards[0])["shard"]["dealt"],
        "blocks of 3 examples"
    );

    let merged = tmp.path().join("merged");
    // Any order of the shard directories.
    let out = merge(&[&shards[2], &shards[0], &shards[1]], &merged);
    ok(&out);
    assert_eq!(
        figures(&merged),
        figures(&whole),
        "merged metrics equal the unsharded run's, intervals included"
    );
    let m = metrics(&merged);
    assert!(m["shard"].is_null(), "a merged report is not a shard");
    assert_eq!(m["merged_from"].as_array().unwrap().len(), 3);
    assert_eq!(m["run"]["documents"], 22);
    assert!(!merged.join("shard_items.jsonl").exists());
    // Every prediction in input order, scores bit for bit: each shard made the unsharded
    // run's model calls.
    for f in ["predictions.jsonl", "errors.jsonl"] {
        assert_eq!(
            std::fs::read_to_string(merged.join(f)).unwrap(),
            std::fs::read_to_string(whole.join(f)).unwrap(),
            "{f}"
        );
    }
    let md = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(md.contains("merged from"), "{md}");

    // Without --report-dir the merged report.md is printed.
    let mut args = vec!["eval".to_string(), "merge".to_string()];
    args.extend(shards.iter().map(|d| d.to_string_lossy().into_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let printed = ok(&naba(&refs));
    assert!(printed.contains("macro F1"), "{printed}");
}

/// A CoNLL file of 11 sentences of 1 to 6 tokens.
fn conll(dir: &Path) -> PathBuf {
    let words = [
        "زار",
        "جو",
        "بايدن",
        "موسكو",
        "في",
        "مصر",
        "شركة",
        "أبل",
        "أمس",
    ];
    let tags = [
        "O", "B-PERS", "I-PERS", "B-LOC", "O", "B-LOC", "B-ORG", "I-ORG", "O",
    ];
    let mut text = String::new();
    for s in 0..11 {
        for k in 0..(1 + (s * 5) % 6) {
            let w = (s + k * 2) % 9;
            // Gold tags kept valid IOB2: an I- only after its B-.
            let tag = if tags[w].starts_with("I-") && k == 0 {
                "O"
            } else {
                tags[w]
            };
            text.push_str(&format!("{} {tag}\n", words[w]));
        }
        text.push('\n');
    }
    let path = dir.join("mini.txt");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn ner_shards_merge_exactly_with_and_without_passages() {
    let tmp = tempfile::tempdir().unwrap();
    let data = conll(tmp.path());
    let d = data.to_string_lossy().into_owned();
    let model = fixture("bert-token-cls");
    for pack in ["0", "9"] {
        let run = |report: &Path, extra: &[&str]| {
            let r = report.to_string_lossy();
            let mut args = vec!["eval", "--task", "ner", "--data", &d, "--model", &model];
            args.extend([
                "--pack-words",
                pack,
                "--bootstrap",
                "200",
                "--batch-size",
                "2",
            ]);
            args.extend(["--limit", "10", "--report-dir", &r]);
            args.extend(extra);
            ok(&naba(&args));
        };
        let whole = tmp.path().join(format!("whole-{pack}"));
        run(&whole, &[]);
        let shards: Vec<PathBuf> = (0..3)
            .map(|i| tmp.path().join(format!("s{i}-{pack}")))
            .collect();
        for (i, dir) in shards.iter().enumerate() {
            run(dir, &["--shard", &format!("{i}/3")]);
            let s = &metrics(dir)["shard"];
            let dealt = if pack == "0" {
                "blocks of 2 sentences"
            } else {
                "blocks of 2 passages of up to 9 words"
            };
            assert_eq!(s["dealt"], dealt, "{s}");
            assert_eq!(s["total"], 10, "--limit is drawn before the split: {s}");
        }
        let merged = tmp.path().join(format!("merged-{pack}"));
        ok(&merge(&[&shards[0], &shards[1], &shards[2]], &merged));
        assert_eq!(figures(&merged), figures(&whole), "pack_words {pack}");
        assert_eq!(
            std::fs::read_to_string(merged.join("predictions.conll")).unwrap(),
            std::fs::read_to_string(whole.join("predictions.conll")).unwrap(),
            "pack_words {pack}: the sentences in input order with the same tags"
        );
    }
}

#[test]
fn suite_entries_are_sharded_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    stance_csv(tmp.path(), "pairs.csv", "");
    let suite = tmp.path().join("suite.toml");
    std::fs::write(
        &suite,
        format!(
            "[[dataset]]\nname = \"pairs\"\ntask = \"stance\"\npath = \"pairs.csv\"\n\
             text_col = \"s2\"\ntarget_col = \"s1\"\nlabel_col = \"stance\"\n\
             models = [\"{}\"]\nsource = \"the test\"\n",
            fixture("bert-seq-cls").replace('\\', "\\\\")
        ),
    )
    .unwrap();
    let run = |root: &Path, extra: &[&str]| {
        let (s, r) = (suite.to_string_lossy(), root.to_string_lossy());
        let mut args = vec!["eval", "--suite", &s, "--report-dir", &r];
        args.extend(["--bootstrap", "100", "--batch-size", "4"]);
        args.extend(extra);
        ok(&naba(&args))
    };
    let entry = |root: &Path| -> PathBuf {
        let dir = root.join("pairs");
        let sub = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
        sub.path()
    };
    let whole = tmp.path().join("whole");
    run(&whole, &[]);
    let roots: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("r{i}"))).collect();
    for (i, root) in roots.iter().enumerate() {
        let summary = run(root, &["--shard", &format!("{i}/2")]);
        assert!(summary.contains(&format!("Shard {i}/2")), "{summary}");
        assert_eq!(metrics(&entry(root))["shard"]["count"], 2);
    }
    let merged = tmp.path().join("merged");
    ok(&merge(&[&entry(&roots[0]), &entry(&roots[1])], &merged));
    assert_eq!(figures(&merged), figures(&entry(&whole)));
}

#[test]
fn predict_shards_are_disjoint_and_cover_the_input_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.txt");
    let words = [
        "زار",
        "جو",
        "بايدن",
        "موسكو",
        "في",
        "مصر",
        "شركة",
        "أبل",
        "أمس",
    ];
    // 150 texts of 1 to 7 words, and a blank line, which is not an input.
    let mut text = String::new();
    for i in 0..150 {
        let t: Vec<&str> = (0..1 + i % 7).map(|k| words[(i * 4 + k) % 9]).collect();
        text.push_str(&t.join(" "));
        text.push('\n');
        if i == 70 {
            text.push('\n');
        }
    }
    std::fs::write(&input, text).unwrap();
    let model = fixture("bert-token-cls");
    let predict = |extra: &[&str]| -> Vec<Value> {
        let i = input.to_string_lossy();
        let mut args = vec!["predict", "--task", "ner", "--model", &model, "--input", &i];
        args.extend(extra);
        ok(&naba(&args))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let whole = predict(&[]);
    assert_eq!(whole.len(), 150);
    let mut union: Vec<Value> = Vec::new();
    for i in 0..3 {
        let part = predict(&["--shard", &format!("{i}/3")]);
        for line in &part {
            let index = line["index"].as_u64().unwrap() as usize;
            assert_eq!(
                (index / 64) % 3,
                i,
                "input k goes to shard (k / 64) mod 3: {line}"
            );
        }
        union.extend(part);
    }
    union.sort_by_key(|l| l["index"].as_u64());
    let indices: Vec<u64> = union.iter().filter_map(|l| l["index"].as_u64()).collect();
    assert_eq!(
        indices,
        (0..150).collect::<Vec<u64>>(),
        "disjoint, and all of them"
    );
    for (mut line, want) in union.into_iter().zip(&whole) {
        line.as_object_mut().unwrap().remove("index");
        assert_eq!(&line, want, "the same model calls give the same bits");
    }
    // More shards than blocks: the empty ones label nothing and succeed.
    assert!(predict(&["--shard", "9/10"]).is_empty());
}

#[test]
fn bad_shard_values_are_refused_naming_the_flag() {
    let model = fixture("bert-token-cls");
    for (value, says) in [
        ("3/3", "0/3 to 2/3"),
        ("0/0", "at least 1"),
        ("1", "I/N"),
        ("x/3", "I/N"),
        ("-1/3", "I/N"),
        ("1/", "I/N"),
    ] {
        let flag = format!("--shard={value}");
        let predict = naba(&["predict", "--task", "ner", "--model", &model, &flag, "text"]);
        refused(&predict, &["--shard", says]);
        let eval = naba(&[
            "eval",
            "--task",
            "ner",
            "--data",
            "x.txt",
            "--model",
            &model,
            "--report-dir",
            "r",
            &flag,
        ]);
        refused(&eval, &["--shard", says]);
    }
}

#[test]
fn merge_refuses_shards_that_do_not_belong_together() {
    let tmp = tempfile::tempdir().unwrap();
    let data = stance_csv(tmp.path(), "pairs.csv", "");
    let model = fixture("bert-seq-cls");
    let shard = |name: &str, spec: &str, data: &Path, model: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        ok(&eval_stance(data, model, &dir, &["--shard", spec]));
        dir
    };
    let s0 = shard("s0", "0/3", &data, &model);
    let s1 = shard("s1", "1/3", &data, &model);
    let s2 = shard("s2", "2/3", &data, &model);
    let out = tmp.path().join("merged");

    refused(&merge(&[&s0, &s1], &out), &["2/3 missing"]);
    refused(&merge(&[&s0, &s1, &s1, &s2], &out), &["1/3", "twice"]);

    let other_count = shard("h1", "1/2", &data, &model);
    refused(&merge(&[&s0, &other_count, &s2], &out), &["shard count"]);

    let copy = tmp.path().join("model-copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
    }
    let other_model = shard("m2", "2/3", &data, &copy.to_string_lossy());
    refused(&merge(&[&s0, &s1, &other_model], &out), &["model"]);

    let changed = stance_csv(tmp.path(), "changed.csv", " تغيير");
    let other_data = shard("d2", "2/3", &changed, &model);
    refused(&merge(&[&s0, &s1, &other_data], &out), &["different data"]);

    let whole = tmp.path().join("whole");
    ok(&eval_stance(&data, &model, &whole, &[]));
    refused(
        &merge(&[&s0, &s1, &whole], &out),
        &["not a shard report", "--shard"],
    );
    assert!(!out.exists(), "nothing written when the merge is refused");

    // A damaged shard (an item lost) is refused too.
    let items = s2.join("shard_items.jsonl");
    let text = std::fs::read_to_string(&items).unwrap();
    let fewer: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(&items, fewer.join("\n") + "\n").unwrap();
    refused(
        &merge(&[&s0, &s1, &s2], &out),
        &["damaged", "run shard 2/3 again"],
    );
}
