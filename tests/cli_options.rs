//! Every command offers the options it reads and no other: `-c` where a config is read (after
//! the command, or before it as the systemd unit writes it), not on `demo`, which refuses it;
//! `--web.config.file` only where the HTTP server is served or reached.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_orderwatch");

const MAIN: &str = "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: postgres://orderwatch@127.0.0.1:9/shop\n    orders:\n      table: orders\n      id: id\n      status: status\n      entered_at: status_changed_at\n";

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run orderwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_config_option_is_offered_where_a_config_is_read_and_only_there() {
    for command in [
        "run",
        "check",
        "once",
        "explain",
        "notify-test",
        "silence",
        "order",
    ] {
        let (code, help, _) = run(&[command, "--help"]);
        assert_eq!(code, 0, "{command} --help");
        assert!(
            help.contains("--config"),
            "{command} --help lacks -c:\n{help}"
        );
        // The web config only where the HTTP server is served or reached.
        let serves = ["run", "check", "silence", "order"].contains(&command);
        assert_eq!(
            help.contains("--web.config.file"),
            serves,
            "{command}:\n{help}"
        );
    }
    let (code, help, _) = run(&["demo", "--help"]);
    assert_eq!(code, 0);
    assert!(!help.contains("--config"), "demo --help offers -c:\n{help}");
    assert!(!help.contains("--web.config.file"), "{help}");
}

#[test]
fn the_config_file_is_taken_after_the_command_or_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("orderwatch.yaml");
    std::fs::write(&main, MAIN).unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n",
    )
    .unwrap();
    let path = main.to_str().unwrap();
    for args in [
        ["check", "-c", path, "--offline"],
        ["-c", path, "check", "--offline"],
        ["--config", path, "check", "--offline"],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(out.contains("OK (1 sources, 1 rules"), "{args:?}: {out}");
    }
    let (code, _, err) = run(&["--web.config.file", "web.yml", "-c", path, "once"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--web.config.file is for the commands that serve"),
        "{err}"
    );
    let (code, _, err) = run(&["-c", path, "demo"]);
    assert_eq!(code, 2);
    assert!(err.contains("reads no config file"), "{err}");
}

#[test]
fn check_renders_every_template_against_a_sample_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("orderwatch.yaml");
    std::fs::write(
        &main,
        MAIN.replace(
            "      entered_at: status_changed_at\n",
            "      entered_at: status_changed_at\n      labels: [channel]\n",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    annotations:\n      summary: 'Order {{ order_id }} via {{ channel }}'\n      description: '{{ labels.channel }} {{ labels.chanel }}'\n      ok: '{{ labels.channel }} {{ age }} {{ older_than }}'\n",
    )
    .unwrap();
    let (code, out, err) = run(&["check", "--offline", "-c", main.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let rules = dir.path().join("rules.yaml");
    for (line, col, what) in [
        (7, 16, "undefined: channel"),
        (8, 20, "undefined: labels.chanel"),
    ] {
        assert!(
            err.contains(&format!(
                "{}:{line}:{col}: rule submitted_over_1h",
                rules.display()
            )) && err.contains(what),
            "{what} at {line}:{col}:\n{err}"
        );
    }
    assert_eq!(err.lines().count(), 2, "{err}");
}
