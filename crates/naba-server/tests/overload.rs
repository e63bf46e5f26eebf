//! Overload: a burst far over the queue bound gets 429s with `Retry-After`, never anything
//! else; the server stays up, answers `/health` during the burst, and serves again after.

mod common;

use common::{client, config, metrics_text, TestServer, SENTENCES};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_queue_bound_gets_429_and_the_server_stays_up() {
    let mut c = config();
    c.batching.queue_capacity = 8;
    c.batching.max_batch_documents = 2;
    c.limits.max_documents = 4;
    c.limits.max_stance_pairs = 4;
    let server = TestServer::start(c).await;
    let long = SENTENCES.concat().repeat(6);
    let mut burst = Vec::new();
    for i in 0..200 {
        let url = server.url("/v1/analyze");
        let docs: Vec<Value> = (0..4)
            .map(|d| json!({"id": format!("{i}-{d}"), "text": long}))
            .collect();
        let body = json!({"documents": docs, "stance_targets": ["موسكو"]});
        burst.push(tokio::spawn(async move {
            let r = client()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("an answer");
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body: Value = r.json().await.expect("JSON");
            (status, retry, body)
        }));
    }
    // The HTTP side answers while the models are swamped.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let health = client()
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let health_ms = t.elapsed().as_millis();
    assert!(health_ms < 2_000, "/health took {health_ms} ms under load");

    let (mut ok, mut refused) = (0, 0);
    for task in burst {
        let (status, retry, body) = task.await.expect("task");
        match status {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert_eq!(body["error"]["code"], "queue_full", "{body}");
                assert!(
                    retry.is_some_and(|s| s >= 1),
                    "429 without Retry-After: {body}"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    eprintln!("burst of 200: {ok} answered, {refused} refused with 429");
    assert!(
        refused > 0,
        "a burst of 200 over a queue of 8 must be refused in part"
    );
    assert!(ok > 0, "some of the burst is served");

    let r = client()
        .post(server.url("/v1/analyze"))
        .json(&json!({"text": SENTENCES[0]}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200, "served again after the burst");
    let metrics = metrics_text(&server).await;
    assert!(metrics.contains("naba_queue_rejected_documents_total{model="));
    assert!(metrics.contains("status=\"429\""));
    server.stop().await.expect("clean stop");
}
