//! Runs every benchmark scenario in smoke mode (`herald-bench all --smoke`)
//! against the debug `herald` binary, and checks that each scenario printed
//! its JSON line, with no error, and that no event went missing.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SCENARIOS: [&str; 8] = [
    "single",
    "fanout",
    "paced",
    "isolation",
    "backlog",
    "realtime",
    "idle",
    "recover",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// `<target dir>/debug`: where cargo put this package's own binary, or else
/// `$CARGO_TARGET_DIR/debug` / `<workspace>/target/debug`.
fn debug_dir() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_herald-bench"));
    if let Some(dir) = bench.parent()
        && dir.file_name().is_some_and(|n| n == "debug")
    {
        return dir.to_path_buf();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

/// The debug `herald` binary, built first if it is missing.
fn herald_debug_bin() -> PathBuf {
    let bin = debug_dir().join("herald");
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "herald", "--bin", "herald"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build -p herald");
        assert!(status.success(), "cargo build -p herald failed");
    }
    assert!(bin.is_file(), "no herald binary at {}", bin.display());
    bin
}

#[test]
fn every_scenario_runs_in_smoke_mode_and_loses_nothing() {
    let herald = herald_debug_bin();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .arg("all")
        .arg("--smoke")
        .arg("--herald-bin")
        .arg(&herald)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald-bench all --smoke did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    println!("{out}");

    let reports: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for name in SCENARIOS {
        let report = reports
            .iter()
            .find(|r| r["scenario"] == name)
            .unwrap_or_else(|| panic!("no JSON line for `{name}` in:\n{out}"));
        assert!(report.get("error").is_none(), "{name} failed: {report}");
        if name == "idle" {
            assert!(report["ready_ms"].as_f64().unwrap() > 0.0, "{report}");
            assert!(report["server_rss_mb"].as_f64().unwrap() > 0.0, "{report}");
            continue;
        }
        assert_eq!(report["missing"], 0, "{name} lost events: {report}");
        assert_eq!(report["bad_bodies"], 0, "{name} had wrong bodies: {report}");
        assert!(
            report["events"].as_u64().unwrap() > 0,
            "{name} published nothing: {report}"
        );
        assert!(report["deliveries"].as_u64().unwrap() > 0, "{report}");
        if let Some(expected) = report.get("expected_deliveries") {
            assert_eq!(&report["deliveries"], expected, "{name}: {report}");
        }
        for key in [
            "deliveries_per_s",
            "limit_per_s",
            "ratio",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "server_rss_mb",
            "server_cpu_s",
        ] {
            assert!(report[key].is_number(), "{name} has no {key}: {report}");
        }
    }
    let backlog = reports.iter().find(|r| r["scenario"] == "backlog").unwrap();
    assert!(
        backlog["retried_events"].as_u64().unwrap() > 0,
        "the backlog receiver's 503s caused no retries: {backlog}"
    );
    let recover = reports.iter().find(|r| r["scenario"] == "recover").unwrap();
    assert_eq!(
        recover["recover_count"], recover["events"],
        "the recover did not count every failed event: {recover}"
    );
    assert!(recover["baseline_p99_ms"].is_number(), "{recover}");
    assert!(status.success(), "herald-bench exited with {status}:\n{out}");
}
