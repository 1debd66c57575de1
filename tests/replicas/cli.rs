//! `gpumlp train --devices`, and the device lists it takes.

use super::*;
use trajectories::TRAJ_PARAM_TOL;

/// `gpumlp train` with `args` plus a small common run on the built-in digits, writing `out`.
fn cli_train(out: &str, args: &[&str]) -> String {
    let mut a = vec![
        "train",
        "--layers",
        "64,17,10",
        "--optimizer",
        "adam",
        "--l2",
        "0.001",
        "--batch",
        "65",
        "--threads",
        "1",
        "--out",
        out,
    ];
    a.extend_from_slice(args);
    common::cli::ok(&a)
}

fn saved_params(path: &str) -> Vec<f32> {
    gpumlp::checkpoint::Checkpoint::load(std::path::Path::new(path))
        .unwrap()
        .params
}

/// `--devices cpu,cpu` trains like `--device cpu` with the same --batch (65: odd), says which
/// replicas it placed, and its checkpoints resume like any other.
#[test]
fn cli_devices_train_like_one_device_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).display().to_string();
    let (one, two, half) = (path("one.st"), path("two.st"), path("half.st"));
    cli_train(&one, &["--device", "cpu", "--epochs", "2"]);
    let said = cli_train(&two, &["--devices", "cpu,cpu", "--epochs", "2"]);
    assert!(
        said.contains("gpumlp: devices: 2 data-parallel replicas")
            && said.contains("up to 33 rows"),
        "{said}"
    );
    let p = TRAJ_PARAM_TOL.assert_close(
        "--devices cpu,cpu vs --device cpu",
        &saved_params(&two),
        &saved_params(&one),
    );
    report(format!(
        "cli: --devices cpu,cpu vs --device cpu after 2 epochs: params {:.2e}",
        p.max_abs_diff
    ));
    cli_train(&half, &["--devices", "cpu,cpu", "--epochs", "1"]);
    cli_train(&half, &["--resume", &half, "--epochs", "2"]);
    assert_eq!(
        saved_params(&half),
        saved_params(&two),
        "a resumed replicated run"
    );
}

/// `--devices vulkan:0,gl:0` places one replica on each software adapter.
#[test]
fn cli_devices_on_lavapipe_and_llvmpipe() {
    on_both(|_, _| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.st").display().to_string();
        let said = cli_train(&out, &["--devices", "vulkan:0,gl:0", "--epochs", "1"]);
        assert!(
            said.contains("(vulkan:0)") && said.contains("(gl:0)"),
            "{said}"
        );
        assert!(said.contains("held-out accuracy"), "{said}");
    });
}

#[test]
fn cli_devices_refuses_bad_lists_before_training() {
    use common::cli::fails;
    fails(
        &["train", "--devices", "cpu,tpu"],
        &["unknown device 'tpu'", "--devices"],
    );
    fails(&["train", "--devices", "cpu,"], "unknown device ''");
    fails(
        &["train", "--devices", "vulkan:x"],
        "unknown device 'vulkan:x'",
    );
    fails(
        &["train", "--devices", "cpu,cpu", "--device", "cpu"],
        "--device",
    );
    if !gpus().iter().any(|c| c.info.backend == "vulkan") {
        return;
    }
    fails(&["train", "--devices", "cpu,vulkan:99"], "index 99");
}

#[test]
fn device_lists_parse_to_replicas() {
    use gpumlp::{parse_devices, AdapterSelector, Device};
    let backend = |b: &str| {
        let mut s = AdapterSelector::default();
        s.backend = Some(b.into());
        s
    };
    assert_eq!(
        parse_devices("cpu, reference,CPU,gpu,vulkan,gl:1,gpu:0").unwrap(),
        vec![
            Device::Cpu,
            Device::Reference,
            Device::Cpu,
            Device::Gpu(AdapterSelector::default()),
            Device::Gpu(backend("vulkan")),
            Device::Adapter {
                selector: backend("gl"),
                index: 1
            },
            Device::Adapter {
                selector: AdapterSelector::default(),
                index: 0
            },
        ]
    );
    for bad in ["", "cpu:0", "gpu:-1", "cuda", "cpu;gl"] {
        assert!(parse_devices(bad).is_err(), "'{bad}' should be refused");
    }
    let found = gpus().len();
    if found > 0 && AdapterSelector::from_env() == AdapterSelector::default() {
        let all = parse_devices("gpu:all").unwrap();
        assert_eq!(all.len(), found, "gpu:all: every usable adapter");
    }
}
