//! `naba serve` as a process: SIGTERM during a load run loses no accepted request and exits 0;
//! models come from a config file, flags, env vars or a models directory; with none there is a
//! clear startup error. Plain HTTP/1.1 over std's TcpStream to loopback, one connection per
//! request.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const NABA: &str = env!("CARGO_BIN_EXE_naba");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../naba-tasks/tests/fixtures/parity")
        .join(name)
}

/// `naba serve` with a clean environment for model settings.
fn serve() -> Command {
    let mut c = Command::new(NABA);
    c.arg("serve").arg("--addr").arg("127.0.0.1:0");
    for var in [
        "NABA_ADDR",
        "NABA_CONFIG",
        "NABA_TOPIC_MODEL",
        "NABA_NER_MODEL",
        "NABA_STANCE_MODEL",
        "NABA_MODELS_DIR",
        "NABA_API_KEY",
    ] {
        c.env_remove(var);
    }
    c.env("NO_COLOR", "1");
    c
}

struct Running {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("naba serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.trim().to_string());
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("an address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "naba serve never said where it listens: {:?}",
                    log.lock().map(|l| l.clone())
                );
            }
        };
        let me = Self { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http(me.addr, "GET", "/ready", None, "ready"), Ok((200, _))) {
            assert!(Instant::now() < deadline, "not ready within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }

    fn sigterm(&self) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", self.child.id()))
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for exit; the exit code.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("naba serve did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request on its own connection; (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    request_id: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nx-request-id: {request_id}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn sigterm_during_load_loses_no_accepted_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "shutdown_grace_secs = 60\n\n[batching]\nmax_batch_documents = 8\n\n\
             [[models]]\nname = \"topic\"\ntask = \"topic\"\npath = {:?}\n\n\
             [[models]]\nname = \"stance\"\ntask = \"stance\"\npath = {:?}\n",
            fixture("xlmr-seq-cls").display().to_string(),
            fixture("bert-seq-cls").display().to_string()
        ),
    )
    .expect("config");
    let mut cmd = serve();
    cmd.arg("--config")
        .arg(&config)
        .env(
            "NABA_NER_MODEL",
            format!("ner={}", fixture("bert-token-cls").display()),
        )
        .env("NABA_LOG", "naba_server=debug");
    let mut server = Running::start(cmd);
    let (_, models) = http(server.addr, "GET", "/v1/models", None, "models").expect("models");
    for name in ["\"topic\"", "\"stance\"", "\"ner\""] {
        assert!(models.contains(name), "{name} missing from {models}");
    }

    let article =
        "أكد الكرملين أن موسكو مستعدة لمواصلة الحوار مع واشنطن حول قضايا الأمن. ".repeat(12);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..16 {
        let addr = server.addr;
        let article = article.clone();
        let stop = Arc::clone(&stop);
        clients.push(std::thread::spawn(move || {
            let mut answered: Vec<(String, u16, String)> = Vec::new();
            let mut refused = 0usize;
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0;
            while Instant::now() < deadline {
                let id = format!("c{c}-{n}");
                n += 1;
                let body = format!(
                    "{{\"documents\":[{{\"id\":\"{id}\",\"text\":{:?}}}],\"stance_targets\":[\"روسيا\"]}}",
                    article
                );
                match http(addr, "POST", "/v1/analyze", Some(&body), &id) {
                    Ok((status, body)) => answered.push((id, status, body)),
                    Err(_) => {
                        // Not accepted: the server has stopped listening.
                        refused += 1;
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            }
            (answered, refused)
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.sigterm();
    let code = server.wait(Duration::from_secs(60));
    let mut answered = Vec::new();
    let mut refused = 0;
    for c in clients {
        let (a, r) = c.join().expect("client thread");
        answered.extend(a);
        refused += r;
    }
    let log: Vec<String> = server.log().iter().map(|l| strip_ansi(l)).collect();
    assert_eq!(
        code,
        Some(0),
        "exit code after SIGTERM; log:\n{}",
        log.join("\n")
    );

    let accepted: BTreeSet<String> = log
        .iter()
        .filter(|l| l.contains("request received") && l.contains("/v1/analyze"))
        .filter_map(|l| l.split("id=").nth(1))
        .filter_map(|rest| rest.split([' ', '}', ':']).next())
        .map(str::to_string)
        .collect();
    let mut ok: BTreeSet<String> = BTreeSet::new();
    for (id, status, body) in &answered {
        assert_eq!(*status, 200, "{id}: {body}");
        assert!(
            body.contains(&format!("\"id\":\"{id}\"")),
            "{id} answered with {body}"
        );
        ok.insert(id.clone());
    }
    let lost: Vec<&String> = accepted.difference(&ok).collect();
    assert!(lost.is_empty(), "accepted but never answered: {lost:?}");
    assert!(ok.len() >= 16, "the load ran: {} answered", ok.len());
    let after_signal = log
        .iter()
        .position(|l| l.contains("shutting down"))
        .map(|i| {
            log[i..]
                .iter()
                .filter(|l| l.contains("request finished"))
                .count()
        })
        .unwrap_or(0);
    eprintln!(
        "shutdown under load: {} accepted, {} answered (200), {after_signal} finished after SIGTERM, \
         {refused} refused after the listener closed; exit code 0",
        accepted.len(),
        ok.len()
    );
}

#[test]
fn models_are_found_by_name_in_a_models_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, fixture_name) in [
        ("ner-tiny", "bert-token-cls"),
        ("topic-tiny", "xlmr-seq-cls"),
        ("stance-tiny", "bert-seq-cls"),
    ] {
        let to = dir.path().join(name);
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(fixture(fixture_name)).expect("fixture") {
            let from = entry.expect("entry").path();
            if let Some(file) = from.file_name() {
                std::fs::copy(&from, to.join(file)).expect("copy");
            }
        }
    }
    let mut cmd = serve();
    cmd.env("NABA_MODELS_DIR", dir.path());
    let mut server = Running::start(cmd);
    let (status, models) = http(server.addr, "GET", "/v1/models", None, "m").expect("models");
    assert_eq!(status, 200);
    for name in ["ner-tiny", "topic-tiny", "stance-tiny"] {
        assert!(models.contains(name), "{name} missing from {models}");
    }
    let (status, body) = http(
        server.addr,
        "POST",
        "/v1/analyze",
        Some("{\"text\": \"زار الوزير القاهرة\", \"stance_targets\": [\"مصر\"]}"),
        "a",
    )
    .expect("analyze");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"entities\"") && body.contains("\"stance\""),
        "{body}"
    );
    server.sigterm();
    assert_eq!(server.wait(Duration::from_secs(30)), Some(0));
}

#[test]
fn no_models_is_a_clear_startup_error() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = serve()
        .current_dir(empty.path())
        .env("NABA_CACHE", empty.path())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no models to serve"), "{stderr}");
    for hint in ["--ner-model", "--topic-model", "--stance-model", "--config"] {
        assert!(stderr.contains(hint), "{hint} not suggested: {stderr}");
    }
}

#[test]
fn a_model_that_cannot_load_stops_the_server_with_its_reason() {
    let empty = tempfile::tempdir().expect("tempdir");
    let mut child = serve()
        .arg("--ner-model")
        .arg(empty.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("naba serve kept running with a model that cannot load");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config.json"), "{stderr}");
}
