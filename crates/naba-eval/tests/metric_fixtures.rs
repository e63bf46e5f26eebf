//! Agreement with seqeval and scikit-learn on fixtures made by
//! `scripts/make_metric_fixtures.py` (run by hand; the fixtures are committed).

use naba_eval::{classification_metrics, ner_metrics, percentile, Averages, LabelScores};
use serde_json::Value;
use std::collections::BTreeMap;

const TOL: f64 = 1e-6;

fn fixtures() -> Value {
    let text = include_str!("fixtures/metric_fixtures.json");
    serde_json::from_str(text).expect("metric_fixtures.json is valid JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is a number in {v}"))
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOL,
        "{what}: naba-eval {got} vs reference {want}"
    );
}

fn check_avg(what: &str, got: &Averages, want: &Value) {
    close(
        &format!("{what} precision"),
        got.precision,
        f(want, "precision"),
    );
    close(&format!("{what} recall"), got.recall, f(want, "recall"));
    close(&format!("{what} f1"), got.f1, f(want, "f1"));
}

fn check_per(what: &str, got: &BTreeMap<String, LabelScores>, want: &Value) {
    let want = want.as_object().expect("object");
    let got_names: Vec<&String> = got.keys().collect();
    let want_names: Vec<&String> = want.keys().collect();
    assert_eq!(got_names, want_names, "{what}: label sets differ");
    for (label, w) in want {
        let g = &got[label];
        close(
            &format!("{what} {label} precision"),
            g.precision,
            f(w, "precision"),
        );
        close(&format!("{what} {label} recall"), g.recall, f(w, "recall"));
        close(&format!("{what} {label} f1"), g.f1, f(w, "f1"));
        assert_eq!(
            g.support,
            w["support"].as_u64().expect("support"),
            "{what} {label} support"
        );
    }
}

#[test]
fn ner_matches_seqeval_strict_and_default() {
    let fx = fixtures();
    let cases = fx["ner"].as_array().expect("ner cases");
    assert!(cases.len() >= 3);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let gold: Vec<Vec<String>> = case["gold"]
            .as_array()
            .expect("gold")
            .iter()
            .map(strings)
            .collect();
        let pred: Vec<Vec<String>> = case["pred"]
            .as_array()
            .expect("pred")
            .iter()
            .map(strings)
            .collect();
        let m = ner_metrics(&gold, &pred).expect("scores");
        let e = &case["expected"];
        close(
            &format!("{name} token accuracy"),
            m.token_accuracy,
            f(e, "token_accuracy"),
        );
        for (mode, got) in [("strict", &m.strict), ("lenient", &m.lenient)] {
            let w = &e[mode];
            check_avg(&format!("{name} {mode} micro"), &got.micro, &w["micro"]);
            check_avg(&format!("{name} {mode} macro"), &got.macro_avg, &w["macro"]);
            check_avg(
                &format!("{name} {mode} weighted"),
                &got.weighted,
                &w["weighted"],
            );
            check_per(&format!("{name} {mode}"), &got.per_type, &w["per_type"]);
        }
    }
}

#[test]
fn classification_matches_scikit_learn() {
    let fx = fixtures();
    let cases = fx["classification"]
        .as_array()
        .expect("classification cases");
    assert!(cases.len() >= 3);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let gold = strings(&case["gold"]);
        let pred = strings(&case["pred"]);
        let m = classification_metrics(&gold, &pred).expect("scores");
        let e = &case["expected"];
        close(&format!("{name} accuracy"), m.accuracy, f(e, "accuracy"));
        check_avg(&format!("{name} micro"), &m.micro, &e["micro"]);
        check_avg(&format!("{name} macro"), &m.macro_avg, &e["macro"]);
        check_avg(&format!("{name} weighted"), &m.weighted, &e["weighted"]);
        check_per(name, &m.per_label, &e["per_label"]);
        assert_eq!(m.confusion.labels, strings(&e["labels"]), "{name} labels");
        let want_cm: Vec<Vec<u64>> = e["confusion_matrix"]
            .as_array()
            .expect("matrix")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_u64().expect("count"))
                    .collect()
            })
            .collect();
        assert_eq!(m.confusion.matrix, want_cm, "{name} confusion matrix");
        let chosen = strings(&e["chosen_labels"]);
        let chosen: Vec<&str> = chosen.iter().map(String::as_str).collect();
        close(
            &format!("{name} chosen mean F1"),
            m.mean_f1(&chosen),
            f(e, "chosen_mean_f1"),
        );
    }
}

#[test]
fn percentile_matches_numpy() {
    let fx = fixtures();
    for case in fx["percentile"].as_array().expect("percentile cases") {
        let values: Vec<f64> = case["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v.as_f64().expect("f64"))
            .collect();
        for (q, want) in case["q"]
            .as_array()
            .expect("q")
            .iter()
            .zip(case["expected"].as_array().expect("expected"))
        {
            let q = q.as_f64().expect("q");
            close(
                &format!("percentile {q} of {} values", values.len()),
                percentile(&values, q),
                want.as_f64().expect("f64"),
            );
        }
    }
}

#[test]
fn fixtures_cover_the_edge_cases() {
    let fx = fixtures();
    // A label only predicted and a label never predicted, in every classification case.
    for case in fx["classification"].as_array().expect("cases") {
        let gold = strings(&case["gold"]);
        let pred = strings(&case["pred"]);
        assert!(
            pred.iter().any(|p| !gold.contains(p)),
            "a label only in predictions"
        );
        assert!(
            gold.iter().any(|g| !pred.contains(g)),
            "a label never predicted"
        );
    }
    // Malformed IOB2 in gold and predictions.
    let mut i_start = false;
    let mut switch = false;
    for case in fx["ner"].as_array().expect("cases") {
        for side in ["gold", "pred"] {
            for s in case[side].as_array().expect("sentences") {
                let tags = strings(s);
                i_start |= tags.first().is_some_and(|t| t.starts_with("I-"));
                switch |= tags
                    .windows(2)
                    .any(|w| w[1].starts_with("I-") && w[0].len() > 2 && w[0][2..] != w[1][2..]);
            }
        }
    }
    assert!(i_start && switch);
}
