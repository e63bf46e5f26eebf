//! A bounded load generator: N clients send `/v1/analyze` requests back to back until a
//! deadline, and check every answer (status, ids in order, entity offsets, stance targets).
//! Shared by the load test and the batching benchmark example.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct LoadOptions {
    pub clients: usize,
    pub duration: Duration,
    pub docs_per_request: usize,
    pub texts: Vec<String>,
    pub target: String,
    pub api_key: Option<String>,
}

#[derive(Default)]
pub struct LoadReport {
    pub requests: usize,
    pub documents: usize,
    pub statuses: BTreeMap<u16, usize>,
    /// Requests that got no HTTP answer at all.
    pub transport_errors: usize,
    /// Answers whose ids, offsets or targets do not match what was sent.
    pub mismatches: usize,
    /// The first few problems, for messages.
    pub problems: Vec<String>,
    pub latencies_ms: Vec<f64>,
    pub elapsed: Duration,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.requests += other.requests;
        self.documents += other.documents;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.transport_errors += other.transport_errors;
        self.mismatches += other.mismatches;
        for p in other.problems {
            if self.problems.len() < 10 {
                self.problems.push(p);
            }
        }
        self.latencies_ms.extend(other.latencies_ms);
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 10 {
            self.problems.push(p);
        }
    }

    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn documents_per_sec(&self) -> f64 {
        self.documents as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn ok(&self) -> usize {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} requests ({} documents) in {:.1} s: {:.1} req/s, {:.1} docs/s; latency p50 {:.1} ms, \
             p99 {:.1} ms; statuses {:?}; transport errors {}; mismatches {}",
            self.requests,
            self.documents,
            self.elapsed.as_secs_f64(),
            self.requests_per_sec(),
            self.documents_per_sec(),
            self.percentile(50.0),
            self.percentile(99.0),
            self.statuses,
            self.transport_errors,
            self.mismatches
        )
    }
}

fn char_slice(text: &str, start: usize, end: usize) -> Option<String> {
    if start > end {
        return None;
    }
    let chars: Vec<char> = text.chars().collect();
    chars.get(start..end).map(|c| c.iter().collect())
}

/// Checks one answer against what was sent; returns a problem or None.
pub fn check_answer(body: &Value, sent: &[(String, String)], target: &str) -> Option<String> {
    let docs = body["documents"].as_array()?;
    if docs.len() != sent.len() {
        return Some(format!(
            "{} documents back for {} sent",
            docs.len(),
            sent.len()
        ));
    }
    for (doc, (id, text)) in docs.iter().zip(sent) {
        if doc["id"] != json!(id) {
            return Some(format!("id {} back where {id} was sent", doc["id"]));
        }
        if doc["topic"]["label"].as_str().is_none() {
            return Some(format!("{id}: no topic"));
        }
        let Some(entities) = doc["entities"].as_array() else {
            return Some(format!("{id}: no entities list"));
        };
        for e in entities {
            let (Some(s), Some(t), Some(x)) =
                (e["start"].as_u64(), e["end"].as_u64(), e["text"].as_str())
            else {
                return Some(format!("{id}: entity without start/end/text: {e}"));
            };
            if char_slice(text, s as usize, t as usize).as_deref() != Some(x) {
                return Some(format!("{id}: entity {x:?} is not text[{s}..{t}]"));
            }
        }
        let stance = doc["stance"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if stance.len() != 1 || stance[0]["target"] != json!(target) {
            return Some(format!(
                "{id}: stance {stance:?} does not answer target {target:?}"
            ));
        }
    }
    None
}

async fn one_client(
    client: reqwest::Client,
    base: Arc<str>,
    opts: Arc<LoadOptions>,
    who: usize,
    deadline: Instant,
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut n = 0usize;
    while Instant::now() < deadline {
        let sent: Vec<(String, String)> = (0..opts.docs_per_request)
            .map(|i| {
                let text = &opts.texts[(who * 7 + n * 3 + i) % opts.texts.len()];
                (format!("c{who}-r{n}-d{i}"), text.clone())
            })
            .collect();
        let body = json!({
            "documents": sent.iter().map(|(id, text)| json!({"id": id, "text": text})).collect::<Vec<_>>(),
            "tasks": ["topic", "entities", "stance"],
            "stance_targets": [opts.target],
        });
        let request_id = format!("c{who}-r{n}");
        let mut req = client
            .post(format!("{base}/v1/analyze"))
            .header("x-request-id", &request_id)
            .json(&body);
        if let Some(key) = &opts.api_key {
            req = req.bearer_auth(key);
        }
        let started = Instant::now();
        let result = req.send().await;
        report.requests += 1;
        n += 1;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                report.transport_errors += 1;
                report.problem(format!("{request_id}: {e}"));
                continue;
            }
        };
        let status = response.status().as_u16();
        *report.statuses.entry(status).or_default() += 1;
        let echoed = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap_or_default();
        report
            .latencies_ms
            .push(started.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            report.problem(format!("{request_id}: {status} {text}"));
            continue;
        }
        report.documents += sent.len();
        if echoed.as_deref() != Some(request_id.as_str()) {
            report.mismatches += 1;
            report.problem(format!(
                "{request_id}: x-request-id came back as {echoed:?}"
            ));
            continue;
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => {
                if let Some(p) = check_answer(&v, &sent, &opts.target) {
                    report.mismatches += 1;
                    report.problem(format!("{request_id}: {p}"));
                }
            }
            Err(e) => {
                report.mismatches += 1;
                report.problem(format!("{request_id}: not JSON: {e}"));
            }
        }
    }
    report
}

/// Runs the load and returns what happened; stops by itself at the deadline (a request in
/// flight then is finished first).
pub async fn run(base: &str, opts: &LoadOptions) -> LoadReport {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(opts.clients)
        .no_proxy()
        .build()
        .expect("client");
    let base: Arc<str> = Arc::from(base);
    let opts = Arc::new(opts.clone());
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut tasks = Vec::new();
    for who in 0..opts.clients {
        tasks.push(tokio::spawn(one_client(
            client.clone(),
            Arc::clone(&base),
            Arc::clone(&opts),
            who,
            deadline,
        )));
    }
    let mut report = LoadReport::default();
    for t in tasks {
        match t.await {
            Ok(r) => report.merge(r),
            Err(e) => {
                report.transport_errors += 1;
                report.problem(format!("client task failed: {e}"));
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}
