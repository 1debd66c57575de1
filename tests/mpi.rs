//! `mpirun -np 2 gpumlp train --distributed` on loopback, against one process: two ranks with
//! global batch B must give the parameters one process gives with batch B (uneven shards, a last
//! batch smaller than the ranks, shuffling, momentum and Adam with L2); resume; rank 0 alone
//! writes and prints; a rank that fails or is killed ends the job non-zero, naming it, and the
//! last complete checkpoint survives.
//!
//! Skipped (with a message) where `mpirun` is absent, unless CI is set: then it fails.
#![cfg(feature = "mpi")]

use gpumlp::checkpoint::Checkpoint;
use gpumlp::data::digits;
use gpumlp::Tolerance;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::cli::{ok, p, text};

/// Parameters after a few epochs, two ranks against one process: the sums of shard gradients
/// differ from one batch's sum only in rounding (as the CPU backend against the reference in
/// tests/cpu.rs, whose trajectory tolerance this is).
const PARAM_TOL: Tolerance = Tolerance::new(1e-3, 1e-4);

/// Whether `mpirun` runs here; where it does not, says so and skips, or fails under CI.
fn have_mpirun() -> bool {
    let found = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !common::on_ci(),
            "CI is set, so the MPI tests must run, but `mpirun` was not found: install Open MPI (apt-get install -y libopenmpi-dev openmpi-bin libclang-dev), as .ci/run does"
        );
        eprintln!(
            "[gpumlp tests] skipped: no `mpirun` here (install openmpi-bin to run the MPI tests)"
        );
    }
    found
}

/// `mpirun -np N` on this machine as root or not, more ranks than cores allowed.
fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
    ])
    .env("XDG_RUNTIME_DIR", std::env::temp_dir())
    .env_remove("GPUMLP_BACKEND")
    .env_remove("GPUMLP_ADAPTER")
    .env_remove("GPUMLP_MAX_HOST_BYTES");
    c
}

/// Waits for `c` at most `limit`, killing it (and failing) past that: a job that hangs must not
/// hang the suite.
fn output_within(mut c: Command, limit: Duration) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun starts");
    let started = Instant::now();
    while child.try_wait().expect("waiting for mpirun").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("mpirun's output");
            panic!("mpirun ran past {limit:?} (hung?):\n{}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("mpirun's output")
}

/// `mpirun -np N gpumlp train --distributed args`, which must succeed.
#[track_caller]
fn distributed(np: usize, args: &[&str]) -> String {
    let mut c = mpirun(np);
    c.arg(env!("CARGO_BIN_EXE_gpumlp"))
        .args(["train", "--distributed"])
        .args(args);
    let o = output_within(c, Duration::from_secs(300));
    assert!(
        o.status.success(),
        "mpirun -np {np} gpumlp train --distributed {args:?} failed:\n{}",
        text(&o)
    );
    text(&o)
}

/// Writes digits rows `0..rows` as `csv:` data (64 features, label last).
fn digits_csv(dir: &Path, name: &str, rows: usize) -> String {
    let d = digits().unwrap();
    let gpumlp::Targets::Classes { labels, .. } = &d.targets else {
        unreachable!("digits has class labels")
    };
    let mut s = String::new();
    for (row, label) in d.features.chunks(64).zip(labels).take(rows) {
        for v in row {
            s += &format!("{v},");
        }
        s += &format!("{label}\n");
    }
    let path = dir.join(name);
    std::fs::write(&path, s).unwrap();
    format!("csv:{}", path.display())
}

fn params(path: &str) -> Vec<f32> {
    Checkpoint::load(Path::new(path)).unwrap().params
}

fn optimizer_state(path: &str) -> gpumlp::OptimizerState {
    Checkpoint::load(Path::new(path))
        .unwrap()
        .training
        .unwrap()
        .optimizer
}

/// 2 ranks against 1 process with `extra` flags: same parameters and optimizer state. The
/// process runs on the CPU backend; the ranks on `devices` (e.g. `--device cpu --threads 1`).
fn two_ranks_match_one_process(what: &str, data_rows: usize, extra: &[&str], devices: &[&str]) {
    if !have_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = digits_csv(dir.path(), "d.csv", data_rows);
    let (one, two) = (
        p(dir.path(), "one.safetensors"),
        p(dir.path(), "two.safetensors"),
    );
    let common = [
        "--data",
        &data,
        "--layers",
        "64,17,10",
        "--val-split",
        "0",
        "--epochs",
        "3",
        "--seed",
        "5",
    ];
    let single: Vec<&str> = ["train", "--out", &one]
        .iter()
        .chain(&common)
        .chain(extra)
        .chain(&CPU)
        .copied()
        .collect();
    ok(&single);
    let ranks: Vec<&str> = ["--out", &two]
        .iter()
        .chain(&common)
        .chain(extra)
        .chain(devices)
        .copied()
        .collect();
    let said = distributed(2, &ranks);
    assert!(said.contains("distributed over 2 MPI ranks"), "{said}");
    PARAM_TOL.assert_close(
        &format!("{what}: parameters, 2 ranks vs 1 process"),
        &params(&two),
        &params(&one),
    );
    let (s2, s1) = (optimizer_state(&two), optimizer_state(&one));
    PARAM_TOL.assert_close(&format!("{what}: optimizer m"), &s2.m, &s1.m);
    PARAM_TOL.assert_close(&format!("{what}: optimizer v"), &s2.v, &s1.v);
}

/// The fast CPU backend on one thread (ranks share this machine's two cores).
const CPU: [&str; 4] = ["--device", "cpu", "--threads", "1"];

#[test]
fn momentum_l2_odd_batch_with_a_last_batch_smaller_than_the_ranks() {
    // 162 rows = 23 × 7 + 1: every batch of 7 splits 3 + 4, and the last batch of 1 leaves
    // rank 1 an empty shard, which must contribute nothing.
    two_ranks_match_one_process(
        "momentum, L2, batch 7",
        162,
        &[
            "--optimizer",
            "momentum",
            "--lr",
            "0.05",
            "--l2",
            "0.001",
            "--batch",
            "7",
        ],
        &CPU,
    );
}

#[test]
fn adam_l2_uneven_shards_with_shuffling() {
    // 100 rows in batches of 9: 11 × 9 + 1, shards of 4 and 5, then 0 and 1.
    two_ranks_match_one_process(
        "adam, L2, batch 9",
        100,
        &[
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--l2",
            "0.0005",
            "--batch",
            "9",
        ],
        &CPU,
    );
}

#[test]
fn two_ranks_of_two_cpu_replicas_train_like_one_process() {
    // --devices under mpirun: each rank's shard is split again across its two replicas, so a
    // batch of 7 is four shards of 1, 2, 2 and 2 rows, and the last batch of 1 leaves three empty.
    two_ranks_match_one_process(
        "adam, L2, batch 7, 2 ranks × 2 replicas",
        162,
        &[
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--l2",
            "0.001",
            "--batch",
            "7",
        ],
        &["--devices", "cpu,cpu", "--threads", "1"],
    );
}

#[test]
fn two_ranks_on_gpu_adapters_train_like_one_cpu_process() {
    // Rank 0 takes the first adapter, rank 1 the second (here lavapipe and llvmpipe: two
    // backends, two compilers of the same WGSL), against the CPU backend in one process.
    if !have_mpirun() {
        return;
    }
    let adapters = common::gpus();
    common::report(format!(
        "MPI ranks on GPU adapters: {:?}",
        adapters
            .iter()
            .take(2)
            .map(|c| c.info.to_string())
            .collect::<Vec<_>>()
    ));
    two_ranks_match_one_process(
        "momentum, L2, batch 7, on GPU adapters",
        162,
        &[
            "--optimizer",
            "momentum",
            "--lr",
            "0.05",
            "--l2",
            "0.001",
            "--batch",
            "7",
        ],
        &["--device", "gpu"],
    );
}

#[test]
fn resumed_distributed_run_continues_as_one_unbroken_process() {
    if !have_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = digits_csv(dir.path(), "d.csv", 120);
    let (one, two) = (
        p(dir.path(), "one.safetensors"),
        p(dir.path(), "two.safetensors"),
    );
    let metrics = p(dir.path(), "m.jsonl");
    let flags = [
        "--data",
        &data,
        "--layers",
        "64,9,10",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--l2",
        "0.001",
        "--batch",
        "11",
        "--val-split",
        "0.25",
        "--seed",
        "2",
        "--device",
        "cpu",
        "--threads",
        "1",
    ];
    let mut single = vec!["train", "--out", &one, "--epochs", "4"];
    single.extend(flags);
    ok(&single);
    let mut first = vec!["--out", &two, "--epochs", "2", "--metrics", &metrics];
    first.extend(flags);
    let out = distributed(2, &first);
    // Rank 0 alone prints: one line per epoch and one held-out line.
    assert_eq!(out.matches("epoch   1/2").count(), 1, "{out}");
    assert_eq!(out.matches("held-out accuracy").count(), 1, "{out}");
    let out = distributed(
        2,
        &["--resume", &two, "--epochs", "4", "--metrics", &metrics],
    );
    assert_eq!(out.matches("epoch   4/4").count(), 1, "{out}");
    PARAM_TOL.assert_close(
        "2 + 2 epochs on 2 ranks, resumed, vs 4 epochs in one process",
        &params(&two),
        &params(&one),
    );
    // Rank 0 alone wrote the metrics: one line per epoch, none twice.
    let lines = std::fs::read_to_string(&metrics).unwrap();
    let epochs: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, [1, 2, 3, 4], "{lines}");
}

/// `mpirun -np 2 sh -c SCRIPT`: each rank runs the shell script (which knows its rank as
/// `$OMPI_COMM_WORLD_RANK` and gpumlp as `$GPUMLP`).
fn ranks_run_script(script: &str) -> Command {
    let mut c = mpirun(2);
    c.args(["sh", "-c", script])
        .env("GPUMLP", env!("CARGO_BIN_EXE_gpumlp"));
    c
}

#[test]
fn a_rank_that_fails_ends_every_rank_and_names_itself() {
    if !have_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = digits_csv(dir.path(), "a.csv", 60);
    // Rank 1's copy of the data differs (one row fewer), as a stale file on another node would.
    let other = digits_csv(dir.path(), "b.csv", 59);
    let out = p(dir.path(), "out.safetensors");
    let script = format!(
        r#"if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then d='{other}'; else d='{good}'; fi
exec "$GPUMLP" train --distributed --data "$d" --layers 64,8,10 --epochs 2 --device cpu --threads 1 --out '{out}'"#
    );
    let o = output_within(ranks_run_script(&script), Duration::from_secs(120));
    let t = text(&o);
    assert!(!o.status.success(), "the job should fail:\n{t}");
    assert!(t.contains("gpumlp: rank 1: error:"), "{t}");
    assert!(t.contains("differs here from rank 0"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    assert!(!Path::new(&out).exists(), "no checkpoint before training");
}

#[test]
fn a_killed_rank_ends_the_job_and_the_last_checkpoint_survives() {
    if !have_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = digits_csv(dir.path(), "d.csv", 200);
    let out = p(dir.path(), "out.safetensors");
    let pids = dir.path().display().to_string();
    // Long enough to be running when killed; each rank writes its pid first.
    let script = format!(
        r#"echo $$ > '{pids}'/rank$OMPI_COMM_WORLD_RANK.pid
exec "$GPUMLP" train --distributed --data '{data}' --layers 64,32,10 --batch 4 --epochs 100000 --device cpu --threads 1 --out '{out}'"#
    );
    let mut c = ranks_run_script(&script);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun starts");
    // Once rank 0 has written a checkpoint, kill rank 1.
    let started = Instant::now();
    let pid_file = dir.path().join("rank1.pid");
    while !(Path::new(&out).exists() && pid_file.exists()) {
        if started.elapsed() > Duration::from_secs(120) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "no checkpoint was written:\n{}",
                text(&child.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {pid}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rank 0 kept running after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "the job should fail:\n{t}");
    // Open MPI names the rank and the signal.
    assert!(
        t.contains("rank 1") && t.contains("signal 9"),
        "mpirun's message should name rank 1 and signal 9:\n{t}"
    );
    let ck = Checkpoint::load(Path::new(&out)).unwrap_or_else(|e| panic!("{e}\n{t}"));
    assert!(ck.training.unwrap().epoch >= 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
}

#[test]
fn without_mpirun_distributed_is_a_job_of_one() {
    // MPI runs a process started without mpirun as a job of one rank (a singleton): it must
    // train as a plain run does.
    if !have_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = digits_csv(dir.path(), "d.csv", 50);
    let (one, two) = (
        p(dir.path(), "one.safetensors"),
        p(dir.path(), "two.safetensors"),
    );
    let flags = [
        "--data",
        &data,
        "--layers",
        "64,5,10",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--val-split",
        "0",
    ];
    let mut a = vec!["train", "--out", &one];
    a.extend(flags);
    ok(&a);
    let mut b = vec!["train", "--distributed", "--out", &two];
    b.extend(flags);
    ok(&b);
    PARAM_TOL.assert_close("a job of one vs a plain run", &params(&two), &params(&one));
}

#[test]
fn ranks_on_different_devices_stop_early_together() {
    // Rank 0 on the fast CPU backend, rank 1 on the CPU reference: their validation losses
    // could differ in the last bits, so the validation set is sharded and all-reduced and every
    // rank sees the same numbers; otherwise one rank could stop while the other waits for it in
    // the next step's all-reduce.
    if !have_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = digits_csv(dir.path(), "d.csv", 150);
    let (out, best) = (
        p(dir.path(), "out.safetensors"),
        p(dir.path(), "best.safetensors"),
    );
    let script = format!(
        r#"if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then dev=reference; else dev=cpu; fi
exec "$GPUMLP" train --distributed --device $dev --data '{data}' --layers 64,9,10 --lr 0.05 --batch 16 --epochs 300 --patience 2 --save-best '{best}' --out '{out}'"#
    );
    let o = output_within(ranks_run_script(&script), Duration::from_secs(240));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("stopped early after epoch"), "{t}");
    let epochs = Checkpoint::load(Path::new(&out))
        .unwrap()
        .training
        .unwrap()
        .epoch;
    assert!(epochs < 300, "stopped at {epochs}");
    assert!(Path::new(&best).exists());
}
