//! A real server on a loopback port with the tiny random checkpoints of naba-tasks' parity
//! fixtures: `bert-token-cls` for entities, `xlmr-seq-cls` (4 labels) for topic,
//! `bert-seq-cls` (agree / disagree / other) for stance. Their predictions are random but
//! deterministic, and their 64-token window makes long texts run in many windows.
#![allow(dead_code)]

pub mod load;

use naba_server::{ModelEntry, ServerConfig, Task};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn fixture(name: &str) -> String {
    format!(
        "{}/../naba-tasks/tests/fixtures/parity/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A copy of a fixture model in a temporary directory, for a test to put files beside.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in std::fs::read_dir(fixture(name)).expect("fixture") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, dir.path().join(f.file_name().expect("name"))).expect("copy");
    }
    dir
}

pub fn entry(name: &str, task: Task, fixture_name: &str) -> ModelEntry {
    ModelEntry {
        name: name.into(),
        task,
        path: fixture(fixture_name),
        revision: None,
        default: false,
        stride: None,
        window: None,
        method: None,
    }
}

/// Three tasks, plus a second topic model (`topic-3`, the 3-label checkpoint) picked by name.
pub fn config() -> ServerConfig {
    ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        models: vec![
            entry("ner", Task::Entities, "bert-token-cls"),
            entry("topic", Task::Topic, "xlmr-seq-cls"),
            entry("topic-3", Task::Topic, "bert-seq-cls"),
            entry("stance", Task::Stance, "bert-seq-cls"),
        ],
        ..ServerConfig::default()
    }
}

/// The example articles in ../shared/examples, if that checkout is there.
pub fn example_articles() -> Vec<(String, String)> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/examples/"
    ));
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        paths.sort();
        for p in paths {
            if let Ok(text) = std::fs::read_to_string(&p) {
                out.push((p.display().to_string(), text));
            }
        }
    }
    out
}

/// Short Arabic news sentences for load tests (written for these tests).
pub const SENTENCES: &[&str] = &[
    "أجرى الرئيس الأمريكي اتصالا هاتفيا مع نظيره الروسي.",
    "قال البيت الأبيض إن المحادثات تناولت الحد من التسلح.",
    "ارتفعت أسعار النفط في الأسواق العالمية صباح اليوم.",
    "فاز المنتخب المغربي على نظيره المصري بهدفين دون رد.",
    "أعلنت وزارة الصحة تسجيل إصابات جديدة في القاهرة.",
    "اجتمع وزراء خارجية الدول العربية في الرياض لبحث الأزمة.",
    "أكد الكرملين أن موسكو مستعدة لمواصلة الحوار مع واشنطن حول قضايا الأمن الاستراتيجي.",
    "وتوقع خبراء اقتصاديون أن يواصل البنك المركزي رفع أسعار الفائدة خلال الربع المقبل من العام.",
];

pub struct TestServer {
    pub base: String,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Binds, serves in this runtime, waits for `/ready`.
    pub async fn start(config: ServerConfig) -> Self {
        let server = naba_server::bind(config).await.expect("server binds");
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let me = Self {
            base: format!("http://{addr}"),
            addr,
            stop: Some(tx),
            handle: Some(handle),
        };
        me.wait_ready().await;
        me
    }

    pub async fn wait_ready(&self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(self.url("/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Graceful shutdown; returns what `Server::run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.expect("server task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()
        .expect("client")
}

/// The server's Prometheus text.
pub async fn metrics_text(server: &TestServer) -> String {
    client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// `text[start..end]` in Unicode characters.
pub fn char_slice(text: &str, start: usize, end: usize) -> Option<String> {
    if start > end {
        return None;
    }
    let chars: Vec<char> = text.chars().collect();
    chars.get(start..end).map(|c| c.iter().collect())
}
