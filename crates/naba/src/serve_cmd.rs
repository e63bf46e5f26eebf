//! `naba serve`: the JSON HTTP API. Settings come from a TOML file (`--config`), then flags,
//! each flag also an environment variable; the server itself is `naba_server`.

use anyhow::Result;
use clap::Args;
use naba_server::config::parse_model_flag;
use naba_server::{ServerConfig, Task};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]; port 0 picks a free port (printed on
    /// stderr).
    #[arg(long, env = "NABA_ADDR")]
    pub addr: Option<SocketAddr>,
    #[command(flatten)]
    pub models: ModelArgs,
    /// Answer POST /v1/zero-shot with this encoder: `base` (the installed base encoder, run
    /// dense: about 0.5 GB more), DIR, HUB_ID or NAME=DIR.
    #[arg(long = "zero-shot-model", env = "NABA_ZERO_SHOT_MODEL")]
    pub zero_shot_model: Option<String>,
    /// Require `Authorization: Bearer KEY` on /v1/*.
    #[arg(long, env = "NABA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Origins allowed to call from a browser (repeatable; `*` for any).
    #[arg(long = "cors-origin", env = "NABA_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// One document per model call: to measure what dynamic batching buys.
    #[arg(long, env = "NABA_NO_BATCHING")]
    pub no_batching: bool,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "NABA_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Documents per request (422 beyond).
    #[arg(long, env = "NABA_MAX_DOCUMENTS")]
    pub max_documents: Option<usize>,
    /// (document, target) stance pairs per request (422 beyond).
    #[arg(long, env = "NABA_MAX_STANCE_PAIRS")]
    pub max_stance_pairs: Option<usize>,
    /// Seconds one request may take (503 `timeout` beyond).
    #[arg(long, env = "NABA_REQUEST_TIMEOUT")]
    pub request_timeout: Option<f64>,
    /// Seconds to finish in-flight requests after SIGTERM before stopping anyway.
    #[arg(long, env = "NABA_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<f64>,
}

/// Which models run and how documents are batched onto them: the same flags for `naba serve`
/// and `naba worker`, since both put documents on the same queues.
#[derive(Args)]
pub struct ModelArgs {
    /// TOML file with [[models]], [limits], [batching] and other settings; flags override it.
    #[arg(long, env = "NABA_CONFIG")]
    pub config: Option<PathBuf>,
    /// A topic model: DIR, HUB_ID or NAME=DIR. Repeat (or comma-separate in the env var) for
    /// several; clients pick one by name, the first is the default.
    #[arg(long = "topic-model", env = "NABA_TOPIC_MODEL", value_delimiter = ',')]
    pub topic_models: Vec<String>,
    /// A named-entity model: DIR, HUB_ID or NAME=DIR (repeatable).
    #[arg(long = "ner-model", env = "NABA_NER_MODEL", value_delimiter = ',')]
    pub ner_models: Vec<String>,
    /// A stance model: DIR, HUB_ID or NAME=DIR (repeatable).
    #[arg(
        long = "stance-model",
        env = "NABA_STANCE_MODEL",
        value_delimiter = ','
    )]
    pub stance_models: Vec<String>,
    /// With no model given, use the models found here by name (ner-*, topic-*, stance-*);
    /// default: naba's cache (`$NABA_CACHE/models`) and ./models.
    #[arg(long = "models-dir", env = "NABA_MODELS_DIR", value_delimiter = ',')]
    pub models_dirs: Vec<PathBuf>,
    /// Where to run: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, env = "NABA_DEVICE")]
    pub device: Option<String>,
    /// Float type of the computation: f32, f16 or bf16.
    #[arg(long, env = "NABA_DTYPE")]
    pub dtype: Option<String>,
    /// Documents (or document-target pairs) per model call.
    #[arg(long, env = "NABA_MAX_BATCH_DOCUMENTS")]
    pub max_batch_documents: Option<usize>,
    /// Padded tokens per model call.
    #[arg(long, env = "NABA_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: Option<usize>,
    /// Documents waiting per model before requests get 429.
    #[arg(long, env = "NABA_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Windows per encoder forward pass.
    #[arg(long, env = "NABA_WINDOWS_PER_FORWARD")]
    pub windows_per_forward: Option<usize>,
    /// Characters per document (422 beyond; the worker dead-letters such entries).
    #[arg(long, env = "NABA_MAX_CHARS")]
    pub max_chars: Option<usize>,
}

impl ModelArgs {
    /// The configuration file (or the defaults) with these flags applied.
    pub fn config(self) -> Result<ServerConfig> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        for (task, specs) in [
            (Task::Topic, &self.topic_models),
            (Task::Entities, &self.ner_models),
            (Task::Stance, &self.stance_models),
        ] {
            for spec in specs.iter().filter(|s| !s.trim().is_empty()) {
                c.models.push(parse_model_flag(task, spec)?);
            }
        }
        if !self.models_dirs.is_empty() {
            c.models_dirs = self.models_dirs;
        }
        set(&mut c.device, self.device);
        set(&mut c.dtype, self.dtype);
        set(
            &mut c.batching.max_batch_documents,
            self.max_batch_documents,
        );
        set(&mut c.batching.max_batch_tokens, self.max_batch_tokens);
        set(&mut c.batching.queue_capacity, self.queue_capacity);
        set(
            &mut c.batching.windows_per_forward,
            self.windows_per_forward,
        );
        set(&mut c.limits.max_chars, self.max_chars);
        Ok(c)
    }
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let config = build_config(args)?;
    naba_server::run_blocking(config)?;
    Ok(ExitCode::SUCCESS)
}

fn build_config(args: ServeArgs) -> Result<ServerConfig> {
    let mut c = args.models.config()?;
    set(&mut c.addr, args.addr);
    if let Some(spec) = args.zero_shot_model.filter(|s| !s.trim().is_empty()) {
        let spec = if spec.trim() == "base" {
            let dir = naba_models::fetch::installed_dir(naba_models::BASE_MODEL_NAME);
            if !dir.is_dir() {
                anyhow::bail!(
                    "--zero-shot-model base: the base encoder is not installed ({}); run `naba \
                     models fetch`",
                    dir.display()
                );
            }
            format!("zero-shot={}", dir.display())
        } else {
            spec
        };
        c.models.push(parse_model_flag(Task::ZeroShot, &spec)?);
    }
    if args.api_key.is_some() {
        c.api_key = args.api_key;
    }
    if !args.cors_origins.is_empty() {
        c.cors_origins = args.cors_origins;
    }
    if args.no_batching {
        c.batching.enabled = false;
    }
    set(&mut c.limits.max_body_bytes, args.max_body_bytes);
    set(&mut c.limits.max_documents, args.max_documents);
    set(&mut c.limits.max_stance_pairs, args.max_stance_pairs);
    set(&mut c.request_timeout_secs, args.request_timeout);
    set(&mut c.shutdown_grace_secs, args.shutdown_grace);
    Ok(c)
}

pub fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}
