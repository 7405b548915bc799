//! The state store on disk: private whatever the umask, a corrupt file moved aside rather than
//! stopping all monitoring, a lost file noticed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn config(dir: &Path, port: u16) {
    std::fs::write(
        dir.join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: state\nsources:\n  shop:\n    url: \"postgres://nobody@127.0.0.1:9/none\"\n    connect_timeout: 1s\n    orders: {{ table: orders }}\n"
        ),
    )
    .unwrap();
}

/// Runs `orderwatch run` under `umask` until it answers `/metrics`; returns that page and
/// its log.
async fn run_once(dir: &Path, umask: &str) -> (String, String) {
    let port = common::free_port();
    config(dir, port);
    let log = dir.join("log.txt");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask {umask}; exec \"$0\" -c \"$1\" --log-format text run"
        ))
        .arg(env!("CARGO_BIN_EXE_orderwatch"))
        .arg(dir.join("orderwatch.yaml"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = common::http_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            break r.text().await.unwrap();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "orderwatch exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "not up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    (metrics, std::fs::read_to_string(&log).unwrap())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    run_once(dir.path(), "000").await;
    let state = dir.path().join("state");
    assert_eq!(mode(&state), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&state).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        files += 1;
    }
    assert!(files >= 1);
    // A directory made wide by hand is narrowed again.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    run_once(dir.path(), "000").await;
    assert_eq!(mode(&state), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_store_is_moved_aside_and_monitoring_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/state.sqlite3"),
        "this is not a database, it was overwritten by mistake\n".repeat(100),
    )
    .unwrap();
    let (metrics, log) = run_once(dir.path(), "022").await;
    assert!(
        metrics.contains("orderwatch_state_store_recoveries_total 1"),
        "{metrics}"
    );
    assert!(log.contains("state store is corrupt: moved aside"), "{log}");
    assert!(
        log.contains("state/state.sqlite3"),
        "the file is named: {log}"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("state.sqlite3.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let kept = std::fs::read_to_string(dir.path().join("state").join(&aside[0])).unwrap();
    assert!(
        kept.starts_with("this is not a database"),
        "the old file is kept as it was"
    );
    // The next start finds a sound store: nothing to recover.
    let (metrics, _) = run_once(dir.path(), "022").await;
    assert!(
        metrics.contains("orderwatch_state_store_recoveries_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_lost_from_a_used_state_directory_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (_, log) = run_once(dir.path(), "022").await;
    assert!(!log.contains("state store missing"), "{log}");
    for entry in std::fs::read_dir(dir.path().join("state")).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() == "state.sqlite3" {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::write(dir.path().join("state/notes.txt"), "kept by the operator").unwrap();
    let (_, log) = run_once(dir.path(), "022").await;
    assert!(
        log.contains("state store missing from a state directory"),
        "{log}"
    );
    std::fs::write(dir.path().join("state/state.sqlite3"), "").unwrap();
    let (_, log) = run_once(dir.path(), "022").await;
    assert!(log.contains("state store is empty"), "{log}");
}
