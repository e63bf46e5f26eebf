//! The API against a real server on a loopback port: round trip on the example articles,
//! every route, every refusal, request ids, the API key, CORS, timeouts, graceful shutdown.

mod common;

use common::{char_slice, client, config, example_articles, metrics_text, TestServer, SENTENCES};
use serde_json::{json, Value};
use std::time::Duration;

async fn get(server: &TestServer, path: &str) -> Value {
    client()
        .get(server.url(path))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

async fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .expect("answer");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("JSON body");
    (status, body)
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn check_entities(text: &str, doc: &Value) -> usize {
    let entities = doc["entities"].as_array().expect("entities");
    for e in entities {
        let start = e["start"].as_u64().expect("start") as usize;
        let end = e["end"].as_u64().expect("end") as usize;
        assert_eq!(
            char_slice(text, start, end).as_deref(),
            e["text"].as_str(),
            "entity {e} is not the request text at {start}..{end}"
        );
        assert!(e["type"].as_str().is_some_and(|t| !t.is_empty()), "{e}");
        assert!(e["score"].as_f64().is_some(), "{e}");
    }
    entities.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_on_the_example_articles_keeps_character_offsets() {
    let articles = example_articles();
    if articles.is_empty() {
        eprintln!("NOTICE: ../shared/examples/ has no articles here; round-trip test skipped");
        return;
    }
    let server = TestServer::start(config()).await;
    for (path, text) in &articles {
        for (aggregation, decoding, normalize) in [
            ("simple", "argmax", json!("none")),
            ("none", "iob2", json!("none")),
            ("first", "iob2", json!("all")),
            ("first", "argmax", json!("none")),
            ("max", "iob2", json!(["diacritics", "alef", "ya", "nfkc"])),
            ("average", "argmax", json!("tatweel,digits")),
        ] {
            let (status, body) = post(
                &server,
                "/v1/analyze",
                json!({
                    "text": text,
                    "stance_targets": ["روسيا"],
                    "options": {
                        "aggregation": aggregation,
                        "decoding": decoding,
                        "normalize": normalize
                    }
                }),
            )
            .await;
            assert_eq!(status, 200, "{path}: {body}");
            let doc = &body["documents"][0];
            assert_eq!(doc["id"], 0);
            let n = check_entities(text, doc);
            assert!(
                n > 0,
                "{path}: the random NER fixture finds something in a long article"
            );
            assert_eq!(doc["topic"]["labels"].as_array().map(Vec::len), Some(4));
            assert!(
                doc["topic"]["windows"].as_u64().unwrap_or(0) > 1,
                "long text, many windows"
            );
            assert_eq!(doc["stance"][0]["target"], "روسيا");
            assert!(["agree", "disagree", "other"]
                .contains(&doc["stance"][0]["label"].as_str().unwrap_or("")));
            assert_eq!(
                body["models"],
                json!({"topic": "topic", "entities": "ner", "stance": "stance"})
            );
        }
        eprintln!("round trip ok: {path}");
    }
    server.stop().await.expect("clean stop");
}

/// Entities without scores, and scores rounded: what batching must not change.
fn spans(entities: &Value) -> Vec<(String, u64, u64, String, i64)> {
    entities
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap_or("").to_string(),
                        e["start"].as_u64().unwrap_or(0),
                        e["end"].as_u64().unwrap_or(0),
                        e["text"].as_str().unwrap_or("").to_string(),
                        (e["score"].as_f64().unwrap_or(0.0) * 1e3).round() as i64,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_come_back_in_order_across_model_batches() {
    let mut c = config();
    c.batching.max_batch_documents = 3;
    let server = TestServer::start(c).await;
    let docs: Vec<Value> = (0..20)
        .map(|i| {
            let text = SENTENCES[i % SENTENCES.len()].repeat(1 + i % 4);
            if i % 2 == 0 {
                json!({"id": format!("doc-{i}"), "text": text, "targets": ["الحكومة"]})
            } else {
                json!({"id": i * 100, "text": text})
            }
        })
        .collect();
    let (status, body) = post(
        &server,
        "/v1/analyze",
        json!({"documents": docs, "stance_targets": ["روسيا"], "options": {"top_k": 2}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let out = body["documents"].as_array().expect("documents");
    assert_eq!(out.len(), 20);
    for (i, (sent, got)) in docs.iter().zip(out).enumerate() {
        assert_eq!(sent["id"], got["id"]);
        check_entities(sent["text"].as_str().unwrap_or(""), got);
        assert_eq!(got["topic"]["labels"].as_array().map(Vec::len), Some(2));
        let targets: Vec<&str> = got["stance"]
            .as_array()
            .expect("stance")
            .iter()
            .filter_map(|s| s["target"].as_str())
            .collect();
        if i % 2 == 0 {
            assert_eq!(targets, vec!["الحكومة", "روسيا"]);
        } else {
            assert_eq!(targets, vec!["روسيا"]);
        }
    }
    // The same documents one at a time give the same answers: batching changes nothing but
    // float rounding (padding changes the shape of the matrix products).
    for (i, sent) in docs.iter().enumerate().step_by(7) {
        let (_, single) = post(
            &server,
            "/v1/analyze",
            json!({"documents": [sent], "stance_targets": ["روسيا"], "options": {"top_k": 2}}),
        )
        .await;
        let a = &single["documents"][0];
        let b = &out[i];
        assert_eq!(spans(&a["entities"]), spans(&b["entities"]), "document {i}");
        assert_eq!(a["topic"]["label"], b["topic"]["label"], "document {i}");
        assert_eq!(
            a["stance"][0]["label"], b["stance"][0]["label"],
            "document {i}"
        );
    }
    let metrics = metrics_text(&server).await;
    assert!(metrics.contains("naba_batch_documents_bucket{model=\"ner\",le=\"4\"}"));
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_task_routes_and_models_by_name() {
    let server = TestServer::start(config()).await;
    let text = SENTENCES[6];
    let (s, b) = post(&server, "/v1/topic", json!({"text": text})).await;
    assert_eq!(s, 200, "{b}");
    let d = &b["documents"][0];
    assert!(d["topic"].is_object() && d.get("entities").is_none() && d.get("stance").is_none());
    assert_eq!(b["models"], json!({"topic": "topic"}));

    let (s, b) = post(
        &server,
        "/v1/topic",
        json!({"text": text, "model": "topic-3"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let mut labels: Vec<&str> = b["documents"][0]["topic"]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(|l| l["label"].as_str())
        .collect();
    labels.sort();
    assert_eq!(labels, vec!["agree", "disagree", "other"]);

    let (s, b) = post(
        &server,
        "/v1/entities",
        json!({"documents": [{"id": "x", "text": text}]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    check_entities(text, &b["documents"][0]);
    assert!(b["documents"][0].get("topic").is_none());

    let (s, b) = post(&server, "/v1/stance", json!({"text": text})).await;
    assert_error(s, &b, 422, "missing_target");
    let (s, b) = post(
        &server,
        "/v1/stance",
        json!({"documents": [{"text": text, "targets": ["واشنطن", "موسكو"]}], "options": {"top_k": 1}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let stance = b["documents"][0]["stance"].as_array().expect("stance");
    assert_eq!(stance.len(), 2);
    assert_eq!(stance[1]["target"], "موسكو");
    assert_eq!(stance[0]["labels"].as_array().map(Vec::len), Some(1));
    check_evidence(text, &stance[0]);

    // An article longer than the model's window: the sentences that carried the decision.
    let article = long_article();
    let (s, b) = post(
        &server,
        "/v1/stance",
        json!({"text": article, "stance_targets": ["المفاوضات ستستأنف"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let st = &b["documents"][0]["stance"][0];
    assert!(st["windows"].as_u64().unwrap_or(0) > 1, "{st}");
    check_evidence(&article, st);

    let (s, b) = post(&server, "/v1/topic", json!({"text": text, "model": "nope"})).await;
    assert_error(s, &b, 422, "unknown_model");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("topic-3"));
    let (s, b) = post(&server, "/v1/topic", json!({"text": text, "model": "ner"})).await;
    assert_error(s, &b, 422, "wrong_model_task");
    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"text": text, "tasks": ["topic"], "models": {"topic": "topic-3"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["models"], json!({"topic": "topic-3"}));
    let (s, b) = post(
        &server,
        "/v1/topic",
        json!({"text": text, "stance_targets": ["x"]}),
    )
    .await;
    assert_error(s, &b, 422, "invalid_request");
    // A target that would leave the 64-token window no room for the text is cut, and the
    // answer says so; only one over the API's own limit (1,000 characters) is refused.
    let long_target = "موقف ".repeat(150);
    let (s, b) = post(
        &server,
        "/v1/stance",
        json!({"text": text, "stance_targets": [long_target]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let cut = &b["documents"][0]["stance"][0]["target_truncated"];
    assert!(
        cut["kept_tokens"].as_u64() < cut["target_tokens"].as_u64(),
        "{b}"
    );
    let (s, b) = post(
        &server,
        "/v1/stance",
        json!({"text": text, "stance_targets": ["موقف ".repeat(201)]}),
    )
    .await;
    assert_error(s, &b, 422, "target_too_long");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_ready_metrics_openapi_and_page() {
    let server = TestServer::start(config()).await;
    let c = client();
    let models: Value = c
        .get(server.url("/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    let list = models["models"].as_array().expect("list");
    assert_eq!(list.len(), 4);
    let ner = list.iter().find(|m| m["name"] == "ner").expect("ner");
    assert_eq!(ner["task"], "entities");
    assert_eq!(ner["status"], "ready");
    assert_eq!(ner["default"], true);
    assert_eq!(ner["labels"].as_array().map(Vec::len), Some(9));
    assert_eq!(ner["window_tokens"], 64);
    assert!(ner["base_encoder"]
        .as_str()
        .is_some_and(|b| b.contains("bert")));
    let topic3 = list
        .iter()
        .find(|m| m["name"] == "topic-3")
        .expect("topic-3");
    assert_eq!(topic3["default"], false);

    let health: Value = c
        .get(server.url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    let ready = c.get(server.url("/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), 200);

    let (s, _) = post(
        &server,
        "/v1/analyze",
        json!({"text": SENTENCES[0], "stance_targets": ["x"]}),
    )
    .await;
    assert_eq!(s, 200);
    let metrics = c.get(server.url("/metrics")).send().await.expect("metrics");
    assert!(metrics
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
    let metrics = metrics.text().await.expect("text");
    for needle in [
        "naba_http_requests_total{route=\"/v1/analyze\",method=\"POST\",status=\"200\"} 1",
        "naba_http_request_duration_seconds_bucket{route=\"/v1/analyze\"",
        "naba_batch_documents_count{model=\"stance\"} 1",
        "naba_queue_depth{model=\"ner\"} 0",
        "naba_tokens_processed_total{model=\"topic\"}",
        "naba_model_ready{model=\"topic-3\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }

    let doc: Value = c
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')));
    for path in [
        "/v1/analyze",
        "/v1/topic",
        "/v1/entities",
        "/v1/stance",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} not documented");
    }
    for schema in [
        "AnalyzeRequest",
        "AnalyzeResponse",
        "EntityOut",
        "ErrorBody",
        "ModelsResponse",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }

    let page = c.get(server.url("/")).send().await.expect("page");
    assert!(page
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html")));
    let html = page.text().await.expect("html");
    assert!(html.contains("dir=\"rtl\"") && html.contains("Array.from(text)"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_with_the_right_status() {
    let mut c = config();
    c.limits.max_body_bytes = 4_000;
    c.limits.max_documents = 3;
    c.limits.max_chars = 500;
    let server = TestServer::start(c).await;
    let http = client();

    let r = http
        .post(server.url("/v1/analyze"))
        .header("content-type", "application/json")
        .body("{\"text\": ")
        .send()
        .await
        .expect("answer");
    let s = r.status().as_u16();
    assert_error(s, &r.json().await.expect("json"), 400, "malformed_json");

    let r = http
        .post(server.url("/v1/analyze"))
        .header("content-type", "text/plain")
        .body("{\"text\": \"x\"}")
        .send()
        .await
        .expect("answer");
    let s = r.status().as_u16();
    assert_error(
        s,
        &r.json().await.expect("json"),
        415,
        "unsupported_media_type",
    );

    let r = http
        .post(server.url("/v1/analyze"))
        .json(&json!({"text": "س".repeat(3_000)}))
        .send()
        .await
        .expect("answer");
    let s = r.status().as_u16();
    let b: Value = r.json().await.expect("json");
    assert_error(s, &b, 413, "payload_too_large");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("4000"));

    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"documents": [{"text": "a"}, {"text": "b"}, {"text": "c"}, {"text": "d"}]}),
    )
    .await;
    assert_error(s, &b, 422, "too_many_documents");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("limit of 3"));
    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"documents": [{"id": "big", "text": "ب".repeat(501)}]}),
    )
    .await;
    assert_error(s, &b, 422, "text_too_long");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("limit of 500"));
    let (s, b) = post(&server, "/v1/analyze", json!({"text": "  \n"})).await;
    assert_error(s, &b, 422, "empty_text");
    let (s, b) = post(&server, "/v1/analyze", json!({"txt": "x"})).await;
    assert_error(s, &b, 422, "invalid_request");
    let (s, b) = post(&server, "/v1/analyze", json!({"text": 5})).await;
    assert_error(s, &b, 422, "invalid_request");
    let (s, b) = post(&server, "/v1/analyze", json!({})).await;
    assert_error(s, &b, 422, "invalid_request");
    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"text": "x", "tasks": ["sentiment"]}),
    )
    .await;
    assert_error(s, &b, 422, "invalid_request");
    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"text": "x", "options": {"top_k": 0}}),
    )
    .await;
    assert_error(s, &b, 422, "invalid_option");
    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"text": "x", "options": {"normalize": "vowels"}}),
    )
    .await;
    assert_error(s, &b, 422, "invalid_option");
    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"text": "x", "stance_targets": [" "]}),
    )
    .await;
    assert_error(s, &b, 422, "empty_target");

    let r = http
        .get(server.url("/v2/nothing"))
        .send()
        .await
        .expect("answer");
    let s = r.status().as_u16();
    assert_error(s, &r.json().await.expect("json"), 404, "not_found");
    let r = http
        .get(server.url("/v1/analyze"))
        .send()
        .await
        .expect("answer");
    let s = r.status().as_u16();
    assert_error(s, &r.json().await.expect("json"), 405, "method_not_allowed");

    // Still fine afterwards.
    let (s, _) = post(
        &server,
        "/v1/analyze",
        json!({"text": "ذهب الوزير إلى باريس"}),
    )
    .await;
    assert_eq!(s, 200);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_made() {
    let server = TestServer::start(config()).await;
    let http = client();
    let r = http
        .get(server.url("/health"))
        .header("x-request-id", "my-trace-42")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.headers()["x-request-id"], "my-trace-42");
    let a = http
        .get(server.url("/health"))
        .send()
        .await
        .expect("answer");
    let b = http
        .get(server.url("/nowhere"))
        .send()
        .await
        .expect("answer");
    let (a, b) = (&a.headers()["x-request-id"], &b.headers()["x-request-id"]);
    assert!(!a.is_empty() && a != b);
    let r = http
        .get(server.url("/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .expect("answer");
    assert_ne!(r.headers()["x-request-id"], "bad id with spaces");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_v1_and_cors_answers_preflight() {
    let mut c = config();
    c.api_key = Some("s3cret-token".into());
    c.cors_origins = vec!["https://tool.example".into()];
    let server = TestServer::start(c).await;
    let http = client();
    let body = json!({"text": SENTENCES[1]});
    let r = http
        .post(server.url("/v1/analyze"))
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["code"], "unauthorized");
    let r = http
        .post(server.url("/v1/analyze"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    let r = http
        .post(server.url("/v1/analyze"))
        .bearer_auth("s3cret-token")
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    for open in ["/health", "/ready", "/metrics", "/openapi.json", "/"] {
        let r = http.get(server.url(open)).send().await.expect("answer");
        assert_eq!(r.status(), 200, "{open} needs no key");
    }

    let r = http
        .request(reqwest::Method::OPTIONS, server.url("/v1/analyze"))
        .header("origin", "https://tool.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization",
        )
        .send()
        .await
        .expect("answer");
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://tool.example"
    );
    let r = http
        .get(server.url("/health"))
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .expect("answer");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_and_the_server_carries_on() {
    let mut c = config();
    c.request_timeout_secs = 0.02;
    c.limits.max_chars = 50_000;
    let server = TestServer::start(c).await;
    let long = SENTENCES.concat().repeat(40);
    let docs: Vec<Value> = (0..16).map(|i| json!({"id": i, "text": long})).collect();
    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"documents": docs, "tasks": ["entities"]}),
    )
    .await;
    assert_error(s, &b, 503, "timeout");
    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"text": SENTENCES[0], "tasks": ["topic"]}),
    )
    .await;
    // The queue may still be busy with the abandoned request's running batch; within a few
    // tries a small request must get through.
    let mut ok = s == 200;
    for _ in 0..200 {
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (s, _) = post(
            &server,
            "/v1/analyze",
            json!({"text": SENTENCES[0], "tasks": ["topic"]}),
        )
        .await;
        ok = s == 200;
    }
    assert!(ok, "small requests succeed after a timeout: {b}");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_requests_in_flight() {
    let server = TestServer::start(config()).await;
    let long = SENTENCES.concat().repeat(40);
    let mut inflight = Vec::new();
    for i in 0..8 {
        let url = server.url("/v1/analyze");
        let body = json!({"documents": [{"id": i, "text": long}], "stance_targets": ["موسكو"]});
        inflight.push(tokio::spawn(async move {
            client()
                .post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    // Wait until the server holds all eight (the /metrics request itself is the ninth).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(&server).await;
        let in_flight: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("naba_http_requests_in_flight "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if in_flight >= 9 || inflight.iter().any(|t| t.is_finished()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let addr = server.addr;
    server.stop().await.expect("clean stop");
    for r in inflight {
        let status = r
            .await
            .expect("task")
            .expect("an accepted request is answered");
        assert_eq!(status, 200);
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_one_model_does_only_its_task() {
    let mut c = config();
    c.models.retain(|m| m.name == "ner");
    let server = TestServer::start(c).await;
    let text = SENTENCES[2];
    let (s, b) = post(
        &server,
        "/v1/analyze",
        json!({"text": text, "stance_targets": ["x"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let d = &b["documents"][0];
    assert!(d["entities"].is_array() && d.get("topic").is_none() && d.get("stance").is_none());
    for (route, body) in [
        ("/v1/analyze", json!({"text": text, "tasks": ["stance"]})),
        (
            "/v1/analyze",
            json!({"text": text, "tasks": ["topic", "entities"]}),
        ),
        ("/v1/topic", json!({"text": text})),
        ("/v1/stance", json!({"text": text, "stance_targets": ["x"]})),
    ] {
        let (s, b) = post(&server, route, body).await;
        assert_error(s, &b, 422, "task_unavailable");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("entities"),
            "{b}"
        );
    }
    server.stop().await.expect("clean stop");
}

/// Twelve sentences: longer than the tiny stance model's 64-token window.
fn long_article() -> String {
    (0..12)
        .map(|i| format!("الجملة رقم {i} تقول إن المفاوضات بين واشنطن وموسكو ستستأنف قريبا جدا. "))
        .collect()
}

/// Every evidence passage is the slice of the text its character offsets name, and the first
/// one weighs the most.
fn check_evidence(text: &str, stance: &Value) {
    let evidence = stance["evidence"].as_array().expect("evidence");
    assert!(!evidence.is_empty(), "{stance}");
    let mut last = f64::INFINITY;
    for e in evidence {
        let (start, end) = (
            e["start"].as_u64().expect("start") as usize,
            e["end"].as_u64().expect("end") as usize,
        );
        assert_eq!(
            e["text"].as_str().map(str::to_string),
            char_slice(text, start, end),
            "{e}"
        );
        let w = e["weight"].as_f64().expect("weight");
        assert!(w <= last + 1e-6 && w > 0.0, "{stance}");
        last = w;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_shot_scores_the_labels_a_request_names() {
    let mut cfg = config();
    // A tiny encoder read for its hidden states only (its head is ignored).
    let mut zs = common::entry("zs", naba_server::Task::ZeroShot, "bert-seq-cls");
    zs.method = Some(naba_server::schema::ZeroShotMethod::Embedding);
    cfg.models.push(zs);
    let server = TestServer::start(cfg).await;
    let labels = json!(["رياضة", "اقتصاد", {"name": "سياسة", "descriptions": ["أخبار السياسة", "حكومة وانتخابات"]}]);
    let (status, body) = post(
        &server,
        "/v1/zero-shot",
        json!({"documents": [{"id": "a", "text": SENTENCES[3]}, {"text": SENTENCES[2]}], "labels": labels}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "zs");
    let docs = body["documents"].as_array().expect("documents");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["id"], "a");
    assert_eq!(docs[1]["id"], 1);
    for d in docs {
        let scores: Vec<f64> = d["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|l| l["score"].as_f64().expect("score"))
            .collect();
        assert_eq!(scores.len(), 3, "{d}");
        assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{d}");
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {d}");
        assert_eq!(d["label"], d["labels"][0]["label"]);
    }
    // Multi-label: each label on its own, so no sum to 1; top_k cuts the list.
    let (status, body) = post(
        &server,
        "/v1/zero-shot",
        json!({"text": SENTENCES[0], "labels": labels, "multi_label": true, "top_k": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["documents"][0]["multi_label"], true);
    assert_eq!(
        body["documents"][0]["labels"].as_array().map(Vec::len),
        Some(2)
    );

    let many: Vec<String> = (0..101).map(|i| format!("label {i}")).collect();
    for (labels, code, says) in [
        (json!([]), "invalid_labels", "no candidate labels"),
        (json!(many), "invalid_labels", "limit of 100"),
        (json!(["a", " "]), "invalid_labels", "empty"),
        (json!(["a", "a"]), "invalid_labels", "twice"),
    ] {
        let (status, body) = post(
            &server,
            "/v1/zero-shot",
            json!({"text": "نص", "labels": labels}),
        )
        .await;
        assert_error(status, &body, 422, code);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{body}"
        );
    }
    let (status, body) = post(&server, "/v1/zero-shot", json!({"text": "نص"})).await;
    assert_error(status, &body, 422, "invalid_request");
    let (status, body) = post(
        &server,
        "/v1/analyze",
        json!({"text": "نص", "tasks": ["zero-shot"]}),
    )
    .await;
    assert_error(status, &body, 422, "invalid_request");

    let models = get(&server, "/v1/models").await;
    assert!(
        models["models"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["task"] == "zero-shot" && m["name"] == "zs")),
        "{models}"
    );
    let openapi = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .text()
        .await
        .expect("text");
    assert!(openapi.contains("/v1/zero-shot") && openapi.contains("ZeroShotRequest"));
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_zero_shot_model_the_route_says_how_to_get_one() {
    let server = TestServer::start(config()).await;
    let (status, body) = post(
        &server,
        "/v1/zero-shot",
        json!({"text": "نص", "labels": ["a", "b"]}),
    )
    .await;
    assert_error(status, &body, 422, "task_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--zero-shot-model base")),
        "{body}"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_shot_by_entailment_reads_the_template_and_methods_pick_models() {
    let mut cfg = config();
    // A tiny encoder read for its hidden states only (its head is ignored).
    let mut zs = common::entry("zs", naba_server::Task::ZeroShot, "bert-seq-cls");
    zs.method = Some(naba_server::schema::ZeroShotMethod::Embedding);
    cfg.models.push(zs);
    let mut nli = common::entry("nli", naba_server::Task::ZeroShot, "x");
    nli.path = format!(
        "{}/../naba-tasks/tests/fixtures/nli/bert-nli",
        env!("CARGO_MANIFEST_DIR")
    );
    cfg.models.push(nli);
    let mut deberta = common::entry("deberta", naba_server::Task::ZeroShot, "x");
    deberta.path = format!(
        "{}/../naba-tasks/tests/fixtures/nli/deberta-nli",
        env!("CARGO_MANIFEST_DIR")
    );
    cfg.models.push(deberta);
    let server = TestServer::start(cfg).await;
    let ask = |body: Value| post(&server, "/v1/zero-shot", body);
    let (status, body) = ask(
        json!({"text": "The bank raised rates.", "labels": ["sport", "economy"],
        "method": "entailment", "hypothesis_template": "This text is about {}."}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "nli");
    assert_eq!(body["method"], "entailment");
    let (status, body) =
        ask(json!({"text": "نص", "labels": ["a", "b"], "method": "embedding"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "zs");
    assert_eq!(body["method"], "embedding");
    let (status, body) = ask(json!({"text": "نص", "labels": ["a", "b"], "model": "zs",
        "hypothesis_template": "about {}"}))
    .await;
    assert_error(status, &body, 422, "invalid_option");
    let (status, body) = ask(json!({"text": "نص", "labels": ["a", "b"], "model": "nli",
        "hypothesis_template": "no placeholder"}))
    .await;
    assert_error(status, &body, 422, "invalid_option");
    let (status, body) = ask(json!({"text": "نص", "labels": ["a", "b"], "model": "zs",
        "method": "entailment"}))
    .await;
    assert_error(status, &body, 422, "invalid_option");
    // DeBERTa-v2 (candle-transformers) answers through the same queue.
    let (status, body) = ask(
        json!({"text": "The bank raised rates.", "labels": ["sport", "economy"],
        "model": "deberta"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["method"], "entailment");
    let scores: f64 = body["documents"][0]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(|l| l["score"].as_f64())
        .sum();
    assert!((scores - 1.0).abs() < 1e-4, "{body}");
    server.stop().await.expect("clean stop");
}

/// A stance model with a relatedness gate beside it: a long article is first asked whether it
/// concerns the target (here a gate that says never), and a target too long for the window is
/// cut and the answer says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stance_reports_the_relatedness_gate_and_a_cut_target() {
    let copy = common::copy_fixture("bert-seq-cls");
    let dir = copy.path();
    let gate = json!({
        "encoder": common::fixture("bert-seq-cls"), "prefix": "", "weight": 1.0, "bias": -50.0
    });
    std::fs::write(dir.join("relatedness.json"), gate.to_string()).expect("gate");
    let mut cfg = config();
    cfg.models.retain(|m| m.task != naba_server::Task::Stance);
    let mut stance = common::entry("stance", naba_server::Task::Stance, "bert-seq-cls");
    stance.path = dir.to_string_lossy().into_owned();
    cfg.models.push(stance);
    let server = TestServer::start(cfg).await;

    let article = long_article();
    let (s, b) = post(
        &server,
        "/v1/stance",
        json!({"text": article, "stance_targets": ["المفاوضات ستستأنف"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let st = &b["documents"][0]["stance"][0];
    assert_eq!(st["label"], "other", "{st}");
    let related = st["related"].as_f64().expect("related reported");
    assert!(related < 0.5, "{st}");
    let evidence = st["evidence"].as_array().expect("evidence");
    assert_eq!(evidence.len(), 3, "{st}");
    assert!(evidence.iter().all(|e| e["related"].is_number()), "{st}");
    assert!(st.get("target_truncated").is_none(), "{st}");

    // A target of many words (under the 1,000-character limit) is cut, not refused.
    let long_target = "روسيا تدخلت في الانتخابات الأمريكية ".repeat(20);
    assert!(long_target.chars().count() < 1_000);
    let (s, b) = post(
        &server,
        "/v1/stance",
        json!({"text": SENTENCES[0], "stance_targets": [long_target]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let cut = &b["documents"][0]["stance"][0]["target_truncated"];
    let kept = cut["kept_tokens"].as_u64().expect("kept_tokens");
    let total = cut["target_tokens"].as_u64().expect("target_tokens");
    assert!(kept < total, "{cut}");
}

/// A topic model with a lexical member beside it: the server loads it and its answers are the
/// stated average (here the member's share is 1, so its probabilities alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_answers_blend_the_lexical_member_beside_the_model() {
    use naba_tasks::lexical::{FeatureSpec, Lexical, LexicalParams};
    let dir = common::copy_fixture("bert-seq-cls");
    let features = FeatureSpec {
        buckets: 16,
        ..FeatureSpec::default()
    };
    let params = LexicalParams {
        features,
        labels: vec!["agree".into(), "disagree".into(), "other".into()],
        mix: 1.0,
        pairs: false,
        fitted_on: "test".into(),
    };
    // No weights, only biases: every text gets softmax([0, 3, 0]).
    let member =
        Lexical::new(params, vec![1.0; 16], vec![0.0; 48], vec![0.0, 3.0, 0.0]).expect("member");
    member.write(dir.path()).expect("write member");
    let mut cfg = config();
    cfg.models.retain(|m| m.name != "topic-3");
    let mut topic = common::entry("topic-3", naba_server::Task::Topic, "bert-seq-cls");
    topic.path = dir.path().to_string_lossy().into_owned();
    cfg.models.push(topic);
    let server = TestServer::start(cfg).await;
    let (s, b) = post(
        &server,
        "/v1/topic",
        json!({"text": SENTENCES[2], "model": "topic-3"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let best = &b["documents"][0]["topic"]["labels"][0];
    assert_eq!(best["label"], "disagree", "{b}");
    let want = 3f64.exp() / (2.0 + 3f64.exp());
    let got = best["score"].as_f64().expect("score");
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    let models = get(&server, "/v1/models").await;
    let listed = |name: &str| {
        models["models"]
            .as_array()
            .expect("models")
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .expect("listed")
    };
    assert_eq!(listed("topic-3")["lexical_mix"], 1.0, "{models}");
    assert!(listed("topic").get("lexical_mix").is_none(), "{models}");
    server.stop().await.expect("clean stop");
}
