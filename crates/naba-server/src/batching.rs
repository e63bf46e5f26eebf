//! Dynamic batching: one bounded queue and one dedicated OS thread per model.
//!
//! Request handlers put documents (jobs) on a model's queue and await one reply each; they never
//! run model code, so the async runtime's threads stay free for I/O. The model's thread loads
//! the model, then loops: it waits for a job, takes every other queued job with the same
//! per-call options (oldest first) until the batch holds `max_documents` documents or its
//! estimated padded tokens would pass `max_tokens`, runs them in ONE pipeline call (which sorts
//! all their windows by length so little compute goes to padding), and sends each job its
//! result. Jobs of one request may land in several batches; each reply goes to its own slot, so
//! the request reassembles them in order. While a batch runs, new jobs pile up and form the
//! next batch: there is no waiting for a batch to fill.
//!
//! A job whose request has gone (timeout, client disconnect, another queue full) is dropped
//! unrun. The queue is bounded: a submission that does not fit is refused whole, with a hint of
//! how long the queue needs to drain.

use crate::metrics::Metrics;
use naba_tasks::aggregate::{AggregationStrategy, Decoding};
use naba_tasks::{ClassifyOutput, EntitySpan};
use naba_text::NormalizeOptions;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Options that must be the same for every document of one pipeline call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchKey {
    pub aggregation: AggregationStrategy,
    pub decoding: Decoding,
    pub normalize: NormalizeOptions,
}

/// One document (or document-target pair) for one model.
#[derive(Debug, Clone)]
pub struct JobInput {
    pub text: Arc<str>,
    pub target: Option<Arc<str>>,
    pub key: BatchKey,
    /// Zero-shot jobs: the candidate labels, shared by the documents of one request.
    pub zero_shot: Option<Arc<ZeroShotQuery>>,
}

/// What a zero-shot request asks of each of its documents.
#[derive(Debug, Clone)]
pub struct ZeroShotQuery {
    pub labels: Vec<naba_tasks::ZeroShotLabel>,
    pub multi_label: bool,
    /// Entailment models: the hypothesis, `{}` for the label (else the default for the
    /// labels' script).
    pub hypothesis_template: Option<String>,
}

#[derive(Debug, Clone)]
pub enum JobOutput {
    Entities(Vec<EntitySpan>),
    Labels(ClassifyOutput),
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Something about this input the model cannot take (answered 422).
    Rejected { code: &'static str, message: String },
    /// The model failed (answered 500).
    Failed(String),
}

pub type JobResult = Result<JobOutput, JobError>;

/// What a job costs, from the model's own tokenizer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Windows x their padded length: the budget unit.
    pub padded: usize,
    /// Tokens of text and target: the throughput unit.
    pub tokens: usize,
}

/// The model side of a queue. Implemented over `naba_tasks::Pipeline` in `registry`, and by
/// fakes in tests.
pub trait Runner: Send {
    fn cost(&self, input: &JobInput) -> Cost;
    /// One result per input, in input order. All inputs share `key`.
    fn run(&mut self, key: &BatchKey, inputs: &[&JobInput]) -> Vec<JobResult>;
}

/// Builds the runner on the model's thread (loading can take a while; the server answers
/// `/health` meanwhile and `/ready` says 503).
pub type Loader = Box<dyn FnOnce() -> anyhow::Result<Box<dyn Runner>> + Send>;

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Loading,
    Ready,
    Failed(String),
    Stopped,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Loading => "loading",
            Status::Ready => "ready",
            Status::Failed(_) => "failed",
            Status::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_documents: usize,
    pub max_tokens: usize,
    pub capacity: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubmitError {
    NotReady(Status),
    /// The queue cannot take the jobs; retry after this many seconds.
    Full {
        retry_after: u64,
    },
    Closed,
}

struct Job {
    input: JobInput,
    reply: oneshot::Sender<JobResult>,
    enqueued: Instant,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    name: String,
    limits: BatchLimits,
    queue: Mutex<Queue>,
    wake: Condvar,
    status: watch::Sender<Status>,
    metrics: Arc<Metrics>,
    /// Moving average of model seconds per job, for `Retry-After`.
    secs_per_job: Mutex<f64>,
}

/// A model's queue and the thread that serves it.
pub struct Batcher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Batcher {
    /// Starts the model's thread, which runs `loader` first.
    pub fn start(
        name: &str,
        limits: BatchLimits,
        metrics: Arc<Metrics>,
        loader: Loader,
    ) -> std::io::Result<Self> {
        let (status, _) = watch::channel(Status::Loading);
        let shared = Arc::new(Shared {
            name: name.to_string(),
            limits,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            status,
            metrics,
            secs_per_job: Mutex::new(0.05),
        });
        shared.metrics.ready(name, false);
        shared.metrics.queue_depth(name, 0);
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("naba-model-{name}"))
            .spawn(move || worker.serve(loader))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn status(&self) -> Status {
        self.shared.status.borrow().clone()
    }

    /// Follows status changes (load finished or failed).
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    pub fn queue_depth(&self) -> usize {
        lock(&self.shared.queue).jobs.len()
    }

    /// Queues all `inputs` or none; one receiver per input, in order. Dropping a receiver
    /// cancels its job if it has not run yet.
    pub fn submit(
        &self,
        inputs: Vec<JobInput>,
    ) -> Result<Vec<oneshot::Receiver<JobResult>>, SubmitError> {
        let status = self.status();
        if status != Status::Ready {
            return Err(SubmitError::NotReady(status));
        }
        let s = &self.shared;
        let mut q = lock(&s.queue);
        if q.closed {
            return Err(SubmitError::Closed);
        }
        // Room is counted in live jobs: ones whose request is gone will be skipped.
        if q.jobs.len() + inputs.len() > s.limits.capacity {
            q.jobs.retain(|j| !j.reply.is_closed());
        }
        if q.jobs.len() + inputs.len() > s.limits.capacity {
            let per_job = *lock(&s.secs_per_job);
            let drain = (q.jobs.len() as f64 * per_job).ceil();
            s.metrics.rejected(&s.name, inputs.len());
            return Err(SubmitError::Full {
                retry_after: drain.clamp(1.0, 60.0) as u64,
            });
        }
        let now = Instant::now();
        let mut receivers = Vec::with_capacity(inputs.len());
        for input in inputs {
            let (tx, rx) = oneshot::channel();
            q.jobs.push_back(Job {
                input,
                reply: tx,
                enqueued: now,
            });
            receivers.push(rx);
        }
        s.metrics.queue_depth(&s.name, q.jobs.len());
        drop(q);
        s.wake.notify_one();
        Ok(receivers)
    }

    /// Stops taking jobs; the thread finishes what is queued, then exits.
    pub fn close(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
    }

    /// Waits up to `timeout` for the thread to exit; true when it did.
    pub fn join(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let finished = lock(&self.thread).as_ref().is_none_or(|t| t.is_finished());
            if finished {
                if let Some(t) = lock(&self.thread).take() {
                    let _ = t.join();
                }
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn serve(self: Arc<Self>, loader: Loader) {
        let runner = match catch_unwind(AssertUnwindSafe(loader)) {
            Ok(Ok(runner)) => runner,
            Ok(Err(e)) => return self.fail(format!("{e:#}")),
            Err(_) => return self.fail("loading the model panicked".into()),
        };
        tracing::info!(model = %self.name, "model ready");
        self.metrics.ready(&self.name, true);
        self.status.send_replace(Status::Ready);
        self.run(runner);
        self.metrics.ready(&self.name, false);
        self.status.send_replace(Status::Stopped);
        tracing::debug!(model = %self.name, "model thread stopped");
    }

    fn fail(&self, message: String) {
        tracing::error!(model = %self.name, error = %message, "model failed to load");
        self.status.send_replace(Status::Failed(message));
    }

    fn run(&self, mut runner: Box<dyn Runner>) {
        let mut carry: Option<(Job, Cost)> = None;
        loop {
            let (first, first_cost) = match carry.take() {
                Some(c) => c,
                None => match self.next(None, true) {
                    Some(job) => {
                        let cost = runner.cost(&job.input);
                        (job, cost)
                    }
                    None => return,
                },
            };
            if first.reply.is_closed() {
                self.metrics.cancelled(&self.name, 1);
                continue;
            }
            let key = first.input.key;
            let mut padded = first_cost.padded;
            let mut tokens = first_cost.tokens;
            let mut batch = vec![first];
            while batch.len() < self.limits.max_documents {
                let Some(job) = self.next(Some(&key), false) else {
                    break;
                };
                let cost = runner.cost(&job.input);
                if padded + cost.padded > self.limits.max_tokens {
                    carry = Some((job, cost));
                    break;
                }
                padded += cost.padded;
                tokens += cost.tokens;
                batch.push(job);
            }
            self.run_batch(runner.as_mut(), &key, batch, padded, tokens);
        }
    }

    /// The oldest live job (with `key`, when given); blocks for one when `block`. `None` when
    /// nothing matches without blocking, or the queue is closed and empty.
    fn next(&self, key: Option<&BatchKey>, block: bool) -> Option<Job> {
        let mut q = lock(&self.queue);
        loop {
            let before = q.jobs.len();
            q.jobs.retain(|j| !j.reply.is_closed());
            if q.jobs.len() < before {
                self.metrics.cancelled(&self.name, before - q.jobs.len());
            }
            let pos = q
                .jobs
                .iter()
                .position(|j| key.is_none_or(|k| j.input.key == *k));
            if let Some(job) = pos.and_then(|p| q.jobs.remove(p)) {
                self.metrics.queue_depth(&self.name, q.jobs.len());
                return Some(job);
            }
            self.metrics.queue_depth(&self.name, q.jobs.len());
            if !block || q.closed {
                return None;
            }
            q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn run_batch(
        &self,
        runner: &mut dyn Runner,
        key: &BatchKey,
        batch: Vec<Job>,
        padded: usize,
        tokens: usize,
    ) {
        let started = Instant::now();
        for job in &batch {
            self.metrics
                .queue_wait(&self.name, started.duration_since(job.enqueued));
        }
        let inputs: Vec<&JobInput> = batch.iter().map(|j| &j.input).collect();
        let n = inputs.len();
        let results = match catch_unwind(AssertUnwindSafe(|| runner.run(key, &inputs))) {
            Ok(r) if r.len() == n => r,
            Ok(r) => {
                let msg = format!("the model returned {} results for {n} inputs", r.len());
                tracing::error!(model = %self.name, "{msg}");
                vec![Err(JobError::Failed(msg)); n]
            }
            Err(_) => {
                tracing::error!(model = %self.name, documents = n, "the model panicked");
                vec![Err(JobError::Failed("the model panicked on this batch".into())); n]
            }
        };
        let secs = started.elapsed().as_secs_f64();
        tracing::debug!(model = %self.name, documents = n, padded, tokens, secs, "batch done");
        self.metrics.batch(&self.name, n, padded, tokens, secs);
        {
            let mut avg = lock(&self.secs_per_job);
            *avg = 0.8 * *avg + 0.2 * (secs / n as f64);
        }
        for (job, result) in batch.into_iter().zip(results) {
            // The request may have gone meanwhile; nothing to do then.
            let _ = job.reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Labels each input with its own text; records batch sizes; can be held on a gate.
    struct Fake {
        batches: Arc<Mutex<Vec<Vec<String>>>>,
        gate: Option<mpsc::Receiver<()>>,
        entered: mpsc::Sender<()>,
    }

    impl Runner for Fake {
        fn cost(&self, input: &JobInput) -> Cost {
            Cost {
                padded: input.text.chars().count(),
                tokens: 1,
            }
        }

        fn run(&mut self, _key: &BatchKey, inputs: &[&JobInput]) -> Vec<JobResult> {
            let _ = self.entered.send(());
            if let Some(gate) = &self.gate {
                let _ = gate.recv_timeout(Duration::from_secs(5));
            }
            let texts: Vec<String> = inputs.iter().map(|i| i.text.to_string()).collect();
            if texts.iter().any(|t| t == "panic") {
                panic!("asked to");
            }
            lock(&self.batches).push(texts.clone());
            texts
                .into_iter()
                .map(|t| {
                    Ok(JobOutput::Labels(ClassifyOutput {
                        labels: vec![naba_tasks::LabelScore {
                            label: t,
                            score: 1.0,
                        }],
                        windows: 1,
                        ..ClassifyOutput::default()
                    }))
                })
                .collect()
        }
    }

    fn input(text: &str) -> JobInput {
        JobInput {
            text: Arc::from(text),
            target: None,
            key: BatchKey::default(),
            zero_shot: None,
        }
    }

    fn label(r: JobResult) -> String {
        match r {
            Ok(JobOutput::Labels(c)) => c.labels[0].label.clone(),
            other => panic!("unexpected {other:?}"),
        }
    }

    struct Setup {
        batcher: Batcher,
        batches: Arc<Mutex<Vec<Vec<String>>>>,
        gate: mpsc::Sender<()>,
        entered: mpsc::Receiver<()>,
    }

    fn setup(limits: BatchLimits) -> Setup {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (gate, rx) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let fake = Fake {
            batches: Arc::clone(&batches),
            gate: Some(rx),
            entered: entered_tx,
        };
        let batcher = Batcher::start(
            "fake",
            limits,
            Arc::new(Metrics::new()),
            Box::new(move || Ok(Box::new(fake) as Box<dyn Runner>)),
        )
        .expect("thread");
        let deadline = Instant::now() + Duration::from_secs(5);
        while batcher.status() != Status::Ready && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Setup {
            batcher,
            batches,
            gate,
            entered,
        }
    }

    fn limits(docs: usize, tokens: usize, capacity: usize) -> BatchLimits {
        BatchLimits {
            max_documents: docs,
            max_tokens: tokens,
            capacity,
        }
    }

    /// Submits one job that occupies the model until the gate opens, so later jobs queue up.
    fn occupy(s: &Setup) -> oneshot::Receiver<JobResult> {
        let mut rx = s.batcher.submit(vec![input("busy")]).expect("queued");
        s.entered
            .recv_timeout(Duration::from_secs(5))
            .expect("the model took the job");
        rx.remove(0)
    }

    #[tokio::test]
    async fn queued_jobs_run_together_and_come_back_in_order() {
        let s = setup(limits(4, 1000, 100));
        let busy = occupy(&s);
        let texts: Vec<String> = (0..10).map(|i| format!("doc{i}")).collect();
        let rx = s
            .batcher
            .submit(texts.iter().map(|t| input(t)).collect())
            .expect("queued");
        for _ in 0..4 {
            let _ = s.gate.send(());
        }
        assert_eq!(label(busy.await.expect("reply")), "busy");
        let mut got = Vec::new();
        for r in rx {
            got.push(label(r.await.expect("reply")));
        }
        assert_eq!(got, texts);
        let sizes: Vec<usize> = lock(&s.batches).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 4, 4, 2]);
    }

    #[tokio::test]
    async fn token_budget_splits_batches_but_a_big_job_still_runs() {
        let s = setup(limits(10, 10, 100));
        let busy = occupy(&s);
        let big = "x".repeat(50);
        let rx = s
            .batcher
            .submit(vec![
                input("aaaa"),
                input("bbbb"),
                input("cccc"),
                input(&big),
            ])
            .expect("queued");
        for _ in 0..4 {
            let _ = s.gate.send(());
        }
        let _ = busy.await;
        for r in rx {
            r.await.expect("reply").expect("ok");
        }
        let sizes: Vec<usize> = lock(&s.batches).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 2, 1, 1]);
    }

    #[tokio::test]
    async fn different_options_are_not_mixed() {
        let s = setup(limits(10, 1000, 100));
        let busy = occupy(&s);
        let mut other = input("B1");
        other.key.aggregation = AggregationStrategy::First;
        let rx = s
            .batcher
            .submit(vec![input("A1"), other.clone(), input("A2"), other])
            .expect("queued");
        for _ in 0..3 {
            let _ = s.gate.send(());
        }
        let _ = busy.await;
        for r in rx {
            r.await.expect("reply").expect("ok");
        }
        let batches = lock(&s.batches).clone();
        assert_eq!(batches[1], vec!["A1", "A2"]);
        assert_eq!(batches[2], vec!["B1", "B1"]);
    }

    #[tokio::test]
    async fn full_queue_refuses_whole_submissions_and_cancelled_jobs_do_not_run() {
        let s = setup(limits(10, 1000, 3));
        let busy = occupy(&s);
        let first = s
            .batcher
            .submit(vec![input("a"), input("b")])
            .expect("queued");
        match s.batcher.submit(vec![input("c"), input("d")]) {
            Err(SubmitError::Full { retry_after }) => assert!(retry_after >= 1),
            other => panic!("expected Full, got {other:?}"),
        }
        // The request holding a and b goes away: its room frees up and they never run.
        drop(first);
        let rx = s
            .batcher
            .submit(vec![input("c"), input("d")])
            .expect("room after cancel");
        for _ in 0..2 {
            let _ = s.gate.send(());
        }
        let _ = busy.await;
        for r in rx {
            r.await.expect("reply").expect("ok");
        }
        let batches = lock(&s.batches).clone();
        assert_eq!(batches, vec![vec!["busy"], vec!["c", "d"]]);
    }

    #[tokio::test]
    async fn a_panic_fails_its_batch_only() {
        let s = setup(limits(1, 1000, 10));
        drop(s.gate);
        let rx = s
            .batcher
            .submit(vec![input("panic"), input("fine")])
            .expect("queued");
        let mut rx = rx.into_iter();
        let first = rx.next().expect("one").await.expect("reply");
        assert!(matches!(first, Err(JobError::Failed(_))), "{first:?}");
        assert_eq!(label(rx.next().expect("two").await.expect("reply")), "fine");
    }

    #[tokio::test]
    async fn load_failure_is_reported_and_close_stops_the_thread() {
        let b = Batcher::start(
            "broken",
            limits(1, 1, 1),
            Arc::new(Metrics::new()),
            Box::new(|| Err(anyhow::anyhow!("no such directory"))),
        )
        .expect("thread");
        let mut w = b.watch_status();
        let status = w
            .wait_for(|s| *s != Status::Loading)
            .await
            .expect("status")
            .clone();
        assert_eq!(status, Status::Failed("no such directory".into()));
        assert!(matches!(
            b.submit(vec![input("x")]),
            Err(SubmitError::NotReady(Status::Failed(_)))
        ));
        let s = setup(limits(1, 1, 1));
        drop(s.gate);
        s.batcher.close();
        assert!(s.batcher.join(Duration::from_secs(5)));
        assert_eq!(s.batcher.status(), Status::Stopped);
    }
}
