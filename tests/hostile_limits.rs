//! Issue 14, items 6–13 and its misleading messages: absurd sizes, huge or endless inputs,
//! silent wrong results, and messages that mislead, tried through the built binary and the
//! library. Every case must end in a clear error (or the right result), never a panic, an abort
//! or gigabytes allocated: limits are reached with small files whose headers lie, or with
//! `GPUMLP_MAX_HOST_BYTES` and devices opened with small limits.

mod common;

use common::cli::{fails, fails_env, ok};
use gpumlp::checkpoint::{Checkpoint, TrainingState};
use gpumlp::{
    Activation, AdapterSelector, Backend, Dataset, GpuBackend, GpuContext, GpuOptions, Loss,
    ModelSpec, Optimizer, ReferenceBackend,
};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A one-member gzip stream of `n` zero bytes.
fn gzip_zeros(n: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let block = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len());
        e.write_all(&block[..k]).unwrap();
        left -= k;
    }
    e.finish().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A safetensors file with `meta` and the given f32 tensors.
fn safetensors_file(path: &Path, meta: &[(&str, &str)], tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| bytemuck::cast_slice(v).to_vec())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, shape, _), b)| {
            (
                n.to_string(),
                TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// A small digits checkpoint with training state (Adam), trained for one epoch on the CPU.
fn trained_checkpoint(dir: &Path) -> String {
    let model = s(&dir.join("run.safetensors"));
    ok(&[
        "train", "--device", "cpu", "--epochs", "1", "--layers", "64,8,10", "--out", &model,
        "--quiet",
    ]);
    model
}

// ---- item 6: absurd sizes ----

#[test]
fn item6_layer_sizes_whose_parameter_count_wraps_fail_cleanly() {
    for layers in ["64,4611686018427387904,10", "64,288230376151711744,63"] {
        fails(
            &[
                "train", "--device", "cpu", "--epochs", "1", "--layers", layers,
            ],
            &["64-bit"],
        );
        fails(
            &["bench", "--device", "cpu", "--layers", layers],
            &["64-bit"],
        );
    }
}

#[test]
fn item6_a_model_larger_than_memory_is_refused_naming_bytes_and_limit() {
    let env = [("GPUMLP_MAX_HOST_BYTES", "100000000")];
    let t = fails_env(
        &[
            "train",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--layers",
            "64,100000,100000,10",
        ],
        &env,
        &["100000000 bytes", "GPUMLP_MAX_HOST_BYTES", "needs"],
    );
    assert!(t.contains("narrower layers"), "{t}");
    fails_env(
        &[
            "bench",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--layers",
            "64,100000,100000,10",
        ],
        &env,
        &["100000000 bytes", "needs"],
    );
    // The library refuses it the same way when placing it.
    let spec = ModelSpec::new(
        &[64, 100000, 100000, 10],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let bytes = spec.host_bytes(Optimizer::adam(), 32);
    assert!(bytes > 40_000_000_000, "{bytes}");
}

#[test]
fn item6_sizes_from_a_checkpoint_fail_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let meta = |sizes: &'static str, activations: &'static str| {
        [
            ("format", "gpumlp"),
            ("format_version", "1"),
            ("sizes", sizes),
            ("activations", activations),
            ("loss", "cross-entropy"),
        ]
    };
    let wrap = dir.path().join("wrap.safetensors");
    safetensors_file(
        &wrap,
        &meta("64,288230376151711744,63", "relu,softmax"),
        &[("layers.0.bias", vec![1], vec![0.0])],
    );
    let e = Checkpoint::load(&wrap).unwrap_err().to_string();
    assert!(
        e.contains("64-bit") && e.contains("wrap.safetensors"),
        "{e}"
    );
    fails(
        &["eval", "--model", &s(&wrap), "--data", "digits"],
        &["64-bit"],
    );
    // Sizes that fit a count but not the file: refused before the parameters are allocated.
    let big = dir.path().join("big.safetensors");
    safetensors_file(
        &big,
        &meta("64,100000,100000,10", "relu,relu,softmax"),
        &[("layers.0.bias", vec![1], vec![0.0])],
    );
    let e = Checkpoint::load(&big).unwrap_err().to_string();
    assert!(
        e.contains("holds only") && e.contains("big.safetensors"),
        "{e}"
    );
    fails(
        &[
            "predict",
            "--model",
            &s(&big),
            "--data",
            "digits",
            "--out",
            &s(&dir.path().join("p.csv")),
        ],
        &["holds only"],
    );
}

#[test]
fn item6_bench_with_zero_or_absurd_counts_fails_cleanly() {
    for (flag, v) in [
        ("--steps", "0"),
        ("--batch", "0"),
        ("--steps-per-submit", "0"),
    ] {
        fails(
            &["bench", "--device", "cpu", "--layers", "4,4,2", flag, v],
            &["at least 1"],
        );
    }
    fails(
        &[
            "bench",
            "--device",
            "gpu",
            "--layers",
            "4,4,2",
            "--steps-per-submit",
            "18446744073709551615",
        ],
        &["steps per submit"],
    );
}

// ---- item 7: GPU buffers over the device's limits ----

/// Every adapter, opened with 64 KiB buffers and bindings: small enough that a few thousand
/// rows reach the limits that 2^24 rows reach on a real device.
fn small_limit_gpus(bytes: u64) -> Vec<Arc<GpuContext>> {
    let _ = common::gpus(); // fails clearly when there is no adapter (and checks CI's adapters)
    GpuContext::all_with_limits(&AdapterSelector::from_env(), |l| {
        l.max_storage_buffer_binding_size = bytes;
        l.max_buffer_size = bytes;
    })
    .unwrap()
    .into_iter()
    .map(Arc::new)
    .collect()
}

fn small_spec() -> ModelSpec {
    ModelSpec::new(
        &[2, 3, 2],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap()
}

#[test]
fn item7_many_rows_predictions_and_evaluations_stay_within_device_limits() {
    let spec = small_spec();
    let rows = 10_000; // stats per row (80 KB), outputs (80 KB), x (80 KB): all over 64 KiB
    let x = common::uniform(rows * 2, -1.0, 1.0, 1);
    let t = common::one_hot(rows, 2, 2);
    let params = spec.init_params(3);
    let mut cpu = ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap();
    cpu.set_params(&params).unwrap();
    let want_y = cpu.predict(&x, rows).unwrap();
    let want = cpu.evaluate(&x, &t, rows).unwrap();
    for ctx in small_limit_gpus(64 << 10) {
        let mut g = GpuBackend::new(
            ctx.clone(),
            &spec,
            Optimizer::Sgd,
            64,
            GpuOptions::default(),
        )
        .unwrap();
        g.set_params(&params).unwrap();
        let y = g.predict(&x, rows).unwrap();
        let cmp = common::OUTPUT_TOL.compare("predictions", &y, &want_y);
        assert!(cmp.passed, "{}: {cmp}", ctx.info);
        let got = g.evaluate(&x, &t, rows).unwrap();
        assert_eq!(got.samples, want.samples);
        assert_eq!(got.correct, want.correct, "{}", ctx.info);
        // A training set whose per-row stats would not fit one binding: sized by steps instead.
        g.set_train_data(&x, &t, rows).unwrap();
        g.begin_epoch(&(0..rows as u32).collect::<Vec<_>>())
            .unwrap();
        let h = Optimizer::Sgd.hyper(0.1, 1, 0.0);
        let mut start = 0;
        while start < rows {
            let len = 64.min(rows - start);
            g.step(start, len, &h).unwrap();
            start += len;
        }
        let stats = g.finish_epoch().unwrap();
        assert_eq!(stats.len(), rows.div_ceil(64), "{}", ctx.info);
        // A step past the end of the data is refused, whatever its numbers.
        assert!(g.step(usize::MAX, 2, &h).is_err());
    }
}

#[test]
fn item7_an_epoch_of_more_steps_than_the_stats_binding_holds_is_refused() {
    let spec = small_spec();
    for ctx in small_limit_gpus(16 << 10) {
        let mut g =
            GpuBackend::new(ctx.clone(), &spec, Optimizer::Sgd, 1, GpuOptions::default()).unwrap();
        g.set_params(&spec.init_params(0)).unwrap();
        let rows = 2100; // 16 KiB hold 2048 steps' stats; x (16.8 KB) stays on the host
        let x = common::uniform(rows * 2, -1.0, 1.0, 1);
        let t = common::one_hot(rows, 2, 2);
        g.set_train_data(&x, &t, rows).unwrap();
        let e = {
            let mut err = None;
            g.begin_epoch(&(0..rows as u32).collect::<Vec<_>>())
                .unwrap();
            let h = Optimizer::Sgd.hyper(0.1, 1, 0.0);
            for i in 0..rows {
                if let Err(e) = g.step(i, 1, &h) {
                    err = Some(e);
                    break;
                }
            }
            err.expect("an epoch of 2100 one-row steps must be refused at 2048")
        };
        let m = e.to_string();
        assert!(
            m.contains("larger --batch") && m.contains("16384 bytes"),
            "{m}"
        );
    }
}

#[test]
fn item7_bench_with_a_batch_beyond_memory_is_refused_before_allocating() {
    for device in ["cpu", "gpu"] {
        fails_env(
            &["bench", "--device", device, "--batch", "100000000"],
            &[("GPUMLP_MAX_HOST_BYTES", "1000000000")],
            &["bench batch", "needs", "smaller --batch"],
        );
    }
}

// ---- item 8: bounded reads ----

#[test]
fn item8_an_idx_file_is_read_no_further_than_its_header_promises() {
    let dir = tempfile::tempdir().unwrap();
    // A header for 3 images of 2×3 pixels, its 18 bytes, then a gzip bomb: 1 GiB of zeros in
    // 16 concatenated gzip members (about 1 MB on disk).
    let mut header = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 3];
    header.extend([7u8; 18]);
    let mut bomb = gzip(&header);
    let member = gzip_zeros(64 << 20);
    for _ in 0..16 {
        bomb.extend_from_slice(&member);
    }
    let images = dir.path().join("images.gz");
    std::fs::write(&images, &bomb).unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 0]).unwrap();
    let started = std::time::Instant::now();
    let e = gpumlp::data::load_idx(&images, &labels)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("extra data") && e.contains("reading stopped"),
        "{e}"
    );
    assert!(
        started.elapsed().as_secs() < 10,
        "read the whole bomb: {:?}",
        started.elapsed()
    );
    // A header that promises more than memory holds fails before reading the data.
    let lie = dir.path().join("lie");
    std::fs::write(
        &lie,
        [
            0, 0, 8, 3, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff,
        ],
    )
    .unwrap();
    let e = gpumlp::data::load_idx(&lie, &labels)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs") && e.contains("lie"), "{e}");
}

#[test]
fn item8_a_csv_line_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // 80 MiB of zeros with no newline, compressed.
    let path = dir.path().join("endless.csv.gz");
    let mut z = gzip_zeros(40 << 20);
    z.extend(gzip_zeros(40 << 20));
    std::fs::write(&path, z).unwrap();
    let spec = format!("csv:{}", path.display());
    let t = fails(
        &["train", "--device", "cpu", "--data", &spec],
        &["longer than", "67108864 bytes"],
    );
    assert!(t.contains("endless.csv.gz"), "{t}");
}

#[test]
fn item8_a_safetensors_file_is_read_no_further_than_its_header_describes() {
    // An endless stream of zeros: the header length 0 is refused at once.
    fails(
        &["eval", "--model", "/dev/zero", "--data", "digits"],
        &["/dev/zero", "header length is 0 bytes", "100000000"],
    );
    let dir = tempfile::tempdir().unwrap();
    let model = trained_checkpoint(dir.path());
    fails(
        &[
            "train",
            "--init",
            "/dev/zero",
            "--device",
            "cpu",
            "--layers",
            "64,8,10",
        ],
        &["header length is 0 bytes"],
    );
    // A header longer than the file, and a header that describes more data than there is.
    let bytes = std::fs::read(&model).unwrap();
    let short = dir.path().join("short.safetensors");
    std::fs::write(&short, &bytes[..bytes.len() - 10]).unwrap();
    fails(
        &["eval", "--model", &s(&short), "--data", "digits"],
        &["short.safetensors", "truncated"],
    );
    let lying = dir.path().join("lying.safetensors");
    let header =
        br#"{"a":{"dtype":"F32","shape":[250000000000000],"data_offsets":[0,1000000000000000]}}"#;
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header);
    std::fs::write(&lying, f).unwrap();
    let e = Checkpoint::load(&lying).unwrap_err().to_string();
    assert!(
        e.contains("needs") && e.contains("lying.safetensors"),
        "{e}"
    );
}

// ---- item 9: one-hot targets of many classes ----

#[test]
fn item9_dense_targets_are_checked_against_memory_before_allocating() {
    // 2^20 samples whose largest label is 2^20 − 1: 4 TiB of one-hot floats.
    let rows = 1 << 20;
    let mut labels = vec![0u32; rows];
    labels[7] = (1 << 20) - 1;
    let data = Dataset::from_classes(vec![0.5; rows], 1, labels, 1 << 20).unwrap();
    let spec = ModelSpec::new(
        &[1, 1 << 20],
        Activation::Identity,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let e = data.dense_targets(&spec).unwrap_err().to_string();
    assert!(
        e.contains("one-hot targets") && e.contains("needs") && e.contains("targets=1"),
        "{e}"
    );
    // A chunk of them is fine: evaluation never builds all of them at once.
    assert_eq!(
        data.dense_targets_rows(&spec, 7..8).unwrap()[(1 << 20) - 1],
        1.0
    );

    // Through the command line: a 20 KB CSV with one label near the class limit.
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::new();
    for r in 0..1000 {
        csv += &format!("{},{}\n", r % 7, if r == 3 { 1048575 } else { r % 2 });
    }
    let path = dir.path().join("ids.csv");
    std::fs::write(&path, csv).unwrap();
    let spec = format!("csv:{}", path.display());
    fails_env(
        &[
            "train",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--val-split",
            "0",
            "--data",
            &spec,
            "--layers",
            "1,1048576",
        ],
        &[("GPUMLP_MAX_HOST_BYTES", "1000000000")],
        &["one-hot targets", "1048575", "needs"],
    );
}

// ---- item 10: Adam past 2^31 steps ----

#[test]
fn item10_adam_still_moves_the_weights_past_two_to_the_31_steps() {
    let spec = ModelSpec::new(
        &[2, 2],
        Activation::Identity,
        Activation::Identity,
        Loss::SquaredError,
    )
    .unwrap();
    for t in [(1u64 << 31) + 5, 1 << 32, (1 << 32) + 1] {
        let h = Optimizer::adam().hyper(0.01, t, 0.0);
        assert_eq!(
            (h.bias_correction1, h.bias_correction2),
            (1.0, 1.0),
            "t = {t}"
        );
        let mut cpu = ReferenceBackend::new(&spec, Optimizer::adam()).unwrap();
        let p0 = vec![0.5, -0.5, 0.25, 1.0, 0.0, 0.0];
        cpu.set_params(&p0).unwrap();
        cpu.set_train_data(&[1.0, 2.0], &[3.0, -1.0], 1).unwrap();
        cpu.begin_epoch(&[0]).unwrap();
        cpu.step(0, 1, &h).unwrap();
        cpu.finish_epoch().unwrap();
        let p1 = cpu.params().unwrap();
        assert!(p1.iter().all(|v| v.is_finite()), "t = {t}: {p1:?}");
        assert!(
            p1.iter().zip(&p0).any(|(a, b)| a != b),
            "t = {t}: the weights did not move"
        );
    }
}

// ---- item 11: non-finite outputs ----

#[test]
fn item11_eval_and_predict_name_the_samples_whose_outputs_are_not_finite() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ModelSpec::new(
        &[1, 2],
        Activation::Identity,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let model = dir.path().join("huge.safetensors");
    Checkpoint {
        spec,
        params: vec![1e30, -1e30, 0.0, 0.0],
        normalization: None,
        class_names: None,
        training: None,
    }
    .save(&model)
    .unwrap();
    // Sample 1's pre-activations overflow to ±inf, so its softmax is NaN.
    let data = dir.path().join("d.csv");
    std::fs::write(&data, "0.5,0\n1e10,1\n0.25,0\n").unwrap();
    let spec = format!("csv:{}", data.display());
    fails(
        &["eval", "--model", &s(&model), "--data", &spec],
        &["not finite", "sample(s) 1 "],
    );
    let inputs = dir.path().join("x.csv");
    std::fs::write(&inputs, "0.5\n1e10\n0.25\n").unwrap();
    let out = dir.path().join("p.csv");
    fails(
        &[
            "predict",
            "--model",
            &s(&model),
            "--data",
            &format!("csv:{}", inputs.display()),
            "--out",
            &s(&out),
        ],
        &["not finite", "sample(s) 1 "],
    );
    assert!(!out.exists(), "predictions with NaN were written");
    // The library says the same through the trainer's helpers.
    let ck = Checkpoint::load(&model).unwrap();
    let mut b = gpumlp::place(&gpumlp::Device::Cpu, &ck.spec, Optimizer::Sgd, 4).unwrap();
    b.set_params(&ck.params).unwrap();
    let e = gpumlp::train::predict(b.as_mut(), &[0.5, 1e10, 0.25], 3).unwrap_err();
    assert!(
        matches!(e, gpumlp::Error::NonFiniteOutput { ref rows, count: 1, total: 3 } if rows == &[1]),
        "{e}"
    );
}

// ---- item 12: resuming a finished run ----

#[test]
fn item12_resuming_a_finished_run_says_so_and_still_writes_out() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_checkpoint(dir.path());
    let copy = s(&dir.path().join("copy.safetensors"));
    let t = ok(&[
        "train", "--resume", &model, "--epochs", "1", "--out", &copy, "--device", "cpu",
    ]);
    assert!(t.contains("nothing to train"), "{t}");
    assert!(
        !t.contains("held-out accuracy"),
        "reported results as if it trained:\n{t}"
    );
    let a = Checkpoint::load(Path::new(&model)).unwrap();
    let b = Checkpoint::load(Path::new(&copy)).unwrap();
    assert_eq!(a.params, b.params);
    assert_eq!(b.training.as_ref().unwrap().epoch, 1);
}

// ---- item 13: the final training loss says what it is ----

#[test]
fn item13_the_final_training_loss_is_labelled_for_what_it_is() {
    let t = ok(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--val-split",
        "0",
        "--layers",
        "64,8,10",
    ]);
    assert!(
        t.contains("mean training loss over the last epoch's steps"),
        "{t}"
    );
    assert!(!t.contains("\ntrain loss:"), "{t}");
}

// ---- misleading messages ----

#[test]
fn leaky_relu_alpha_in_scientific_notation_and_negative_parses() {
    for a in ["leaky_relu:1e-3", "leaky_relu:-0.1"] {
        ok(&[
            "train",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--layers",
            "64,8,10",
            "--activation",
            a,
            "--quiet",
        ]);
    }
}

#[test]
fn schedules_are_validated_up_front() {
    for sch in ["exp:1e30", "invscaling:-100", "exp:-1", "exp:0", "step:1:0"] {
        let t = fails(
            &[
                "train",
                "--device",
                "cpu",
                "--epochs",
                "3",
                "--schedule",
                sch,
            ],
            &[sch, "must be in"],
        );
        assert!(!t.contains("diverged") && !t.contains("epoch 2"), "{t}");
    }
    // A decay that reaches 0 before the last epoch is refused before training.
    fails(
        &[
            "train",
            "--device",
            "cpu",
            "--epochs",
            "400",
            "--schedule",
            "exp:0.1",
        ],
        &["by epoch 400", "gentler decay"],
    );
}

#[test]
fn damaged_optimizer_state_is_named_with_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_checkpoint(dir.path());
    let ck = Checkpoint::load(Path::new(&model)).unwrap();
    let damaged = |name: &str, f: &dyn Fn(&mut TrainingState)| {
        let mut c = ck.clone();
        f(c.training.as_mut().unwrap());
        let p = dir.path().join(name);
        c.save(&p).unwrap();
        s(&p)
    };
    let nan = damaged("nan.safetensors", &|t| t.optimizer.m[3] = f32::NAN);
    fails(
        &[
            "train", "--resume", &nan, "--epochs", "2", "--device", "cpu",
        ],
        &["nan.safetensors", "optimizer.m", "index 3"],
    );
    let neg = damaged("neg.safetensors", &|t| t.optimizer.v[0] = -1.0);
    let e = fails(
        &[
            "train", "--resume", &neg, "--epochs", "2", "--device", "cpu",
        ],
        &["neg.safetensors", "optimizer.v", "≥ 0"],
    );
    assert!(!e.contains("diverged"), "{e}");
    let missing = damaged("missing.safetensors", &|t| t.optimizer.v.clear());
    fails(
        &[
            "train", "--resume", &missing, "--epochs", "2", "--device", "cpu",
        ],
        &["missing.safetensors", "'optimizer.v' is missing", "adam"],
    );
}

#[test]
fn an_unknown_backend_from_the_environment_names_the_variable() {
    fails_env(
        &["train", "--device", "gpu", "--epochs", "1"],
        &[("GPUMLP_BACKEND", "foo")],
        &["GPUMLP_BACKEND=foo", "unknown backend"],
    );
}

#[test]
fn verify_is_bounded_and_says_the_limit() {
    fails(
        &["train", "--verify", "18446744073709551615"],
        &["at most 10000 steps"],
    );
}

#[test]
fn a_negative_layer_size_is_named() {
    let t = fails(
        &["train", "--layers", "64,-1,10"],
        &["-1 is not a layer size"],
    );
    assert!(!t.contains("\"\""), "{t}");
    fails(&["train", "--layers", "64,,10"], &["empty layer size"]);
    ok(&[
        "train", "--device", "cpu", "--epochs", "1", "--layers", "64-8-10", "--quiet",
    ]);
}

#[test]
fn eval_errors_do_not_mention_predict() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_checkpoint(dir.path());
    let data = dir.path().join("three.csv");
    std::fs::write(&data, "1,2,3,0\n4,5,6,1\n").unwrap();
    let t = fails(
        &[
            "eval",
            "--model",
            &model,
            "--data",
            &format!("csv:{}", data.display()),
        ],
        &["3 features", "64"],
    );
    assert!(!t.contains("predict"), "{t}");
}

#[test]
fn bench_refuses_gpu_only_flags_on_the_cpu() {
    for flag in ["--profile", "--unfused", "--tiled"] {
        fails(
            &["bench", "--device", "cpu", "--layers", "4,4,2", flag],
            &[flag, "--device cpu"],
        );
    }
}

// ---- the same class of fault, found beyond the list ----

#[test]
fn damaged_normalization_statistics_are_named_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_checkpoint(dir.path());
    let mut ck = Checkpoint::load(Path::new(&model)).unwrap();
    ck.normalization.as_mut().unwrap().scale[5] = 0.0;
    let p = dir.path().join("zero-scale.safetensors");
    ck.save(&p).unwrap();
    fails(
        &["eval", "--model", &s(&p), "--data", "digits"],
        &["zero-scale.safetensors", "normalization_scale", "feature 5"],
    );
}

#[test]
fn the_library_bounds_verify_too() {
    let spec = ModelSpec::new(
        &[1, 2],
        Activation::Identity,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let data = Dataset::from_classes(vec![0.0, 1.0], 1, vec![0, 1], 2).unwrap();
    let mut a = ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap();
    let mut b = ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap();
    let e = gpumlp::verify::verify(
        &mut a,
        &mut b,
        &spec.init_params(0),
        &data,
        &Default::default(),
        usize::MAX,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("at most 10000"), "{e}");
}

#[test]
fn a_softmax_over_one_output_is_refused_on_the_command_line() {
    fails(
        &["bench", "--device", "cpu", "--layers", "4,1"],
        &["always 1"],
    );
    fails(
        &[
            "train",
            "--device",
            "cpu",
            "--layers",
            "64,1",
            "--output-activation",
            "softmax",
        ],
        &["always 1", "sigmoid"],
    );
}

#[test]
fn a_damaged_history_is_refused_on_resume_not_silently_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_checkpoint(dir.path());
    let mut ck = Checkpoint::load(Path::new(&model)).unwrap();
    ck.training
        .as_mut()
        .unwrap()
        .extra
        .insert("history".into(), "not json".into());
    let p = dir.path().join("history.safetensors");
    ck.save(&p).unwrap();
    fails(
        &[
            "train",
            "--resume",
            &s(&p),
            "--epochs",
            "2",
            "--device",
            "cpu",
        ],
        &["history.safetensors", "extra.history"],
    );
}
