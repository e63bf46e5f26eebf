//! `naba worker` against a real `redis-server` (Debian's package; `.ci/run` installs it) that
//! each test starts on a free loopback port and stops: a pool of three with one killed mid-run
//! loses nothing and dead-letters the poison; a worker restarted after SIGKILL finishes its own
//! pending entries first; SIGTERM leaves nothing in hand unacknowledged; and the pool's
//! throughput printed beside `naba predict` on the same messages. The models are the tiny
//! random checkpoints of naba-tasks' parity fixtures: what is tested is delivery, not labels.
//!
//! Set `NABA_SKIP_REDIS=1` to skip these where no redis-server can be installed.

use redis::streams::{StreamId, StreamRangeReply};
use redis::{Commands, Connection, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NABA: &str = env!("CARGO_BIN_EXE_naba");
const GROUP: &str = "naba";
const INPUT: &str = "posts";
const OUTPUT: &str = "labels";
const DEAD: &str = "posts:dead";

const SENTENCES: &[&str] = &[
    "أجرى الرئيس الأمريكي اتصالا هاتفيا مع نظيره الروسي.",
    "قال البيت الأبيض إن المحادثات تناولت الحد من التسلح.",
    "ارتفعت أسعار النفط في الأسواق العالمية صباح اليوم.",
    "فاز المنتخب المغربي على نظيره المصري بهدفين دون رد.",
    "أعلنت وزارة الصحة تسجيل إصابات جديدة في القاهرة.",
    "اجتمع وزراء خارجية الدول العربية في الرياض لبحث الأزمة.",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../naba-tasks/tests/fixtures/parity")
        .join(name)
}

fn skip() -> bool {
    if std::env::var_os("NABA_SKIP_REDIS").is_some() {
        eprintln!("NOTICE: NABA_SKIP_REDIS is set; redis worker test skipped");
        return true;
    }
    false
}

/// A redis-server of our own on a free port, stopped on drop.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::on_port(port)
    }

    /// Stops the server and starts an empty one on the same port.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        std::thread::sleep(Duration::from_millis(300));
        *self = Self::on_port(port);
    }

    fn on_port(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it (Debian: apt-get install \
                     redis-server; .ci/run does) or set NABA_SKIP_REDIS=1"
                )
            });
        let me = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = redis::Client::open(me.url.as_str()).and_then(|c| c.get_connection())
            {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return me;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn conn(&self) -> Connection {
        redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("a connection")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an input entry holds, and what a worker must make of it.
#[derive(Debug, Clone)]
enum Message {
    Good(String),
    MissingText,
    EmptyText,
    BadTargets,
}

/// `n` messages with ids `m0..`; every 100 messages three are poison.
fn messages(n: usize) -> Vec<(String, Message)> {
    (0..n)
        .map(|i| {
            let m = match i % 100 {
                7 => Message::MissingText,
                37 => Message::EmptyText,
                67 => Message::BadTargets,
                _ => Message::Good(format!("{} ({i})", SENTENCES[i % SENTENCES.len()])),
            };
            (format!("m{i}"), m)
        })
        .collect()
}

/// Adds the messages; returns stream entry id -> message id.
fn seed(con: &mut Connection, msgs: &[(String, Message)]) -> BTreeMap<String, String> {
    let mut pipe = redis::pipe();
    for (id, m) in msgs {
        let fields: Vec<(&str, &str)> = match m {
            Message::Good(text) => vec![("id", id), ("text", text)],
            Message::MissingText => vec![("id", id)],
            Message::EmptyText => vec![("id", id), ("text", "  ")],
            Message::BadTargets => vec![("id", id), ("text", "نص"), ("targets", "[unclosed")],
        };
        pipe.xadd(INPUT, "*", &fields);
    }
    let ids: Vec<String> = pipe.query(con).expect("XADD");
    ids.into_iter()
        .zip(msgs.iter().map(|(id, _)| id.clone()))
        .collect()
}

fn text(e: &StreamId, field: &str) -> Option<String> {
    match e.map.get(field) {
        Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

fn entries(con: &mut Connection, stream: &str) -> Vec<StreamId> {
    let r: StreamRangeReply = con.xrange_all(stream).expect("XRANGE");
    r.ids
}

/// Entries pending with `consumer` (all consumers when `None`); none before the group exists.
fn pending(con: &mut Connection, consumer: Option<&str>) -> Vec<String> {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(INPUT).arg(GROUP).arg("-").arg("+").arg(100_000);
    if let Some(c) = consumer {
        cmd.arg(c);
    }
    match cmd.query::<redis::streams::StreamPendingCountReply>(con) {
        Ok(reply) => reply.ids.into_iter().map(|p| p.id).collect(),
        Err(e) if e.code() == Some("NOGROUP") => Vec::new(),
        Err(e) => panic!("XPENDING: {e}"),
    }
}

struct Worker {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(redis: &Redis, consumer: &str, extra: &[&str]) -> Self {
        let mut cmd = Command::new(NABA);
        cmd.args(["--threads", "1", "worker", "--redis", &redis.url])
            .args(["--stream", INPUT, "--group", GROUP, "--output", OUTPUT])
            .args(["--consumer", consumer, "--dead-letter", DEAD])
            .args(["--block", "200ms"])
            .arg("--topic-model")
            .arg(fixture("xlmr-seq-cls"))
            .arg("--ner-model")
            .arg(fixture("bert-token-cls"))
            .arg("--stance-model")
            .arg(fixture("bert-seq-cls"))
            .args(extra);
        for var in ["NABA_CONFIG", "NABA_MODELS_DIR", "NABA_TASKS", "NABA_BATCH"] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("naba worker starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut l) = sink.lock() {
                        l.push(line);
                    }
                }
            });
        }
        Self { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// SIGTERM, then the exit code (waits up to 30 s).
    fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "worker still running 30 s after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done` holds, checking every 20 ms; panics with `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Results by the source entry they answer; and how many extra (duplicate) results there were.
fn results_by_source(con: &mut Connection) -> (BTreeMap<String, Vec<StreamId>>, usize) {
    let mut by: BTreeMap<String, Vec<StreamId>> = BTreeMap::new();
    for e in entries(con, OUTPUT) {
        let source = text(&e, "source").expect("every result names its source");
        by.entry(source).or_default().push(e);
    }
    let duplicates = by.values().map(|v| v.len() - 1).sum();
    (by, duplicates)
}

#[test]
fn a_pool_of_three_loses_nothing_when_one_is_killed_and_dead_letters_the_poison() {
    if skip() {
        return;
    }
    let redis = Redis::start();
    let mut con = redis.conn();
    let msgs = messages(2000);
    let by_entry = seed(&mut con, &msgs);
    let kind: BTreeMap<&str, &Message> = msgs.iter().map(|(id, m)| (id.as_str(), m)).collect();
    let good = msgs
        .iter()
        .filter(|(_, m)| matches!(m, Message::Good(_)))
        .count();
    let poison = msgs.len() - good;
    let flags = [
        "--batch",
        "16",
        "--claim-idle",
        "2s",
        "--tasks",
        "topic,entities",
    ];
    let mut w1 = Worker::start(&redis, "w1", &flags);
    let mut w2 = Worker::start(&redis, "w2", &flags);
    let mut w3 = Worker::start(&redis, "w3", &flags);

    // Kill w2 while it holds entries it has not acknowledged.
    wait_for(Duration::from_secs(120), "w2 to take entries", || {
        !pending(&mut con, Some("w2")).is_empty()
    });
    let _ = w2.child.kill();
    let _ = w2.child.wait();
    let in_hand = pending(&mut con, Some("w2"));
    let done_at_kill = entries(&mut con, OUTPUT).len();
    assert!(!in_hand.is_empty());
    eprintln!(
        "killed w2 (SIGKILL) holding {} unacknowledged entries; {done_at_kill} results written so far",
        in_hand.len()
    );

    wait_for(Duration::from_secs(300), "every entry answered", || {
        let (results, _) = results_by_source(&mut con);
        let dead: usize = con.xlen(DEAD).unwrap_or(0);
        results.len() >= good && dead >= poison
    });
    assert_eq!(w1.terminate(), Some(0), "{}", w1.log());
    assert_eq!(w3.terminate(), Some(0), "{}", w3.log());

    let (results, duplicates) = results_by_source(&mut con);
    eprintln!(
        "{} inputs: {} results for {} distinct inputs, {duplicates} duplicates; {poison} poison",
        msgs.len(),
        results.values().map(Vec::len).sum::<usize>(),
        results.len()
    );
    for (entry, id) in &by_entry {
        let m = kind[id.as_str()];
        match (m, results.get(entry)) {
            (Message::Good(_), Some(rs)) => {
                for r in rs {
                    assert_eq!(text(r, "id").as_deref(), Some(id.as_str()));
                    let result: serde_json::Value =
                        serde_json::from_str(&text(r, "result").expect("a result field"))
                            .expect("JSON");
                    assert_eq!(result["id"], id.as_str(), "{result}");
                    assert!(result["topic"]["label"].is_string(), "{result}");
                    assert!(result["entities"].is_array(), "{result}");
                }
            }
            (Message::Good(_), None) => panic!("{id} ({entry}) was lost: no result"),
            (_, Some(_)) => panic!("poison {id} ({m:?}) got a result"),
            (_, None) => {}
        }
    }
    let dead = entries(&mut con, DEAD);
    let dead_sources: BTreeSet<String> = dead.iter().filter_map(|d| text(d, "source")).collect();
    for entry in &in_hand {
        assert!(
            results.contains_key(entry) || dead_sources.contains(entry),
            "{entry}, held by w2 when it was killed, was lost"
        );
    }
    assert_eq!(dead.len(), poison, "one dead letter per poison message");
    for d in &dead {
        let id = text(d, "id").expect("the dead letter keeps the entry's fields");
        let error = text(d, "error").expect("an error field");
        let want = match kind[id.as_str()] {
            Message::MissingText => "no `text` field",
            Message::EmptyText => "empty",
            Message::BadTargets => "`targets` is not a JSON array",
            Message::Good(_) => panic!("{id} is not poison but was dead-lettered: {error}"),
        };
        assert!(error.contains(want), "{id}: {error}");
        assert!(text(d, "source").is_some_and(|s| by_entry.contains_key(&s)));
    }
    assert!(
        pending(&mut con, None).is_empty(),
        "every entry acknowledged"
    );
}

#[test]
fn a_restarted_worker_finishes_its_own_pending_entries_first() {
    if skip() {
        return;
    }
    let redis = Redis::start();
    let mut con = redis.conn();
    let msgs: Vec<(String, Message)> = messages(600)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Good(_)))
        .collect();
    seed(&mut con, &msgs);
    // Nobody else claims: what w1 held can only come back to w1.
    let flags = ["--batch", "40", "--claim-idle", "1h", "--tasks", "topic"];
    // The kill can land just after a batch was acknowledged; then w1 holds nothing and the
    // kill is tried again on a fresh w1 (which reads on from where the group is).
    let mut held = BTreeSet::new();
    for _ in 0..5 {
        let mut w1 = Worker::start(&redis, "w1", &flags);
        wait_for(Duration::from_secs(120), "w1 to hold entries", || {
            !pending(&mut con, Some("w1")).is_empty()
                && con.xlen::<_, usize>(OUTPUT).unwrap_or(0) > 0
        });
        let _ = w1.child.kill();
        let _ = w1.child.wait();
        held = pending(&mut con, Some("w1")).into_iter().collect();
        if !held.is_empty() {
            break;
        }
    }
    let before = entries(&mut con, OUTPUT).len();
    assert!(
        !held.is_empty() && before < msgs.len(),
        "w1 was never killed holding entries"
    );

    let mut again = Worker::start(&redis, "w1", &flags);
    wait_for(Duration::from_secs(120), "every entry answered", || {
        results_by_source(&mut con).0.len() >= msgs.len()
    });
    assert_eq!(again.terminate(), Some(0), "{}", again.log());
    let after: Vec<String> = entries(&mut con, OUTPUT)
        .iter()
        .skip(before)
        .map(|e| text(e, "source").expect("source"))
        .collect();
    let first: BTreeSet<String> = after.iter().take(held.len()).cloned().collect();
    assert_eq!(
        first, held,
        "the restarted worker's first results are the entries it held when killed"
    );
    eprintln!(
        "restart: {} held entries labelled first, then {} new",
        held.len(),
        after.len() - held.len()
    );
}

#[test]
fn sigterm_finishes_the_batch_in_hand_and_exits_0() {
    if skip() {
        return;
    }
    let redis = Redis::start();
    let mut con = redis.conn();
    seed(&mut con, &messages(1500));
    let mut w = Worker::start(
        &redis,
        "w1",
        &["--batch", "50", "--tasks", "topic,entities"],
    );
    wait_for(Duration::from_secs(120), "w1 mid-run", || {
        !pending(&mut con, Some("w1")).is_empty() && con.xlen::<_, usize>(OUTPUT).unwrap_or(0) > 0
    });
    assert_eq!(w.terminate(), Some(0), "{}", w.log());
    assert!(
        pending(&mut con, None).is_empty(),
        "entries left unacknowledged after SIGTERM"
    );
    let groups: redis::streams::StreamInfoGroupsReply = con.xinfo_groups(INPUT).expect("XINFO");
    let read = groups.groups[0]
        .entries_read
        .expect("entries-read (Redis 7)");
    let labelled: usize = con.xlen(OUTPUT).expect("XLEN");
    let dead: usize = con.xlen(DEAD).expect("XLEN");
    assert_eq!(
        labelled + dead,
        read,
        "every entry delivered before SIGTERM was labelled or dead-lettered"
    );
    assert!(
        read < 1500,
        "SIGTERM came after the end; the test proves nothing"
    );
    eprintln!("SIGTERM after {read} of 1500 entries: {labelled} labelled, {dead} dead-lettered");
}

#[test]
fn pool_throughput_beside_naba_predict_on_the_same_messages() {
    if skip() {
        return;
    }
    let redis = Redis::start();
    let mut con = redis.conn();
    let msgs: Vec<(String, Message)> = messages(1000)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Good(_)))
        .collect();
    let texts: Vec<&str> = msgs
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Good(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("messages.txt");
    std::fs::write(&input, texts.join("\n")).expect("write");

    let started = Instant::now();
    let out = Command::new(NABA)
        .args(["--threads", "2", "predict", "--task", "topic", "--model"])
        .arg(fixture("xlmr-seq-cls"))
        .arg("--input")
        .arg(&input)
        .output()
        .expect("naba predict runs");
    let predict_secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    seed(&mut con, &msgs);
    let started = Instant::now();
    let flags = ["--batch", "32", "--tasks", "topic"];
    let mut pool: Vec<Worker> = ["w1", "w2"]
        .iter()
        .map(|c| Worker::start(&redis, c, &flags))
        .collect();
    wait_for(Duration::from_secs(120), "every entry answered", || {
        con.xlen::<_, usize>(OUTPUT).unwrap_or(0) >= msgs.len()
    });
    let pool_secs = started.elapsed().as_secs_f64();
    for w in &mut pool {
        assert_eq!(w.terminate(), Some(0), "{}", w.log());
    }
    let n = msgs.len() as f64;
    eprintln!(
        "{} messages, topic, start-up included: naba predict {predict_secs:.2} s ({:.0}/s); \
         pool of 2 workers {pool_secs:.2} s ({:.0}/s); pool / predict = {:.2}x",
        msgs.len(),
        n / predict_secs,
        n / pool_secs,
        predict_secs / pool_secs
    );
}

#[test]
fn an_entry_delivered_too_often_is_dead_lettered_not_tried_again() {
    if skip() {
        return;
    }
    let redis = Redis::start();
    let mut con = redis.conn();
    let msgs: Vec<(String, Message)> = messages(3)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Good(_)))
        .collect();
    let by_entry = seed(&mut con, &msgs);
    let (tired, _) = by_entry.iter().next().expect("an entry");
    // A consumer that took the first entry and died; its delivery count says it was tried 4
    // times already.
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", INPUT, GROUP, "0"])
        .query(&mut con)
        .expect("XGROUP");
    let _: Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", GROUP, "ghost", "COUNT", "1", "STREAMS", INPUT, ">"])
        .query(&mut con)
        .expect("XREADGROUP");
    let _: Value = redis::cmd("XCLAIM")
        .arg(&[
            INPUT,
            GROUP,
            "ghost",
            "0",
            tired.as_str(),
            "RETRYCOUNT",
            "4",
        ])
        .query(&mut con)
        .expect("XCLAIM");
    std::thread::sleep(Duration::from_millis(300));
    let mut w = Worker::start(
        &redis,
        "w1",
        &[
            "--claim-idle",
            "200ms",
            "--max-deliveries",
            "4",
            "--tasks",
            "topic",
        ],
    );
    wait_for(
        Duration::from_secs(60),
        "the tired entry dead-lettered",
        || {
            con.xlen::<_, usize>(DEAD).unwrap_or(0) >= 1
                && con.xlen::<_, usize>(OUTPUT).unwrap_or(0) >= msgs.len() - 1
        },
    );
    assert_eq!(w.terminate(), Some(0), "{}", w.log());
    let dead = entries(&mut con, DEAD);
    assert_eq!(dead.len(), 1);
    assert_eq!(text(&dead[0], "source").as_deref(), Some(tired.as_str()));
    let error = text(&dead[0], "error").unwrap_or_default();
    assert!(
        error.contains("delivered 5 times") && error.contains("--max-deliveries 4"),
        "{error}"
    );
    assert!(!results_by_source(&mut con).0.contains_key(tired));
    assert!(pending(&mut con, None).is_empty());
}

#[test]
fn a_worker_waits_out_a_redis_restart_and_carries_on() {
    if skip() {
        return;
    }
    let mut redis = Redis::start();
    let mut con = redis.conn();
    let msgs: Vec<(String, Message)> = messages(40)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Good(_)))
        .collect();
    seed(&mut con, &msgs[..20]);
    let mut w = Worker::start(&redis, "w1", &["--tasks", "topic"]);
    wait_for(Duration::from_secs(60), "the first messages", || {
        con.xlen::<_, usize>(OUTPUT).unwrap_or(0) >= 20
    });
    // The server goes away and comes back empty (no persistence in these tests).
    redis.restart();
    let mut con = redis.conn();
    seed(&mut con, &msgs[20..]);
    wait_for(
        Duration::from_secs(60),
        "the messages sent after the restart",
        || con.xlen::<_, usize>(OUTPUT).unwrap_or(0) >= msgs.len() - 20,
    );
    assert_eq!(w.terminate(), Some(0), "{}", w.log());
    assert!(w.log().contains("reconnected"), "{}", w.log());
}

#[test]
fn odd_entries_are_labelled_or_dead_lettered_and_a_wrong_output_key_is_refused() {
    if skip() {
        return;
    }
    let redis = Redis::start();
    let mut con = redis.conn();
    let long = "ن".repeat(80);
    let mut pipe = redis::pipe();
    // A field name that is not UTF-8 beside a good text: labelled.
    pipe.xadd(
        INPUT,
        "*",
        &[
            (&b"\xff\xfe"[..], &b"x"[..]),
            (b"text", "خبر قصير".as_bytes()),
        ],
    );
    // A text that is not UTF-8, and one over --max-chars: dead-lettered.
    pipe.xadd(INPUT, "*", &[(&b"text"[..], &b"\xff\xfe\xfd"[..])]);
    pipe.xadd(INPUT, "*", &[("text", long.as_str())]);
    let ids: Vec<String> = pipe.query(&mut con).expect("XADD");

    // An output key that is not a stream: refused at start, before anything is read.
    let _: () = con.set("not-a-stream", "x").expect("SET");
    let out = Command::new(NABA)
        .args(["worker", "--redis", &redis.url, "--stream", INPUT])
        .args(["--output", "not-a-stream", "--consumer", "w0"])
        .arg("--topic-model")
        .arg(fixture("xlmr-seq-cls"))
        .output()
        .expect("naba worker runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--output `not-a-stream` holds a Redis string"),
        "{err}"
    );
    assert!(pending(&mut con, None).is_empty(), "nothing was read");

    let mut w = Worker::start(&redis, "w1", &["--tasks", "topic", "--max-chars", "50"]);
    wait_for(Duration::from_secs(60), "all three answered", || {
        con.xlen::<_, usize>(OUTPUT).unwrap_or(0) + con.xlen::<_, usize>(DEAD).unwrap_or(0) >= 3
    });
    assert_eq!(w.terminate(), Some(0), "{}", w.log());
    let (results, _) = results_by_source(&mut con);
    assert!(
        results.contains_key(&ids[0]),
        "the odd field name did not stop labelling"
    );
    let dead: BTreeMap<String, String> = entries(&mut con, DEAD)
        .iter()
        .filter_map(|d| Some((text(d, "source")?, text(d, "error")?)))
        .collect();
    assert!(dead[&ids[1]].contains("not UTF-8"), "{dead:?}");
    assert!(dead[&ids[2]].contains("limit of 50"), "{dead:?}");
}

#[test]
fn pending_entries_deleted_from_the_stream_are_acknowledged_not_lost_track_of() {
    if skip() {
        return;
    }
    let redis = Redis::start();
    let mut con = redis.conn();
    let msgs: Vec<(String, Message)> = messages(30)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Good(_)))
        .collect();
    let by_entry = seed(&mut con, &msgs);
    let entry_ids: Vec<&String> = by_entry.keys().collect();
    // w1 took every entry and died; then the first 12 were deleted from the stream (more than
    // a --batch of 5: a whole page of deleted entries must not end the pending scan).
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", INPUT, GROUP, "0"])
        .query(&mut con)
        .expect("XGROUP");
    let _: Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", GROUP, "w1", "STREAMS", INPUT, ">"])
        .query(&mut con)
        .expect("XREADGROUP");
    for id in &entry_ids[..12] {
        let _: usize = con.xdel(INPUT, &[id.as_str()]).expect("XDEL");
    }
    let mut w = Worker::start(&redis, "w1", &["--tasks", "topic", "--batch", "5"]);
    wait_for(Duration::from_secs(60), "the surviving entries", || {
        con.xlen::<_, usize>(OUTPUT).unwrap_or(0) >= msgs.len() - 12
    });
    assert_eq!(w.terminate(), Some(0), "{}", w.log());
    let (results, _) = results_by_source(&mut con);
    for id in &entry_ids[12..] {
        assert!(results.contains_key(*id), "{id} was not labelled");
    }
    assert!(
        pending(&mut con, None).is_empty(),
        "deleted entries left pending"
    );
}
