//! Shard reports merged with `merge_shards` equal the report of the whole job, figures and
//! bootstrap intervals alike, for classification and NER; without any model in the loop.

use naba_eval::read::{parse_conll, read_delimited_from};
use naba_eval::{
    merge_shards, BootstrapConfig, ClassPrediction, ColumnOptions, ConllOptions, EvalOptions,
    Report, RunInfo, RunStats, Shard,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn opts(shard: Option<naba_eval::ShardPart>, n: usize) -> EvalOptions {
    let timings = vec![Duration::from_millis(3); n];
    EvalOptions {
        bootstrap: BootstrapConfig {
            resamples: 250,
            seed: 11,
        },
        selected_labels: vec!["Favor".into(), "Against".into()],
        run: Some(RunStats::from_timings(&timings, 10 * n as u64, None).expect("timings")),
        shard: shard.map(|mut p| {
            p.latency_ms = vec![3.0; n];
            p
        }),
    }
}

/// metrics.json as JSON, without the fields a merge is expected to change.
fn figures(report: &Report) -> Value {
    let mut v = serde_json::to_value(&report.metrics).expect("json");
    for k in ["timestamp", "run", "shard", "merged_from"] {
        v.as_object_mut().expect("object").remove(k);
    }
    v
}

fn info() -> RunInfo {
    RunInfo::new("model-x", "data.csv")
}

#[test]
fn classification_shards_merge_to_the_whole_report() {
    let labels = ["Favor", "Against", "None"];
    let mut csv = String::from("text,target,stance\n");
    for i in 0..41 {
        // Row 13 has no text: a data issue every shard reports.
        let text = if i == 13 {
            String::new()
        } else {
            format!("نص {i}")
        };
        csv.push_str(&format!("{text},هدف,{}\n", labels[(i * 7 / 3) % 3]));
    }
    let opts_cols = ColumnOptions {
        target: Some("target".into()),
        ..ColumnOptions::new("text", "stance")
    };
    let corpus = read_delimited_from(csv.as_bytes(), Path::new("data.csv"), b',', &opts_cols)
        .expect("csv")
        .sample(Some(35), 3);
    let predict = |gold: &str, k: usize| {
        let label = if k.is_multiple_of(4) { "None" } else { gold };
        // Scores with all 17 digits, which serde_json's default parser may read one unit in
        // the last place off; the merged predictions must repeat them exactly.
        let score = (k as f64 + 2.0).sqrt() / 7.0;
        ClassPrediction::with_scores(label, [(label.to_string(), score)])
    };
    let preds: Vec<ClassPrediction> = corpus
        .examples
        .iter()
        .enumerate()
        .map(|(k, e)| predict(&e.label, k))
        .collect();
    let whole =
        Report::classification(&corpus, &preds, info(), &opts(None, preds.len())).expect("whole");

    let tmp = tempfile::tempdir().expect("tmp");
    let mut dirs: Vec<PathBuf> = Vec::new();
    for index in (0..3).rev() {
        let (part, sp) = corpus.clone().take_shard(Shard { index, count: 3 }, 4);
        let preds: Vec<ClassPrediction> = sp
            .positions
            .iter()
            .zip(&part.examples)
            .map(|(&k, e)| predict(&e.label, k))
            .collect();
        let n = preds.len();
        let report =
            Report::classification(&part, &preds, info(), &opts(Some(sp), n)).expect("shard");
        let dir = tmp.path().join(format!("s{index}"));
        report.write(&dir).expect("write");
        dirs.push(dir);
    }
    let merged = merge_shards(&dirs).expect("merge");
    assert_eq!(figures(&merged), figures(&whole));
    assert!(merged.metrics.shard.is_none());
    assert_eq!(merged.metrics.merged_from.len(), 3);
    let run = merged.metrics.run.expect("run");
    assert_eq!(run.documents, 35);
    assert_eq!(run.tokens, 350);
    let a = tmp.path().join("merged");
    let b = tmp.path().join("whole");
    merged.write(&a).expect("write");
    whole.write(&b).expect("write");
    for f in ["predictions.jsonl", "errors.jsonl"] {
        assert_eq!(
            std::fs::read_to_string(a.join(f)).expect("read"),
            std::fs::read_to_string(b.join(f)).expect("read"),
            "{f}"
        );
    }
}

#[test]
fn ner_shards_merge_to_the_whole_report() {
    let mut text = String::new();
    let tags = ["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG"];
    for s in 0..17 {
        for k in 0..(1 + s % 5) {
            let t = tags[(s + k) % 7];
            let t = if k == 0 && t.starts_with("I-") {
                "O"
            } else {
                t
            };
            text.push_str(&format!("كلمة{s}{k}\t{t}\n"));
        }
        text.push('\n');
    }
    let corpus = parse_conll(&text, Path::new("data.txt"), &ConllOptions::default());
    // A "model" that misses every third entity start.
    let predict = |gold: &[String], k: usize| -> Vec<String> {
        gold.iter()
            .enumerate()
            .map(|(i, t)| {
                if (k + i).is_multiple_of(3) && t.starts_with("B-") {
                    "O".to_string()
                } else if (k + i).is_multiple_of(3) && t.starts_with("I-") {
                    t.replacen("I-", "B-", 1)
                } else {
                    t.clone()
                }
            })
            .collect()
    };
    let preds: Vec<Vec<String>> = corpus
        .sentences
        .iter()
        .enumerate()
        .map(|(k, s)| predict(&s.tags, k))
        .collect();
    let o = |p, n| EvalOptions {
        selected_labels: Vec::new(),
        ..opts(p, n)
    };
    let whole = Report::ner(&corpus, &preds, info(), &o(None, preds.len())).expect("whole");
    // Blocks of two consecutive sentences, as passages would be.
    let blocks: Vec<std::ops::Range<usize>> =
        (0..17).step_by(2).map(|s| s..(s + 2).min(17)).collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let mut dirs = Vec::new();
    for index in 0..4 {
        let (part, sp) =
            corpus
                .clone()
                .take_shard(Shard { index, count: 4 }, &blocks, "blocks of 2 sentences");
        let preds: Vec<Vec<String>> = sp
            .positions
            .iter()
            .zip(&part.sentences)
            .map(|(&k, s)| predict(&s.tags, k))
            .collect();
        let n = preds.len();
        let report = Report::ner(&part, &preds, info(), &o(Some(sp), n)).expect("shard");
        let dir = tmp.path().join(format!("s{index}"));
        report.write(&dir).expect("write");
        dirs.push(dir);
    }
    let merged = merge_shards(&dirs).expect("merge");
    assert_eq!(figures(&merged), figures(&whole));
    // Refused: a missing shard; an unsharded report.
    let err = merge_shards(&dirs[..3]).expect_err("missing").to_string();
    assert!(err.contains("shard 3/4 missing"), "{err}");
    let whole_dir = tmp.path().join("whole");
    whole.write(&whole_dir).expect("write");
    let mut with_whole = dirs[..3].to_vec();
    with_whole.push(whole_dir);
    let err = merge_shards(&with_whole)
        .expect_err("unsharded")
        .to_string();
    assert!(err.contains("not a shard report"), "{err}");
}
