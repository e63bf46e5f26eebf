//! naba's service: one batching queue per model with two front doors onto it, a JSON HTTP API
//! and a Redis Streams worker, so moderation and research tools can call naba in production or
//! feed it a message stream.
//!
//! What it does: routes and their JSON contract (with an OpenAPI document), dynamic batching of
//! concurrent requests onto each model on a dedicated thread, limits and polite refusals (413,
//! 415, 422, 429 with `Retry-After`), an optional bearer token, CORS, request ids, Prometheus
//! metrics, graceful shutdown, and a small built-in page.
//!
//! What it must not know: model internals. Models are loaded with `naba_models::Model::load`
//! and used only through `naba_tasks::Pipeline` (`ner`, `classify`, `window`, `stride`) and the
//! model's tokenizer (to count tokens for the batch budget). Tensors, encoder layers, heads,
//! windowing and aggregation belong to those crates; if the server needs more from a model, it
//! asks the pipeline for it.
//!
//! Modules, one concern each. The queue: [`batching`] (the queues and model threads) and
//! [`analysis`] (validation and fan-out of one request onto them). Its doors: [`routes`]
//! (router, handlers, OpenAPI) and [`stream`] (the consumer-group worker). Around them:
//! [`config`] (settings, TOML, model discovery), [`registry`] (loading models, model cards),
//! [`error`] (the error shape), [`middleware`] (request ids, logs, metrics, auth), [`metrics`],
//! [`page`].

pub mod analysis;
pub mod batching;
pub mod config;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod page;
pub mod registry;
pub mod routes;
pub mod schema;
pub mod stream;

pub use config::{BatchingConfig, Limits, ModelEntry, ServerConfig, Task};

use anyhow::{bail, Context};
use metrics::Metrics;
use registry::Registry;
use routes::AppState;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// A bound server whose models are loading; [`Server::run`] serves until shutdown.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    app: axum::Router,
    addr: SocketAddr,
}

/// Resolves the configuration (discovering default models when none is given), starts loading
/// every model on its own thread and binds the address. `/health` answers from here on;
/// `/ready` once every model has loaded.
pub async fn bind(mut config: ServerConfig) -> anyhow::Result<Server> {
    config.resolve()?;
    let metrics = Arc::new(Metrics::new());
    let registry = Registry::start(&config, &metrics)?;
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    for m in registry.models() {
        tracing::info!(
            model = %m.name(),
            task = %m.task(),
            path = %m.entry.path,
            default = m.is_default,
            "serving model"
        );
    }
    let state = Arc::new(AppState::new(Arc::new(config), registry, metrics));
    let app = routes::router(Arc::clone(&state))?;
    Ok(Server {
        listener,
        state,
        app,
        addr,
    })
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves (or a model fails to load), then stops accepting,
    /// finishes in-flight requests (for at most `shutdown_grace_secs`) and stops the model
    /// threads. `Ok` means every accepted request was answered.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let fatal: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
        let signal = {
            let state = Arc::clone(&state);
            let fatal = Arc::clone(&fatal);
            async move {
                tokio::select! {
                    _ = shutdown => {
                        tracing::info!("shutting down: no new connections, finishing requests in flight");
                    }
                    e = state.registry.failure() => {
                        tracing::error!(error = %e, "stopping");
                        if let Ok(mut f) = fatal.lock() {
                            *f = Some(e);
                        }
                    }
                }
                state.draining.store(true, Ordering::Relaxed);
                let _ = signalled.send(true);
            }
        };
        let grace = state.config.shutdown_grace();
        let serve = axum::serve(self.listener, self.app).with_graceful_shutdown(signal);
        let forced = tokio::select! {
            r = serve => {
                r.context("the HTTP server failed")?;
                false
            }
            _ = async {
                if on_signal.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(grace).await;
            } => true,
        };
        let stopping = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || {
            stopping.registry.shutdown(Duration::from_secs(10));
        })
        .await;
        let fatal = fatal.lock().ok().and_then(|mut f| f.take());
        if let Some(e) = fatal {
            bail!(e);
        }
        if forced {
            bail!(
                "requests were still running {:.0} s after the shutdown signal; stopped anyway",
                grace.as_secs_f64()
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// What `naba serve` runs: a runtime, the server, until SIGTERM or Ctrl-C. Prints
/// `listening on http://ADDR` to stderr once bound.
pub fn run_blocking(config: ServerConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("naba-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = bind(config).await?;
        eprintln!("naba serve: listening on http://{}", server.local_addr());
        server.run(shutdown_signal()).await
    })
}

/// What `naba worker` runs: a runtime, the stream worker, until SIGTERM or Ctrl-C.
pub fn run_worker_blocking(
    config: ServerConfig,
    stream: stream::StreamConfig,
) -> anyhow::Result<stream::WorkerReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("naba-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(stream::run(config, stream, shutdown_signal()))
}
