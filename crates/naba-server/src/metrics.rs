//! Prometheus metrics in the text exposition format, kept in a few maps behind one lock: requests
//! by route and status, latency histograms, batch sizes, queue depth, tokens processed.
//!
//! Label values come from the server (route templates, model names), never from request text,
//! so the number of series stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const BATCH_DOC_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
const BATCH_TOKEN_BUCKETS: &[f64] = &[
    64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    in_flight: i64,
    batch_documents: BTreeMap<String, Histogram>,
    batch_tokens: BTreeMap<String, Histogram>,
    model_seconds: BTreeMap<String, Histogram>,
    queue_wait: BTreeMap<String, Histogram>,
    queue_depth: BTreeMap<String, i64>,
    tokens: BTreeMap<String, u64>,
    documents: BTreeMap<String, u64>,
    rejected: BTreeMap<String, u64>,
    cancelled: BTreeMap<String, u64>,
    ready: BTreeMap<String, u8>,
}

/// The server's metrics; shared by the HTTP layer and the model workers.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn request_started(&self) {
        self.lock().in_flight += 1;
    }

    /// One answered (or abandoned, status 499) request.
    pub fn request_finished(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut m = self.lock();
        m.in_flight -= 1;
        *m.requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        m.latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// One model call: documents in it, padded tokens, real tokens, time on the model.
    pub fn batch(&self, model: &str, documents: usize, padded: usize, tokens: usize, secs: f64) {
        let mut m = self.lock();
        m.batch_documents
            .entry(model.to_string())
            .or_insert_with(|| Histogram::new(BATCH_DOC_BUCKETS))
            .observe(documents as f64);
        m.batch_tokens
            .entry(model.to_string())
            .or_insert_with(|| Histogram::new(BATCH_TOKEN_BUCKETS))
            .observe(padded as f64);
        m.model_seconds
            .entry(model.to_string())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(secs);
        *m.tokens.entry(model.to_string()).or_default() += tokens as u64;
        *m.documents.entry(model.to_string()).or_default() += documents as u64;
    }

    pub fn queue_wait(&self, model: &str, waited: Duration) {
        self.lock()
            .queue_wait
            .entry(model.to_string())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(waited.as_secs_f64());
    }

    pub fn queue_depth(&self, model: &str, depth: usize) {
        self.lock()
            .queue_depth
            .insert(model.to_string(), depth as i64);
    }

    /// Documents refused because the queue was full.
    pub fn rejected(&self, model: &str, documents: usize) {
        *self.lock().rejected.entry(model.to_string()).or_default() += documents as u64;
    }

    /// Queued documents dropped because their request went away (timeout, disconnect).
    pub fn cancelled(&self, model: &str, documents: usize) {
        *self.lock().cancelled.entry(model.to_string()).or_default() += documents as u64;
    }

    pub fn ready(&self, model: &str, ready: bool) {
        self.lock().ready.insert(model.to_string(), u8::from(ready));
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        header(
            &mut out,
            "naba_http_requests_total",
            "counter",
            "HTTP requests answered, by route template, method and status.",
        );
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "naba_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        histograms(
            &mut out,
            "naba_http_request_duration_seconds",
            "Time from request to response, by route template.",
            "route",
            &m.latency,
        );
        header(
            &mut out,
            "naba_http_requests_in_flight",
            "gauge",
            "Requests being handled now.",
        );
        let _ = writeln!(out, "naba_http_requests_in_flight {}", m.in_flight);
        histograms(
            &mut out,
            "naba_batch_documents",
            "Documents (or document-target pairs) per model call.",
            "model",
            &m.batch_documents,
        );
        histograms(
            &mut out,
            "naba_batch_padded_tokens",
            "Estimated padded tokens (windows x length) per model call.",
            "model",
            &m.batch_tokens,
        );
        histograms(
            &mut out,
            "naba_model_call_seconds",
            "Time one model call takes.",
            "model",
            &m.model_seconds,
        );
        histograms(
            &mut out,
            "naba_queue_wait_seconds",
            "Time a document waits in its model's queue.",
            "model",
            &m.queue_wait,
        );
        gauge_map(
            &mut out,
            "naba_queue_depth",
            "Documents waiting for each model.",
            &m.queue_depth,
        );
        counter_map(
            &mut out,
            "naba_tokens_processed_total",
            "Tokens of text (and targets) run through each model.",
            &m.tokens,
        );
        counter_map(
            &mut out,
            "naba_documents_processed_total",
            "Documents (or document-target pairs) run through each model.",
            &m.documents,
        );
        counter_map(
            &mut out,
            "naba_queue_rejected_documents_total",
            "Documents refused with 429 because the model's queue was full.",
            &m.rejected,
        );
        counter_map(
            &mut out,
            "naba_queue_cancelled_documents_total",
            "Queued documents dropped because their request timed out or went away.",
            &m.cancelled,
        );
        let ready: BTreeMap<String, i64> = m
            .ready
            .iter()
            .map(|(k, v)| (k.clone(), i64::from(*v)))
            .collect();
        gauge_map(
            &mut out,
            "naba_model_ready",
            "1 when the model is loaded and answering.",
            &ready,
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter_map(out: &mut String, name: &str, help: &str, map: &BTreeMap<String, u64>) {
    header(out, name, "counter", help);
    for (model, n) in map {
        let _ = writeln!(out, "{name}{{model=\"{}\"}} {n}", escape(model));
    }
}

fn gauge_map(out: &mut String, name: &str, help: &str, map: &BTreeMap<String, i64>) {
    header(out, name, "gauge", help);
    for (model, n) in map {
        let _ = writeln!(out, "{name}{{model=\"{}\"}} {n}", escape(model));
    }
}

fn histograms(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    map: &BTreeMap<String, Histogram>,
) {
    header(out, name, "histogram", help);
    for (key, h) in map {
        let key = escape(key);
        for (b, c) in h.bounds.iter().zip(&h.counts) {
            let _ = writeln!(out, "{name}_bucket{{{label}=\"{key}\",le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{key}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{{label}=\"{key}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{label}=\"{key}\"}} {}", h.count);
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::new();
        m.request_started();
        m.request_finished("/v1/analyze", "POST", 200, Duration::from_millis(3));
        m.batch("ner\"x", 3, 300, 120, 0.02);
        m.batch("ner\"x", 1, 64, 20, 0.01);
        let text = m.render();
        assert!(text.contains(
            "naba_http_requests_total{route=\"/v1/analyze\",method=\"POST\",status=\"200\"} 1"
        ));
        assert!(text.contains("naba_batch_documents_bucket{model=\"ner\\\"x\",le=\"2\"} 1"));
        assert!(text.contains("naba_batch_documents_bucket{model=\"ner\\\"x\",le=\"4\"} 2"));
        assert!(text.contains("naba_tokens_processed_total{model=\"ner\\\"x\"} 140"));
        assert!(text.contains("naba_http_requests_in_flight 0"));
        assert!(text.contains(
            "naba_http_request_duration_seconds_bucket{route=\"/v1/analyze\",le=\"0.005\"} 1"
        ));
    }
}
