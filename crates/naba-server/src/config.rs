//! What the server runs with: the TOML file `naba serve --config` reads, command-line overrides
//! applied by the CLI, the checks that turn a bad setting into a sentence at startup, and the
//! discovery of default models by name when none is configured.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a model is used for; also the names clients put in `tasks`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// What the text is about (sequence classification).
    Topic,
    /// Named entities with character offsets (token classification).
    #[serde(alias = "ner")]
    Entities,
    /// Where the text stands toward a target (text-pair classification).
    Stance,
    /// Labels the client names per request, scored by E5 embeddings (`/v1/zero-shot` only).
    #[serde(rename = "zero-shot", alias = "zero_shot")]
    ZeroShot,
}

impl Task {
    pub const ALL: [Task; 3] = [Task::Topic, Task::Entities, Task::Stance];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Topic => "topic",
            Task::Entities => "entities",
            Task::Stance => "stance",
            Task::ZeroShot => "zero-shot",
        }
    }

    /// The command-line flag that adds a model of this task.
    pub fn flag(self) -> &'static str {
        match self {
            Task::Topic => "--topic-model",
            Task::Entities => "--ner-model",
            Task::Stance => "--stance-model",
            Task::ZeroShot => "--zero-shot-model",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One model to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The name clients use to pick it (`models.topic = "..."`); unique in one server.
    pub name: String,
    pub task: Task,
    /// A checkpoint directory, a hub repo id (`owner/name`) or a model name naba knows.
    pub path: String,
    /// Hub revision when `path` is a repo id.
    #[serde(default)]
    pub revision: Option<String>,
    /// The model answering requests that name none for this task; else the first listed.
    #[serde(default)]
    pub default: bool,
    /// Tokens shared by consecutive windows of a long text (default: a quarter of the window).
    #[serde(default)]
    pub stride: Option<usize>,
    /// Tokens per window (default: the window the model was trained with, else the encoder's
    /// full length).
    #[serde(default)]
    pub window: Option<usize>,
    /// Zero-shot models: `embedding` (E5 similarity; any encoder) or `entailment` (a
    /// sequence-pair classifier with entailment/contradiction or agree/disagree labels).
    /// Default: entailment for such a classifier, else embedding.
    #[serde(default)]
    pub method: Option<crate::schema::ZeroShotMethod>,
}

/// Per-request refusals (HTTP 413 and 422).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Documents in one request.
    pub max_documents: usize,
    /// Characters (Unicode scalar values) in one document's text.
    pub max_chars: usize,
    /// (document, target) pairs for stance in one request.
    pub max_stance_pairs: usize,
    /// Characters in one stance target.
    pub max_target_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_documents: 64,
            max_chars: 100_000,
            max_stance_pairs: 128,
            max_target_chars: 1_000,
        }
    }
}

/// How requests are grouped onto the models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingConfig {
    /// When false every model call gets one document (to measure what batching buys).
    pub enabled: bool,
    /// Documents (or document-target pairs) in one model call.
    pub max_batch_documents: usize,
    /// Padded tokens (windows x window length) in one model call; one document over it still
    /// runs, alone.
    pub max_batch_tokens: usize,
    /// Documents waiting per model before requests are refused with 429.
    pub queue_capacity: usize,
    /// Windows per encoder forward pass inside one model call.
    pub windows_per_forward: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_batch_documents: 32,
            max_batch_tokens: 16_384,
            queue_capacity: 512,
            windows_per_forward: 16,
        }
    }
}

impl BatchingConfig {
    /// Documents per model call after `enabled` is taken into account.
    pub fn effective_max_documents(&self) -> usize {
        if self.enabled {
            self.max_batch_documents.max(1)
        } else {
            1
        }
    }
}

/// Everything `naba serve` needs. Read from TOML with every field optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free one (the bound address is logged and printed).
    pub addr: SocketAddr,
    /// auto, cpu, cuda, cuda:N or metal.
    pub device: String,
    /// f32, f16 or bf16.
    pub dtype: String,
    /// When set, `/v1/*` requires `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Origins allowed to call the API from a browser (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Longest time one request may take before it is answered 503 `timeout`.
    pub request_timeout_secs: f64,
    /// After SIGTERM, how long in-flight requests may take before the server stops anyway.
    pub shutdown_grace_secs: f64,
    /// Where default models are looked for when no model is configured (see [`discover`]).
    pub models_dirs: Vec<PathBuf>,
    pub limits: Limits,
    pub batching: BatchingConfig,
    pub models: Vec<ModelEntry>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            device: "cpu".into(),
            dtype: "f32".into(),
            api_key: None,
            cors_origins: Vec::new(),
            request_timeout_secs: 60.0,
            shutdown_grace_secs: 30.0,
            models_dirs: Vec::new(),
            limits: Limits::default(),
            batching: BatchingConfig::default(),
            models: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file. Model paths relative to the file that exist as directories next to
    /// it are made absolute, so a config works from any working directory.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config: ServerConfig = toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for m in &mut config.models {
            let candidate = base.join(&m.path);
            if Path::new(&m.path).is_relative() && candidate.is_dir() {
                m.path = candidate.to_string_lossy().into_owned();
            }
        }
        for d in &mut config.models_dirs {
            if d.is_relative() {
                *d = base.join(&*d);
            }
        }
        Ok(config)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_secs)
    }

    /// When no model is configured, fills `models` from [`discover`]; then checks everything.
    /// The error for "no model at all" says how to point the server at models.
    pub fn resolve(&mut self) -> Result<()> {
        if self.models.is_empty() {
            let roots = if self.models_dirs.is_empty() {
                default_model_roots()
            } else {
                self.models_dirs.clone()
            };
            self.models = discover(&roots);
            if self.models.is_empty() {
                let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
                bail!(
                    "no models to serve: none is configured and no default model was found in {}. \
                     Point naba at models with --ner-model DIR|HUB_ID, --topic-model DIR|HUB_ID \
                     and --stance-model DIR|HUB_ID (repeatable, NAME=DIR to name one; also \
                     NABA_NER_MODEL, NABA_TOPIC_MODEL, NABA_STANCE_MODEL), with --config FILE \
                     listing [[models]], or with --models-dir DIR holding models named ner-*, \
                     topic-*, stance-*",
                    shown.join(", ")
                );
            }
        }
        self.validate()
    }

    /// Checks settings that would otherwise fail later or never let a request through.
    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            bail!("no models to serve");
        }
        let mut names: Vec<&str> = Vec::new();
        for m in &self.models {
            if m.name.trim().is_empty() {
                bail!("a model for {} has an empty name", m.task);
            }
            if m.path.trim().is_empty() {
                bail!("model `{}` has an empty path", m.name);
            }
            if names.contains(&m.name.as_str()) {
                bail!(
                    "two models are named `{}`: give one another name (NAME=DIR on the command \
                     line, `name` in the config file)",
                    m.name
                );
            }
            names.push(&m.name);
        }
        for task in Task::ALL {
            let defaults = self
                .models
                .iter()
                .filter(|m| m.task == task && m.default)
                .count();
            if defaults > 1 {
                bail!("{defaults} {task} models are marked default; mark one");
            }
        }
        let l = &self.limits;
        let b = &self.batching;
        for (value, name) in [
            (l.max_body_bytes, "limits.max_body_bytes"),
            (l.max_documents, "limits.max_documents"),
            (l.max_chars, "limits.max_chars"),
            (l.max_stance_pairs, "limits.max_stance_pairs"),
            (l.max_target_chars, "limits.max_target_chars"),
            (b.max_batch_documents, "batching.max_batch_documents"),
            (b.max_batch_tokens, "batching.max_batch_tokens"),
            (b.queue_capacity, "batching.queue_capacity"),
            (b.windows_per_forward, "batching.windows_per_forward"),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        let largest = l.max_documents.max(l.max_stance_pairs);
        if b.queue_capacity < largest {
            bail!(
                "batching.queue_capacity ({}) must hold the largest request ({} documents or \
                 stance pairs), or such a request could never be accepted",
                b.queue_capacity,
                largest
            );
        }
        for (secs, name) in [
            (self.request_timeout_secs, "request_timeout_secs"),
            (self.shutdown_grace_secs, "shutdown_grace_secs"),
        ] {
            if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
                bail!("{name} must be a positive number of seconds, not {secs}");
            }
        }
        if let Some(key) = &self.api_key {
            if key.is_empty() || !key.bytes().all(|c| c.is_ascii_graphic()) {
                bail!("the API key must be non-empty printable ASCII without spaces");
            }
        }
        Ok(())
    }

    /// The model answering `task` when a request names none.
    pub fn default_model(&self, task: Task) -> Option<&ModelEntry> {
        let mut of_task = self.models.iter().filter(|m| m.task == task);
        let first = of_task.clone().next();
        of_task.find(|m| m.default).or(first)
    }
}

/// Parses `NAME=SPEC` or `SPEC` (named after its last path component) as given to
/// `--topic-model` and friends.
pub fn parse_model_flag(task: Task, value: &str) -> Result<ModelEntry> {
    let value = value.trim();
    if value.is_empty() {
        bail!("{} needs a directory, hub id or NAME=DIR", task.flag());
    }
    // A Windows-style `C:\...` or a path holding `=` is rare; `=` before any `/` means a name.
    let (name, path) = match value.split_once('=') {
        Some((n, p)) if !n.contains('/') && !n.is_empty() => (n.to_string(), p.to_string()),
        _ => (default_name(value), value.to_string()),
    };
    if path.trim().is_empty() {
        bail!("{} {value}: nothing after `=`", task.flag());
    }
    Ok(ModelEntry {
        name,
        task,
        path,
        revision: None,
        default: false,
        stride: None,
        window: None,
        method: None,
    })
}

fn default_name(spec: &str) -> String {
    Path::new(spec.trim_end_matches(['/', '\\']))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| spec.to_string())
}

/// Where default models are looked for: naba's cache (`$NABA_CACHE/models`, where `naba models
/// fetch` assembles models) and `./models` (a checkout's committed models).
pub fn default_model_roots() -> Vec<PathBuf> {
    vec![
        naba_models::fetch::cache_root().join("models"),
        PathBuf::from("models"),
    ]
}

/// Models found by name under `roots`: each subdirectory holding a `config.json` whose task is
/// known from its `model_card.json` (`"task"`) or its name (`ner-*`, `topic-*`, `stance-*`).
/// A `model_card.json` with `"default": true` marks the default of its task. The first root
/// holding a name wins; the result is sorted by name within each root.
pub fn discover(roots: &[PathBuf]) -> Vec<ModelEntry> {
    let mut found: Vec<ModelEntry> = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("config.json").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = default_name(&dir.to_string_lossy());
            if found.iter().any(|m| m.name == name) {
                continue;
            }
            let card = crate::registry::read_card_json(&dir);
            let card_task = card
                .as_ref()
                .and_then(|c| c.get("task"))
                .and_then(|t| t.as_str())
                .and_then(task_from_word);
            let Some(task) = card_task.or_else(|| task_from_name(&name)) else {
                tracing::debug!(dir = %dir.display(), "not a task model by its name or card; skipped");
                continue;
            };
            let default = card
                .as_ref()
                .and_then(|c| c.get("default"))
                .and_then(|d| d.as_bool())
                .unwrap_or(false);
            found.push(ModelEntry {
                name,
                task,
                path: dir.to_string_lossy().into_owned(),
                revision: None,
                default,
                stride: None,
                window: None,
                method: None,
            });
        }
    }
    // Two defaults of one task (say one in the cache, one in ./models) would fail validation;
    // the first found wins.
    for task in Task::ALL.into_iter().chain([Task::ZeroShot]) {
        let mut seen = false;
        for m in found.iter_mut().filter(|m| m.task == task && m.default) {
            if seen {
                m.default = false;
            }
            seen = true;
        }
    }
    found
}

fn task_from_word(word: &str) -> Option<Task> {
    match word.to_ascii_lowercase().as_str() {
        "topic" | "topics" | "text-classification" | "sequence-classification" => Some(Task::Topic),
        "ner" | "entities" | "token-classification" => Some(Task::Entities),
        "stance" | "pair-classification" => Some(Task::Stance),
        "zero-shot" | "zero_shot" | "embedding" => Some(Task::ZeroShot),
        _ => None,
    }
}

fn task_from_name(name: &str) -> Option<Task> {
    let lower = name.to_ascii_lowercase();
    let head = lower.split(['-', '_', '.']).next().unwrap_or("");
    match head {
        "topic" => Some(Task::Topic),
        "ner" => Some(Task::Entities),
        "stance" => Some(Task::Stance),
        "zero" | "zeroshot" => Some(Task::ZeroShot),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_config_parses_and_fills_defaults() {
        let text = r#"
            addr = "127.0.0.1:9000"
            [batching]
            max_batch_documents = 8
            [[models]]
            name = "ner"
            task = "ner"
            path = "somewhere"
            [[models]]
            name = "topic-a"
            task = "topic"
            path = "a"
            [[models]]
            name = "topic-b"
            task = "topic"
            path = "b"
            default = true
        "#;
        let c: ServerConfig = toml::from_str(text).expect("parses");
        assert_eq!(c.addr.port(), 9000);
        assert_eq!(c.batching.max_batch_documents, 8);
        assert_eq!(c.batching.queue_capacity, 512);
        assert_eq!(c.models[0].task, Task::Entities);
        assert_eq!(
            c.default_model(Task::Topic).map(|m| m.name.as_str()),
            Some("topic-b")
        );
        assert!(c.default_model(Task::Stance).is_none());
        c.validate().expect("valid");
    }

    #[test]
    fn the_example_config_parses() {
        let c: ServerConfig =
            toml::from_str(include_str!("../serve.example.toml")).expect("parses");
        c.validate().expect("valid");
        // Its values are the defaults, so it documents them truthfully.
        let defaults = ServerConfig {
            models: c.models.clone(),
            ..ServerConfig::default()
        };
        assert_eq!(c, defaults);
        assert_eq!(
            c.default_model(Task::Topic).map(|m| m.name.as_str()),
            Some("topic-ant")
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<ServerConfig>("adress = \"x\"").unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }

    #[test]
    fn model_flags_take_optional_names() {
        let m = parse_model_flag(Task::Topic, "ant=/models/topic-ant/").expect("ok");
        assert_eq!(
            (m.name.as_str(), m.path.as_str()),
            ("ant", "/models/topic-ant/")
        );
        let m = parse_model_flag(Task::Topic, "/models/topic-ant/").expect("ok");
        assert_eq!(m.name, "topic-ant");
        let m = parse_model_flag(Task::Entities, "owner/repo").expect("ok");
        assert_eq!(m.name, "repo");
        assert!(parse_model_flag(Task::Entities, "x=").is_err());
    }

    #[test]
    fn duplicate_names_and_small_queues_are_refused() {
        let mut c = ServerConfig {
            models: vec![
                parse_model_flag(Task::Topic, "a=x").expect("ok"),
                parse_model_flag(Task::Stance, "a=y").expect("ok"),
            ],
            ..ServerConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("two models"));
        c.models.pop();
        c.batching.queue_capacity = 4;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("queue_capacity"));
    }

    #[test]
    fn no_models_gives_a_clear_error() {
        let empty = tempfile::tempdir().expect("tempdir");
        let mut c = ServerConfig {
            models_dirs: vec![empty.path().to_path_buf()],
            ..ServerConfig::default()
        };
        let err = c.resolve().unwrap_err().to_string();
        assert!(err.contains("--ner-model"), "{err}");
        assert!(err.contains("--config"), "{err}");
    }

    #[test]
    fn discovery_finds_models_by_name_and_card() {
        let root = tempfile::tempdir().expect("tempdir");
        for (dir, card) in [
            ("ner-anercorp", None),
            ("topic-ant", None),
            ("topic-asnd", Some(r#"{"default": true}"#)),
            ("mystery", Some(r#"{"task": "stance"}"#)),
            ("multilingual-e5-small-q4", None),
            ("stance-no-config", None),
        ] {
            let d = root.path().join(dir);
            std::fs::create_dir_all(&d).expect("mkdir");
            if dir != "stance-no-config" {
                std::fs::write(d.join("config.json"), "{}").expect("write");
            }
            if let Some(card) = card {
                std::fs::write(d.join("model_card.json"), card).expect("write");
            }
        }
        let found = discover(&[root.path().to_path_buf()]);
        let names: Vec<(&str, Task)> = found.iter().map(|m| (m.name.as_str(), m.task)).collect();
        assert_eq!(
            names,
            vec![
                ("mystery", Task::Stance),
                ("ner-anercorp", Task::Entities),
                ("topic-ant", Task::Topic),
                ("topic-asnd", Task::Topic),
            ]
        );
        let c = ServerConfig {
            models: found,
            ..ServerConfig::default()
        };
        assert_eq!(
            c.default_model(Task::Topic).map(|m| m.name.as_str()),
            Some("topic-asnd")
        );
    }
}
