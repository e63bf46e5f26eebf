//! The stream door: a worker in a Redis Streams consumer group. It reads entries from one
//! stream, puts each on the same per-model batching queues the HTTP routes use
//! ([`analysis::execute`]), and writes one result entry per input to an output stream.
//!
//! Delivery is at least once. A result is added and its input acknowledged in one MULTI/EXEC,
//! so a crash between the two can neither lose a result nor acknowledge an unlabelled entry.
//! Entries a worker took and never acknowledged (it died, or the model failed) stay pending in
//! the group: the worker re-reads its own pending entries when it starts, and every worker
//! periodically claims entries idle longer than `claim_idle` from the others (XAUTOCLAIM). A
//! slow worker whose entry was claimed meanwhile may still write its result, so a consumer can
//! see a second result with the same `source`; keeping the first per `source` drops it.
//!
//! An entry that cannot be labelled as it is (no `text`, bad `targets`, a text over the limit)
//! or that was delivered more than `max_deliveries` times goes to the dead-letter stream with
//! its fields and an `error` field, and is acknowledged: one bad message never stops the pool.

use crate::analysis::{self, Plan};
use crate::config::{ServerConfig, Task};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::schema::{DocId, DocumentIn, ModelChoice, Options};
use anyhow::{bail, Context, Result};
use axum::http::StatusCode;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamPendingCountReply;
use redis::{AsyncConnectionConfig, Value};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the worker reads, writes and how it shares the group with others.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub redis_url: String,
    /// The input stream.
    pub stream: String,
    /// The consumer group; created (with the stream) when missing, reading from the start.
    pub group: String,
    /// This worker's name in the group; a restarted worker with the same name finishes its own
    /// pending entries first.
    pub consumer: String,
    /// The stream results go to.
    pub output: String,
    /// Tasks for entries that name none; `None`: topic and entities where a model does them,
    /// stance where the entry has targets.
    pub tasks: Option<Vec<Task>>,
    /// Entries read (and labelled together) at a time.
    pub batch: usize,
    /// Entries pending this long with any consumer are claimed by this one.
    pub claim_idle: Duration,
    /// Deliveries after which an entry is dead-lettered instead of tried again.
    pub max_deliveries: usize,
    /// Where entries that cannot be labelled go.
    pub dead_letter: String,
    /// Longest wait for new entries in one read; also the longest a shutdown waits on a read.
    pub block: Duration,
    /// Serve `/metrics`, `/health` and `/ready` here.
    pub metrics_addr: Option<SocketAddr>,
}

impl StreamConfig {
    pub fn validate(&self) -> Result<()> {
        for (flag, value) in [
            ("--stream", &self.stream),
            ("--group", &self.group),
            ("--consumer", &self.consumer),
            ("--output", &self.output),
            ("--dead-letter", &self.dead_letter),
        ] {
            if value.trim().is_empty() {
                bail!("{flag} is empty: give it a name");
            }
        }
        if self.output == self.stream || self.dead_letter == self.stream {
            bail!(
                "--output and --dead-letter must differ from --stream `{}`, or the worker would \
                 read its own results",
                self.stream
            );
        }
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        if self.max_deliveries == 0 {
            bail!("--max-deliveries must be at least 1");
        }
        if self.block < Duration::from_millis(1) {
            bail!("--block must be at least 1ms (a read of 0 would wait forever)");
        }
        if self.claim_idle < Duration::from_millis(100) {
            bail!(
                "--claim-idle {:?} is shorter than 100 ms: entries still being labelled would \
                 be taken from their worker",
                self.claim_idle
            );
        }
        Ok(())
    }
}

/// What one worker did, for its exit line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub consumed: u64,
    pub labelled: u64,
    pub dead_lettered: u64,
    pub reclaimed: u64,
}

impl WorkerReport {
    fn add(&mut self, other: &WorkerReport) {
        self.consumed += other.consumed;
        self.labelled += other.labelled;
        self.dead_lettered += other.dead_lettered;
        self.reclaimed += other.reclaimed;
    }
}

/// Loads the models, joins the group and labels entries until `shutdown` resolves; then
/// finishes the batch in hand, acknowledges it and returns.
pub async fn run(
    mut server: ServerConfig,
    config: StreamConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<WorkerReport> {
    config.validate()?;
    server.resolve()?;
    // A stance-heavy batch puts one job per (entry, target) on a queue: leave room for it.
    let per_batch = config.batch * server.limits.max_stance_pairs.max(1);
    server.batching.queue_capacity = server.batching.queue_capacity.max(per_batch);
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(Registry::start(&server, &metrics)?);
    let stopping = Arc::new(AtomicBool::new(false));
    {
        let stopping = Arc::clone(&stopping);
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing the batch in hand");
            stopping.store(true, Ordering::SeqCst);
        });
    }
    let connected = Arc::new(AtomicBool::new(false));
    if let Some(addr) = config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
        eprintln!(
            "naba worker: metrics on http://{}/metrics",
            listener.local_addr()?
        );
        let app = probes::router(
            Arc::clone(&metrics),
            Arc::clone(&registry),
            Arc::clone(&connected),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
    }
    let result = async {
        if !wait_for_models(&registry, &stopping).await? {
            return Ok(WorkerReport::default());
        }
        // An unreachable Redis or a bad group at start is a setting to fix: stop and say so.
        let mut worker = Worker::connect(&config, &server, &registry, &metrics).await?;
        connected.store(true, Ordering::SeqCst);
        eprintln!(
            "naba worker: consumer `{}` of group `{}` on stream `{}`, results to `{}`",
            config.consumer, config.group, config.stream, config.output
        );
        // Later, a lost connection is waited out: what was read and not committed stays
        // pending, and the pending entries are read again first on reconnecting.
        let mut report = WorkerReport::default();
        let mut backoff = Duration::from_secs(1);
        loop {
            let outcome = worker.run(&stopping).await;
            report.add(&std::mem::take(&mut worker.report));
            let Err(e) = outcome else {
                return Ok(report);
            };
            connected.store(false, Ordering::SeqCst);
            tracing::error!(error = %format!("{e:#}"), "lost Redis; reconnecting in {backoff:?}");
            loop {
                if !pause(backoff, &stopping).await {
                    return Ok(report);
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                match Worker::connect(&config, &server, &registry, &metrics).await {
                    Ok(w) => {
                        tracing::info!("reconnected to Redis");
                        worker = w;
                        backoff = Duration::from_secs(1);
                        connected.store(true, Ordering::SeqCst);
                        break;
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "still no Redis"),
                }
            }
        }
    }
    .await;
    connected.store(false, Ordering::SeqCst);
    let models = Arc::clone(&registry);
    let _ = tokio::task::spawn_blocking(move || models.shutdown(Duration::from_secs(10))).await;
    result
}

/// Sleeps `d`, waking early for a shutdown; false when shutdown came.
async fn pause(d: Duration, stopping: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stopping.load(Ordering::SeqCst) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !stopping.load(Ordering::SeqCst)
}

/// True once every model is loaded; false when shutdown came first.
async fn wait_for_models(registry: &Registry, stopping: &AtomicBool) -> Result<bool> {
    loop {
        if stopping.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if registry.ready() {
            return Ok(true);
        }
        tokio::select! {
            e = registry.failure() => bail!(e),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// One entry's fate after its batch ran.
enum Outcome {
    /// Labelled: the result's JSON.
    Labelled(String),
    /// Cannot be labelled as sent: to the dead-letter stream with this error.
    Dead(String),
    /// Failed for a reason that may pass (a model error, a full queue): left pending, to be
    /// claimed again after `claim_idle`.
    Retry(String),
}

struct Worker<'a> {
    config: &'a StreamConfig,
    server: &'a ServerConfig,
    registry: &'a Registry,
    metrics: &'a Metrics,
    /// Results, acknowledgements, claims and the lag probe.
    conn: MultiplexedConnection,
    /// Blocking reads only: a read that waits must not hold up the writes.
    reader: MultiplexedConnection,
    report: WorkerReport,
}

impl<'a> Worker<'a> {
    async fn connect(
        config: &'a StreamConfig,
        server: &'a ServerConfig,
        registry: &'a Registry,
        metrics: &'a Metrics,
    ) -> Result<Worker<'a>> {
        let client = redis::Client::open(config.redis_url.as_str()).with_context(|| {
            format!(
                "--redis `{}` is not a Redis URL (redis://host:port[/db])",
                config.redis_url
            )
        })?;
        let writes = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        let reads = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(config.block + Duration::from_secs(30)));
        let unreachable = || format!("cannot reach Redis at {}", config.redis_url);
        let conn = client
            .get_multiplexed_async_connection_with_config(&writes)
            .await
            .with_context(unreachable)?;
        let reader = client
            .get_multiplexed_async_connection_with_config(&reads)
            .await
            .with_context(unreachable)?;
        let mut me = Worker {
            config,
            server,
            registry,
            metrics,
            conn,
            reader,
            report: WorkerReport::default(),
        };
        me.create_group().await?;
        me.check_outputs().await?;
        Ok(me)
    }

    async fn create_group(&mut self) -> Result<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(stream = %self.config.stream, group = %self.config.group, "created the consumer group");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot create group `{}` on stream `{}`",
                    self.config.group, self.config.stream
                )
            }),
        }
    }

    /// A MULTI/EXEC does not roll back: an XADD to a key that is not a stream would fail while
    /// the XACK beside it succeeds, losing the entry. So the outputs are checked up front.
    async fn check_outputs(&mut self) -> Result<()> {
        for (flag, key) in [
            ("--output", &self.config.output),
            ("--dead-letter", &self.config.dead_letter),
        ] {
            let kind: String = redis::cmd("TYPE")
                .arg(key)
                .query_async(&mut self.conn)
                .await
                .with_context(|| format!("cannot check {flag} `{key}`"))?;
            if kind != "stream" && kind != "none" {
                bail!("{flag} `{key}` holds a Redis {kind}, not a stream: name another key");
            }
        }
        Ok(())
    }

    async fn run(&mut self, stopping: &AtomicBool) -> Result<()> {
        self.own_pending(stopping).await?;
        let claim_every = (self.config.claim_idle / 2).max(Duration::from_millis(100));
        let mut next_claim = Instant::now() + claim_every;
        let mut claim_cursor = "0-0".to_string();
        let mut next_lag = Instant::now();
        while !stopping.load(Ordering::SeqCst) {
            if Instant::now() >= next_lag {
                self.probe_lag().await;
                next_lag = Instant::now() + Duration::from_secs(2);
            }
            if Instant::now() >= next_claim {
                claim_cursor = self.claim(&claim_cursor).await?;
                if claim_cursor == "0-0" {
                    next_claim = Instant::now() + claim_every;
                }
                continue;
            }
            let (entries, _) = self.read(">").await?;
            if !entries.is_empty() {
                self.handle(entries, false).await?;
            }
        }
        self.probe_lag().await;
        Ok(())
    }

    /// Entries this consumer was given and never acknowledged (it was killed, or a model
    /// failed): labelled before anything new.
    async fn own_pending(&mut self, stopping: &AtomicBool) -> Result<()> {
        let mut cursor = "0".to_string();
        while !stopping.load(Ordering::SeqCst) {
            let (entries, last) = self.read(&cursor).await?;
            // The cursor follows the reply, deleted entries included, so a page of them does
            // not end the scan early.
            let Some(last) = last else {
                return Ok(());
            };
            cursor = last;
            if entries.is_empty() {
                continue;
            }
            tracing::info!(
                entries = entries.len(),
                "labelling this consumer's pending entries first"
            );
            self.handle(entries, true).await?;
        }
        Ok(())
    }

    /// XREADGROUP from `id` (`>`: new entries, waiting up to `block`; else this consumer's
    /// pending entries after `id`). Also the last id in the reply, deleted entries included.
    async fn read(&mut self, id: &str) -> Result<(Vec<Entry>, Option<String>)> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.config.consumer)
            .arg("COUNT")
            .arg(self.config.batch);
        if id == ">" {
            cmd.arg("BLOCK").arg(self.config.block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.config.stream).arg(id);
        let reply: Value = cmd
            .query_async(&mut self.reader)
            .await
            .with_context(|| format!("cannot read stream `{}`", self.config.stream))?;
        let entries = read_reply(reply)?;
        let last = entries.last().map(|e| e.id.clone());
        // A pending entry deleted from the stream comes back with no fields: nothing to label.
        let (gone, entries): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.deleted);
        if !gone.is_empty() {
            let ids: Vec<&str> = gone.iter().map(|e| e.id.as_str()).collect();
            self.ack(&ids).await?;
        }
        Ok((entries, last))
    }

    async fn ack(&mut self, ids: &[&str]) -> Result<()> {
        let _: i64 = redis::cmd("XACK")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(ids)
            .query_async(&mut self.conn)
            .await
            .context("cannot acknowledge entries")?;
        Ok(())
    }

    /// One XAUTOCLAIM step from `cursor`: takes over entries idle past `claim_idle` and labels
    /// them. Returns the next cursor (`0-0` once the whole pending list was scanned).
    async fn claim(&mut self, cursor: &str) -> Result<String> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(&self.config.consumer)
            .arg(self.config.claim_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(self.config.batch)
            .query_async(&mut self.conn)
            .await
            .with_context(|| format!("cannot claim idle entries of `{}`", self.config.stream))?;
        let (next, claimed) = claim_reply(reply)?;
        let claimed: Vec<Entry> = claimed.into_iter().filter(|e| !e.deleted).collect();
        if !claimed.is_empty() {
            tracing::info!(
                entries = claimed.len(),
                "claimed entries idle past --claim-idle"
            );
            self.report.reclaimed += claimed.len() as u64;
            self.metrics
                .stream_reclaimed(&self.config.stream, claimed.len() as u64);
            self.handle(claimed, true).await?;
        }
        Ok(next)
    }

    async fn probe_lag(&mut self) {
        let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.config.stream)
            .query_async(&mut self.conn)
            .await;
        if let Ok(g) = groups {
            if let Some(lag) = g
                .groups
                .iter()
                .find(|g| g.name == self.config.group)
                .and_then(|g| g.lag)
            {
                self.metrics.stream_lag(&self.config.stream, lag as i64);
            }
        }
    }

    /// How many times each of `entries` has been delivered, for those this consumer still
    /// holds (an entry its slow first owner acknowledged meanwhile is not among them).
    async fn deliveries(&mut self, entries: &[Entry]) -> Result<HashMap<String, usize>> {
        let mut pipe = redis::pipe();
        for e in entries {
            pipe.cmd("XPENDING")
                .arg(&self.config.stream)
                .arg(&self.config.group)
                .arg(&e.id)
                .arg(&e.id)
                .arg(1)
                .arg(&self.config.consumer);
        }
        let replies: Vec<StreamPendingCountReply> = pipe
            .query_async(&mut self.conn)
            .await
            .context("cannot read the group's pending entries")?;
        Ok(replies
            .into_iter()
            .flat_map(|r| r.ids)
            .map(|p| (p.id, p.times_delivered))
            .collect())
    }

    /// Labels a batch and commits it: results and dead letters added, their inputs
    /// acknowledged, all in one transaction. `redelivered` entries are checked against
    /// `max_deliveries` first, and labelled one at a time: one that crashes a model batch must
    /// not take its batch-mates to the dead-letter stream with it.
    async fn handle(&mut self, entries: Vec<Entry>, redelivered: bool) -> Result<()> {
        let deliveries = if redelivered {
            let held = self.deliveries(&entries).await?;
            entries
                .iter()
                .map(|e| held.get(&e.id).copied())
                .collect::<Vec<_>>()
        } else {
            vec![Some(1); entries.len()]
        };
        let (entries, deliveries): (Vec<Entry>, Vec<usize>) = entries
            .into_iter()
            .zip(deliveries)
            .filter_map(|(e, d)| d.map(|d| (e, d)))
            .unzip();
        let n = entries.len() as u64;
        self.report.consumed += n;
        self.metrics.stream_consumed(&self.config.stream, n);
        // Nobody may take these entries for idle while they are being labelled.
        let heartbeat = tokio::spawn(keep_claimed(
            self.conn.clone(),
            self.config.clone(),
            entries.iter().map(|e| e.id.clone()).collect(),
        ));
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(entries.len());
        let mut running = tokio::task::JoinSet::new();
        let mut solo = Vec::new();
        for (i, (entry, delivered)) in entries.iter().zip(&deliveries).enumerate() {
            if *delivered > self.config.max_deliveries {
                outcomes.push(Some(Outcome::Dead(format!(
                    "delivered {delivered} times without being labelled (--max-deliveries {})",
                    self.config.max_deliveries
                ))));
                continue;
            }
            match self.plan(entry) {
                Ok(plan) if *delivered > 1 => {
                    outcomes.push(None);
                    solo.push((i, plan));
                }
                Ok(plan) => {
                    outcomes.push(None);
                    running.spawn(async move { (i, label(plan).await) });
                }
                Err(e) => outcomes.push(Some(Outcome::Dead(e))),
            }
        }
        while let Some(done) = running.join_next().await {
            match done {
                Ok((i, outcome)) => outcomes[i] = Some(outcome),
                Err(e) => tracing::error!(error = %e, "a labelling task failed"),
            }
        }
        for (i, plan) in solo {
            outcomes[i] = Some(label(plan).await);
        }
        heartbeat.abort();
        self.commit(&entries, outcomes).await
    }

    /// The entry as an analysis plan, or why it cannot be one.
    fn plan(&self, entry: &Entry) -> Result<Plan, String> {
        let text = field(entry, "text")?.ok_or("the entry has no `text` field")?;
        let id = field(entry, "id")?;
        let targets: Vec<String> = match field(entry, "targets")? {
            None => Vec::new(),
            Some(t) if t.trim().is_empty() => Vec::new(),
            Some(t) => serde_json::from_str(&t).map_err(|e| {
                format!("`targets` is not a JSON array of strings ({e}): send e.g. [\"claim\"]")
            })?,
        };
        let requested: Option<Vec<Task>> = match field(entry, "tasks")? {
            Some(list) if !list.trim().is_empty() => Some(parse_tasks(&list)?),
            _ => self.config.tasks.clone(),
        };
        let doc = DocumentIn {
            id: Some(DocId::Text(id.unwrap_or_else(|| entry.id.clone()))),
            text,
            targets,
        };
        let refused = |e: ApiError| e.message;
        let docs = analysis::documents(None, Some(vec![doc]), None, &self.server.limits)
            .map_err(refused)?;
        analysis::plan(
            docs,
            &Options::default(),
            requested.as_deref(),
            &ModelChoice::default(),
            self.registry,
        )
        .map_err(refused)
    }

    async fn commit(&mut self, entries: &[Entry], outcomes: Vec<Option<Outcome>>) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut acked: Vec<&str> = Vec::new();
        let (mut labelled, mut dead) = (0u64, 0u64);
        for (entry, outcome) in entries.iter().zip(outcomes) {
            match outcome {
                Some(Outcome::Labelled(json)) => {
                    let mut fields: Vec<(&str, Vec<u8>)> =
                        vec![("source", entry.id.clone().into_bytes())];
                    if let Ok(Some(id)) = field(entry, "id") {
                        fields.push(("id", id.into_bytes()));
                    }
                    fields.push(("result", json.into_bytes()));
                    pipe.xadd(&self.config.output, "*", &fields).ignore();
                    acked.push(&entry.id);
                    labelled += 1;
                }
                Some(Outcome::Dead(error)) => {
                    tracing::warn!(entry = %entry.id, %error, "dead-lettered");
                    let mut fields = entry.fields.clone();
                    fields.push((b"source".to_vec(), entry.id.clone().into_bytes()));
                    fields.push((b"error".to_vec(), error.into_bytes()));
                    pipe.xadd(&self.config.dead_letter, "*", &fields).ignore();
                    acked.push(&entry.id);
                    dead += 1;
                }
                Some(Outcome::Retry(error)) => {
                    tracing::warn!(entry = %entry.id, %error, "left pending, to be tried again");
                }
                None => {
                    tracing::warn!(entry = %entry.id, "left pending: its labelling task failed");
                }
            }
        }
        if acked.is_empty() {
            return Ok(());
        }
        pipe.xack(&self.config.stream, &self.config.group, &acked)
            .ignore();
        let _: () = pipe
            .query_async(&mut self.conn)
            .await
            .context("cannot write results and acknowledge their entries")?;
        self.report.labelled += labelled;
        self.report.dead_lettered += dead;
        self.metrics.stream_labelled(&self.config.stream, labelled);
        self.metrics.stream_dead_lettered(&self.config.stream, dead);
        Ok(())
    }
}

/// Runs a plan through the shared queues. A full queue or a loading model is waited out a few
/// times before the entry is left for later.
async fn label(plan: Plan) -> Outcome {
    let mut tries = 0;
    loop {
        let retry = Plan {
            docs: plan.docs.clone(),
            models: plan.models.clone(),
            top_k: plan.top_k,
            key: plan.key,
        };
        match analysis::execute(retry).await {
            Ok(mut response) => {
                let Some(doc) = response.documents.pop() else {
                    return Outcome::Retry("the analysis returned no document".into());
                };
                return match serde_json::to_string(&doc) {
                    Ok(json) => Outcome::Labelled(json),
                    Err(e) => Outcome::Retry(format!("cannot write the result as JSON: {e}")),
                };
            }
            Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
                return Outcome::Dead(format!("{}: {}", e.code, e.message))
            }
            Err(e) if e.retry_after.is_some() && tries < 5 => {
                tries += 1;
                let wait = e.retry_after.unwrap_or(1).min(5);
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            Err(e) => return Outcome::Retry(format!("{}: {}", e.code, e.message)),
        }
    }
}

/// Resets the idle time of `ids` every third of `claim_idle` (XCLAIM ... JUSTID, which leaves
/// the delivery count alone) until aborted, so a long batch is not claimed from under us.
async fn keep_claimed(mut conn: MultiplexedConnection, config: StreamConfig, ids: Vec<String>) {
    let every = (config.claim_idle / 3).max(Duration::from_millis(30));
    loop {
        tokio::time::sleep(every).await;
        let touched: redis::RedisResult<Value> = redis::cmd("XCLAIM")
            .arg(&config.stream)
            .arg(&config.group)
            .arg(&config.consumer)
            .arg(0)
            .arg(&ids)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await;
        if let Err(e) = touched {
            tracing::warn!(error = %e, "cannot keep the batch's entries claimed");
        }
    }
}

/// One stream entry as Redis sent it. Field names and values stay bytes: a producer may write
/// anything, and one odd entry must not make a whole reply unreadable.
#[derive(Debug, Clone, Default, PartialEq)]
struct Entry {
    id: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Pending, but deleted from the stream (its fields come back nil).
    deleted: bool,
}

/// The entries of an XREADGROUP reply: `[[stream, [entry, ...]]]` (a map under RESP3), or nil.
fn read_reply(v: Value) -> Result<Vec<Entry>> {
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.remove(1)),
                other => bail!("unexpected XREADGROUP reply part: {other:?}"),
            })
            .collect::<Result<Vec<_>>>()?,
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => bail!("unexpected XREADGROUP reply: {other:?}"),
    };
    let mut out = Vec::new();
    for entries in streams {
        out.extend(entries_of(entries)?);
    }
    Ok(out)
}

/// An XAUTOCLAIM reply: `[next cursor, [entry, ...], [deleted id, ...]]`.
fn claim_reply(v: Value) -> Result<(String, Vec<Entry>)> {
    let Value::Array(mut parts) = v else {
        bail!("unexpected XAUTOCLAIM reply: {v:?}");
    };
    if parts.len() < 2 {
        bail!("unexpected XAUTOCLAIM reply: {parts:?}");
    }
    let entries = entries_of(parts.remove(1))?;
    let next = bytes(parts.remove(0))
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| anyhow::anyhow!("XAUTOCLAIM sent no cursor"))?;
    Ok((next, entries))
}

/// `[[id, [field, value, ...] | nil], ...]`.
fn entries_of(v: Value) -> Result<Vec<Entry>> {
    let Value::Array(items) = v else {
        bail!("unexpected stream entries: {v:?}");
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            bail!("unexpected stream entry: {item:?}");
        };
        if pair.len() != 2 {
            bail!("unexpected stream entry: {pair:?}");
        }
        let fields = pair.remove(1);
        let id = bytes(pair.remove(0))
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| anyhow::anyhow!("a stream entry without an id"))?;
        let entry = match fields {
            Value::Nil => Entry {
                id,
                fields: Vec::new(),
                deleted: true,
            },
            Value::Array(flat) => {
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                    if let (Some(k), Some(v)) = (bytes(k), bytes(v)) {
                        fields.push((k, v));
                    }
                }
                Entry {
                    id,
                    fields,
                    deleted: false,
                }
            }
            Value::Map(pairs) => Entry {
                id,
                fields: pairs
                    .into_iter()
                    .filter_map(|(k, v)| Some((bytes(k)?, bytes(v)?)))
                    .collect(),
                deleted: false,
            },
            other => bail!("unexpected fields of entry {id}: {other:?}"),
        };
        out.push(entry);
    }
    Ok(out)
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// A text field of the entry: `Ok(None)` when absent, an error when it is not UTF-8.
fn field(entry: &Entry, name: &str) -> Result<Option<String>, String> {
    match entry.fields.iter().find(|(k, _)| k == name.as_bytes()) {
        None => Ok(None),
        Some((_, v)) => String::from_utf8(v.clone())
            .map(Some)
            .map_err(|_| format!("the `{name}` field is not UTF-8 text")),
    }
}

/// `topic,entities,stance` (also `ner`), as the `tasks` field and `--tasks` take them.
pub fn parse_tasks(list: &str) -> Result<Vec<Task>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t {
            "topic" => Ok(Task::Topic),
            "entities" | "ner" => Ok(Task::Entities),
            "stance" => Ok(Task::Stance),
            other => Err(format!(
                "unknown task `{other}` in `tasks`: use topic, entities or stance"
            )),
        })
        .collect()
}

/// The worker's own small HTTP surface for Prometheus and Kubernetes probes.
mod probes {
    use super::*;
    use axum::extract::State;
    use axum::http::header;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;

    #[derive(Clone)]
    struct Probe {
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        connected: Arc<AtomicBool>,
    }

    pub fn router(
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        connected: Arc<AtomicBool>,
    ) -> Router {
        Router::new()
            .route("/metrics", get(metrics_text))
            .route("/health", get(|| async { "ok" }))
            .route("/ready", get(ready))
            .with_state(Probe {
                metrics,
                registry,
                connected,
            })
    }

    async fn metrics_text(State(p): State<Probe>) -> impl IntoResponse {
        (
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            p.metrics.render(),
        )
    }

    /// Ready once the models are loaded and the group is joined.
    async fn ready(State(p): State<Probe>) -> impl IntoResponse {
        if p.registry.ready() && p.connected.load(Ordering::SeqCst) {
            (StatusCode::OK, "ready")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_parse_and_unknown_ones_are_named() {
        assert_eq!(
            parse_tasks("topic, ner,stance"),
            Ok(vec![Task::Topic, Task::Entities, Task::Stance])
        );
        let e = parse_tasks("topic,sentiment").unwrap_err();
        assert!(e.contains("`sentiment`"), "{e}");
    }

    #[test]
    fn fields_must_be_text() {
        let entry = Entry {
            id: "1-0".into(),
            fields: vec![(b"text".to_vec(), vec![0xff, 0xfe])],
            deleted: false,
        };
        assert!(field(&entry, "text").unwrap_err().contains("UTF-8"));
        assert_eq!(field(&entry, "id"), Ok(None));
    }

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn replies_parse_with_odd_field_names_and_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"posts"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1-0"),
                    Value::Array(vec![bulk(&[0xff]), bulk(b"x"), bulk(b"text"), bulk(b"hi")]),
                ]),
                Value::Array(vec![bulk(b"2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = read_reply(reply).expect("parses");
        assert_eq!(entries.len(), 2);
        assert_eq!(field(&entries[0], "text"), Ok(Some("hi".into())));
        assert_eq!(entries[0].fields[0].0, vec![0xff]);
        assert!(entries[1].deleted && !entries[0].deleted);
        assert!(read_reply(Value::Nil).expect("nil").is_empty());
        let (next, claimed) = claim_reply(Value::Array(vec![
            bulk(b"0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk(b"3-0"),
                Value::Array(vec![bulk(b"text"), bulk(b"t")]),
            ])]),
            Value::Array(vec![]),
        ]))
        .expect("parses");
        assert_eq!(next, "0-0");
        assert_eq!(claimed[0].id, "3-0");
    }
}
