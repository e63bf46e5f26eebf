//! Read every file of the shared data sets (../shared/datasets beside the checkout, or
//! $NABA_DATASETS). When the directory is absent the tests print a note and pass.

use naba_eval::{
    read_conll, ClassificationCorpus, ColumnOptions, ConllOptions, IssueKind, LabelMap,
};
use std::path::{Path, PathBuf};

fn datasets() -> Option<PathBuf> {
    let dir = std::env::var_os("NABA_DATASETS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets"),
        PathBuf::from,
    );
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "note: {} not found; skipping the real-data reader test (set NABA_DATASETS)",
            dir.display()
        );
        None
    }
}

fn count(c: &ClassificationCorpus, kind: IssueKind) -> usize {
    c.issues.iter().filter(|i| i.kind == kind).count()
}

#[test]
fn anercorp_conll() {
    let Some(root) = datasets() else { return };
    for (file, sentences, tokens) in [
        ("train.txt", 3974, 125_114),
        ("test.txt", 925, 25_008),
        ("test.official.txt", 925, 25_008),
    ] {
        let path = root.join("anercorp").join(file);
        let c = read_conll(&path, &ConllOptions::default()).expect("readable");
        assert_eq!(c.sentences.len(), sentences, "{file} sentences");
        assert_eq!(c.token_count(), tokens, "{file} tokens");
        let types = c.entity_types();
        assert_eq!(
            types.into_iter().collect::<Vec<_>>(),
            ["LOC", "MISC", "ORG", "PERS"],
            "{file} types"
        );
        // Nothing is skipped: only IOB2 transition problems may be reported.
        assert!(
            c.issues.iter().all(|i| !i.kind.skips_row()),
            "{file}: {:?}",
            c.issues.first()
        );
        eprintln!("{file}: {} IOB2 issues (kept)", c.issues.len());
    }
    // A label map and label set as a model with PER would use them.
    let opts = ConllOptions {
        label_map: LabelMap::parse("PERS=PER").expect("map"),
        label_set: Some(["PER", "LOC", "ORG", "MISC"].map(String::from).into()),
    };
    let c = read_conll(&root.join("anercorp/test.txt"), &opts).expect("readable");
    assert!(c.entity_types().contains("PER"));
    assert!(c.issues.iter().all(|i| i.kind != IssueKind::UnknownLabel));
}

#[test]
fn ans_csv() {
    let Some(root) = datasets() else { return };
    let opts = ColumnOptions {
        target: Some("s1".into()),
        ..ColumnOptions::new("s2", "stance")
    };
    for (file, rows) in [("train.csv", 2652), ("dev.csv", 755), ("test.csv", 379)] {
        let c = ClassificationCorpus::read(&root.join("ans").join(file), None, &opts)
            .expect("readable");
        assert_eq!(c.rows_read, rows, "{file}");
        assert_eq!(c.examples.len() + c.skipped(), rows, "{file}");
        assert!(c.examples.iter().all(|e| e.target.is_some()));
        let labels: Vec<String> = c.labels().into_iter().collect();
        assert_eq!(labels, ["agree", "disagree", "other"], "{file}");
    }
}

#[test]
fn asnd_csv_with_multiline_fields() {
    let Some(root) = datasets() else { return };
    let opts = ColumnOptions {
        id: Some("ID".into()),
        ..ColumnOptions::new("Content", "Class")
    };
    for (file, rows) in [("train.csv", 6676), ("dev.csv", 567), ("test.csv", 1103)] {
        let c = ClassificationCorpus::read(&root.join("asnd").join(file), None, &opts)
            .expect("readable");
        assert_eq!(c.rows_read, rows, "{file}");
        assert_eq!(c.examples.len() + c.skipped(), rows, "{file}");
        assert!(c.examples.iter().any(|e| e.text.contains('\n')), "{file}");
        if file == "train.csv" {
            assert_eq!(c.labels().len(), 12);
        }
        eprintln!("asnd/{file}: {} issues", c.issues.len());
    }
}

#[test]
fn mawqif_csv_with_bom_and_empty_stances() {
    let Some(root) = datasets() else { return };
    let opts = ColumnOptions {
        target: Some("target".into()),
        id: Some("ID".into()),
        ..ColumnOptions::new("text", "stance")
    };
    for (file, rows) in [("train.csv", 3502), ("test.csv", 619)] {
        let c = ClassificationCorpus::read(&root.join("mawqif").join(file), None, &opts)
            .expect("readable (the header starts with a BOM)");
        assert_eq!(c.rows_read, rows, "{file}");
        assert_eq!(c.examples.len() + c.skipped(), rows, "{file}");
        let labels: Vec<String> = c.labels().into_iter().collect();
        assert_eq!(labels, ["Against", "Favor", "None"], "{file}");
        eprintln!(
            "mawqif/{file}: {} rows without a stance (skipped and reported)",
            count(&c, IssueKind::MissingLabel)
        );
    }
}

#[test]
fn antcorpus_jsonl() {
    let Some(root) = datasets() else { return };
    let opts = ColumnOptions {
        text_fallback: Some("title".into()),
        id: Some("docno".into()),
        ..ColumnOptions::new("text", "category")
    };
    let path = root.join("antcorpus/ant_corpus_v1.1.jsonl");
    let c = ClassificationCorpus::read(&path, None, &opts).expect("readable");
    assert_eq!(c.rows_read, 10_161);
    assert_eq!(c.examples.len(), 10_161);
    assert_eq!(count(&c, IssueKind::TextFromFallback), 23);
    assert_eq!(c.labels().len(), 9);

    let test_only = ColumnOptions {
        filter: vec![("split".into(), "test".into())],
        ..opts
    };
    let c = ClassificationCorpus::read(&path, None, &test_only).expect("readable");
    assert_eq!(c.examples.len(), 1015);
    assert_eq!(c.filtered_out, 10_161 - 1015);
    let sampled = c.sample(Some(100), 7);
    assert_eq!(sampled.examples.len(), 100);
    assert!(sampled.examples.windows(2).all(|w| w[0].line < w[1].line));
}
