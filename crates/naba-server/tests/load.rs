//! Load: 32 concurrent clients for 30 s against `/v1/analyze` (NABA_LOAD_SECS overrides the
//! duration). No error answers, no lost or mismatched answers; p50/p99 latency and throughput
//! are printed (to stderr, uncaptured) and written to target/tmp/naba-server-load.txt.

mod common;

use common::load::{self, LoadOptions};
use common::{config, example_articles, TestServer, SENTENCES};
use std::io::Write;
use std::time::Duration;

/// Texts of news length: the example articles cut into pieces of a few sentences, and the
/// built-in sentences.
pub fn texts() -> Vec<String> {
    let mut out: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    for (_, article) in example_articles() {
        let mut piece = String::new();
        for sentence in article.split_inclusive(['.', '\n']) {
            piece.push_str(sentence);
            if piece.chars().count() > 300 {
                out.push(std::mem::take(&mut piece).trim().to_string());
            }
        }
        if !piece.trim().is_empty() {
            out.push(piece.trim().to_string());
        }
    }
    out.retain(|t| !t.trim().is_empty());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_for_thirty_seconds() {
    let secs: f64 = std::env::var("NABA_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let server = TestServer::start(config()).await;
    let opts = LoadOptions {
        clients: 32,
        duration: Duration::from_secs_f64(secs),
        docs_per_request: 2,
        texts: texts(),
        target: "روسيا".into(),
        api_key: None,
    };
    let report = load::run(&server.base, &opts).await;
    let line = format!("load (32 clients, batching on): {}", report.summary());
    let _ = writeln!(std::io::stderr(), "{line}");
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/naba-server-load.txt"),
        format!("{line}\n"),
    );
    assert!(report.requests >= 32, "{line}");
    assert_eq!(report.transport_errors, 0, "{line}\n{:#?}", report.problems);
    assert_eq!(
        report.ok(),
        report.requests,
        "{line}\n{:#?}",
        report.problems
    );
    assert_eq!(report.mismatches, 0, "{line}\n{:#?}", report.problems);
    server.stop().await.expect("clean stop");
}
