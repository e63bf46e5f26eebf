//! `naba`: Arabic news topic, stance and named entities from the command line. This binary only
//! wires the library crates together; each subcommand lives in its own module.

mod bench_cmd;
mod defaults;
mod embed_cmd;
mod eval_cmd;
mod input;
mod lexical_cmd;
mod models_cmd;
mod predict;
mod serve_cmd;
mod train_cmd;
mod worker_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "naba",
    version,
    about = "Topic, stance and named entities for Arabic news text",
    long_about = "Topic, stance and named entities for Arabic news text.\n\n\
        Models are Hugging Face-layout directories, hub repo ids (read from the local hub \
        cache when HF_HUB_OFFLINE=1), or the base encoder fetched by `naba models fetch`.",
    after_help = "Environment: NABA_THREADS (as --threads); NABA_PRECISION=auto|int8|bf16|f32 \
        picks what the encoder's matrix products multiply in (auto, the default: int8 on CPUs \
        with AVX2 (AMX or VNNI where there is one), else f32; norms, softmax and GELU stay \
        f32); NABA_AMX=off keeps Intel AMX tiles out of int8 and bf16 products; \
        NABA_ISA=portable turns the AVX2/AVX-512 kernels off; NABA_ENGINE=reference runs \
        candle's own ops instead of the fused kernels."
)]
struct Cli {
    /// CPU threads for model work (default: every core).
    #[arg(long, global = true, env = "NABA_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Label texts: topic or stance classification, or named entities.
    Predict(predict::PredictArgs),
    /// Measure a model on a labelled corpus and write a report.
    Eval(Box<eval_cmd::EvalArgs>),
    /// E5 sentence embeddings of texts, or of the passages stance reads them in.
    Embed(Box<embed_cmd::EmbedArgs>),
    /// Fine-tune a model from a recipe.
    Train(train_cmd::TrainArgs),
    /// Fit the TF-IDF member a topic model averages its probabilities with.
    Lexical(Box<lexical_cmd::LexicalArgs>),
    /// Serve the JSON HTTP API.
    Serve(Box<serve_cmd::ServeArgs>),
    /// Label a Redis stream as one worker of a consumer group.
    Worker(Box<worker_cmd::WorkerArgs>),
    /// Fetch and list models.
    #[command(subcommand)]
    Models(models_cmd::ModelsCommand),
    /// Time a model over a corpus the way scripts/bench/run.py compares engines.
    Bench(Box<bench_cmd::BenchArgs>),
    /// Time training steps on CoNLL sentences, as scripts/bench/run.py's training rows do.
    BenchTrain(Box<bench_cmd::BenchTrainArgs>),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NABA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,naba_server=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Err(err) = set_threads(cli.threads) {
        eprintln!("error: {}", one_line(&err));
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Eval(args) => eval_cmd::run(*args),
        Command::Embed(args) => embed_cmd::run(*args),
        Command::Train(args) => train_cmd::run(args),
        Command::Lexical(args) => lexical_cmd::run(*args),
        Command::Serve(args) => serve_cmd::run(*args),
        Command::Worker(args) => worker_cmd::run(*args),
        Command::Models(cmd) => models_cmd::run(cmd),
        Command::Bench(args) => bench_cmd::run(*args),
        Command::BenchTrain(args) => bench_cmd::run_train(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

/// One pool of model threads for the whole process: naba's kernels and candle's both split
/// work over rayon's global pool, and candle's own helpers read `RAYON_NUM_THREADS`.
fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    let Some(n) = threads else {
        return Ok(());
    };
    if n == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    // SAFETY (of set_var): called before any other thread of this process exists.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot start {n} threads: {e}"))
}

/// The error and its causes on one line: scripts read the first line of stderr.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
