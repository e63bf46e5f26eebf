//! `naba eval`: run a model over a labelled corpus (or a whole suite of them) and write a
//! report; `naba eval compare A B` sets two reports side by side; `naba eval merge` joins the
//! shard reports of a job split over machines with `--shard`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use naba_eval::{
    BootstrapConfig, ClassPrediction, ClassificationCorpus, ColumnOptions, ConllOptions,
    DataFormat, EvalOptions, LabelMap, Report, RunInfo, RunStats, Shard, ShardPart,
};
use naba_models::deberta::DebertaClassifier;
use naba_models::{parse_dtype, DeviceSpec, HeadKind, LoadOptions, Model};
use naba_tasks::aggregate::{AggregationStrategy, Decoding};
use naba_tasks::zero_shot::{
    default_template, Calibration, EmbeddingZeroShot, EntailmentZeroShot, PairClassifier,
    ZeroShotLabel, ZeroShotOutput,
};
use naba_tasks::{
    ClassifyInput, ClassifyOptions, ClassifyOutput, Lexical, NerOptions, Pipeline, PipelineOptions,
    Relatedness, TaskError,
};
use naba_text::NormalizeOptions;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Two report directories side by side, with per-label deltas and which differences fall
    /// outside the first report's 95% confidence intervals.
    Compare {
        /// The baseline report directory.
        a: PathBuf,
        /// The report to compare against it.
        b: PathBuf,
    },
    /// Combine the shard reports of one `naba eval --shard I/N` run into the report of the
    /// whole job: every figure, intervals included, as an unsharded run gives. Refuses reports
    /// of another model, task, data set, sample, setting or shard count, and a missing or
    /// repeated shard.
    Merge {
        /// The shard report directories, all N of them, in any order.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged report goes; without it report.md is printed.
        #[arg(long)]
        report_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalTask {
    Ner,
    Topic,
    Stance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Conll,
    Jsonl,
    Csv,
    Tsv,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// What the model predicts.
    #[arg(long, value_enum, required_unless_present = "suite")]
    task: Option<EvalTask>,
    /// Labelled data: CoNLL (NER), JSONL, CSV or TSV.
    #[arg(long, required_unless_present = "suite")]
    data: Option<PathBuf>,
    /// Run every data set of a suite file instead (see evaluation/suite.toml).
    #[arg(long, conflicts_with_all = ["task", "data"])]
    suite: Option<PathBuf>,
    /// With --suite: run only the entries with these names (comma list).
    #[arg(long, requires = "suite", value_delimiter = ',')]
    only: Vec<String>,
    /// Model: a checkpoint directory, a hub repo id, or an installed model name [default: the
    /// installed default model of the task, as `naba serve` finds it]. With --suite, replaces
    /// each entry's model.
    #[arg(long, env = "NABA_MODEL")]
    model: Option<String>,
    /// Where the report goes (with --suite: one sub-directory per entry).
    #[arg(long, required_unless_present = "suite")]
    report_dir: Option<PathBuf>,
    /// Data format; by default from the file extension (.txt/.conll = CoNLL).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Column (or JSONL field) holding the text.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Column used when the text column is empty (e.g. `title` for the ANT corpus).
    #[arg(long)]
    text_fallback: Option<String>,
    /// Column holding the stance target (claim, topic or entity).
    #[arg(long)]
    target_col: Option<String>,
    /// Column holding the gold label.
    #[arg(long, default_value = "label")]
    label_col: String,
    /// Column holding an id for each row.
    #[arg(long)]
    id_col: Option<String>,
    /// Keep only rows whose column has a value, as COL=VALUE (e.g. split=test); repeatable.
    #[arg(long = "filter", value_parser = parse_filter)]
    filters: Vec<(String, String)>,
    /// Map the data set's labels onto the model's, as a=b,c=d.
    #[arg(long)]
    label_map: Option<String>,
    /// Report the mean F1 of these labels too (comma list; Mawqif's official score is
    /// Favor,Against).
    #[arg(long, value_delimiter = ',')]
    selected_labels: Vec<String>,
    /// Evaluate on a seeded sample of N rows (sentences for CoNLL).
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate only shard I of N (I counts from 0: 0/3, 1/3, 2/3), to split a job over
    /// machines. The data (after --limit) is cut in file order into blocks of --batch-size
    /// examples (NER: sentences, or passages with --pack-words), one model call each, and
    /// block b goes to shard b mod N: each shard makes the unsharded run's model calls, so its
    /// predictions are bit-identical. The report says it is a shard; `naba eval merge` joins
    /// all N. With --suite, every entry is sharded.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Seed of --limit's sample and of the bootstrap.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Bootstrap resamples for the 95% intervals (0 turns them off).
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// How NER sub-words become entities before they are mapped back onto the corpus tokens.
    #[arg(long, default_value = "first", value_parser = parse_aggregation)]
    aggregation: AggregationStrategy,
    /// How NER labels are chosen before grouping: `iob2` takes the most probable label
    /// sequence in which every I-x follows B-x or I-x; `argmax` takes each word's best label
    /// (transformers' behaviour).
    #[arg(long, default_value = "iob2", value_parser = parse_decoding)]
    decoding: Decoding,
    /// NER: read runs of consecutive corpus sentences together, as passages of up to N words,
    /// so each sentence is labelled with its neighbours as context (0: each sentence alone).
    /// Scores stay per sentence. Default: the model's `naba.pack_words` (set for models
    /// trained with `data.pack_sentences`), else 0.
    #[arg(long)]
    pack_words: Option<usize>,
    /// Arabic normalisation before the model (see `naba predict --help`).
    #[arg(long, default_value = "none", value_parser = parse_normalize)]
    normalize: NormalizeOptions,
    /// Where to run: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu", env = "NABA_DEVICE")]
    device: DeviceSpec,
    /// Float type: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Documents per model call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Stance: read long texts without the model's relatedness gate (every sentence may vote).
    #[arg(long)]
    no_relatedness: bool,
    /// Topic and stance: score the encoder alone, without the TF-IDF member the model may ship
    /// with.
    #[arg(long)]
    no_lexical: bool,
    /// Tokens per window, special tokens included (default: the window the model was trained
    /// with, else the encoder's full length).
    #[arg(long)]
    window: Option<usize>,
    /// With --task topic: no trained model; score the data's labels zero-shot, by E5
    /// embeddings of these label descriptions (the `naba predict --task zero-shot
    /// --labels-file` format; label names as the data writes them). --model then names the
    /// encoder [default: the base encoder].
    #[arg(long, value_name = "FILE")]
    zero_shot_labels: Option<PathBuf>,
    /// With --zero-shot-labels: `embedding`, or `entailment` (an NLI or naba stance model,
    /// given with --model, reads the template filled with each label name; see `naba predict
    /// --help`).
    #[arg(
        long,
        value_enum,
        default_value = "embedding",
        requires = "zero_shot_labels"
    )]
    zero_shot_method: crate::predict::ZeroShotMethod,
    /// With --zero-shot-method entailment: the hypothesis, `{}` for the label.
    #[arg(long, requires = "zero_shot_labels")]
    hypothesis_template: Option<String>,
}

pub(crate) fn parse_filter(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .filter(|(a, _)| !a.is_empty())
        .ok_or_else(|| format!("`{s}`: write the filter as COLUMN=VALUE"))
}

pub(crate) fn parse_shard(s: &str) -> Result<Shard, String> {
    Shard::parse(s)
}

fn parse_aggregation(s: &str) -> Result<AggregationStrategy, String> {
    match s.parse::<AggregationStrategy>() {
        Ok(AggregationStrategy::None) => Err(
            "`none` gives per-token labels, not entities: use simple, first, average or max".into(),
        ),
        Ok(a) => Ok(a),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_decoding(s: &str) -> Result<Decoding, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_normalize(s: &str) -> Result<NormalizeOptions, String> {
    s.parse().map_err(|e| format!("{e}"))
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    match args.command {
        Some(EvalCommand::Compare { a, b }) => {
            let cmp = naba_eval::compare(&a, &b)?;
            print!("{}", cmp.to_markdown());
            return Ok(ExitCode::SUCCESS);
        }
        Some(EvalCommand::Merge { dirs, report_dir }) => {
            let report = naba_eval::merge_shards(&dirs)?;
            match &report_dir {
                Some(dir) => {
                    report.write(dir)?;
                    eprintln!("{}", headline(&report));
                    eprintln!(
                        "merged {} shards; report written to {}",
                        dirs.len(),
                        dir.display()
                    );
                }
                None => print!("{}", report.markdown()),
            }
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let run = args.run;
    if let Some(suite) = &run.suite {
        return run_suite(suite, &run);
    }
    let (Some(task), Some(data), Some(report_dir)) =
        (run.task, run.data.clone(), run.report_dir.clone())
    else {
        bail!("give --task, --data and --report-dir, or --suite FILE");
    };
    let model = if run.zero_shot_labels.is_some() && entailment(&run) {
        run.model.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "--zero-shot-method entailment needs --model: an NLI checkpoint or a naba \
                 stance model"
            )
        })?
    } else if run.zero_shot_labels.is_some() {
        crate::predict::base_encoder(run.model.as_deref())?
    } else {
        crate::defaults::model_or_default(
            run.model.as_deref(),
            match task {
                EvalTask::Ner => naba_server::Task::Entities,
                EvalTask::Topic => naba_server::Task::Topic,
                EvalTask::Stance => naba_server::Task::Stance,
            },
        )?
    };
    let job = Job {
        name: data.display().to_string(),
        task,
        data,
        model,
        report_dir,
        columns: ColumnArgs::from_run(&run),
        selected_labels: run.selected_labels.clone(),
        source: None,
    };
    let report = evaluate(&job, &run)?;
    if let Some(shard) = run.shard {
        eprintln!(
            "shard {shard} only (merge all {} with `naba eval merge`):",
            shard.count
        );
    }
    eprintln!("{}", headline(&report));
    eprintln!("report written to {}", job.report_dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Records in the report what the encoder's products multiply in (`f32`, `bf16`, `int8`), since the
/// same model can score a hair differently on another CPU.
fn record_products(info: &mut RunInfo, pipeline: &Pipeline) {
    if let Some(p) = pipeline.model().encoder.precision() {
        info.settings
            .insert("products".to_string(), p.name().to_string());
    }
}

/// Column settings of one evaluation, from flags or a suite entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnArgs {
    format: Option<Format>,
    text_col: Option<String>,
    text_fallback: Option<String>,
    target_col: Option<String>,
    label_col: Option<String>,
    id_col: Option<String>,
    #[serde(default)]
    filter: std::collections::BTreeMap<String, String>,
    label_map: Option<String>,
}

impl ColumnArgs {
    fn from_run(run: &RunArgs) -> Self {
        ColumnArgs {
            format: run.format,
            text_col: Some(run.text_col.clone()),
            text_fallback: run.text_fallback.clone(),
            target_col: run.target_col.clone(),
            label_col: Some(run.label_col.clone()),
            id_col: run.id_col.clone(),
            filter: run.filters.iter().cloned().collect(),
            label_map: run.label_map.clone(),
        }
    }
}

struct Job {
    name: String,
    task: EvalTask,
    data: PathBuf,
    model: String,
    report_dir: PathBuf,
    columns: ColumnArgs,
    selected_labels: Vec<String>,
    /// Where to get the data set, for the error when the file is missing.
    source: Option<String>,
}

fn load_pipeline(job: &Job, run: &RunArgs) -> Result<Pipeline> {
    let device = run.device.open()?;
    let dtype = parse_dtype(&run.dtype, &device)?;
    let head = match job.task {
        _ if run.zero_shot_labels.is_some() && entailment(run) => HeadKind::SequenceClassification,
        _ if run.zero_shot_labels.is_some() => HeadKind::None,
        EvalTask::Ner => HeadKind::TokenClassification,
        _ => HeadKind::SequenceClassification,
    };
    let load_opts = LoadOptions {
        device,
        dtype,
        revision: None,
        // The 4-bit base encoder runs far faster on the dense f32 engine; its embeddings
        // agree with the 4-bit path's to a cosine of 0.9999 (tests/e5_reference.rs).
        dequantize: run.zero_shot_labels.is_some() && !entailment(run),
        head_hint: Some(head),
        ..LoadOptions::default()
    };
    let model = Model::load(&job.model, &load_opts)
        .with_context(|| format!("cannot load model `{}`", job.model))?;
    if model.config.head != head && head != HeadKind::None {
        bail!(
            "model `{}` does not have the head a {:?} evaluation needs",
            job.model,
            job.task
        );
    }
    let gate = match job.task {
        EvalTask::Stance if run.zero_shot_labels.is_none() && !run.no_relatedness => {
            Relatedness::for_model(&model, &load_opts)?
        }
        _ => None,
    };
    let lexical = match job.task {
        EvalTask::Topic | EvalTask::Stance if run.zero_shot_labels.is_none() && !run.no_lexical => {
            Lexical::read(&model.dir)?
        }
        _ => None,
    };
    Ok(Pipeline::new(
        model,
        &PipelineOptions {
            batch_size: run.batch_size,
            window: run.window,
            ..PipelineOptions::default()
        },
    )?
    .with_relatedness(gate)
    .with_lexical(lexical)?)
}

fn progress(n: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Runs one evaluation and writes its report. The report directory is written atomically at
/// the end, so an interrupted run leaves the previous report (or none) in place.
fn evaluate(job: &Job, run: &RunArgs) -> Result<Report> {
    if !job.data.is_file() {
        let how = job
            .source
            .as_deref()
            .unwrap_or("see the README's Data section");
        bail!(
            "data set `{}`: {} not found; get it: {how}",
            job.name,
            job.data.display()
        );
    }
    let label_map = match &job.columns.label_map {
        Some(m) => LabelMap::parse(m)?,
        None => LabelMap::default(),
    };
    let zero_shot = match &run.zero_shot_labels {
        None => None,
        Some(_) if job.task != EvalTask::Topic => {
            bail!("--zero-shot-labels goes with --task topic")
        }
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --zero-shot-labels {}", path.display()))?;
            let labels = naba_tasks::zero_shot::labels_from_file(&text);
            naba_tasks::zero_shot::check_labels(&labels)
                .map_err(|e| anyhow::anyhow!("--zero-shot-labels {}: {e}", path.display()))?;
            Some(labels)
        }
    };
    // DeBERTa-v2 NLI models run on candle-transformers, outside naba's pipelines.
    let deberta = match &zero_shot {
        Some(_) if entailment(run) && naba_models::deberta::is_deberta(Path::new(&job.model)) => {
            let device = run.device.open()?;
            Some(DebertaClassifier::load(Path::new(&job.model), &device)?)
        }
        _ => None,
    };
    let pipeline = match deberta {
        Some(_) => None,
        None => Some(load_pipeline(job, run)?),
    };
    let the_pipeline = || {
        pipeline
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("a DeBERTa model only evaluates zero-shot entailment"))
    };
    let labels: BTreeSet<String> = match &zero_shot {
        Some(zs) => zs.iter().map(|l| l.name.clone()).collect(),
        None => the_pipeline()?
            .model()
            .config
            .labels
            .iter()
            .cloned()
            .collect(),
    };
    let mut info = RunInfo::new(&job.model, job.data.display().to_string());
    if let Some(path) = &run.zero_shot_labels {
        info.settings.extend([
            (
                "zero_shot".to_string(),
                if entailment(run) {
                    "entailment"
                } else {
                    "embedding"
                }
                .to_string(),
            ),
            ("zero_shot_labels".to_string(), path.display().to_string()),
        ]);
    }
    info.label_map = job.columns.label_map.clone();
    let mut opts = EvalOptions {
        bootstrap: BootstrapConfig {
            resamples: run.bootstrap,
            seed: run.seed,
        },
        selected_labels: job.selected_labels.clone(),
        run: None,
        shard: None,
    };
    let mut shard_part: Option<ShardPart> = None;
    let is_conll = match job.columns.format {
        Some(f) => f == Format::Conll,
        None => job
            .data
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "txt" | "conll" | "iob")),
    };
    let started = Instant::now();
    let report = match job.task {
        EvalTask::Ner => {
            if !is_conll {
                bail!("NER evaluation reads CoNLL files (`token TAG` lines); pass --format conll");
            }
            let types: BTreeSet<String> = labels
                .iter()
                .filter(|l| *l != "O")
                .map(|l| l.split_once('-').map_or(l.as_str(), |(_, t)| t).to_string())
                .collect();
            let corpus = naba_eval::read_conll(
                &job.data,
                &ConllOptions {
                    label_map,
                    label_set: Some(types),
                },
            )?
            .sample(run.limit, run.seed);
            let pack_words = run
                .pack_words
                .or(the_pipeline()?.model().config.naba.pack_words)
                .unwrap_or(0);
            // Passages are cut over the whole job and dealt out a model call's worth at a time,
            // so a sharded sentence is read with the same neighbours, in the same batch, as in
            // an unsharded run.
            let mut groups = passages(&corpus.sentences, pack_words);
            let corpus = match run.shard {
                Some(shard) => {
                    let per_call = run.batch_size.max(1);
                    let blocks: Vec<std::ops::Range<usize>> = groups
                        .chunks(per_call)
                        .filter_map(|c| Some(c.first()?.start..c.last()?.end))
                        .collect();
                    let dealt = if pack_words > 0 {
                        format!("blocks of {per_call} passages of up to {pack_words} words")
                    } else {
                        format!("blocks of {per_call} sentences")
                    };
                    let (part, p) = corpus.take_shard(shard, &blocks, &dealt);
                    let mut start = 0;
                    groups = groups
                        .chunks(per_call)
                        .enumerate()
                        .filter(|(b, _)| shard.owns(*b))
                        .flat_map(|(_, c)| c.iter())
                        .map(|r| {
                            let local = start..start + r.len();
                            start = local.end;
                            local
                        })
                        .collect();
                    shard_part = Some(nonempty(p, "sentences")?);
                    part
                }
                None => corpus,
            };
            info.settings.extend([
                ("decoding".to_string(), run.decoding.to_string()),
                ("aggregation".to_string(), run.aggregation.to_string()),
                ("pack_words".to_string(), pack_words.to_string()),
            ]);
            let pipeline = the_pipeline()?;
            record_products(&mut info, pipeline);
            let (tags, timings) = predict_ner(pipeline, &corpus.sentences, &groups, run)?;
            opts.run = Some(RunStats::from_timings(
                &timings,
                corpus.token_count() as u64,
                Some(started.elapsed()),
            )?);
            opts.shard = shard_part.map(|p| with_latency(p, &timings));
            Report::ner(&corpus, &tags, info, &opts)?
        }
        EvalTask::Topic | EvalTask::Stance => {
            if is_conll {
                bail!(
                    "{:?} evaluation reads JSONL, CSV or TSV; pass --format",
                    job.task
                );
            }
            let c = &job.columns;
            let columns = ColumnOptions {
                text: c.text_col.clone().unwrap_or_else(|| "text".into()),
                text_fallback: c.text_fallback.clone(),
                target: c.target_col.clone(),
                label: c.label_col.clone().unwrap_or_else(|| "label".into()),
                id: c.id_col.clone(),
                label_map,
                label_set: Some(labels),
                filter: c.filter.clone().into_iter().collect(),
            };
            if job.task == EvalTask::Stance && columns.target.is_none() {
                bail!("stance evaluation needs --target-col (the claim or target column)");
            }
            let format = c.format.map(|f| match f {
                Format::Jsonl => DataFormat::Jsonl,
                Format::Tsv => DataFormat::Tsv,
                _ => DataFormat::Csv,
            });
            let corpus = ClassificationCorpus::read(&job.data, format, &columns)?
                .sample(run.limit, run.seed);
            let corpus = match run.shard {
                Some(shard) => {
                    let (part, p) = corpus.take_shard(shard, run.batch_size.max(1));
                    shard_part = Some(nonempty(p, "examples")?);
                    part
                }
                None => corpus,
            };
            let (preds, timings, words) = match zero_shot {
                None => {
                    let pipeline = the_pipeline()?;
                    record_products(&mut info, pipeline);
                    if let Some(mix) = pipeline.lexical_mix() {
                        info.settings
                            .insert("lexical_mix".to_string(), mix.to_string());
                    }
                    predict_classes(&|i, o| pipeline.classify(i, o), &corpus, run)?
                }
                Some(labels) if entailment(run) => {
                    let template = run
                        .hypothesis_template
                        .clone()
                        .unwrap_or_else(|| default_template(&labels).to_string());
                    info.settings
                        .insert("hypothesis_template".to_string(), template.clone());
                    match (deberta, pipeline) {
                        (Some(model), _) => entail_classes(
                            &EntailmentZeroShot::new(model)?,
                            &labels,
                            &template,
                            &corpus,
                            run,
                        )?,
                        (None, Some(model)) => entail_classes(
                            &EntailmentZeroShot::new(model)?,
                            &labels,
                            &template,
                            &corpus,
                            run,
                        )?,
                        (None, None) => bail!("no model loaded"),
                    }
                }
                Some(labels) => {
                    let Some(pipeline) = pipeline else {
                        bail!("a DeBERTa model only evaluates zero-shot entailment");
                    };
                    let zs = EmbeddingZeroShot::new(pipeline, Calibration::E5_SMALL);
                    let classify = |inputs: &[ClassifyInput], _: &ClassifyOptions| {
                        let texts: Vec<&str> = inputs.iter().map(|i| i.text).collect();
                        as_outputs(zs.classify(&texts, &labels, false), inputs.len())
                    };
                    predict_classes(&classify, &corpus, run)?
                }
            };
            opts.run = Some(RunStats::from_timings(
                &timings,
                words,
                Some(started.elapsed()),
            )?);
            opts.shard = shard_part.map(|p| with_latency(p, &timings));
            Report::classification(&corpus, &preds, info, &opts)?
        }
    };
    report.write(&job.report_dir)?;
    Ok(report)
}

/// A shard with nothing in it cannot be scored; saying so beats an empty report that the merge
/// would have to special-case.
fn nonempty(part: ShardPart, what: &str) -> Result<ShardPart> {
    if part.positions.is_empty() {
        bail!(
            "shard {} holds none of the job's {} {what} (dealt in {}): use fewer shards or a \
             smaller --batch-size",
            part.shard,
            part.total,
            part.dealt
        );
    }
    Ok(part)
}

fn with_latency(mut part: ShardPart, timings: &[Duration]) -> ShardPart {
    part.latency_ms = timings.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    part
}

/// Runs NER over `passages` (runs of consecutive sentences, see [`passages`]; one sentence each
/// without `--pack-words`), each passage's tokens joined by spaces, and turns the entities back
/// into one IOB2 tag per corpus token: the first token of a sentence an entity touches gets
/// `B-`, the rest `I-`.
fn predict_ner(
    pipeline: &Pipeline,
    sentences: &[naba_eval::NerSentence],
    passages: &[std::ops::Range<usize>],
    run: &RunArgs,
) -> Result<(Vec<Vec<String>>, Vec<Duration>)> {
    let bar = progress(sentences.len(), "ner");
    let opts = NerOptions {
        aggregation: run.aggregation,
        decoding: run.decoding,
        normalize: run.normalize,
        ..NerOptions::default()
    };
    let mut tags = Vec::with_capacity(sentences.len());
    let mut timings = Vec::with_capacity(sentences.len());
    let mut failures = Failures::default();
    for chunk in passages.chunks(run.batch_size.max(1)) {
        let mut texts = Vec::with_capacity(chunk.len());
        let mut spans = Vec::with_capacity(chunk.len());
        for members in chunk {
            let mut text = String::new();
            // Characters written so far: offsets without recounting the passage per token.
            let mut chars = 0;
            // Per sentence of the passage, the character span of each of its tokens.
            let mut sp: Vec<Vec<(usize, usize)>> = Vec::with_capacity(members.len());
            for s in &sentences[members.clone()] {
                let mut own = Vec::with_capacity(s.tokens.len());
                for tok in &s.tokens {
                    if !text.is_empty() {
                        text.push(' ');
                        chars += 1;
                    }
                    let start = chars;
                    text.push_str(tok);
                    chars += tok.chars().count();
                    own.push((start, chars));
                }
                sp.push(own);
            }
            texts.push(text);
            spans.push(sp);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let t = Instant::now();
        let results = pipeline.ner(&refs, &opts);
        let n_sentences: usize = chunk.iter().map(|m| m.len()).sum();
        let each = t.elapsed() / n_sentences.max(1) as u32;
        for ((res, sp), members) in results.into_iter().zip(&spans).zip(chunk) {
            let entities = match res {
                Ok(out) => out.entities,
                Err(e) => {
                    failures.note(sentences[members.start].line, &e.to_string());
                    Vec::new()
                }
            };
            for own in sp {
                let mut row = vec!["O".to_string(); own.len()];
                for e in &entities {
                    let mut first = true;
                    for (i, (a, b)) in own.iter().enumerate() {
                        if *a < e.end && e.start < *b && row[i] == "O" {
                            row[i] = format!("{}-{}", if first { "B" } else { "I" }, e.label);
                            first = false;
                        }
                    }
                }
                tags.push(row);
                timings.push(each);
            }
        }
        bar.inc(n_sentences as u64);
    }
    bar.finish_and_clear();
    failures.warn("sentences", "no entities (all `O`)");
    Ok((tags, timings))
}

/// Runs of consecutive sentences of at most `max_words` words together (a longer sentence
/// alone); `0` gives every sentence its own passage.
fn passages(sentences: &[naba_eval::NerSentence], max_words: usize) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut words = 0;
    for (i, s) in sentences.iter().enumerate() {
        let n = s.tokens.len();
        match out.last_mut() {
            Some(p) if max_words > 0 && words + n <= max_words => {
                p.end = i + 1;
                words += n;
            }
            _ => {
                out.push(i..i + 1);
                words = n;
            }
        }
    }
    out
}

/// Entailment zero-shot over a classification corpus, on any pair classifier.
fn entail_classes<P: PairClassifier>(
    zs: &EntailmentZeroShot<P>,
    labels: &[ZeroShotLabel],
    template: &str,
    corpus: &ClassificationCorpus,
    run: &RunArgs,
) -> Result<(Vec<ClassPrediction>, Vec<Duration>, u64)> {
    let classify = |inputs: &[ClassifyInput], _: &ClassifyOptions| {
        let texts: Vec<&str> = inputs.iter().map(|i| i.text).collect();
        as_outputs(zs.classify(&texts, labels, template, false), inputs.len())
    };
    predict_classes(&classify, corpus, run)
}

fn entailment(run: &RunArgs) -> bool {
    run.zero_shot_method == crate::predict::ZeroShotMethod::Entailment
}

/// Zero-shot scores in the shape the classification report reads.
fn as_outputs(
    results: Result<Vec<Result<ZeroShotOutput, TaskError>>, TaskError>,
    n: usize,
) -> Vec<Result<ClassifyOutput, TaskError>> {
    match results {
        Ok(results) => results
            .into_iter()
            .map(|r| {
                r.map(|o| ClassifyOutput {
                    labels: o.labels,
                    windows: o.windows,
                    ..ClassifyOutput::default()
                })
            })
            .collect(),
        Err(e) => {
            let msg = e.to_string();
            (0..n)
                .map(|_| Err(TaskError::Labels(msg.clone())))
                .collect()
        }
    }
}

type ClassifyFn<'a> =
    dyn Fn(&[ClassifyInput], &ClassifyOptions) -> Vec<Result<ClassifyOutput, TaskError>> + 'a;

fn predict_classes(
    classify: &ClassifyFn<'_>,
    corpus: &ClassificationCorpus,
    run: &RunArgs,
) -> Result<(Vec<ClassPrediction>, Vec<Duration>, u64)> {
    let bar = progress(corpus.examples.len(), "classify");
    let opts = ClassifyOptions {
        top_k: None,
        normalize: run.normalize,
        function: None,
    };
    let mut preds = Vec::with_capacity(corpus.examples.len());
    let mut failures = Failures::default();
    let mut timings = Vec::with_capacity(corpus.examples.len());
    let mut words = 0u64;
    for chunk in corpus.examples.chunks(run.batch_size.max(1)) {
        let inputs: Vec<ClassifyInput> = chunk
            .iter()
            .map(|e| ClassifyInput {
                text: &e.text,
                target: e.target.as_deref(),
            })
            .collect();
        words += chunk
            .iter()
            .map(|e| e.text.split_whitespace().count() as u64)
            .sum::<u64>();
        let t = Instant::now();
        let results = classify(&inputs, &opts);
        let each = t.elapsed() / chunk.len() as u32;
        for (res, e) in results.into_iter().zip(chunk) {
            match res {
                Ok(out) => {
                    let best = out
                        .labels
                        .first()
                        .map(|l| l.label.clone())
                        .unwrap_or_default();
                    preds.push(ClassPrediction::with_scores(
                        best,
                        out.labels
                            .iter()
                            .map(|l| (l.label.clone(), f64::from(l.score))),
                    ));
                }
                Err(err) => {
                    failures.note(e.line, &err.to_string());
                    preds.push(ClassPrediction::new(FAILED_LABEL));
                }
            }
            timings.push(each);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    failures.warn("rows", &format!("the label `{FAILED_LABEL}`"));
    Ok((preds, timings, words))
}

/// The prediction recorded for a row the model could not read: it counts as wrong and shows up
/// as its own column in the confusion matrix, so no row silently leaves the denominator.
const FAILED_LABEL: &str = "(unreadable)";

/// Rows the model could not read, reported once at the end with the first line at fault.
#[derive(Default)]
struct Failures {
    count: usize,
    first: Option<(usize, String)>,
}

impl Failures {
    fn note(&mut self, line: usize, message: &str) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((line, message.to_string()));
        }
    }

    fn warn(&self, what: &str, counted_as: &str) {
        if let Some((line, msg)) = &self.first {
            eprintln!(
                "warning: the model could not read {} {what} (first at line {line}: {msg}); \
                 they are scored with {counted_as}",
                self.count
            );
        }
    }
}

fn headline(report: &Report) -> String {
    let m = serde_json::to_value(&report.metrics).unwrap_or_default();
    let fig = |k: &str| -> String {
        let v = &m[k];
        match (v["value"].as_f64(), v["ci95"].as_array()) {
            (Some(x), Some(ci)) if ci.len() == 2 => format!(
                "{k} {x:.4} [{:.4}, {:.4}]",
                ci[0].as_f64().unwrap_or(f64::NAN),
                ci[1].as_f64().unwrap_or(f64::NAN)
            ),
            (Some(x), _) => format!("{k} {x:.4}"),
            _ => String::new(),
        }
    };
    ["micro_f1", "macro_f1", "accuracy", "selected_f1"]
        .iter()
        .map(|k| fig(k))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("  ")
}

/// A suite file: named data sets with their columns, label maps and the model to evaluate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    /// Data paths are relative to this directory, itself relative to the suite file.
    #[serde(default)]
    base_dir: Option<PathBuf>,
    #[serde(rename = "dataset", default)]
    datasets: Vec<SuiteEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteEntry {
    name: String,
    task: EvalTask,
    path: PathBuf,
    /// The model(s) to evaluate on it.
    models: Vec<String>,
    /// Where a user gets this data set.
    source: String,
    #[serde(default)]
    selected_labels: Vec<String>,
    #[serde(flatten)]
    columns: ColumnArgs,
}

fn run_suite(path: &Path, run: &RunArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read suite {}", path.display()))?;
    let suite: Suite =
        toml::from_str(&text).with_context(|| format!("suite {}", path.display()))?;
    let here = path.parent().unwrap_or(Path::new("."));
    let base = match &suite.base_dir {
        Some(b) => here.join(b),
        None => here.to_path_buf(),
    };
    let root = run
        .report_dir
        .clone()
        .unwrap_or_else(|| here.join("reports"));
    let mut rows = Vec::new();
    let mut failures = 0;
    for entry in &suite.datasets {
        if !run.only.is_empty() && !run.only.contains(&entry.name) {
            continue;
        }
        let models = match &run.model {
            Some(m) => vec![m.clone()],
            None => entry.models.clone(),
        };
        for model in models {
            let job = Job {
                name: entry.name.clone(),
                task: entry.task,
                data: base.join(&entry.path),
                model: model.clone(),
                report_dir: root.join(&entry.name).join(sanitize(&model)),
                columns: entry.columns.clone(),
                selected_labels: entry.selected_labels.clone(),
                source: Some(entry.source.clone()),
            };
            eprintln!("== {} with {model}", entry.name);
            match evaluate(&job, run) {
                Ok(report) => {
                    let line = headline(&report);
                    eprintln!("   {line}");
                    rows.push(format!(
                        "| {} | {model} | {line} | `{}` |",
                        entry.name,
                        job.report_dir.display()
                    ));
                }
                Err(e) => {
                    failures += 1;
                    let msg = crate::one_line(&e);
                    eprintln!("   failed: {msg}");
                    rows.push(format!("| {} | {model} | not run: {msg} | |", entry.name));
                }
            }
        }
    }
    let shard_note = run.shard.map_or_else(String::new, |s| {
        format!(
            "Shard {s} of every entry only: `naba eval merge` joins each entry's {} shard \
             reports.\n\n",
            s.count
        )
    });
    let summary = format!(
        "{shard_note}| data set | model | figures (95% CI) | report |\n|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("summary.md"), &summary)?;
    print!("{summary}");
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::passages;

    fn sentence(words: usize) -> naba_eval::NerSentence {
        naba_eval::NerSentence {
            id: String::new(),
            line: 1,
            tokens: vec!["كلمة".to_string(); words],
            tags: vec!["O".to_string(); words],
            token_lines: vec![1; words],
            raw_lines: vec![String::new(); words],
        }
    }

    #[test]
    fn passages_join_consecutive_sentences_up_to_the_word_budget() {
        let s: Vec<_> = [3, 4, 2, 9, 1, 1].into_iter().map(sentence).collect();
        assert_eq!(passages(&s, 0), vec![0..1, 1..2, 2..3, 3..4, 4..5, 5..6]);
        // 3+4+2 = 9 fit in 9; the 9-word sentence fills its own; 1+1 share one.
        assert_eq!(passages(&s, 9), vec![0..3, 3..4, 4..6]);
        // A sentence over the budget still gets a passage of its own.
        assert_eq!(passages(&s, 5), vec![0..1, 1..2, 2..3, 3..4, 4..6]);
        assert!(passages(&[], 10).is_empty());
    }
}
