//! The built-in page in headless Chromium (Debian's `chromium`): `/?demo=1` fills in an example
//! and analyses it on load; the rendered DOM must show the result with every highlighted
//! entity equal to its slice of the text, labels by their Arabic names with the model's beside, and a screenshot is saved to
//! target/tmp/naba-server-page.png. Skipped, with a notice, where Chromium is not installed.

mod common;

use common::{config, TestServer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Runs Chromium headless on `url` with `extra` flags; returns stdout. Killed after 90 s.
fn chromium(bin: &Path, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=15000",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap_or_default()
}

fn attr<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = dom.find(&key)? + key.len();
    let len = dom[start..].find('"')?;
    Some(&dom[start..start + len])
}

#[test]
fn the_page_analyses_the_demo_in_headless_chromium() {
    let Some(bin) = find_chromium() else {
        let _ = writeln!(
            std::io::stderr(),
            "NOTICE: chromium is not installed (apt-get install -y chromium); page test skipped"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut cfg = config();
    let mut zs = common::entry("zs", naba_server::Task::ZeroShot, "bert-seq-cls");
    zs.method = Some(naba_server::schema::ZeroShotMethod::Embedding);
    cfg.models.push(zs);
    let server = rt.block_on(TestServer::start(cfg));
    let url = server.url("/?demo=1");

    let dom = chromium(&bin, &url, &["--dump-dom".to_string()]);
    let body_tag = dom.find("<body").map(|i| &dom[i..]).unwrap_or("");
    assert_eq!(
        attr(body_tag, "data-state"),
        Some("done"),
        "the page did not finish:\n{dom}"
    );
    assert_eq!(
        attr(body_tag, "data-mismatches"),
        Some("0"),
        "offsets do not slice the text"
    );
    let entities: usize = attr(body_tag, "data-entities")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        entities > 0,
        "the random NER fixture finds entities in the demo text"
    );
    assert!(dom.contains("<mark class="), "entities are highlighted");
    assert!(
        dom.contains("stance-target"),
        "the stance toward the target is shown"
    );
    assert!(
        dom.contains("<ul class=\"evidence\"><li><q>"),
        "the passages the stance rests on are listed"
    );
    assert!(
        dom.contains("صحة") || dom.contains("يؤيد") || dom.contains("يعارض"),
        "labels are shown by their Arabic names"
    );
    assert!(
        dom.contains("<span class=\"raw\">"),
        "the model's own label is shown beside its Arabic name"
    );
    assert!(
        dom.contains("<div id=\"zs-box\" class=\"\">")
            && dom.contains("<div id=\"zs\" class=\"labels\"><span class=\"best\">"),
        "the demo's own labels are scored zero-shot"
    );

    let shot = PathBuf::from(concat!(
        env!("CARGO_TARGET_TMPDIR"),
        "/naba-server-page.png"
    ));
    let _ = std::fs::remove_file(&shot);
    chromium(&bin, &url, &[format!("--screenshot={}", shot.display())]);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} missing or empty",
        shot.display()
    );
    let _ = writeln!(std::io::stderr(), "page screenshot: {}", shot.display());
    rt.block_on(server.stop()).expect("clean stop");
}
