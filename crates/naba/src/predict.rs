//! `naba predict`: one JSON object per input, in input order.

use crate::input::{read_docs, Doc, Format};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use naba_models::deberta::DebertaClassifier;
use naba_models::{parse_dtype, DeviceSpec, HeadKind, LoadOptions, Model, BASE_MODEL_NAME};
use naba_tasks::zero_shot::{
    self, Calibration, EmbeddingZeroShot, EntailmentZeroShot, PairClassifier, ZeroShotLabel,
    ZeroShotOutput,
};
use naba_tasks::{
    aggregate::{AggregationStrategy, Decoding},
    ClassifyInput, ClassifyOptions, Lexical, NerOptions, Pipeline, PipelineOptions, Relatedness,
};
use naba_text::NormalizeOptions;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// What the text is about (sequence classification).
    Topic,
    /// Where the text stands toward a target (text-pair classification).
    Stance,
    /// Named entities with character offsets (token classification).
    Ner,
    /// Labels you name at request time (--labels or --labels-file), scored by E5 embeddings
    /// of the text and the labels' descriptions: no training needed.
    ZeroShot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ZeroShotMethod {
    Embedding,
    Entailment,
}

#[derive(Args)]
pub struct PredictArgs {
    /// What to predict.
    #[arg(long, value_enum)]
    pub task: Task,
    /// Model: a checkpoint directory, a hub repo id (owner/name), or a model name [default: the
    /// installed default model of the task, as `naba serve` finds it].
    #[arg(long, env = "NABA_MODEL")]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit) when --model is a repo id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Zero-shot: candidate labels, a comma list (`رياضة,اقتصاد,سياسة`); each is its own
    /// description.
    #[arg(long, conflicts_with = "labels_file")]
    pub labels: Option<String>,
    /// Zero-shot: a file of candidate labels, one per line, `label: description | another
    /// description` (or a bare label); `#` starts a comment.
    #[arg(long)]
    pub labels_file: Option<PathBuf>,
    /// Zero-shot: score each label on its own (any number may apply) instead of one softmax
    /// over the labels.
    #[arg(long)]
    pub multi_label: bool,
    /// Zero-shot: `embedding` (E5 similarity to the labels' descriptions, on the base encoder)
    /// or `entailment` (an NLI or naba stance model reads "this text is about LABEL", as
    /// transformers' zero-shot pipeline does; needs --model).
    #[arg(long, value_enum, default_value = "embedding")]
    pub method: ZeroShotMethod,
    /// Zero-shot by entailment: the hypothesis, with `{}` where the label goes [default: هذا
    /// النص عن {}. for Arabic labels, else This example is {}.].
    #[arg(long)]
    pub hypothesis_template: Option<String>,
    /// Stance target for every input (a claim, topic or entity); JSONL inputs may carry their own `target`.
    #[arg(long)]
    pub target: Option<String>,
    /// How NER sub-word predictions become entities (transformers' aggregation_strategy);
    /// `first` gives whole words labelled by their first sub-word, as naba's models are trained.
    #[arg(long, default_value = "first", value_parser = parse_aggregation)]
    pub aggregation: AggregationStrategy,
    /// How NER labels are chosen before grouping: `iob2` takes the most probable label
    /// sequence in which every I-x follows B-x or I-x; `argmax` takes each word's best label
    /// (transformers' behaviour).
    #[arg(long, default_value = "iob2", value_parser = parse_decoding)]
    pub decoding: Decoding,
    /// Return only the best N labels (topic, stance); default all, best first.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Read inputs from FILE (`-` for stdin) instead of arguments.
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// How the input is laid out.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// Arabic normalisation before the model: comma list of diacritics, tatweel, alef, ya,
    /// ta-marbuta, digits, nfkc, or all / none. Offsets still refer to the text you sent.
    #[arg(long, default_value = "none", value_parser = parse_normalize)]
    pub normalize: NormalizeOptions,
    /// Where to run: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu", env = "NABA_DEVICE")]
    pub device: DeviceSpec,
    /// Float type of the computation: f32, f16 or bf16 (f16 needs a GPU).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Tokens shared by consecutive windows of a long text (default: a quarter of the window).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Tokens per window, special tokens included (default: the window the model was trained
    /// with, else the encoder's full length).
    #[arg(long)]
    pub window: Option<usize>,
    /// Windows per model call.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Longest text accepted, in characters.
    #[arg(long, default_value_t = 200_000)]
    pub max_chars: usize,
    /// Stance: read long texts without the model's relatedness gate, so that every sentence
    /// may vote even when none concerns the target (how naba read them before the gate).
    #[arg(long)]
    pub no_relatedness: bool,
    /// Topic and stance: read with the encoder alone, without the TF-IDF member a model may
    /// ship with (`lexical.json`, averaged with the encoder's probabilities).
    #[arg(long)]
    pub no_lexical: bool,
    /// Keep entity spans exactly as transformers reports them, instead of trimming white space
    /// and punctuation from their edges.
    #[arg(long)]
    pub no_trim: bool,
    /// Label only shard I of N (I counts from 0: 0/3, 1/3, 2/3), to split a job over
    /// machines. The inputs (the texts given, or the non-blank lines of the input, counted
    /// from 0) are cut into blocks of 64, the inputs of one model call, and block b goes to
    /// shard b mod N: input k to shard (k / 64) mod N. Each shard thus makes the unsharded
    /// run's model calls and writes bit-identical lines, each with `index`: k added, so the
    /// shards' outputs sort back into the unsharded output.
    #[arg(long, value_name = "I/N", value_parser = crate::eval_cmd::parse_shard)]
    pub shard: Option<naba_eval::Shard>,
    /// Texts to label (otherwise --input or stdin).
    pub texts: Vec<String>,
}

fn parse_aggregation(s: &str) -> Result<AggregationStrategy, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_decoding(s: &str) -> Result<Decoding, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_normalize(s: &str) -> Result<NormalizeOptions, String> {
    s.parse().map_err(|e| format!("{e}"))
}

/// Inputs are handled in groups this size so output streams and memory stays bounded. It is
/// also the block `--shard` deals out: a model's outputs move in the last bits with the other
/// texts of its call, so shards that make the unsharded run's calls give its exact output.
const CHUNK: usize = 64;

pub fn run(args: PredictArgs) -> Result<ExitCode> {
    let docs = read_docs(&args.texts, args.input.as_deref(), args.format)?;
    let (indices, docs): (Vec<usize>, Vec<Doc>) = match args.shard {
        Some(shard) => {
            let total = docs.len();
            let mine: (Vec<usize>, Vec<Doc>) = docs
                .into_iter()
                .enumerate()
                .filter(|(k, _)| shard.owns_item(*k, CHUNK))
                .unzip();
            if mine.1.is_empty() {
                eprintln!(
                    "note: shard {shard} holds none of the {total} inputs (input k goes to shard \
                     (k / {CHUNK}) mod {}); nothing to label",
                    shard.count
                );
                return Ok(ExitCode::SUCCESS);
            }
            mine
        }
        None => (Vec::new(), docs),
    };
    validate(&docs, &args)?;
    let labels = zero_shot_labels(&args)?;
    let spec = match args.task {
        Task::ZeroShot if args.method == ZeroShotMethod::Entailment => match &args.model {
            Some(m) => m.clone(),
            None => bail!(
                "zero-shot by entailment needs --model: an NLI checkpoint (entailment and \
                 contradiction labels) or a naba stance model such as stance-ans"
            ),
        },
        Task::ZeroShot => base_encoder(args.model.as_deref())?,
        task => crate::defaults::model_or_default(
            args.model.as_deref(),
            match task {
                Task::Ner => naba_server::Task::Entities,
                Task::Stance => naba_server::Task::Stance,
                Task::Topic | Task::ZeroShot => naba_server::Task::Topic,
            },
        )?,
    };
    let device = args.device.open()?;
    let dtype = parse_dtype(&args.dtype, &device)?;
    // DeBERTa-v2 NLI models run on candle-transformers, outside naba's pipelines.
    let labeller = if args.task == Task::ZeroShot
        && args.method == ZeroShotMethod::Entailment
        && naba_models::deberta::is_deberta(std::path::Path::new(&spec))
    {
        let model = DebertaClassifier::load(std::path::Path::new(&spec), &device)
            .with_context(|| format!("cannot load model `{spec}`"))?;
        Labeller::EntailmentDeberta(Box::new(EntailmentZeroShot::new(model)?))
    } else {
        load_labeller(&spec, &args, device, dtype)?
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for (n, chunk) in docs.chunks(CHUNK).enumerate() {
        let results = match &labeller {
            Labeller::Pipeline(p) => predict_chunk(p, chunk, &args),
            Labeller::ZeroShot(z) => zero_shot_chunk(
                |texts| z.classify(texts, &labels, args.multi_label),
                chunk,
                &labels,
                &args,
            )?,
            Labeller::Entailment(z) => entail_chunk(z, chunk, &labels, &args)?,
            Labeller::EntailmentDeberta(z) => entail_chunk(z, chunk, &labels, &args)?,
        };
        for (k, (doc, line)) in chunk.iter().zip(results).enumerate() {
            let mut line = match line {
                Ok(v) => v,
                Err(e) => {
                    failed += 1;
                    eprintln!("error: input {}: {e}", doc.id);
                    json!({"id": doc.id, "error": e.to_string()})
                }
            };
            if let Some(&index) = indices.get(n * CHUNK + k) {
                line["index"] = json!(index);
            }
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    // Freeing a 250k-piece tokenizer piece by piece takes a fifth of a one-text run; the
    // process is about to exit, which returns the memory at once.
    std::mem::forget(labeller);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Everything that can be known wrong before loading a model is reported here, naming the input.
fn validate(docs: &[Doc], args: &PredictArgs) -> Result<()> {
    for doc in docs {
        if doc.text.trim().is_empty() {
            bail!("input {}: the text is empty or only whitespace", doc.id);
        }
        let chars = doc.text.chars().count();
        if chars > args.max_chars {
            bail!(
                "input {}: the text has {chars} characters, over the limit of {} (raise --max-chars \
                 or split the text)",
                doc.id,
                args.max_chars
            );
        }
        if args.task == Task::Stance {
            let target = doc.target.as_deref().or(args.target.as_deref());
            match target {
                None => bail!(
                    "input {}: stance needs a target: pass --target TEXT or a `target` field in JSONL",
                    doc.id
                ),
                Some(t) if t.trim().is_empty() => {
                    bail!("input {}: the stance target is empty", doc.id)
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Loads a naba model as a pipeline and wraps it for the task.
fn load_labeller(
    spec: &str,
    args: &PredictArgs,
    device: candle_core::Device,
    dtype: candle_core::DType,
) -> Result<Labeller> {
    let load_opts = LoadOptions {
        device,
        dtype,
        revision: args.revision.clone(),
        // The 4-bit base encoder runs far faster on the dense f32 engine; its embeddings
        // agree with the 4-bit path's to a cosine of 0.9999 (tests/e5_reference.rs).
        dequantize: args.task == Task::ZeroShot && args.method == ZeroShotMethod::Embedding,
        head_hint: match args.task {
            Task::Ner => Some(HeadKind::TokenClassification),
            Task::Topic | Task::Stance => Some(HeadKind::SequenceClassification),
            Task::ZeroShot if args.method == ZeroShotMethod::Entailment => {
                Some(HeadKind::SequenceClassification)
            }
            Task::ZeroShot => None,
        },
        ..LoadOptions::default()
    };
    let model =
        Model::load(spec, &load_opts).with_context(|| format!("cannot load model `{spec}`"))?;
    check_head(&model, args.task)?;
    let gate = match args.task {
        Task::Stance if !args.no_relatedness => Relatedness::for_model(&model, &load_opts)?,
        _ => None,
    };
    let lexical = match args.task {
        Task::Topic | Task::Stance if !args.no_lexical => Lexical::read(&model.dir)?,
        _ => None,
    };
    let pipeline = Pipeline::new(
        model,
        &PipelineOptions {
            stride: args.stride,
            batch_size: args.batch_size,
            max_chars: args.max_chars,
            window: args.window,
        },
    )?
    .with_relatedness(gate)
    .with_lexical(lexical)?;
    Ok(match (args.task, args.method) {
        (Task::ZeroShot, ZeroShotMethod::Entailment) => {
            Labeller::Entailment(EntailmentZeroShot::new(pipeline)?)
        }
        (Task::ZeroShot, ZeroShotMethod::Embedding) => {
            Labeller::ZeroShot(EmbeddingZeroShot::new(pipeline, Calibration::E5_SMALL))
        }
        _ => Labeller::Pipeline(pipeline),
    })
}

/// What answers: a task pipeline, or zero-shot over the base encoder.
enum Labeller {
    Pipeline(Pipeline),
    ZeroShot(EmbeddingZeroShot),
    Entailment(EntailmentZeroShot),
    EntailmentDeberta(Box<EntailmentZeroShot<DebertaClassifier>>),
}

/// The zero-shot model: the one given, else the installed base encoder.
pub(crate) fn base_encoder(given: Option<&str>) -> Result<String> {
    if let Some(m) = given.map(str::trim).filter(|m| !m.is_empty()) {
        return Ok(m.to_string());
    }
    let dir = naba_models::fetch::installed_dir(BASE_MODEL_NAME);
    if !dir.is_dir() {
        bail!(
            "this needs the base encoder {BASE_MODEL_NAME}, which is not installed ({}): \
             run `naba models fetch`, or pass --model with an E5 checkpoint",
            dir.display()
        );
    }
    eprintln!("naba: using the base encoder `{BASE_MODEL_NAME}`");
    Ok(dir.display().to_string())
}

/// The candidate labels of `--task zero-shot`, checked before any model loads; none for other
/// tasks, which refuse the zero-shot flags.
fn zero_shot_labels(args: &PredictArgs) -> Result<Vec<ZeroShotLabel>> {
    if args.task != Task::ZeroShot {
        if args.labels.is_some()
            || args.labels_file.is_some()
            || args.multi_label
            || args.hypothesis_template.is_some()
            || args.method != ZeroShotMethod::Embedding
        {
            bail!(
                "--labels, --labels-file, --multi-label, --method and --hypothesis-template go \
                 with --task zero-shot"
            );
        }
        return Ok(Vec::new());
    }
    if args.hypothesis_template.is_some() && args.method != ZeroShotMethod::Entailment {
        bail!("--hypothesis-template goes with --method entailment");
    }
    let labels = match (&args.labels, &args.labels_file) {
        (Some(list), _) => zero_shot::labels_from_list(list),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --labels-file {}", path.display()))?;
            zero_shot::labels_from_file(&text)
        }
        (None, None) => bail!(
            "zero-shot needs candidate labels: --labels \"رياضة,اقتصاد,سياسة\" or --labels-file FILE"
        ),
    };
    zero_shot::check_labels(&labels).map_err(|e| anyhow::anyhow!("zero-shot labels: {e}"))?;
    Ok(labels)
}

fn entail_chunk<P: PairClassifier>(
    z: &EntailmentZeroShot<P>,
    docs: &[Doc],
    labels: &[ZeroShotLabel],
    args: &PredictArgs,
) -> Result<Vec<Result<serde_json::Value>>> {
    let template = args
        .hypothesis_template
        .as_deref()
        .unwrap_or_else(|| zero_shot::default_template(labels));
    zero_shot_chunk(
        |texts| z.classify(texts, labels, template, args.multi_label),
        docs,
        labels,
        args,
    )
}

type ZeroShotResults = Vec<Result<ZeroShotOutput, naba_tasks::TaskError>>;

fn zero_shot_chunk(
    classify: impl Fn(&[&str]) -> Result<ZeroShotResults, naba_tasks::TaskError>,
    docs: &[Doc],
    labels: &[ZeroShotLabel],
    args: &PredictArgs,
) -> Result<Vec<Result<serde_json::Value>>> {
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let results = classify(&texts)?;
    Ok(results
        .into_iter()
        .zip(docs)
        .map(|(r, d)| {
            let mut r = r?;
            if let Some(k) = args.top_k {
                r.labels.truncate(k);
            }
            let raw: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .zip(&r.similarities)
                .map(|(l, s)| (l.name.clone(), json!(s)))
                .collect();
            Ok(json!({
                "id": d.id,
                "labels": r.labels,
                "multi_label": args.multi_label,
                "method": match args.method {
                    ZeroShotMethod::Embedding => "embedding",
                    ZeroShotMethod::Entailment => "entailment",
                },
                // Before calibration: cosine similarity, or entailment logit.
                "raw": raw,
                "windows": r.windows,
            }))
        })
        .collect())
}

fn check_head(model: &Model, task: Task) -> Result<()> {
    let ok = match task {
        Task::Ner => model.config.head == HeadKind::TokenClassification,
        Task::Topic | Task::Stance => model.config.head == HeadKind::SequenceClassification,
        Task::ZeroShot => true,
    };
    if !ok {
        let has = match model.config.head {
            HeadKind::None => "no task head (it is a bare encoder)",
            HeadKind::TokenClassification => "a token-classification head (use --task ner)",
            HeadKind::SequenceClassification => {
                "a sequence-classification head (use --task topic or stance)"
            }
        };
        bail!("model `{}` has {has}", model.name);
    }
    Ok(())
}

fn predict_chunk(
    pipeline: &Pipeline,
    docs: &[Doc],
    args: &PredictArgs,
) -> Vec<Result<serde_json::Value>> {
    match args.task {
        Task::Ner => {
            let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
            let opts = NerOptions {
                aggregation: args.aggregation,
                decoding: args.decoding,
                normalize: args.normalize,
                trim: !args.no_trim,
                ..NerOptions::default()
            };
            pipeline
                .ner(&texts, &opts)
                .into_iter()
                .zip(docs)
                .map(|(r, d)| {
                    let r = r?;
                    Ok(json!({"id": d.id, "entities": r.entities, "windows": r.windows}))
                })
                .collect()
        }
        Task::Topic | Task::Stance | Task::ZeroShot => {
            let stance = args.task == Task::Stance;
            let inputs: Vec<ClassifyInput> = docs
                .iter()
                .map(|d| ClassifyInput {
                    text: &d.text,
                    target: if stance {
                        d.target.as_deref().or(args.target.as_deref())
                    } else {
                        None
                    },
                })
                .collect();
            let opts = ClassifyOptions {
                top_k: args.top_k,
                normalize: args.normalize,
                function: None,
            };
            pipeline
                .classify(&inputs, &opts)
                .into_iter()
                .zip(inputs)
                .zip(docs)
                .map(|((r, i), d)| {
                    let r = r?;
                    let mut v = json!({"id": d.id, "labels": r.labels, "windows": r.windows});
                    if let Some(t) = i.target {
                        v["target"] = json!(t);
                        v["evidence"] = json!(r.evidence);
                        if let Some(related) = r.related {
                            v["related"] = json!(related);
                        }
                        if let Some(cut) = r.target_truncated {
                            v["target_truncated"] = json!(cut);
                        }
                    }
                    Ok(v)
                })
                .collect()
        }
    }
}
