//! Bad input: arbitrary JSON, arbitrary Unicode and well-shaped requests with arbitrary
//! contents, thrown at every route. No 5xx, every refusal in the error shape, and whenever
//! entities come back their offsets slice the text that was sent.

mod common;

use common::{char_slice, client, config, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

const POST_ROUTES: &[&str] = &["/v1/analyze", "/v1/topic", "/v1/entities", "/v1/stance"];
const ALL_ROUTES: &[&str] = &[
    "/v1/analyze",
    "/v1/topic",
    "/v1/entities",
    "/v1/stance",
    "/v1/models",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/",
];
const KEYS: &[&str] = &[
    "text",
    "documents",
    "id",
    "targets",
    "tasks",
    "stance_targets",
    "options",
    "top_k",
    "aggregation",
    "decoding",
    "normalize",
    "models",
    "model",
    "topic",
    "entities",
    "stance",
];

/// Text that stresses offsets: Arabic with harakat, tatweel, presentation forms (NFKC expands
/// them), bidi controls, emoji and other astral characters, control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\u0600-\\u06FF\\u0750-\\u077F \\u064B-\\u0652\\u0640.،؟!]{0,120}",
        "[\\uFB50-\\uFDFF\\uFE70-\\uFEFF\\u200c-\\u200f\\u202a-\\u202e a-z0-9😀🇸🇦\\u{1D400}-\\u{1D4FF}\\t\\n\\r]{0,80}",
        "(أحمد|بوتين|واشنطن|الأمم المتحدة|ـــ|ً|ٌ|ﻻ|١٢٣| |\\u{1F600}|\\u0000|\\r\\n){0,40}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Requests of the right shape with arbitrary contents, so validation and the models are
/// reached, not only the parser.
fn shaped_request() -> impl Strategy<Value = Value> {
    let option = prop_oneof![
        Just(json!({})),
        (0usize..6).prop_map(|k| json!({"top_k": k})),
        proptest::sample::select(&["none", "simple", "first", "average", "max", "bogus"][..])
            .prop_map(|a| json!({"aggregation": a})),
        proptest::sample::select(&["iob2", "argmax", "IOB2", "crf"][..])
            .prop_map(|d| json!({"decoding": d})),
        proptest::sample::select(&["all", "none", "diacritics,alef", "nfkc", "x"][..])
            .prop_map(|n| json!({"normalize": n})),
        Just(json!({"normalize": ["tatweel", "ya", "ta-marbuta", "digits"]})),
    ];
    let doc = (
        text(),
        proptest::collection::vec(text(), 0..3),
        any::<Option<i32>>(),
    )
        .prop_map(|(t, targets, id)| {
            let mut d = json!({"text": t, "targets": targets});
            if let Some(id) = id {
                d["id"] = json!(id);
            }
            d
        });
    (
        prop_oneof![
            text().prop_map(|t| json!({"text": t})),
            proptest::collection::vec(doc, 0..4).prop_map(|d| json!({"documents": d})),
        ],
        proptest::option::of(proptest::collection::vec(text(), 0..3)),
        proptest::option::of(proptest::sample::subsequence(
            vec!["topic", "entities", "stance", "ner"],
            0..4,
        )),
        option,
    )
        .prop_map(|(mut body, targets, tasks, options)| {
            if let Some(t) = targets {
                body["stance_targets"] = json!(t);
            }
            if let Some(t) = tasks {
                body["tasks"] = json!(t);
            }
            body["options"] = options;
            body
        })
}

fn check(route: &str, status: u16, sent: &Value, body: &str) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{route} answered {status} to {sent}: {body}");
    if route.starts_with("/v1/") && status >= 400 {
        let v: Value = serde_json::from_str(body).map_err(|e| {
            TestCaseError::fail(format!("{route} {status}: not JSON ({e}): {body}"))
        })?;
        prop_assert!(v["error"]["code"].is_string(), "{route} {status}: {body}");
        prop_assert!(
            v["error"]["message"].is_string(),
            "{route} {status}: {body}"
        );
    }
    if status == 200 && POST_ROUTES.contains(&route) {
        let v: Value = serde_json::from_str(body)
            .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {body}")))?;
        let texts: Vec<&str> = match (sent.get("text"), sent.get("documents")) {
            (Some(t), _) => vec![t.as_str().unwrap_or("")],
            (_, Some(d)) => d
                .as_array()
                .map(|d| d.iter().map(|d| d["text"].as_str().unwrap_or("")).collect())
                .unwrap_or_default(),
            _ => vec![],
        };
        let docs = v["documents"].as_array().cloned().unwrap_or_default();
        prop_assert_eq!(docs.len(), texts.len());
        for (doc, text) in docs.iter().zip(texts) {
            for e in doc["entities"].as_array().into_iter().flatten() {
                let s = e["start"].as_u64().unwrap_or(u64::MAX) as usize;
                let t = e["end"].as_u64().unwrap_or(0) as usize;
                let slice = char_slice(text, s, t);
                prop_assert_eq!(
                    slice.as_deref(),
                    e["text"].as_str(),
                    "entity {} vs text {:?}",
                    e,
                    text
                );
            }
        }
    }
    Ok(())
}

fn cfg(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

#[test]
fn arbitrary_input_never_gets_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = config();
    c.limits.max_documents = 4;
    let server = rt.block_on(TestServer::start(c));
    let http = client();
    let cases: u32 = std::env::var("NABA_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let send = |route: &'static str, method: reqwest::Method, body: Vec<u8>, json_type: bool| {
        let mut req = http.request(method, server.url(route)).body(body);
        if json_type {
            req = req.header("content-type", "application/json");
        }
        rt.block_on(async move {
            let r = req.send().await.expect("the server answers");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        })
    };

    let mut runner = TestRunner::new(cfg(cases));
    runner
        .run(
            &(proptest::sample::select(POST_ROUTES), shaped_request()),
            |(route, body)| {
                let (status, text) = send(
                    route,
                    reqwest::Method::POST,
                    body.to_string().into_bytes(),
                    true,
                );
                check(route, status, &body, &text)
            },
        )
        .expect("well-shaped requests with arbitrary contents");

    let mut runner = TestRunner::new(cfg(cases));
    runner
        .run(
            &(
                proptest::sample::select(ALL_ROUTES),
                any_json(),
                any::<bool>(),
            ),
            |(route, body, post)| {
                let method = if post {
                    reqwest::Method::POST
                } else {
                    reqwest::Method::GET
                };
                let (status, text) = send(route, method, body.to_string().into_bytes(), true);
                check(route, status, &body, &text)
            },
        )
        .expect("arbitrary JSON");

    let mut runner = TestRunner::new(cfg(cases));
    runner
        .run(
            &(proptest::sample::select(ALL_ROUTES), text(), any::<bool>()),
            |(route, raw, json_type)| {
                let (status, text) = send(
                    route,
                    reqwest::Method::POST,
                    raw.clone().into_bytes(),
                    json_type,
                );
                check(route, status, &json!(raw), &text)
            },
        )
        .expect("arbitrary Unicode bodies");

    let mut runner = TestRunner::new(cfg(cases / 4 + 1));
    runner
        .run(&text(), |segment| {
            let path: String = segment.bytes().map(|b| format!("%{b:02X}")).collect();
            let url = format!("{}/v1/{path}", server.base);
            let r = rt.block_on(async { http.get(url).send().await });
            let r = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(r.status().as_u16() < 500);
            Ok(())
        })
        .expect("arbitrary paths");

    let health = rt
        .block_on(async { http.get(server.url("/health")).send().await })
        .expect("health");
    assert_eq!(health.status(), 200);
    // The properties really ran: count what the server answered, by status.
    let metrics = rt
        .block_on(async { http.get(server.url("/metrics")).send().await?.text().await })
        .expect("metrics");
    let mut by_status = std::collections::BTreeMap::<String, u64>::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("naba_http_requests_total{"))
    {
        let status = line
            .split("status=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let n = line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
        if let (Some(status), Some(n)) = (status, n) {
            *by_status.entry(status.to_string()).or_default() += n;
        }
    }
    let total: u64 = by_status.values().sum();
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("bad input: {total} requests answered, by status {by_status:?}\n").as_bytes(),
    );
    assert!(total >= u64::from(3 * cases), "{by_status:?}");
    assert!(
        by_status.get("200").copied().unwrap_or(0) > 0,
        "some requests reach the models"
    );
    rt.block_on(server.stop()).expect("clean stop");
}
