//! Prometheus metrics, kept in a `prometheus-client` registry owned by each server (no global
//! recorder, so several servers in one process, as the tests run them, count apart): requests by
//! route and status, latency histograms, batch sizes, queue depth, tokens processed, and the
//! stream worker's entries consumed, labelled, dead-lettered and reclaimed and its lag.
//!
//! [`Metrics::render`] writes the Prometheus text exposition format (version 0.0.4, served as
//! [`CONTENT_TYPE`]); the series names, types, labels and histogram buckets are those the
//! hand-written exposition served before.
//!
//! Label values come from the server (route templates, model names, stream keys from the
//! configuration), never from request text, so the number of series stays bounded.

use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const BATCH_DOC_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
const BATCH_TOKEN_BUCKETS: &[f64] = &[
    64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

fn model_label(name: &str) -> ModelLabel {
    ModelLabel {
        model: name.to_string(),
    }
}

fn stream_label(name: &str) -> StreamLabel {
    StreamLabel {
        stream: name.to_string(),
    }
}

/// Histograms by label set, each made with its metric's bucket bounds.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

fn batch_doc_histogram() -> Histogram {
    Histogram::new(BATCH_DOC_BUCKETS.iter().copied())
}

fn batch_token_histogram() -> Histogram {
    Histogram::new(BATCH_TOKEN_BUCKETS.iter().copied())
}

/// The server's metrics; shared by the HTTP layer, the model workers and the stream worker.
///
/// Each family is registered once, in [`Metrics::new`]; recording goes through the handles kept
/// here (atomics behind each family's map), so no lock is held across the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms<RouteLabel>,
    in_flight: Gauge,
    batch_documents: Histograms<ModelLabel>,
    batch_tokens: Histograms<ModelLabel>,
    model_seconds: Histograms<ModelLabel>,
    queue_wait: Histograms<ModelLabel>,
    queue_depth: Family<ModelLabel, Gauge>,
    tokens: Family<ModelLabel, Counter>,
    documents: Family<ModelLabel, Counter>,
    rejected: Family<ModelLabel, Counter>,
    cancelled: Family<ModelLabel, Counter>,
    ready: Family<ModelLabel, Gauge>,
    stream_consumed: Family<StreamLabel, Counter>,
    stream_labelled: Family<StreamLabel, Counter>,
    stream_dead_lettered: Family<StreamLabel, Counter>,
    stream_reclaimed: Family<StreamLabel, Counter>,
    stream_lag: Family<StreamLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered; a family is written from its first
    /// sample on.
    ///
    /// Counters are registered without their `_total`: the encoder appends it. Help texts have
    /// no final full stop: the registry adds one.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            batch_documents: Family::new_with_constructor(batch_doc_histogram),
            batch_tokens: Family::new_with_constructor(batch_token_histogram),
            model_seconds: Family::new_with_constructor(latency_histogram),
            queue_wait: Family::new_with_constructor(latency_histogram),
            queue_depth: Family::default(),
            tokens: Family::default(),
            documents: Family::default(),
            rejected: Family::default(),
            cancelled: Family::default(),
            ready: Family::default(),
            stream_consumed: Family::default(),
            stream_labelled: Family::default(),
            stream_dead_lettered: Family::default(),
            stream_reclaimed: Family::default(),
            stream_lag: Family::default(),
        };
        let registry = &mut m.registry;
        registry.register(
            "naba_http_requests",
            "HTTP requests answered, by route template, method and status",
            m.requests.clone(),
        );
        registry.register(
            "naba_http_request_duration_seconds",
            "Time from request to response, by route template",
            m.latency.clone(),
        );
        registry.register(
            "naba_http_requests_in_flight",
            "Requests being handled now",
            m.in_flight.clone(),
        );
        registry.register(
            "naba_batch_documents",
            "Documents (or document-target pairs) per model call",
            m.batch_documents.clone(),
        );
        registry.register(
            "naba_batch_padded_tokens",
            "Estimated padded tokens (windows x length) per model call",
            m.batch_tokens.clone(),
        );
        registry.register(
            "naba_model_call_seconds",
            "Time one model call takes",
            m.model_seconds.clone(),
        );
        registry.register(
            "naba_queue_wait_seconds",
            "Time a document waits in its model's queue",
            m.queue_wait.clone(),
        );
        registry.register(
            "naba_queue_depth",
            "Documents waiting for each model",
            m.queue_depth.clone(),
        );
        registry.register(
            "naba_tokens_processed",
            "Tokens of text (and targets) run through each model",
            m.tokens.clone(),
        );
        registry.register(
            "naba_documents_processed",
            "Documents (or document-target pairs) run through each model",
            m.documents.clone(),
        );
        registry.register(
            "naba_queue_rejected_documents",
            "Documents refused with 429 because the model's queue was full",
            m.rejected.clone(),
        );
        registry.register(
            "naba_queue_cancelled_documents",
            "Queued documents dropped because their request timed out or went away",
            m.cancelled.clone(),
        );
        registry.register(
            "naba_model_ready",
            "1 when the model is loaded and answering",
            m.ready.clone(),
        );
        registry.register(
            "naba_stream_consumed",
            "Entries the stream worker read from each stream (new, pending or reclaimed)",
            m.stream_consumed.clone(),
        );
        registry.register(
            "naba_stream_labelled",
            "Entries the stream worker labelled, wrote a result for and acknowledged",
            m.stream_labelled.clone(),
        );
        registry.register(
            "naba_stream_dead_lettered",
            "Entries moved to the dead-letter stream because they cannot be labelled as sent or were delivered too many times",
            m.stream_dead_lettered.clone(),
        );
        registry.register(
            "naba_stream_reclaimed",
            "Entries claimed from consumers that left them idle past the visibility timeout",
            m.stream_reclaimed.clone(),
        );
        registry.register(
            "naba_stream_lag",
            "Entries in the stream not yet delivered to the consumer group",
            m.stream_lag.clone(),
        );
        m
    }

    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// One answered (or abandoned, status 499) request.
    pub fn request_finished(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.in_flight.dec();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One model call: documents in it, padded tokens, real tokens, time on the model.
    pub fn batch(&self, model: &str, documents: usize, padded: usize, tokens: usize, secs: f64) {
        let label = model_label(model);
        self.batch_documents
            .get_or_create(&label)
            .observe(documents as f64);
        self.batch_tokens
            .get_or_create(&label)
            .observe(padded as f64);
        self.model_seconds.get_or_create(&label).observe(secs);
        self.tokens.get_or_create(&label).inc_by(tokens as u64);
        self.documents
            .get_or_create(&label)
            .inc_by(documents as u64);
    }

    pub fn queue_wait(&self, model: &str, waited: Duration) {
        self.queue_wait
            .get_or_create(&model_label(model))
            .observe(waited.as_secs_f64());
    }

    pub fn queue_depth(&self, model: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&model_label(model))
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Documents refused because the queue was full.
    pub fn rejected(&self, model: &str, documents: usize) {
        self.rejected
            .get_or_create(&model_label(model))
            .inc_by(documents as u64);
    }

    /// Queued documents dropped because their request went away (timeout, disconnect).
    pub fn cancelled(&self, model: &str, documents: usize) {
        self.cancelled
            .get_or_create(&model_label(model))
            .inc_by(documents as u64);
    }

    pub fn ready(&self, model: &str, ready: bool) {
        self.ready
            .get_or_create(&model_label(model))
            .set(i64::from(ready));
    }

    /// Stream entries read by the worker (new ones, its own pending ones and reclaimed ones).
    pub fn stream_consumed(&self, stream: &str, n: u64) {
        self.stream_consumed
            .get_or_create(&stream_label(stream))
            .inc_by(n);
    }

    /// Stream entries labelled, their result written and acknowledged.
    pub fn stream_labelled(&self, stream: &str, n: u64) {
        self.stream_labelled
            .get_or_create(&stream_label(stream))
            .inc_by(n);
    }

    /// Stream entries moved to the dead-letter stream.
    pub fn stream_dead_lettered(&self, stream: &str, n: u64) {
        self.stream_dead_lettered
            .get_or_create(&stream_label(stream))
            .inc_by(n);
    }

    /// Stream entries claimed from idle consumers.
    pub fn stream_reclaimed(&self, stream: &str, n: u64) {
        self.stream_reclaimed
            .get_or_create(&stream_label(stream))
            .inc_by(n);
    }

    /// Entries in the stream not yet delivered to the worker's consumer group.
    pub fn stream_lag(&self, stream: &str, lag: i64) {
        self.stream_lag
            .get_or_create(&stream_label(stream))
            .set(lag);
    }

    /// The Prometheus text exposition format (version 0.0.4); see [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be the encoder's own bug.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::new();
        m.request_started();
        m.request_finished("/v1/analyze", "POST", 200, Duration::from_millis(3));
        m.batch("ner", 3, 300, 120, 0.02);
        m.batch("ner", 1, 64, 20, 0.01);
        let text = m.render();
        let lines = lines(&text);
        for want in [
            "# HELP naba_http_requests_total HTTP requests answered, by route template, method and status.",
            "# TYPE naba_http_requests_total counter",
            "naba_http_requests_total{route=\"/v1/analyze\",method=\"POST\",status=\"200\"} 1",
            "# TYPE naba_http_request_duration_seconds histogram",
            "naba_http_request_duration_seconds_bucket{route=\"/v1/analyze\",le=\"0.001\"} 0",
            "naba_http_request_duration_seconds_bucket{route=\"/v1/analyze\",le=\"0.0025\"} 0",
            "naba_http_request_duration_seconds_bucket{route=\"/v1/analyze\",le=\"0.005\"} 1",
            "naba_http_request_duration_seconds_bucket{route=\"/v1/analyze\",le=\"60\"} 1",
            "naba_http_request_duration_seconds_bucket{route=\"/v1/analyze\",le=\"+Inf\"} 1",
            "naba_http_request_duration_seconds_count{route=\"/v1/analyze\"} 1",
            "# TYPE naba_http_requests_in_flight gauge",
            "naba_http_requests_in_flight 0",
            // Cumulative: the 1-document call in every bucket, the 3-document call from le=4.
            "naba_batch_documents_bucket{model=\"ner\",le=\"1\"} 1",
            "naba_batch_documents_bucket{model=\"ner\",le=\"2\"} 1",
            "naba_batch_documents_bucket{model=\"ner\",le=\"4\"} 2",
            "naba_batch_documents_bucket{model=\"ner\",le=\"128\"} 2",
            "naba_batch_documents_bucket{model=\"ner\",le=\"+Inf\"} 2",
            "naba_batch_documents_count{model=\"ner\"} 2",
            "naba_batch_padded_tokens_bucket{model=\"ner\",le=\"64\"} 1",
            "naba_batch_padded_tokens_bucket{model=\"ner\",le=\"256\"} 1",
            "naba_batch_padded_tokens_bucket{model=\"ner\",le=\"512\"} 2",
            "naba_batch_padded_tokens_bucket{model=\"ner\",le=\"65536\"} 2",
            "naba_model_call_seconds_bucket{model=\"ner\",le=\"0.01\"} 1",
            "naba_model_call_seconds_bucket{model=\"ner\",le=\"0.025\"} 2",
            "# TYPE naba_tokens_processed_total counter",
            "naba_tokens_processed_total{model=\"ner\"} 140",
            "naba_documents_processed_total{model=\"ner\"} 4",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
        let sum = lines
            .iter()
            .find_map(|l| l.strip_prefix("naba_batch_documents_sum{model=\"ner\"} "))
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(sum, Some(4.0), "{text}");
    }

    #[test]
    fn every_series_keeps_its_name_and_type() {
        let m = Metrics::new();
        // A family with no samples is not written at all.
        assert_eq!(
            m.render()
                .lines()
                .filter(|l| l.starts_with("# TYPE"))
                .count(),
            1,
            "only the unlabelled in-flight gauge before anything is recorded"
        );
        m.request_started();
        m.request_finished("/health", "GET", 200, Duration::from_millis(1));
        m.batch("ner", 1, 64, 20, 0.01);
        m.queue_wait("ner", Duration::from_millis(1));
        m.queue_depth("ner", 0);
        m.rejected("ner", 1);
        m.cancelled("ner", 1);
        m.ready("ner", true);
        m.stream_consumed("s", 1);
        m.stream_labelled("s", 1);
        m.stream_dead_lettered("s", 1);
        m.stream_reclaimed("s", 1);
        m.stream_lag("s", 0);
        let text = m.render();
        for (name, kind) in [
            ("naba_http_requests_total", "counter"),
            ("naba_http_request_duration_seconds", "histogram"),
            ("naba_http_requests_in_flight", "gauge"),
            ("naba_batch_documents", "histogram"),
            ("naba_batch_padded_tokens", "histogram"),
            ("naba_model_call_seconds", "histogram"),
            ("naba_queue_wait_seconds", "histogram"),
            ("naba_queue_depth", "gauge"),
            ("naba_tokens_processed_total", "counter"),
            ("naba_documents_processed_total", "counter"),
            ("naba_queue_rejected_documents_total", "counter"),
            ("naba_queue_cancelled_documents_total", "counter"),
            ("naba_model_ready", "gauge"),
            ("naba_stream_consumed_total", "counter"),
            ("naba_stream_labelled_total", "counter"),
            ("naba_stream_dead_lettered_total", "counter"),
            ("naba_stream_reclaimed_total", "counter"),
            ("naba_stream_lag", "gauge"),
        ] {
            let want = format!("# TYPE {name} {kind}");
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        // No help text ends in two full stops.
        assert!(!text.contains(".."), "{text}");
    }

    #[test]
    fn queue_and_model_series() {
        let m = Metrics::new();
        m.queue_depth("topic", 5);
        m.queue_depth("topic", 2);
        m.queue_wait("topic", Duration::from_millis(30));
        m.rejected("topic", 3);
        m.rejected("topic", 1);
        m.cancelled("topic", 2);
        m.ready("topic", false);
        m.ready("topic", true);
        m.ready("ner", false);
        let text = m.render();
        let lines = lines(&text);
        for want in [
            "naba_queue_depth{model=\"topic\"} 2",
            "naba_queue_wait_seconds_bucket{model=\"topic\",le=\"0.025\"} 0",
            "naba_queue_wait_seconds_bucket{model=\"topic\",le=\"0.05\"} 1",
            "naba_queue_rejected_documents_total{model=\"topic\"} 4",
            "naba_queue_cancelled_documents_total{model=\"topic\"} 2",
            "naba_model_ready{model=\"topic\"} 1",
            "naba_model_ready{model=\"ner\"} 0",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn escapes_label_values() {
        let m = Metrics::new();
        m.batch("ner\"x\\y\nz", 1, 64, 20, 0.01);
        let text = m.render();
        assert!(
            text.lines()
                .any(|l| l == "naba_tokens_processed_total{model=\"ner\\\"x\\\\y\\nz\"} 20"),
            "{text}"
        );
        assert!(
            text.contains("naba_batch_documents_bucket{model=\"ner\\\"x\\\\y\\nz\",le=\"2\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn stream_worker_series() {
        let m = Metrics::new();
        assert!(!m.render().contains("naba_stream_lag{"));
        m.stream_consumed("naba:in", 5);
        m.stream_consumed("naba:in", 2);
        m.stream_labelled("naba:in", 6);
        m.stream_dead_lettered("naba:in", 1);
        m.stream_reclaimed("naba:in", 3);
        m.stream_lag("naba:in", 40);
        m.stream_lag("naba:in", 12);
        let text = m.render();
        let lines = lines(&text);
        for want in [
            "# TYPE naba_stream_consumed_total counter",
            "naba_stream_consumed_total{stream=\"naba:in\"} 7",
            "naba_stream_labelled_total{stream=\"naba:in\"} 6",
            "naba_stream_dead_lettered_total{stream=\"naba:in\"} 1",
            "naba_stream_reclaimed_total{stream=\"naba:in\"} 3",
            "# TYPE naba_stream_lag gauge",
            "naba_stream_lag{stream=\"naba:in\"} 12",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn instances_count_apart() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.rejected("ner", 2);
        assert!(a
            .render()
            .contains("naba_queue_rejected_documents_total{model=\"ner\"} 2"));
        assert!(!b.render().contains("naba_queue_rejected_documents_total{"));
    }
}
