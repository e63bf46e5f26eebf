//! The deployment files in `deploy/` stay true to the binary: every `--flag` and `NABA_*`
//! variable a manifest gives a naba subcommand is one that subcommand's `--help` lists, so a
//! renamed flag fails here rather than in a cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const NABA: &str = env!("CARGO_BIN_EXE_naba");

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn help(subcommand: &str) -> String {
    let out = Command::new(NABA)
        .args([subcommand, "--help"])
        .output()
        .expect("naba runs");
    assert!(out.status.success(), "naba {subcommand} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommand a manifest runs: from `args: ["serve"]`, `exec naba eval`, or the image's
/// default (`serve`).
fn subcommand(text: &str) -> &'static str {
    for sub in ["worker", "eval", "serve"] {
        if text.contains(&format!("args: [\"{sub}\"]")) || text.contains(&format!("naba {sub} ")) {
            return sub;
        }
    }
    "serve"
}

/// `--flags` and `NABA_*` names outside comments.
fn names(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut flags = BTreeSet::new();
    let mut vars = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
            if word.starts_with("--") && word[2..].starts_with(|c: char| c.is_ascii_alphabetic()) {
                flags.insert(word.to_string());
            } else if word.starts_with("NABA_") {
                vars.insert(word.to_string());
            }
        }
    }
    (flags, vars)
}

#[test]
fn every_flag_and_variable_the_manifests_use_exists() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("k8s"))
        .expect("deploy/k8s")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.push(deploy_dir().join("Dockerfile"));
    files.sort();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let (flags, vars) = names(&text);
        if flags.is_empty() && vars.is_empty() {
            continue;
        }
        let sub = subcommand(&text);
        let help = help(sub);
        // The Dockerfile's flags are cargo's, apt's and Docker's; its NABA_* variables are
        // naba's.
        let flags = if file.ends_with("Dockerfile") {
            BTreeSet::new()
        } else {
            flags
        };
        for flag in &flags {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{}: `{flag}` is not an option of `naba {sub}`",
                file.display()
            );
            checked += 1;
        }
        for var in &vars {
            assert!(
                help.contains(&format!("[env: {var}=")) || help.contains(&format!("[env: {var}]")),
                "{}: `{var}` is not read by `naba {sub}`",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} names found: is deploy/ there?"
    );
}
