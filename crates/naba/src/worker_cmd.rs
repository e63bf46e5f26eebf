//! `naba worker`: label a Redis stream as one consumer of a consumer group. Any number of
//! workers, on any number of machines, share the stream; the worker itself is
//! `naba_server::stream`, onto the same batching queues `naba serve` uses.

use crate::serve_cmd::ModelArgs;
use anyhow::Result;
use clap::Args;
use naba_server::stream::{self, StreamConfig};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
#[command(
    after_help = "Input entries: `text` (required), `id` (optional, echoed), `targets` \
    (optional JSON array of stance targets), `tasks` (optional comma list). Each gets one \
    entry on --output with `source` (the input entry's id), `id` and `result` (the JSON object \
    /v1/analyze returns per document). Delivery is at least once: keep the first result per \
    `source`."
)]
pub struct WorkerArgs {
    /// Redis URL: redis://[user:password@]host:port[/db].
    #[arg(long, env = "NABA_REDIS", hide_env_values = true)]
    pub redis: String,
    /// The input stream.
    #[arg(long, env = "NABA_STREAM")]
    pub stream: String,
    /// The consumer group; created with the stream when missing, reading from its start.
    #[arg(long, env = "NABA_GROUP", default_value = "naba")]
    pub group: String,
    /// This worker's name in the group, unique per worker [default: the host name]. A worker
    /// restarted under the same name finishes its own pending entries first.
    #[arg(long, env = "NABA_CONSUMER")]
    pub consumer: Option<String>,
    /// The stream results go to.
    #[arg(long, env = "NABA_OUTPUT")]
    pub output: String,
    /// Tasks for entries that name none (comma list of topic, entities, stance) [default:
    /// topic and entities where a model does them, stance where the entry has targets].
    #[arg(long, env = "NABA_TASKS")]
    pub tasks: Option<String>,
    /// Entries read and labelled together.
    #[arg(long, env = "NABA_BATCH", default_value_t = 32)]
    pub batch: usize,
    /// Claim entries pending this long with another (dead or stuck) consumer: 90s, 5m, 500ms.
    #[arg(long, env = "NABA_CLAIM_IDLE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub claim_idle: Duration,
    /// Deliveries after which an entry goes to the dead-letter stream instead.
    #[arg(long, env = "NABA_MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: usize,
    /// Where entries that cannot be labelled go, with an `error` field [default: STREAM:dead].
    #[arg(long, env = "NABA_DEAD_LETTER")]
    pub dead_letter: Option<String>,
    /// Serve Prometheus metrics (/metrics) and probes (/health, /ready) here.
    #[arg(long, env = "NABA_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Longest wait for new entries in one read; a shutdown waits at most this long on a read.
    #[arg(long, env = "NABA_BLOCK", default_value = "1s", value_parser = humantime::parse_duration)]
    pub block: Duration,
    #[command(flatten)]
    pub models: ModelArgs,
}

pub fn run(args: WorkerArgs) -> Result<ExitCode> {
    let tasks = match args.tasks.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(list) => Some(stream::parse_tasks(list).map_err(|e| anyhow::anyhow!("--tasks: {e}"))?),
    };
    let config = StreamConfig {
        dead_letter: args
            .dead_letter
            .unwrap_or_else(|| format!("{}:dead", args.stream)),
        consumer: args.consumer.unwrap_or_else(host_name),
        redis_url: args.redis,
        stream: args.stream,
        group: args.group,
        output: args.output,
        tasks,
        batch: args.batch,
        claim_idle: args.claim_idle,
        max_deliveries: args.max_deliveries,
        block: args.block,
        metrics_addr: args.metrics_addr,
    };
    let server = args.models.config()?;
    let report = naba_server::run_worker_blocking(server, config)?;
    eprintln!(
        "naba worker: stopped; {} consumed, {} labelled, {} dead-lettered, {} claimed from others",
        report.consumed, report.labelled, report.dead_lettered, report.reclaimed
    );
    Ok(ExitCode::SUCCESS)
}

/// The host name (a pod's name under Kubernetes), else `naba-PID`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("naba-{}", std::process::id()))
}
