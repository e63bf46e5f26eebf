//! Atomic report directories, and reading metrics.json back.

use super::schema::MetricsFile;
use crate::error::{EvalError, Result};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Removes the temporary directory unless disarmed (on success it has been renamed away).
struct TempDirGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// Create the directory `dir` atomically: `fill` writes the files into a fresh hidden sibling
/// directory (`.NAME.partial-PID-NANOS`), and only when it returns `Ok` is that directory
/// renamed to `dir`.
///
/// * If `fill` fails, the temporary directory is removed and `dir` is untouched.
/// * If the process is killed (Ctrl-C) while `fill` runs, `dir` is untouched; a hidden
///   `.NAME.partial-…` directory may be left beside it and can be deleted.
/// * If `dir` already holds a report (it has a metrics.json) or is empty, it is replaced: it is
///   first renamed to `.NAME.old-…`, the new one is renamed into place, then the old one is
///   deleted. Between those two renames (microseconds) `dir` does not exist, but it never
///   holds a partial report.
/// * A non-empty `dir` without metrics.json is not replaced ([`EvalError::NotAReport`]), so a
///   mistyped `--out` cannot delete unrelated files.
///
/// # Errors
/// When `dir` has no file name, is a non-report directory or a file, or a file-system
/// operation fails.
pub fn write_dir_atomically<F>(dir: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let name = dir.file_name().ok_or_else(|| {
        EvalError::InvalidOption(format!(
            "report directory `{}` has no final name; give a path such as `reports/run1`",
            dir.display()
        ))
    })?;
    let name = name.to_string_lossy();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| EvalError::io("create", &parent, e))?;

    let existing = match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(EvalError::NotAReport {
                    path: dir.to_path_buf(),
                });
            }
            let has_metrics = dir.join(super::files::METRICS).is_file();
            let empty = std::fs::read_dir(dir)
                .map_err(|e| EvalError::io("read", dir, e))?
                .next()
                .is_none();
            if !has_metrics && !empty {
                return Err(EvalError::NotAReport {
                    path: dir.to_path_buf(),
                });
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(EvalError::io("inspect", dir, e)),
    };

    let tmp = parent.join(format!(".{name}.partial-{}", unique_suffix()));
    std::fs::create_dir(&tmp).map_err(|e| EvalError::io("create", &tmp, e))?;
    let mut guard = TempDirGuard {
        path: tmp.clone(),
        armed: true,
    };
    fill(&tmp)?;

    if existing {
        let old = parent.join(format!(".{name}.old-{}", unique_suffix()));
        std::fs::rename(dir, &old)
            .map_err(|e| EvalError::io(format!("move aside (to {})", old.display()), dir, e))?;
        if let Err(e) = std::fs::rename(&tmp, dir) {
            // Put the previous report back.
            let _ = std::fs::rename(&old, dir);
            return Err(EvalError::io(
                format!("rename into place (as {})", dir.display()),
                &tmp,
                e,
            ));
        }
        guard.armed = false;
        std::fs::remove_dir_all(&old).map_err(|e| EvalError::io("remove old report", &old, e))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| {
            EvalError::io(format!("rename into place (as {})", dir.display()), &tmp, e)
        })?;
        guard.armed = false;
    }
    Ok(())
}

/// Read a metrics.json, given the report directory or the file itself.
///
/// # Errors
/// When it cannot be read or is not a metrics.json of a known layout.
pub fn read_metrics(path: &Path) -> Result<MetricsFile> {
    let file = if path.is_dir() {
        path.join(super::files::METRICS)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| EvalError::io("read", &file, e))?;
    let metrics: MetricsFile = serde_json::from_str(&text).map_err(|e| EvalError::Json {
        path: file.clone(),
        message: format!(
            "not a naba metrics.json ({e}); pass a directory written by `naba eval` or its \
             metrics.json"
        ),
    })?;
    if metrics.schema_version > super::SCHEMA_VERSION {
        return Err(EvalError::Json {
            path: file,
            message: format!(
                "written with metrics schema {} but this naba reads up to {}; upgrade naba",
                metrics.schema_version,
                super::SCHEMA_VERSION
            ),
        });
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_and_refuses() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sub").join("rep");
        write_dir_atomically(&dir, |tmp| {
            std::fs::write(tmp.join("metrics.json"), "1").map_err(|e| EvalError::io("w", tmp, e))
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("metrics.json")).unwrap(),
            "1"
        );

        // A failing fill leaves the old report and no temporary directory.
        let err = write_dir_atomically(&dir, |tmp| {
            std::fs::write(tmp.join("metrics.json"), "2").unwrap();
            Err(EvalError::InvalidOption("interrupted".into()))
        });
        assert!(err.is_err());
        assert_eq!(
            std::fs::read_to_string(dir.join("metrics.json")).unwrap(),
            "1"
        );
        let names: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rep")]);

        // Replacing works and drops old files.
        std::fs::write(dir.join("stale.txt"), "x").unwrap();
        write_dir_atomically(&dir, |tmp| {
            std::fs::write(tmp.join("metrics.json"), "3").map_err(|e| EvalError::io("w", tmp, e))
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("metrics.json")).unwrap(),
            "3"
        );
        assert!(!dir.join("stale.txt").exists());

        // A directory that is not a report is refused.
        let other = root.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "keep").unwrap();
        let err = write_dir_atomically(&other, |_| Ok(())).unwrap_err();
        assert!(matches!(err, EvalError::NotAReport { .. }));
        assert!(other.join("notes.txt").exists());
    }
}
