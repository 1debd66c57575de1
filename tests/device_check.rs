//! `scripts/device-check.sh --local`: the device check, run on this machine's adapters with
//! small shapes, writes a summary whose fields the first real-GPU run will be read by.

use std::path::Path;
use std::process::Command;

mod common;

#[test]
fn device_check_local_mode_writes_the_summary() {
    common::gpus(); // an adapter is required, as for every GPU test
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/device-check.sh");
    let tests_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let run = Command::new("bash")
        .arg(&script)
        .arg("--local")
        .arg(out.path())
        .env("DEVICE_CHECK_QUICK", "1")
        .env("DEVICE_CHECK_TEST_FILTER", "forward")
        .env("GPUMLP_BIN", env!("CARGO_BIN_EXE_gpumlp"))
        .env("GPUMLP_TESTS_DIR", &tests_dir)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out.path().join("summary.json"))
        .unwrap_or_else(|e| panic!("no summary.json ({e}):\n{log}"));
    let summary: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{log}"));
    assert!(run.status.success(), "the check failed:\n{log}");
    assert!(!summary["adapter"].as_str().unwrap().is_empty(), "{text}");
    assert!(summary["tests_passed"].as_u64().unwrap() > 0, "{text}");
    assert_eq!(summary["tests_failed"].as_u64(), Some(0), "{text}");
    let dev = summary["verify_max_abs_dev"].as_f64().expect("a deviation");
    assert!((0.0..1e-3).contains(&dev), "{text}");
    let bench = summary["bench"].as_array().unwrap();
    assert_eq!(bench.len(), 2, "{text}");
    for b in bench {
        assert!(b["samples_per_s"].as_f64().unwrap() > 0.0, "{b}");
    }
    assert!(summary["torch"].is_null() || summary["torch"].is_array());
}
