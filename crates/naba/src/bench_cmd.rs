//! `naba bench`: how fast naba runs a model over a corpus, measured the way the Python peers in
//! `scripts/bench/peers.py` measure themselves, on the very windows naba reads (written out so
//! the peers get the same input). `scripts/bench/run.py` runs this and the peers side by side.

use anyhow::{bail, Context, Result};
use clap::Args;
use naba_models::{LoadOptions, Model};
use naba_tasks::{NerOptions, Pipeline, PipelineOptions};
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use tokenizers::Encoding;

#[derive(Args)]
pub struct BenchArgs {
    /// Model: a checkpoint directory or an installed model name.
    #[arg(long)]
    model: String,
    /// JSONL documents.
    #[arg(long)]
    data: PathBuf,
    /// Field that holds the text.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Keep only records whose FIELD equals VALUE (repeatable), e.g. `split=test`.
    #[arg(long = "filter", value_parser = crate::eval_cmd::parse_filter)]
    filters: Vec<(String, String)>,
    /// Documents to read (the first N that pass the filters and have text).
    #[arg(long, default_value_t = 300)]
    docs: usize,
    /// Windows per model call.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Single-request latency runs (one window of 256 tokens each).
    #[arg(long, default_value_t = 30)]
    latency_runs: usize,
    /// Write the windows, in the order they are batched, as JSONL (`doc`, `ids`, `type_ids`).
    #[arg(long)]
    windows_out: Option<PathBuf>,
    /// Write the 256-token latency request as JSON (`ids`).
    #[arg(long)]
    latency_window_out: Option<PathBuf>,
    /// Write the logits of the first --dump-n windows (real tokens only, flattened) as JSON.
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    dump_n: usize,
    /// Where to write the result JSON (also printed).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn read_texts(args: &BenchArgs) -> Result<Vec<String>> {
    let file = std::fs::File::open(&args.data)
        .with_context(|| format!("cannot open {}", args.data.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        if out.len() == args.docs {
            break;
        }
        let line = line.with_context(|| format!("cannot read {}", args.data.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", args.data.display(), i + 1))?;
        let keep = args.filters.iter().all(|(k, want)| match &v[k] {
            serde_json::Value::String(s) => s == want,
            // Numbers and booleans compare by their JSON text (`year=2020`).
            other => want.as_str() == other.to_string().as_str(),
        });
        match v[&args.text_col].as_str() {
            Some(t) if keep && !t.trim().is_empty() => out.push(t.to_string()),
            _ => {}
        }
    }
    if out.is_empty() {
        bail!(
            "no document in {} has a non-empty `{}` field passing the filters",
            args.data.display(),
            args.text_col
        );
    }
    Ok(out)
}

fn write_json(path: &PathBuf, v: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec(v)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let texts = read_texts(&args)?;
    let model = Model::load(&args.model, &LoadOptions::default())
        .with_context(|| format!("cannot load model `{}`", args.model))?;
    let engine = format!("{:?}", model.encoder.engine()).to_lowercase();
    let pipeline = Pipeline::new(
        model,
        &PipelineOptions {
            batch_size: args.batch_size,
            ..PipelineOptions::default()
        },
    )?;
    let mut jobs: Vec<(usize, Encoding)> = Vec::new();
    for (d, t) in texts.iter().enumerate() {
        for w in pipeline.windows(t, None)? {
            jobs.push((d, w));
        }
    }
    // The pipeline's own order: longest first, stable, in batches of --batch-size.
    jobs.sort_by_key(|(_, e)| std::cmp::Reverse(e.len()));
    let subwords: usize = jobs.iter().map(|(_, e)| e.len()).sum();
    if let Some(p) = &args.windows_out {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        );
        for (d, e) in &jobs {
            writeln!(
                f,
                "{}",
                json!({"doc": d, "ids": e.get_ids(), "type_ids": e.get_type_ids()})
            )?;
        }
        f.flush()?;
    }
    let batches: Vec<Vec<&Encoding>> = jobs
        .chunks(args.batch_size.max(1))
        .map(|c| c.iter().map(|(_, e)| e).collect())
        .collect();

    let logits = |b: &[&Encoding]| pipeline.logits(b.iter().copied());
    // Warm-up batch, not counted (as the peers do).
    logits(&batches[0])?;
    let start = Instant::now();
    let mut dumped = Vec::new();
    for b in &batches {
        let out = logits(b)?;
        if dumped.len() < args.dump_n {
            dumped.extend(out.into_iter().take(args.dump_n - dumped.len()));
        }
    }
    let seconds = start.elapsed().as_secs_f64();

    // The whole pipeline (tokenise, run, decode entities) on the same documents.
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let ner = pipeline.ner(&refs, &NerOptions::default());
    let pipeline_seconds = start.elapsed().as_secs_f64();
    if let Some(e) = ner.iter().find_map(|r| r.as_ref().err()) {
        eprintln!("note: the pipeline pass reported an error for a document: {e}");
    }

    // One request of 256 tokens: the start of the longest window.
    let mut request = jobs[0].1.clone();
    request.truncate(256, 0, tokenizers::TruncationDirection::Right);
    request.set_overflowing(Vec::new());
    let n = request.len();
    if let Some(p) = &args.latency_window_out {
        write_json(
            p,
            &json!({"ids": request.get_ids(), "type_ids": request.get_type_ids()}),
        )?;
    }
    let one = || pipeline.logits(std::iter::once(&request));
    for _ in 0..3 {
        one()?;
    }
    let mut lat = Vec::with_capacity(args.latency_runs);
    for _ in 0..args.latency_runs {
        let t = Instant::now();
        one()?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);

    if let Some(p) = &args.dump_logits {
        write_json(p, &json!(dumped))?;
    }
    let result = json!({
        "engine": "naba",
        "version": format!(
            "naba {} ({engine} engine, {} kernels, {} products)",
            env!("CARGO_PKG_VERSION"),
            naba_kernels::Isa::best().name(),
            naba_kernels::Precision::best().describe()
        ),
        "threads": naba_kernels::threads(),
        "batch_size": args.batch_size,
        "windows": jobs.len(),
        "subwords": subwords,
        "docs": texts.len(),
        "seconds": seconds,
        "subwords_per_s": subwords as f64 / seconds,
        "docs_per_s": texts.len() as f64 / seconds,
        "pipeline_seconds": pipeline_seconds,
        "pipeline_subwords_per_s": subwords as f64 / pipeline_seconds,
        "latency_tokens": n,
        "latency_p50_ms": percentile(&lat, 0.5),
        "latency_p99_ms": percentile(&lat, 0.99),
        "startup_s": serde_json::Value::Null,
        "peak_rss_mb": peak_rss_mb(),
    });
    if let Some(p) = &args.out {
        write_json(p, &result)?;
    }
    println!("{result}");
    Ok(ExitCode::SUCCESS)
}

/// `naba bench-train`: training throughput, the naba side of run.py's training rows.
#[derive(Args)]
pub struct BenchTrainArgs {
    /// A token-classification checkpoint: a directory, or the name of an installed model
    /// (`ner-anercorp`). Every encoder layer and the head train; the word embeddings stay frozen.
    #[arg(long)]
    model: String,
    /// CoNLL file whose first --sentences sentences are packed into windows of --max-length.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 200)]
    sentences: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Longest window in sub-words, special tokens included.
    #[arg(long, default_value_t = 256)]
    max_length: usize,
    /// Timed optimiser steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup_steps: usize,
    /// `fast` (the hand-written passes `naba train` uses by default) or `reference` (candle's
    /// autograd).
    #[arg(long, default_value = "fast", value_parser = ["fast", "reference"])]
    engine: String,
    /// Dropout on hidden states, as a recipe's `model.dropout`.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// Peak learning rate (constant here).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Write the batches, one JSON line per step (`ids`, `labels`), for a peer to train on.
    #[arg(long)]
    batches_out: Option<PathBuf>,
    /// Where to write the result JSON (also printed).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run_train(args: BenchTrainArgs) -> Result<ExitCode> {
    let model = if std::path::Path::new(&args.model).is_dir() {
        args.model.clone()
    } else {
        let installed = naba_models::fetch::installed_dir(&args.model);
        if !installed.is_dir() {
            bail!(
                "`{}` is neither a directory nor an installed model (looked in {}); run `naba \
                 models fetch` or give a checkpoint directory",
                args.model,
                installed.display()
            );
        }
        installed.display().to_string()
    };
    let engine = match args.engine.as_str() {
        "reference" => naba_train::recipe::TrainEngine::Reference,
        _ => naba_train::recipe::TrainEngine::Fast,
    };
    let report = naba_train::bench::bench(&naba_train::bench::BenchOptions {
        model,
        data: args.data.clone(),
        sentences: args.sentences,
        batch_size: args.batch_size,
        max_length: args.max_length,
        steps: args.steps,
        warmup_steps: args.warmup_steps,
        engine,
        batches_out: args.batches_out.clone(),
        dropout: args.dropout,
        lr: args.lr,
    })?;
    let mut result = serde_json::to_value(&report)?;
    result["version"] = json!(format!(
        "naba {} ({} kernels, {} products)",
        env!("CARGO_PKG_VERSION"),
        naba_kernels::Isa::best().name(),
        naba_train::recipe::TrainPrecision::Auto.resolve().name()
    ));
    result["peak_rss_mb"] = json!(peak_rss_mb());
    if let Some(p) = &args.out {
        write_json(p, &result)?;
    }
    println!("{result}");
    Ok(ExitCode::SUCCESS)
}
