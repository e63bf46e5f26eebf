//! `naba train`: fine-tune a model from a recipe (see `naba_train::Recipe`), with flags that
//! override a few of its fields. Ctrl-C stops at the next step and saves a state that
//! `--resume` continues from.

use anyhow::{Context, Result};
use clap::Args;
use naba_train::{Recipe, Stop, TrainOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args)]
pub struct TrainArgs {
    /// The recipe (TOML), e.g. models/ner-anercorp/recipe.toml.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Output directory (default: the recipe's `out`, else target/train/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the state saved in the output directory.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many optimiser steps in all (the state is saved; resume later).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Override optim.epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override optim.lr_encoder.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override optim.lr_head.
    #[arg(long)]
    pub lr_head: Option<f64>,
    /// Override optim.batch_size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override model.train_layers (0: head only).
    #[arg(long)]
    pub train_layers: Option<usize>,
    /// Override the seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override data.limit_train (use only the first N training items).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Override optim.patience.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Override optim.engine: `fast` (hand-written passes over packed batches, the default) or
    /// `reference` (candle's autograd, which reproduces models trained before the fast engine
    /// bit for bit).
    #[arg(long, value_parser = ["fast", "reference"])]
    pub engine: Option<String>,
    /// Override optim.precision, what the fast engine's matrix products multiply in: `auto`
    /// (bf16 where the CPU has AVX512-BF16, else f32), `f32`, or `bf16`.
    #[arg(long, value_parser = ["auto", "f32", "bf16"])]
    pub precision: Option<String>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Skip the final assembly and test scoring.
    #[arg(long)]
    pub no_finish: bool,
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let mut recipe = Recipe::from_file(&args.recipe)?;
    if let Some(v) = args.epochs {
        recipe.optim.epochs = v;
    }
    if let Some(v) = args.lr {
        recipe.optim.lr_encoder = v;
    }
    if let Some(v) = args.lr_head {
        recipe.optim.lr_head = v;
    }
    if let Some(v) = args.batch_size {
        recipe.optim.batch_size = v;
    }
    if let Some(v) = args.train_layers {
        recipe.model.train_layers = v;
    }
    if let Some(v) = args.seed {
        recipe.seed = v;
    }
    if let Some(v) = args.limit_train {
        recipe.data.limit_train = Some(v);
    }
    if let Some(v) = args.patience {
        recipe.optim.patience = v;
    }
    if let Some(v) = &args.engine {
        recipe.optim.engine = match v.as_str() {
            "reference" => naba_train::recipe::TrainEngine::Reference,
            _ => naba_train::recipe::TrainEngine::Fast,
        };
    }
    if let Some(v) = &args.precision {
        use naba_train::recipe::TrainPrecision;
        recipe.optim.precision = match v.as_str() {
            "f32" => TrainPrecision::F32,
            "bf16" => TrainPrecision::Bf16,
            _ => TrainPrecision::Auto,
        };
    }
    recipe.validate()?;
    let out = args
        .out
        .clone()
        .or_else(|| recipe.out.clone())
        .unwrap_or_else(|| PathBuf::from("target/train").join(&recipe.name));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C: give up at once (the last saved state is still intact).
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: saving the state at the end of this step (Ctrl-C again to quit now)");
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    // The program's own path says nothing to a reader of the model card; call it `naba`.
    let command = std::iter::once("naba".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let opts = TrainOptions {
        out: out.clone(),
        resume: args.resume,
        max_steps: args.max_steps,
        progress: !args.quiet,
        stop: Some(stop),
        command,
        finish: !args.no_finish,
    };
    let outcome = naba_train::train(&recipe, &opts)?;
    match outcome.stop {
        Stop::Completed | Stop::EarlyStopped => {
            eprintln!(
                "done: best dev {:.4} at epoch {}; model in {}",
                outcome.meta.best_score.unwrap_or(f64::NAN),
                outcome.meta.best_epoch.unwrap_or(0),
                out.join(naba_train::trainer::MODEL_DIR).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Stop::MaxSteps | Stop::Interrupted => {
            eprintln!(
                "stopped at step {}; the state is in {} (continue with --resume)",
                outcome.step,
                out.join(naba_train::trainer::STATE_FILE).display()
            );
            Ok(if outcome.stop == Stop::Interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
