//! What dynamic batching buys: the same load (N clients sending `/v1/analyze` back to back)
//! against a server with batching on and one with batching off (one document per model call),
//! throughput and latency of each, and the ratio.
//!
//! ```text
//! cargo run -p naba-server --example bench_batching -- [--seconds 20] [--clients 32] [--docs 2]
//!     [--ner-model DIR] [--topic-model DIR] [--stance-model DIR]
//! ```
//! Without model flags it uses the tiny parity fixtures of naba-tasks.

#[allow(dead_code)]
#[path = "../tests/common/load.rs"]
mod load;

use naba_server::{ModelEntry, ServerConfig, Task};
use std::net::SocketAddr;
use std::time::Duration;

const SENTENCES: &[&str] = &[
    "أجرى الرئيس الأمريكي اتصالا هاتفيا مع نظيره الروسي.",
    "قال البيت الأبيض إن المحادثات تناولت الحد من التسلح.",
    "ارتفعت أسعار النفط في الأسواق العالمية صباح اليوم.",
    "فاز المنتخب المغربي على نظيره المصري بهدفين دون رد.",
    "أعلنت وزارة الصحة تسجيل إصابات جديدة في القاهرة.",
    "اجتمع وزراء خارجية الدول العربية في الرياض لبحث الأزمة.",
    "أكد الكرملين أن موسكو مستعدة لمواصلة الحوار مع واشنطن حول قضايا الأمن الاستراتيجي.",
    "وتوقع خبراء اقتصاديون أن يواصل البنك المركزي رفع أسعار الفائدة خلال الربع المقبل من العام.",
];

struct Args {
    seconds: f64,
    clients: usize,
    docs: usize,
    ner: String,
    topic: String,
    stance: String,
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../naba-tasks/tests/fixtures/parity/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 20.0,
        clients: 32,
        docs: 2,
        ner: fixture("bert-token-cls"),
        topic: fixture("xlmr-seq-cls"),
        stance: fixture("bert-seq-cls"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--clients" => a.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--docs" => a.docs = value()?.parse().map_err(|e| format!("--docs: {e}"))?,
            "--ner-model" => a.ner = value()?,
            "--topic-model" => a.topic = value()?,
            "--stance-model" => a.stance = value()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.clients == 0 || a.docs == 0 || a.seconds.is_nan() || a.seconds <= 0.0 {
        return Err("--clients, --docs and --seconds must be positive".into());
    }
    Ok(a)
}

fn config(args: &Args, batching: bool) -> ServerConfig {
    let entry = |name: &str, task, path: &str| ModelEntry {
        name: name.into(),
        task,
        path: path.into(),
        revision: None,
        default: true,
        stride: None,
        window: None,
        method: None,
    };
    let mut c = ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        models: vec![
            entry("ner", Task::Entities, &args.ner),
            entry("topic", Task::Topic, &args.topic),
            entry("stance", Task::Stance, &args.stance),
        ],
        ..ServerConfig::default()
    };
    c.batching.enabled = batching;
    c.request_timeout_secs = 300.0;
    c
}

async fn measure(args: &Args, batching: bool) -> anyhow::Result<load::LoadReport> {
    let server = naba_server::bind(config(args, batching)).await?;
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opts = load::LoadOptions {
        clients: args.clients,
        duration: Duration::from_secs_f64(args.seconds),
        docs_per_request: args.docs,
        texts: SENTENCES.iter().map(|s| s.to_string()).collect(),
        target: "روسيا".into(),
        api_key: None,
    };
    // A short warm-up, then the measured run.
    let warm = load::LoadOptions {
        duration: Duration::from_secs(1),
        ..opts.clone()
    };
    load::run(&base, &warm).await;
    let report = load::run(&base, &opts).await;
    let _ = stop.send(());
    running.await??;
    Ok(report)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args().map_err(|e| anyhow::anyhow!(e))?;
    eprintln!(
        "{} clients x {} s, {} documents per request, topic + entities + stance",
        args.clients, args.seconds, args.docs
    );
    let on = measure(&args, true).await?;
    println!("batching on : {}", on.summary());
    let off = measure(&args, false).await?;
    println!("batching off: {}", off.summary());
    let ratio = on.documents_per_sec() / off.documents_per_sec().max(1e-9);
    println!("throughput ratio (on / off): {ratio:.2}x");
    if on.ok() != on.requests || off.ok() != off.requests || on.mismatches + off.mismatches > 0 {
        anyhow::bail!("some requests failed: {:?} {:?}", on.problems, off.problems);
    }
    Ok(())
}
