//! Which model a command uses when none is named: the installed default of its task, found the
//! way `naba serve` finds its models, so the command line and the server agree on "default".

use anyhow::{bail, Result};
use naba_server::config::{default_model_roots, discover};
use naba_server::Task;
use std::path::PathBuf;

/// `given` when there is one; else the installed model of `task` whose card marks it default
/// (else the first installed for the task), named on stderr so the user knows what answered.
pub fn model_or_default(given: Option<&str>, task: Task) -> Result<String> {
    if let Some(m) = given.map(str::trim).filter(|m| !m.is_empty()) {
        return Ok(m.to_string());
    }
    let roots = roots();
    let found = discover(&roots);
    let of_task: Vec<_> = found.iter().filter(|m| m.task == task).collect();
    let Some(chosen) = of_task.iter().find(|m| m.default).or(of_task.first()) else {
        let looked: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        bail!(
            "no {} model is installed (looked in {}): run `naba models fetch` to install the \
             default models, or pass --model DIR|HUB_ID",
            shown(task),
            looked.join(", ")
        );
    };
    eprintln!(
        "naba: no --model given; using the default {} model `{}` ({})",
        shown(task),
        chosen.name,
        chosen.path
    );
    Ok(chosen.path.clone())
}

/// `NABA_MODELS_DIR` (a comma list), as `naba serve --models-dir` reads it, else naba's cache
/// and `./models`.
fn roots() -> Vec<PathBuf> {
    match std::env::var("NABA_MODELS_DIR") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => default_model_roots(),
    }
}

fn shown(task: Task) -> &'static str {
    match task {
        Task::Entities => "NER",
        other => other.as_str(),
    }
}
