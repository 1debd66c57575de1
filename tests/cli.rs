//! The `gpumlp` command, driven as a user would: training, saving, evaluating, predicting,
//! resuming, starting from another tool's weights, verifying, and every bad input.

use gpumlp::checkpoint::Checkpoint;
use gpumlp::data::digits;
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::cli::{fails, gpumlp, ok, p, text};

/// A number after `label` in the output, e.g. `accuracy: 97.50%`.
fn number_after(out: &str, label: &str) -> f64 {
    let i = out
        .find(label)
        .unwrap_or_else(|| panic!("no '{label}' in:\n{out}"))
        + label.len();
    out[i..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect::<String>()
        .parse()
        .unwrap()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes digits rows `range` as `csv:` data (64 features, label last).
fn digits_csv(dir: &Path, name: &str, range: std::ops::Range<usize>) -> String {
    let d = digits().unwrap();
    let labels = match &d.targets {
        gpumlp::Targets::Classes { labels, .. } => labels.clone(),
        _ => unreachable!(),
    };
    let mut s = String::new();
    for r in range {
        for c in 0..64 {
            s += &format!("{},", d.features[r * 64 + c]);
        }
        s += &format!("{}\n", labels[r]);
    }
    let path = dir.join(name);
    std::fs::write(&path, s).unwrap();
    format!("csv:{}", path.display())
}

#[test]
fn train_on_digits_reaches_97_percent_held_out() {
    let out = ok(&["train"]);
    let acc = number_after(&out, "held-out accuracy:");
    assert!(acc >= 97.0, "held-out accuracy {acc}% < 97%:\n{out}");
}

#[test]
fn saved_model_evaluates_and_predicts_like_training() {
    let dir = tmp();
    let train = digits_csv(dir.path(), "train.csv", 0..1400);
    let test = digits_csv(dir.path(), "test.csv", 1400..1797);
    let model = p(dir.path(), "model.safetensors");
    let metrics = p(dir.path(), "metrics.jsonl");
    let plot = p(dir.path(), "plot.svg");
    let out = ok(&[
        "train",
        "--data",
        &train,
        "--test",
        &test,
        "--epochs",
        "5",
        "--out",
        &model,
        "--metrics",
        &metrics,
        "--plot",
        &plot,
        "--normalize",
        "unit",
    ]);
    let trained = number_after(&out, "test accuracy:");
    let eval = ok(&["eval", "--model", &model, "--data", &test]);
    assert_eq!(
        number_after(&eval, "accuracy:"),
        trained,
        "eval:\n{eval}\ntrain:\n{out}"
    );
    assert!(eval.contains("confusion matrix"), "{eval}");
    // metrics: one JSON object per epoch with the contract's fields
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for key in [
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
        "samples_per_second",
    ] {
        assert!(
            lines[4].get(key).is_some(),
            "metrics line lacks {key}: {}",
            lines[4]
        );
    }
    assert_eq!(lines[4]["epoch"], 5);
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
    // predict: a header and one row per sample, class then 10 probabilities summing to 1
    let pred = p(dir.path(), "pred.csv");
    ok(&[
        "predict", "--model", &model, "--data", &test, "--out", &pred,
    ]);
    let rows: Vec<String> = std::fs::read_to_string(&pred)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(rows.len(), 1 + 397, "header + one row per sample");
    assert!(rows[0].starts_with("predicted,p0,"));
    let first: Vec<f64> = rows[1].split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(first.len(), 11);
    assert!((first[1..].iter().sum::<f64>() - 1.0).abs() < 1e-4);
    // The same rows without their label column (data to predict on has none) predict the same,
    // normalized as in training.
    let bare: String = std::fs::read_to_string(test.trim_start_matches("csv:"))
        .unwrap()
        .lines()
        .map(|l| format!("{}\n", &l[..l.rfind(',').unwrap()]))
        .collect();
    let bare_path = write(dir.path(), "bare.csv", bare.as_bytes());
    let pred_bare = p(dir.path(), "pred_bare.csv");
    let data = format!("csv:{}", bare_path.display());
    ok(&[
        "predict", "--model", &model, "--data", &data, "--out", &pred_bare,
    ]);
    assert_eq!(
        std::fs::read_to_string(&pred_bare).unwrap(),
        rows.join("\n") + "\n"
    );
}

#[test]
fn png_plot_is_a_png() {
    let dir = tmp();
    let plot = p(dir.path(), "plot.png");
    ok(&[
        "train", "--epochs", "2", "--layers", "64,16,10", "--plot", &plot, "--quiet",
    ]);
    let bytes = std::fs::read(&plot).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
}

#[test]
fn resume_after_two_of_four_epochs_matches_four_straight() {
    let dir = tmp();
    let straight = p(dir.path(), "straight.safetensors");
    let resumed = p(dir.path(), "resumed.safetensors");
    let common = [
        "--layers",
        "64,32,10",
        "--optimizer",
        "adam",
        "--schedule",
        "exp:0.9",
        "--quiet",
    ];
    let run = |extra: &[&str]| {
        let mut a = vec!["train"];
        a.extend_from_slice(&common);
        a.extend_from_slice(extra);
        ok(&a)
    };
    run(&["--epochs", "4", "--out", &straight]);
    run(&["--epochs", "2", "--out", &resumed]);
    run(&["--epochs", "4", "--resume", &resumed, "--out", &resumed]);
    let a = Checkpoint::load(Path::new(&straight)).unwrap();
    let b = Checkpoint::load(Path::new(&resumed)).unwrap();
    assert_eq!(a.training.as_ref().unwrap().epoch, 4);
    assert_eq!(b.training.as_ref().unwrap().epoch, 4);
    assert_eq!(
        a.params, b.params,
        "resumed parameters differ from an unbroken run"
    );
    assert_eq!(a.training.unwrap().optimizer, b.training.unwrap().optimizer);
}

/// Weights in PyTorch's layout written with the safetensors crate, as another tool would.
fn write_foreign_weights(path: &Path, sizes: &[usize], dtype: Dtype, skip: Option<&str>) {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, w) in sizes.windows(2).enumerate() {
        let bytes = |n: usize| -> Vec<u8> {
            match dtype {
                Dtype::F64 => (0..n)
                    .flat_map(|k| (0.01 * (k % 7) as f64).to_le_bytes())
                    .collect(),
                _ => (0..n)
                    .flat_map(|k| (0.01 * (k % 7) as f32).to_le_bytes())
                    .collect(),
            }
        };
        tensors.push((
            format!("layers.{i}.weight"),
            vec![w[1], w[0]],
            bytes(w[0] * w[1]),
        ));
        tensors.push((format!("layers.{i}.bias"), vec![w[1]], bytes(w[1])));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .filter(|(n, _, _)| Some(n.as_str()) != skip)
        .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn init_from_another_tools_weights() {
    let dir = tmp();
    let init = dir.path().join("torch.safetensors");
    write_foreign_weights(&init, &[64, 32, 10], Dtype::F32, None);
    let model = p(dir.path(), "m.safetensors");
    let init_s = init.to_string_lossy().into_owned();
    ok(&[
        "train", "--layers", "64,32,10", "--init", &init_s, "--epochs", "1", "--lr", "1e-12",
        "--out", &model, "--quiet",
    ]);
    let ck = Checkpoint::load(Path::new(&model)).unwrap();
    // W1 is [in, out] here and [out, in] in the file: element (i=1, j=0) is file element (0, 1)
    assert!((ck.params[32] - 0.01).abs() < 1e-6, "{}", ck.params[32]);
    fails(
        &[
            "train", "--layers", "64,16,10", "--init", &init_s, "--quiet",
        ],
        "shape",
    );
    let bad = dir.path().join("f64.safetensors");
    write_foreign_weights(&bad, &[64, 32, 10], Dtype::F64, None);
    fails(
        &[
            "train",
            "--layers",
            "64,32,10",
            "--init",
            bad.to_str().unwrap(),
            "--quiet",
        ],
        "F32",
    );
    let missing = dir.path().join("missing.safetensors");
    write_foreign_weights(&missing, &[64, 32, 10], Dtype::F32, Some("layers.1.bias"));
    fails(
        &[
            "train",
            "--layers",
            "64,32,10",
            "--init",
            missing.to_str().unwrap(),
            "--quiet",
        ],
        "layers.1.bias",
    );
}

#[test]
fn verify_passes_on_this_adapter() {
    let out = ok(&[
        "train", "--verify", "30", "--epochs", "1", "--layers", "64-32-10", "--device", "gpu",
    ]);
    assert!(out.contains("verify: passed"), "{out}");
    assert!(out.contains("largest parameter deviation"), "{out}");
}

#[test]
fn info_lists_adapters_and_the_ranking() {
    let out = ok(&["info"]);
    assert!(out.contains("--device auto ranks"), "{out}");
    assert!(out.contains("the fast CPU backend ("), "{out}");
    assert!(out.contains("max storage binding"), "{out}");
}

/// On a machine with only software adapters (lavapipe, llvmpipe), auto runs on the fast CPU
/// backend and says why in one stderr line; `--device gpu` still reaches the software adapters.
#[test]
fn auto_skips_software_adapters_and_says_why() {
    let o = gpumlp(&["train", "--epochs", "1", "--layers", "64,8,10"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stdout}{stderr}");
    let hardware = gpumlp(&["info"]);
    let info = String::from_utf8_lossy(&hardware.stdout);
    if info.contains("(discrete)") || info.contains("(integrated)") {
        return; // a hardware GPU is here: auto rightly takes it
    }
    let line: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("gpumlp: device:"))
        .collect();
    assert_eq!(line.len(), 1, "one device line:\n{stderr}");
    assert!(
        line[0].contains("cpu (") && line[0].contains("auto"),
        "{}",
        line[0]
    );
    let gpu = ok(&[
        "train", "--epochs", "1", "--layers", "64,8,10", "--device", "gpu",
    ]);
    assert!(gpu.contains("--device gpu"), "{gpu}");
}

#[test]
fn verify_passes_on_the_cpu_backend() {
    let out = ok(&[
        "train", "--verify", "30", "--epochs", "1", "--layers", "64-32-10", "--device", "cpu",
    ]);
    assert!(out.contains("verify: passed"), "{out}");
}

#[test]
fn bad_thread_counts_are_refused_with_their_source() {
    fails(
        &["train", "--device", "cpu", "--threads", "0"],
        "--threads 0",
    );
    fails(
        &["train", "--device", "cpu", "--threads", "100000"],
        "--threads 100000",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_gpumlp"))
        .args(["train", "--device", "cpu", "--epochs", "1"])
        .env("GPUMLP_THREADS", "many")
        .output()
        .unwrap();
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("GPUMLP_THREADS='many'"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn bench_on_the_cpu_backend_has_the_contract_fields() {
    let out = ok(&[
        "bench",
        "--layers",
        "8-16-4",
        "--batch",
        "32",
        "--steps",
        "3",
        "--json",
        "--device",
        "cpu",
        "--threads",
        "2",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["adapter"], "cpu (2 threads)");
    assert!(v["samples_per_s"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn bench_json_has_the_contract_fields() {
    // The issue writes shapes as 8-16-4; commas are the train command's form. Both work.
    let out = ok(&[
        "bench", "--layers", "8-16-4", "--batch", "32", "--steps", "3", "--json",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(v["layers"], "8,16,4");
    for key in [
        "system",
        "adapter",
        "backend",
        "layers",
        "batch",
        "steps",
        "seconds",
        "samples_per_s",
        "gflops",
        "final_loss",
    ] {
        assert!(v.get(key).is_some(), "bench JSON lacks {key}: {v}");
    }
    assert_eq!(v["steps"], 3);
}

#[test]
fn bench_profile_times_each_dispatch_of_both_schedules() {
    // `--profile` once panicked in `finish_epoch`: the profiled step was not counted.
    for schedule in ["--fused-mlp", "--layered"] {
        let out = ok(&[
            "bench",
            "--layers",
            "8-16-4",
            "--batch",
            "32",
            "--steps",
            "2",
            "--profile",
            schedule,
        ]);
        let profile = out
            .split("profile of one step")
            .nth(1)
            .unwrap_or_else(|| panic!("{schedule}: no profile in {out}"));
        assert!(profile.contains(" ms "), "{schedule}: {out}");
        let expect = if schedule == "--fused-mlp" {
            "fully fused step"
        } else {
            "forward 1"
        };
        assert!(profile.contains(expect), "{schedule}: {out}");
    }
}

#[test]
fn plan_prints_every_named_profile_with_the_contract_fields() {
    for profile in [
        "nvidia-h100",
        "nvidia-h200",
        "amd-rdna3",
        "apple-m2",
        "intel-arc",
        "dx12-gpu",
        "lavapipe",
        "llvmpipe",
    ] {
        let out = ok(&[
            "plan",
            "--layers",
            "784-512-512-10",
            "--batch",
            "1024",
            "--profile",
            profile,
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let matmuls = v["matmuls"].as_array().unwrap();
        // three forms per layer, less the first layer's delta
        assert_eq!(matmuls.len(), 8, "{profile}: {v}");
        for m in matmuls {
            assert!(
                m["kernel"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("matmul_")),
                "{m}"
            );
            for key in ["tile_m", "tile_n", "tile_k", "outputs_per_invocation"] {
                assert!(
                    m[key].as_u64().is_some_and(|x| x >= 1),
                    "{profile}: {key} in {m}"
                );
            }
        }
        assert!(v["step"] == "layered" || v["step"] == "fused-mlp", "{v}");
    }
    let o = common::cli::gpumlp(&["plan", "--layers", "8-4", "--profile", "nvidia-h900"]);
    assert!(!o.status.success() && common::cli::text(&o).contains("nvidia-h100"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bad_data_gives_a_clear_error_and_no_output_files() {
    let dir = tmp();
    let out = p(dir.path(), "m.safetensors");
    let metrics = p(dir.path(), "m.jsonl");
    let train = |data: &str, want: &str| {
        fails(
            &[
                "train",
                "--data",
                data,
                "--out",
                &out,
                "--metrics",
                &metrics,
                "--quiet",
            ],
            want,
        );
        assert!(
            !Path::new(&out).exists() && !Path::new(&metrics).exists(),
            "a failed run left output files"
        );
    };
    train("csv:/nonexistent/x.csv", "/nonexistent/x.csv");
    let f = write(dir.path(), "cols.csv", b"1,2,0\n3,4\n");
    train(&format!("csv:{}", f.display()), "line 2");
    let f = write(dir.path(), "nan_text.csv", b"1,2,0\n3,x,1\n");
    train(&format!("csv:{}", f.display()), "column 2");
    let f = write(dir.path(), "label.csv", b"1,2,0\n3,4,1.5\n");
    train(&format!("csv:{}", f.display()), "line 2");
    let f = write(dir.path(), "nan.csv", b"1,2,0\n3,NaN,1\n");
    train(&format!("csv:{}", f.display()), "line 2");
    let f = write(dir.path(), "bad.csv.gz", b"\x1f\x8bnot really gzip");
    train(&format!("csv:{}", f.display()), "gzip");
    // a label the model cannot represent
    let f = write(dir.path(), "range.csv", b"1,2,0\n3,4,5\n");
    fails(
        &[
            "train",
            "--data",
            &format!("csv:{}", f.display()),
            "--layers",
            "2,4,3",
            "--quiet",
        ],
        "out of range",
    );
    // IDX: wrong magic, truncated, count mismatch
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
    images.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let img = write(dir.path(), "img.idx", &images);
    let lab = write(dir.path(), "lab.idx", &[0, 0, 8, 1, 0, 0, 0, 2, 0, 1]);
    ok(&[
        "train",
        "--data",
        &format!("idx:{},{}", img.display(), lab.display()),
        "--epochs",
        "1",
        "--val-split",
        "0",
        "--quiet",
        "--device",
        "cpu",
    ]);
    let wrong = write(dir.path(), "wrong.idx", &[0, 0, 8, 9, 0, 0, 0, 2, 0, 1]);
    train(
        &format!("idx:{},{}", img.display(), wrong.display()),
        "magic",
    );
    let short = write(dir.path(), "short.idx", &images[..20]);
    train(
        &format!("idx:{},{}", short.display(), lab.display()),
        "truncated",
    );
    let three = write(dir.path(), "three.idx", &[0, 0, 8, 1, 0, 0, 0, 3, 0, 1, 1]);
    train(&format!("idx:{},{}", img.display(), three.display()), "3");
    train("mnist-please", "digits");
}

#[test]
fn bad_checkpoints_and_outputs_are_refused_and_nothing_is_lost() {
    let dir = tmp();
    let model = p(dir.path(), "m.safetensors");
    ok(&[
        "train", "--layers", "64,16,10", "--epochs", "1", "--out", &model, "--quiet",
    ]);
    let saved = std::fs::read(&model).unwrap();
    // a run that fails must leave the existing checkpoint as it was
    fails(
        &[
            "train",
            "--data",
            "csv:/nonexistent.csv",
            "--out",
            &model,
            "--quiet",
        ],
        "nonexistent",
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        saved,
        "a failed run changed the checkpoint"
    );
    // resume with a different model
    fails(
        &[
            "train", "--resume", &model, "--layers", "64,32,10", "--epochs", "2", "--quiet",
        ],
        "layers",
    );
    // corrupt and truncated checkpoints
    let corrupt = write(
        dir.path(),
        "corrupt.safetensors",
        b"this is not safetensors",
    );
    fails(
        &[
            "eval",
            "--model",
            corrupt.to_str().unwrap(),
            "--data",
            "digits",
        ],
        "safetensors",
    );
    let truncated = write(dir.path(), "trunc.safetensors", &saved[..saved.len() / 2]);
    fails(
        &[
            "eval",
            "--model",
            truncated.to_str().unwrap(),
            "--data",
            "digits",
        ],
        "trunc.safetensors",
    );
    fails(
        &[
            "eval",
            "--model",
            &p(dir.path(), "absent.safetensors"),
            "--data",
            "digits",
        ],
        "absent.safetensors",
    );
    // weights-only files cannot be resumed or evaluated (no metadata)
    let foreign = dir.path().join("torch.safetensors");
    write_foreign_weights(&foreign, &[64, 16, 10], Dtype::F32, None);
    fails(
        &[
            "eval",
            "--model",
            foreign.to_str().unwrap(),
            "--data",
            "digits",
        ],
        "metadata",
    );
    fails(
        &["train", "--resume", foreign.to_str().unwrap(), "--quiet"],
        "metadata",
    );
    // an output folder that does not exist
    fails(
        &[
            "train",
            "--epochs",
            "1",
            "--out",
            "/nonexistent-dir/m.safetensors",
            "--quiet",
        ],
        "does not exist",
    );
    fails(
        &[
            "predict",
            "--model",
            &model,
            "--data",
            "digits",
            "--out",
            "/nonexistent-dir/p.csv",
        ],
        "does not exist",
    );
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn metrics_epochs(path: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn resume_with_no_flags_continues_the_saved_run_in_the_resumed_file() {
    let dir = tmp();
    let straight = p(dir.path(), "straight.safetensors");
    let model = p(dir.path(), "m.safetensors");
    let metrics = p(dir.path(), "m.jsonl");
    let plot = p(dir.path(), "m.svg");
    let common = ["--layers", "64,16,10", "--optimizer", "adam", "--quiet"];
    let run = |extra: &[&str]| {
        let mut a = vec!["train"];
        a.extend_from_slice(&common);
        a.extend_from_slice(extra);
        ok(&a)
    };
    run(&["--epochs", "3", "--out", &straight]);
    // A `--epochs 3` run stopped after its second epoch: its checkpoint records the command.
    run(&[
        "--epochs",
        "2",
        "--out",
        &model,
        "--metrics",
        &metrics,
        "--plot",
        &plot,
    ]);
    let mut ck = Checkpoint::load(Path::new(&model)).unwrap();
    let state = ck.training.as_mut().unwrap();
    let mut saved: serde_json::Value = serde_json::from_str(&state.extra["args"]).unwrap();
    saved["epochs"] = 3.into();
    state.extra.insert("args".into(), saved.to_string());
    ck.save(Path::new(&model)).unwrap();
    let before = metrics_epochs(&metrics);
    assert_eq!(before.len(), 2);
    std::fs::remove_file(&plot).unwrap();

    // No --epochs: it comes from the checkpoint (not clap's default). No --out: checkpoints go
    // back to the resumed file. Metrics and plots only where this command asks for them (the
    // paths stored in the checkpoint are never written).
    std::fs::remove_file(&metrics).unwrap();
    ok(&["train", "--resume", &model, "--quiet"]);
    assert!(
        !Path::new(&metrics).exists(),
        "a stored --metrics path was written"
    );
    assert!(
        !Path::new(&plot).exists(),
        "a stored --plot path was written"
    );
    let resumed = Checkpoint::load(Path::new(&model)).unwrap();
    assert_eq!(
        resumed.training.as_ref().unwrap().epoch,
        3,
        "resume trained to the saved run's 3 epochs"
    );
    let a = Checkpoint::load(Path::new(&straight)).unwrap();
    assert_eq!(
        a.params, resumed.params,
        "resumed parameters differ from an unbroken run"
    );
    // --epochs given on the command line still wins, and may not go backwards.
    fails(
        &["train", "--resume", &model, "--epochs", "2", "--quiet"],
        "already trained",
    );
    ok(&[
        "train",
        "--resume",
        &model,
        "--epochs",
        "4",
        "--quiet",
        "--metrics",
        &metrics,
        "--plot",
        &plot,
    ]);
    let ck = Checkpoint::load(Path::new(&model)).unwrap();
    assert_eq!(ck.training.unwrap().epoch, 4);
    let after = metrics_epochs(&metrics);
    let epochs: Vec<_> = after.iter().map(|r| r["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2, 3, 4], "the metrics file holds every epoch");
    assert_eq!(after[..2], before[..], "the earlier epochs' lines are kept");
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
}

#[test]
fn resume_refuses_flags_that_contradict_the_checkpoint() {
    let dir = tmp();
    let model = p(dir.path(), "m.safetensors");
    ok(&[
        "train",
        "--layers",
        "64,16,10",
        "--optimizer",
        "momentum",
        "--epochs",
        "1",
        "--out",
        &model,
        "--quiet",
    ]);
    let saved = std::fs::read(&model).unwrap();
    let refused = |flags: &[&str], wants: &[&str]| {
        let mut a = vec!["train", "--resume", &model, "--epochs", "2", "--quiet"];
        a.extend_from_slice(flags);
        let t = fails(&a, wants[0]);
        for w in wants {
            assert!(
                t.contains(w),
                "gpumlp {a:?}: message should mention '{w}':\n{t}"
            );
        }
        assert_eq!(
            std::fs::read(&model).unwrap(),
            saved,
            "a refused resume changed the checkpoint"
        );
    };
    refused(
        &["--layers", "64,32,10"],
        &["--layers 64,32,10", "--layers 64,16,10"],
    );
    refused(
        &["--optimizer", "adam"],
        &["--optimizer adam", "--optimizer momentum"],
    );
    refused(&["--lr", "0.5"], &["--lr 0.5", "--lr 0.05"]);
    refused(&["--batch", "64"], &["--batch 64", "--batch 32"]);
    refused(&["--seed", "7"], &["--seed 7", "--seed 0"]);
    refused(
        &["--activation", "tanh"],
        &["--activation tanh", "--activation relu"],
    );
    refused(&["--loss", "squared-error"], &["--loss squared-error"]);
    refused(&["--normalize", "unit"], &["--normalize unit"]);
    refused(&["--data", "fashion-mnist"], &["--data fashion-mnist"]);
    // the same values, given explicitly, are fine
    ok(&[
        "train",
        "--resume",
        &model,
        "--epochs",
        "2",
        "--layers",
        "64,16,10",
        "--optimizer",
        "momentum",
        "--activation",
        "relu",
        "--lr",
        "0.05",
        "--quiet",
    ]);
    assert_eq!(
        Checkpoint::load(Path::new(&model))
            .unwrap()
            .training
            .unwrap()
            .epoch,
        2
    );
}

#[test]
fn bad_flags_fail_before_training_and_write_nothing() {
    let dir = tmp();
    let out = p(dir.path(), "m.safetensors");
    let metrics = p(dir.path(), "m.jsonl");
    let plot = p(dir.path(), "m.svg");
    let f = write(dir.path(), "three.csv", b"1,2,0\n3,4,1\n");
    let narrow = format!("csv:{}", f.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--test", "csv:/nonexistent/t.csv"],
            "/nonexistent/t.csv",
        ),
        (vec!["--test", &narrow], "2 features"),
        (vec!["--plot", "m.jpg"], ".svg or .png"),
        (vec!["--epochs", "0"], "--epochs must be at least 1"),
        (vec!["--verify", "0"], "at least 1"),
        (
            vec!["--device", "cpu", "--backend", "vulkan"],
            "--device cpu",
        ),
    ];
    for (flags, want) in cases {
        let mut a = vec!["train", "--out", &out, "--metrics", &metrics];
        if !flags.contains(&"--plot") {
            a.extend_from_slice(&["--plot", &plot]);
        }
        if !flags.contains(&"--epochs") {
            a.extend_from_slice(&["--epochs", "3"]);
        }
        a.extend_from_slice(&flags);
        let t = fails(&a, want);
        assert!(
            !t.contains("epoch   1") && !t.contains("gpumlp: training"),
            "gpumlp {a:?} started training before failing:\n{t}"
        );
        assert_eq!(
            listing(dir.path()),
            ["three.csv"],
            "gpumlp {a:?} left files behind"
        );
    }
    // the same checks in eval and predict where they apply
    fails(
        &[
            "eval",
            "--model",
            &out,
            "--data",
            "digits",
            "--device",
            "cpu",
            "--backend",
            "gl",
        ],
        "--device cpu",
    );
}

#[test]
fn unwritable_output_folders_are_refused_before_training() {
    let dir = tmp();
    // a "folder" that is a regular file: refused for every user, root included
    let file = write(dir.path(), "plain-file", b"x");
    for flag in ["--out", "--metrics", "--plot"] {
        let target = file.join("x.svg").to_string_lossy().into_owned();
        let t = fails(&["train", "--epochs", "3", flag, &target], "not a folder");
        assert!(!t.contains("epoch   1"), "trained before failing:\n{t}");
    }
    // an output path that is itself a folder
    fails(
        &[
            "train",
            "--epochs",
            "1",
            "--out",
            dir.path().to_str().unwrap(),
        ],
        "is a folder",
    );
    // a folder without write permission (root writes anyway: then there is nothing to refuse)
    use std::os::unix::fs::PermissionsExt;
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), b"x").is_ok() {
        eprintln!("skipping the read-only folder check: this user (root?) can write in it");
    } else {
        let target = ro.join("m.safetensors").to_string_lossy().into_owned();
        fails(
            &["train", "--epochs", "3", "--out", &target],
            "cannot write",
        );
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn failed_runs_leave_an_existing_checkpoint_intact_and_no_temporary_files() {
    let dir = tmp();
    let model = p(dir.path(), "m.safetensors");
    ok(&[
        "train", "--layers", "64,16,10", "--epochs", "1", "--out", &model, "--quiet",
    ]);
    let saved = std::fs::read(&model).unwrap();
    let attempts: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--out", &model, "--test", "csv:/nonexistent.csv"],
            "nonexistent",
        ),
        (vec!["--out", &model, "--plot", "p.gif"], ".svg or .png"),
        (vec!["--out", &model, "--epochs", "0"], "--epochs"),
        (
            vec!["--resume", &model, "--out", &model, "--optimizer", "sgd"],
            "--optimizer",
        ),
        (
            vec![
                "--resume",
                &model,
                "--epochs",
                "3",
                "--test",
                "csv:/nonexistent.csv",
            ],
            "nonexistent",
        ),
        (vec!["--resume", &model, "--layers", "64,8,10"], "--layers"),
    ];
    for (flags, want) in attempts {
        let mut a = vec!["train", "--quiet"];
        a.extend_from_slice(&flags);
        fails(&a, want);
        assert_eq!(
            std::fs::read(&model).unwrap(),
            saved,
            "gpumlp {a:?} changed the checkpoint"
        );
        assert_eq!(
            listing(dir.path()),
            ["m.safetensors"],
            "gpumlp {a:?} left a temporary file"
        );
    }
    // a successful run rewrites it atomically and leaves no temporary file either
    ok(&["train", "--resume", &model, "--epochs", "2", "--quiet"]);
    assert_ne!(std::fs::read(&model).unwrap(), saved);
    assert_eq!(listing(dir.path()), ["m.safetensors"]);
}

#[test]
fn no_adapter_note_is_on_stderr_unless_quiet() {
    let run = |quiet: bool| {
        let mut a = vec!["train", "--epochs", "1", "--layers", "64,8,10"];
        if quiet {
            a.push("--quiet");
        }
        let o = Command::new(env!("CARGO_BIN_EXE_gpumlp"))
            .args(&a)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .env("GPUMLP_ADAPTER", "no-such-adapter-anywhere")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (_, stderr) = run(false);
    assert!(
        stderr.contains("gpumlp: device: cpu (") && stderr.contains("no GPU adapter found"),
        "stderr:\n{stderr}"
    );
    let (_, stderr) = run(true);
    assert!(
        !stderr.contains("gpumlp: device:"),
        "--quiet still printed the device line:\n{stderr}"
    );
}

#[test]
fn predict_names_raw_outputs_y_and_probabilities_p() {
    let dir = tmp();
    let test = digits_csv(dir.path(), "test.csv", 0..50);
    let model = p(dir.path(), "identity.safetensors");
    ok(&[
        "train",
        "--layers",
        "64,16,10",
        "--output-activation",
        "identity",
        "--loss",
        "squared-error",
        "--epochs",
        "1",
        "--out",
        &model,
        "--quiet",
    ]);
    let pred = p(dir.path(), "pred.csv");
    ok(&[
        "predict", "--model", &model, "--data", &test, "--out", &pred,
    ]);
    let text = std::fs::read_to_string(&pred).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("predicted,y0,") && !header.contains(",p"),
        "identity outputs are not probabilities: {header}"
    );
    assert_eq!(text.lines().count(), 51);
}

#[test]
fn early_stopping_stops_on_a_plateau_and_restores_the_best_epoch() {
    let dir = tmp();
    let out = p(dir.path(), "m.safetensors");
    let best = p(dir.path(), "best.safetensors");
    let first = p(dir.path(), "first.safetensors");
    let metrics = p(dir.path(), "m.jsonl");
    let common = [
        "train", "--layers", "64,16,10", "--device", "cpu", "--seed", "3",
    ];
    let mut a = common.to_vec();
    a.extend(["--epochs", "1", "--out", &first, "--quiet"]);
    ok(&a);
    // Nothing improves on the first epoch by more than 1e9: a plateau from epoch 2 on.
    let mut a = common.to_vec();
    a.extend([
        "--epochs",
        "20",
        "--patience",
        "2",
        "--monitor",
        "train_loss",
        "--min-delta",
        "1e9",
        "--save-best",
        &best,
        "--restore-best",
        "--out",
        &out,
        "--metrics",
        &metrics,
    ]);
    let text = ok(&a);
    assert!(text.contains("stopped early after epoch 3"), "{text}");
    assert!(text.contains("restored the weights of epoch 1"), "{text}");
    let lines = metrics_epochs(&metrics);
    assert_eq!(lines.len(), 3, "one appended line per epoch trained");
    assert_eq!(lines[2]["best_epoch"], 1, "the metrics name the best epoch");
    let params = |f: &str| Checkpoint::load(Path::new(f)).unwrap().params;
    assert_eq!(params(&best), params(&first), "--save-best holds epoch 1");
    assert_eq!(
        params(&out),
        params(&first),
        "--restore-best ends with epoch 1's weights"
    );
    // Refused up front.
    fails(&["train", "--patience", "0"], "patience");
    // A typo gets clap's suggestion, with the values listed.
    fails(
        &["train", "--monitor", "val_los", "--patience", "2"],
        &[
            "invalid value 'val_los'",
            "similar value exists: 'val_loss'",
            "val_accuracy, train_loss",
        ],
    );
    fails(
        &["train", "--patience", "2", "--val-split", "0"],
        "needs a validation set",
    );
}

#[test]
fn hidden_eval_json_predict_to_stdout_and_adapter() {
    let dir = tmp();
    let model = p(dir.path(), "m.safetensors");
    // --hidden: the data decides 64 inputs and 10 outputs.
    ok(&[
        "train", "--hidden", "24,12", "--epochs", "2", "--device", "cpu", "--out", &model,
        "--quiet",
    ]);
    let ck = Checkpoint::load(Path::new(&model)).unwrap();
    assert_eq!(ck.spec.sizes, [64, 24, 12, 10]);
    fails(
        &["train", "--hidden", "8", "--layers", "64,8,10"],
        "cannot be used with",
    );
    // eval --json: one object a script can read.
    let o = gpumlp(&[
        "eval", "--model", &model, "--data", "digits", "--device", "cpu", "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["samples"], 1797);
    let acc = v["accuracy"].as_f64().unwrap();
    let confusion = v["confusion"].as_array().unwrap();
    let cell = |r: usize, c: usize| confusion[r][c].as_u64().unwrap();
    let total: u64 = (0..10)
        .flat_map(|r| (0..10).map(move |c| (r, c)))
        .map(|(r, c)| cell(r, c))
        .sum();
    let diagonal: u64 = (0..10).map(|i| cell(i, i)).sum();
    assert_eq!(total, 1797);
    assert!((acc - diagonal as f64 / 1797.0).abs() < 1e-9, "{v}");
    // predict --out -: the CSV on stdout, the same as the file.
    let file = p(dir.path(), "preds.csv");
    let predict = |out: &str| {
        gpumlp(&[
            "predict", "--model", &model, "--data", "digits", "--device", "cpu", "--out", out,
        ])
    };
    let o = predict("-");
    assert!(o.status.success(), "{}", text(&o));
    assert!(predict(&file).status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        std::fs::read_to_string(&file).unwrap()
    );
    assert!(!Path::new(&p(dir.path(), "-")).exists());
    // --adapter narrows the adapters by name.
    fails(
        &[
            "train",
            "--device",
            "gpu",
            "--adapter",
            "no-such-adapter",
            "--quiet",
        ],
        "no-such-adapter",
    );
    fails(
        &["train", "--device", "cpu", "--adapter", "x"],
        "give one or the other",
    );
}

#[test]
fn a_run_described_in_a_toml_file_with_flags_overriding_it() {
    let dir = tmp();
    let config = p(dir.path(), "run.toml");
    let model = p(dir.path(), "m.safetensors");
    std::fs::write(
        &config,
        "epochs = 3\nlayers = \"64,24,10\"\ndata = \"digits\"\nval-split = 0.1\ndevice = \"cpu\"\noptimizer = \"sgd\"\n",
    )
    .unwrap();
    ok(&[
        "train", "--config", &config, "--epochs", "2", "--out", &model, "--quiet",
    ]);
    let ck = Checkpoint::load(Path::new(&model)).unwrap();
    assert_eq!(ck.spec.sizes, [64, 24, 10], "from the file");
    assert_eq!(
        ck.training.as_ref().unwrap().epoch,
        2,
        "the flag overrides the file"
    );
    // info --model prints the effective configuration, which --config reads back.
    let info = ok(&["info", "--model", &model]);
    assert!(info.contains("epochs = 2"), "{info}");
    assert!(info.contains("optimizer = \"sgd\""), "{info}");
    let toml_part = info.split_once("reads this):\n").unwrap().1;
    let again = p(dir.path(), "again.toml");
    let other = p(dir.path(), "other.safetensors");
    std::fs::write(&again, toml_part.replace(&model, &other)).unwrap();
    ok(&["train", "--config", &again, "--quiet"]);
    assert_eq!(
        Checkpoint::load(Path::new(&other)).unwrap().params,
        ck.params,
        "the printed configuration reproduces the run"
    );
    // Mistakes name the key.
    std::fs::write(&config, "epoch = 3\n").unwrap();
    fails(&["train", "--config", &config], "unknown key 'epoch'");
    std::fs::write(&config, "epochs = \"three\"\n").unwrap();
    fails(&["train", "--config", &config], "wrong type");
    std::fs::write(&config, "resume = \"x\"\n").unwrap();
    fails(&["train", "--config", &config], "cannot be set in a file");
}

#[test]
fn a_quoted_string_labelled_csv_trains_evaluates_and_predicts_names() {
    let dir = tmp();
    let data = p(dir.path(), "flowers.csv");
    let mut csv = String::from("petal,sepal,species\n");
    let names = ["setosa", "versicolor", "virginica"];
    for i in 0..90 {
        let c = i % 3;
        let jitter = (i as f32 * 0.37).sin() * 0.2;
        csv += &format!(
            "{},{},\"{}\"\n",
            c as f32 + jitter,
            2.0 - c as f32 - jitter,
            names[c]
        );
    }
    std::fs::write(&data, &csv).unwrap();
    let spec = format!("csv:{data}");
    let model = p(dir.path(), "m.safetensors");
    ok(&[
        "train",
        "--data",
        &spec,
        "--epochs",
        "40",
        "--optimizer",
        "adam",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--out",
        &model,
        "--quiet",
    ]);
    let ck = Checkpoint::load(Path::new(&model)).unwrap();
    assert_eq!(
        ck.class_names.as_deref().unwrap(),
        names,
        "the sorted vocabulary is saved"
    );
    let o = gpumlp(&[
        "eval", "--model", &model, "--data", &spec, "--device", "cpu", "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["classes"], serde_json::json!(names));
    assert!(v["accuracy"].as_f64().unwrap() > 0.95, "{v}");
    let eval_text = ok(&[
        "eval", "--model", &model, "--data", &spec, "--device", "cpu",
    ]);
    assert!(
        eval_text.contains("setos"),
        "the confusion matrix names classes:\n{eval_text}"
    );
    let o = gpumlp(&[
        "predict", "--model", &model, "--data", &spec, "--device", "cpu", "--out", "-",
    ]);
    let preds = String::from_utf8_lossy(&o.stdout).to_string();
    let predicted: Vec<&str> = preds
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(predicted.len(), 90);
    let right = predicted
        .iter()
        .enumerate()
        .filter(|(i, p)| **p == names[i % 3])
        .count();
    assert!(right > 85, "predict prints class names:\n{preds}");
    // A label the model never saw is a clear error.
    let unseen = p(dir.path(), "unseen.csv");
    std::fs::write(&unseen, "petal,sepal,species\n0.1,2,setosa\n1,1,rose\n").unwrap();
    fails(
        &[
            "eval",
            "--model",
            &model,
            "--data",
            &format!("csv:{unseen}"),
            "--device",
            "cpu",
        ],
        "class label 'rose' at row 1 is not one the model was trained on",
    );
}

#[test]
fn export_writes_onnx_that_reads_back_with_the_saved_model_inside() {
    use gpumlp::onnx::proto::tensor_shape_proto::dimension::Value;
    use gpumlp::onnx::proto::type_proto;
    let dir = tmp();
    let model = p(dir.path(), "m.safetensors");
    let onnx = p(dir.path(), "m.onnx");
    let data = digits_csv(dir.path(), "d.csv", 0..200);
    ok(&[
        "train",
        "--data",
        &data,
        "--layers",
        "64,12,10",
        "--activation",
        "tanh",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        &model,
        "--quiet",
    ]);
    ok(&["export", "--model", &model, "--onnx", &onnx, "--quiet"]);
    let m = gpumlp::onnx::from_onnx(&std::fs::read(&onnx).unwrap()).unwrap();
    let g = m.graph.unwrap();
    let ops: Vec<_> = g.node.iter().map(|n| n.op_type().to_string()).collect();
    // --normalize standard (the default) is saved, so it comes first.
    assert_eq!(
        ops,
        ["Sub", "Div", "Gemm", "Tanh", "Gemm", "Softmax", "ArgMax"]
    );
    let dims = |vi: &gpumlp::onnx::proto::ValueInfoProto| -> Vec<String> {
        let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().unwrap().value.as_ref()
        else {
            panic!("not a tensor")
        };
        t.shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                Value::DimValue(v) => v.to_string(),
                Value::DimParam(s) => s.clone(),
            })
            .collect()
    };
    assert_eq!(g.input[0].name(), "input");
    assert_eq!(dims(&g.input[0]), ["batch", "64"]);
    assert_eq!(
        (g.output[0].name(), dims(&g.output[0])),
        ("output", vec!["batch".into(), "10".into()])
    );
    assert_eq!(
        (g.output[1].name(), dims(&g.output[1])),
        ("label", vec!["batch".into()])
    );
    // The weights are the checkpoint's, in its [out, in] layout.
    let ck = Checkpoint::load(Path::new(&model)).unwrap();
    let w1 = g
        .initializer
        .iter()
        .find(|t| t.name() == "layers.1.weight")
        .unwrap();
    assert_eq!(w1.dims, [10, 12]);
    let l1 = ck.spec.layout()[1];
    assert_eq!(w1.float_data[3 * 12 + 5], ck.params[l1.weight + 5 * 10 + 3]);
    // The export is the library's bytes, and the usual output checks hold.
    assert_eq!(
        std::fs::read(&onnx).unwrap(),
        gpumlp::onnx::to_onnx(&ck).unwrap()
    );
    fails(
        &["export", "--model", &model, "--onnx", &model],
        "--onnx names the input",
    );
    fails(
        &[
            "export",
            "--model",
            &model,
            "--onnx",
            &p(dir.path(), "missing/m.onnx"),
        ],
        "does not exist",
    );
    fails(
        &[
            "export",
            "--model",
            &onnx,
            "--onnx",
            &p(dir.path(), "x.onnx"),
        ],
        "safetensors",
    );
    assert!(!dir.path().join("x.onnx").exists());
}

#[test]
fn cosine_and_plateau_schedules_resume_exactly() {
    for schedule in ["cosine:4:1", "plateau:0.5:1"] {
        let dir = tmp();
        let straight = p(dir.path(), "straight.safetensors");
        let resumed = p(dir.path(), "resumed.safetensors");
        let metrics = p(dir.path(), "m.jsonl");
        let common = [
            "train",
            "--layers",
            "64,16,10",
            "--device",
            "cpu",
            "--optimizer",
            "sgd",
            "--lr",
            "0.5",
            "--schedule",
            schedule,
            "--quiet",
        ];
        let run = |extra: &[&str]| {
            let mut a = common.to_vec();
            a.extend_from_slice(extra);
            ok(&a)
        };
        run(&["--epochs", "4", "--out", &straight, "--metrics", &metrics]);
        run(&["--epochs", "2", "--out", &resumed]);
        ok(&["train", "--resume", &resumed, "--epochs", "4", "--quiet"]);
        let a = Checkpoint::load(Path::new(&straight)).unwrap();
        let b = Checkpoint::load(Path::new(&resumed)).unwrap();
        assert_eq!(
            a.params, b.params,
            "{schedule}: resumed differs from unbroken"
        );
        let lrs: Vec<f64> = metrics_epochs(&metrics)
            .iter()
            .map(|r| r["lr"].as_f64().unwrap())
            .collect();
        assert!(
            lrs.iter().all(|&l| l > 0.0 && l <= 0.5),
            "{schedule}: {lrs:?}"
        );
        if schedule.starts_with("cosine") {
            assert!((lrs[0] - 0.5).abs() < 1e-6 && lrs[3] < lrs[2] && lrs[2] < lrs[1]);
        }
    }
    fails(&["train", "--schedule", "cosine:0"], "EPOCHS");
    fails(&["train", "--schedule", "plateau:2:1"], "FACTOR");
}
