//! `naba`: Arabic news topic, stance and named entities from the command line. This binary only
//! wires the library crates together; each subcommand lives in its own module.

mod eval_cmd;
mod input;
mod models_cmd;
mod predict;
mod serve_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "naba",
    version,
    about = "Topic, stance and named entities for Arabic news text",
    long_about = "Topic, stance and named entities for Arabic news text.\n\n\
        Models are Hugging Face-layout directories, hub repo ids (read from the local hub \
        cache when HF_HUB_OFFLINE=1), or the base encoder fetched by `naba models fetch`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Label texts: topic or stance classification, or named entities.
    Predict(predict::PredictArgs),
    /// Measure a model on a labelled corpus and write a report.
    Eval(Box<eval_cmd::EvalArgs>),
    /// Fine-tune a model from a recipe.
    Train(train_cmd::TrainArgs),
    /// Serve the JSON HTTP API.
    Serve(serve_cmd::ServeArgs),
    /// Fetch and list models.
    #[command(subcommand)]
    Models(models_cmd::ModelsCommand),
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
    let result = match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Eval(args) => eval_cmd::run(*args),
        Command::Train(args) => train_cmd::run(args),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Models(cmd) => models_cmd::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
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
