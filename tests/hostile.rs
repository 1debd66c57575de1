//! The files a user owns, driven through the built `gpumlp` as a hostile or clumsy user would:
//! special files, outputs that name each other or an input, checkpoints that try to choose
//! where we write, file modes, and interrupted writes (issue 14, items 1–5).

use gpumlp::checkpoint::Checkpoint;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::cli::{fails, gpumlp, ok, p, text};

/// A small quick run on the CPU: digits, one epoch, a small hidden layer.
fn train(extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train", "--epochs", "1", "--layers", "64,8,10", "--device", "cpu", "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[cfg(unix)]
fn mode(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn set_mode(path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
fn mkfifo(path: &str) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// A trained model in `dir` for predict's tests.
fn model(dir: &Path) -> String {
    let m = p(dir, "m.safetensors");
    ok(&args(&train(&["--out", &m])));
    m
}

// Item 1: only a regular file or a new path is ever written.
#[cfg(unix)]
#[test]
fn special_files_are_refused_as_outputs() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo_svg = p(dir.path(), "fifo.svg");
    mkfifo(&fifo_svg);
    for (flag, path) in [
        ("--out", "/dev/null"),
        ("--metrics", "/dev/null"),
        ("--plot", fifo_svg.as_str()),
        ("--out", fifo_svg.as_str()),
    ] {
        fails(&args(&train(&[flag, path])), "not a regular file");
    }
    let m = model(dir.path());
    for out in ["/dev/null", fifo_svg.as_str()] {
        fails(
            &[
                "predict", "--model", &m, "--data", "digits", "--out", out, "--device", "cpu",
            ],
            "not a regular file",
        );
    }
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::metadata(&fifo_svg).unwrap().file_type().is_fifo());
}

// Item 2: outputs are checked against each other and against inputs before anything runs.
#[test]
fn outputs_that_name_each_other_or_an_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let x = p(dir.path(), "x");
    fails(
        &args(&train(&["--out", &x, "--metrics", &x])),
        "name the same file",
    );
    let svg = p(dir.path(), "p.svg");
    fails(
        &args(&train(&["--metrics", &svg, "--plot", &svg])),
        "name the same file",
    );
    // A CSV that would be overwritten by the model trained on it.
    let victim = p(dir.path(), "victim.csv");
    let mut csv = String::new();
    for i in 0..20 {
        csv += &format!("{},{},{}\n", i % 3, i % 5, i % 2);
    }
    std::fs::write(&victim, &csv).unwrap();
    let data = format!("csv:{victim}");
    let spelled = format!("{}/./victim.csv", dir.path().display());
    fails(
        &[
            "train", "--data", &data, "--out", &spelled, "--device", "cpu", "--quiet",
        ],
        "input given as --data",
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), csv);
    // predict over its own model.
    let m = model(dir.path());
    let before = std::fs::read(&m).unwrap();
    fails(
        &[
            "predict", "--model", &m, "--data", "digits", "--out", &m, "--device", "cpu",
        ],
        "input given as --model",
    );
    assert_eq!(std::fs::read(&m).unwrap(), before);
    // --init is an input too.
    fails(
        &args(&train(&["--init", &m, "--out", &m])),
        "input given as --init",
    );
    assert_eq!(std::fs::read(&m).unwrap(), before);
}

// Item 3: a checkpoint never chooses where we write.
#[test]
fn resume_writes_to_the_resumed_file_or_to_the_out_given_now() {
    let dir = tempfile::tempdir().unwrap();
    let live = p(dir.path(), "live.safetensors");
    ok(&args(&train(&["--out", &live])));
    // An older copy, resumed: the live run must not be rolled back.
    let copy = p(dir.path(), "copy.safetensors");
    std::fs::copy(&live, &copy).unwrap();
    ok(&[
        "train", "--epochs", "2", "--resume", &live, "--out", &live, "--quiet",
    ]);
    let live_bytes = std::fs::read(&live).unwrap();
    let o = gpumlp(&["train", "--resume", &copy, "--epochs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("checkpoints go to {copy}")),
        "resume says where it writes:\n{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(&live).unwrap(),
        live_bytes,
        "the live run was rolled back"
    );
    let resumed = Checkpoint::load(Path::new(&copy)).unwrap();
    assert_eq!(resumed.training.unwrap().epoch, 2);
    // A received checkpoint whose metadata names paths: none of them is written.
    let victim = p(dir.path(), "victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let mut planted = Checkpoint::load(Path::new(&copy)).unwrap();
    let state = planted.training.as_mut().unwrap();
    let mut saved: serde_json::Value = serde_json::from_str(&state.extra["args"]).unwrap();
    for key in ["out", "metrics"] {
        saved[key] = victim.clone().into();
    }
    saved["plot"] = format!("{victim}.svg").into();
    state.extra.insert("args".into(), saved.to_string());
    let received = p(dir.path(), "received.safetensors");
    planted.save(Path::new(&received)).unwrap();
    let elsewhere = p(dir.path(), "mine.safetensors");
    ok(&[
        "train", "--resume", &received, "--epochs", "3", "--out", &elsewhere, "--quiet",
    ]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!Path::new(&format!("{victim}.svg")).exists());
    assert_eq!(
        Checkpoint::load(Path::new(&elsewhere))
            .unwrap()
            .training
            .unwrap()
            .epoch,
        3
    );
}

// Item 4: atomic replacement keeps the target's protections.
#[cfg(unix)]
#[test]
fn outputs_keep_their_mode_and_read_only_ones_need_force() {
    let dir = tempfile::tempdir().unwrap();
    let m = p(dir.path(), "private.safetensors");
    std::fs::write(&m, b"old").unwrap();
    set_mode(&m, 0o600);
    ok(&args(&train(&["--out", &m])));
    assert_eq!(mode(&m), 0o600, "a private checkpoint turned readable");
    let preds = p(dir.path(), "preds.csv");
    std::fs::write(&preds, b"mine").unwrap();
    set_mode(&preds, 0o444);
    fails(
        &[
            "predict", "--model", &m, "--data", "digits", "--out", &preds, "--device", "cpu",
        ],
        "read-only",
    );
    assert_eq!(std::fs::read(&preds).unwrap(), b"mine");
    ok(&[
        "predict", "--model", &m, "--data", "digits", "--out", &preds, "--device", "cpu", "--force",
    ]);
    assert!(std::fs::read_to_string(&preds)
        .unwrap()
        .starts_with("predicted"));
    assert_eq!(mode(&preds), 0o444);
    set_mode(&preds, 0o640);
    ok(&[
        "predict", "--model", &m, "--data", "digits", "--out", &preds, "--device", "cpu",
    ]);
    assert_eq!(mode(&preds), 0o640);
}

// Item 5: stale temporaries of a killed write are removed by the next write.
#[test]
fn the_next_write_removes_temporaries_a_killed_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let m = p(dir.path(), "m.safetensors");
    let stale = dir.path().join(".m.safetensors.tmp-999999997");
    std::fs::write(&stale, vec![0u8; 1 << 16]).unwrap();
    ok(&args(&train(&["--out", &m])));
    assert_eq!(entries(dir.path()), ["m.safetensors"]);
}

/// 10 rows of 64 features: training is instant, so a run spends its time writing its
/// checkpoint (64-1024-1024-2: about 13 MB with Adam's state).
fn tiny_csv(dir: &Path) -> String {
    let path = dir.join("tiny.csv");
    let mut csv = String::new();
    for r in 0..10 {
        let row: Vec<String> = (0..64).map(|c| ((r * 7 + c) % 11).to_string()).collect();
        csv += &format!("{},{}\n", row.join(","), r % 2);
    }
    std::fs::write(&path, csv).unwrap();
    path.to_string_lossy().into_owned()
}

// Item 5: SIGINT/SIGTERM in the middle of checkpoint writes leave no temporary, and the last
// complete checkpoint loads.
#[cfg(unix)]
#[test]
fn interrupted_runs_leave_no_temporaries_and_a_whole_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("csv:{}", tiny_csv(dir.path()));
    let m = p(dir.path(), "m.safetensors");
    for (i, signal) in ["INT", "TERM", "INT", "TERM", "INT", "TERM"]
        .iter()
        .enumerate()
    {
        let child = Command::new(env!("CARGO_BIN_EXE_gpumlp"))
            .args([
                "train",
                "--data",
                &data,
                "--layers",
                "64,1024,1024,2",
                "--epochs",
                "1000",
                "--batch",
                "10",
                "--val-split",
                "0",
                "--device",
                "cpu",
                "--quiet",
                "--out",
                &m,
            ])
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300 + 170 * i as u64));
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "SIG{signal} should stop the run");
        assert!(!err.contains("panicked"), "{err}");
        let left: Vec<_> = entries(dir.path())
            .into_iter()
            .filter(|e| e.starts_with('.'))
            .collect();
        assert!(
            left.is_empty(),
            "SIG{signal} after {i} left {left:?}\n{err}"
        );
        if Path::new(&m).exists() {
            Checkpoint::load(Path::new(&m)).expect("the last complete checkpoint loads");
        }
    }
}
