//! Shared by the integration tests: every GPU adapter found, deterministic data, tolerances.
#![allow(dead_code)]

pub mod cli;
pub mod translate;

use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::{AdapterSelector, GpuContext, Tolerance};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::sync::{Arc, OnceLock};

/// Every usable adapter on this machine (narrowed by GPUMLP_BACKEND / GPUMLP_ADAPTER), opened
/// once per test binary. Fails with a clear message when there is none, and, under CI (see
/// [`on_ci`]) with no narrowing, when Vulkan or GL is missing: CI must prove that the suite ran on
/// both lavapipe and llvmpipe.
pub fn gpus() -> &'static [Arc<GpuContext>] {
    static ALL: OnceLock<Vec<Arc<GpuContext>>> = OnceLock::new();
    ALL.get_or_init(|| {
        let selector = AdapterSelector::from_env();
        let all = GpuContext::all(&selector)
            .unwrap_or_else(|e| panic!("opening GPU adapters failed: {e}"));
        assert!(
            !all.is_empty(),
            "no GPU adapter found: the GPU tests need one. Install a driver, or a software \
             Vulkan device: apt-get install -y mesa-vulkan-drivers libvulkan1"
        );
        if on_ci() && selector == AdapterSelector::default() {
            let found: Vec<String> = all.iter().map(|c| c.info.to_string()).collect();
            for (backend, packages) in [
                ("vulkan", "mesa-vulkan-drivers libvulkan1"),
                ("gl", "libegl1 libegl-mesa0 libgl1-mesa-dri"),
            ] {
                assert!(
                    all.iter().any(|c| c.info.backend == backend),
                    "CI is set, so the GPU tests must run on a {backend} adapter too (lavapipe \
                     for vulkan, llvmpipe for gl), but the adapters found are {found:?}. Install \
                     {packages} (as .ci/run does), or unset CI to test on what is here."
                );
            }
        }
        // Written to stderr directly so that it shows even when the test harness captures output.
        let mut err = std::io::stderr();
        for c in &all {
            let _ = writeln!(err, "[gpumlp tests] GPU adapter under test: {}", c.info);
        }
        all.into_iter().map(Arc::new).collect()
    })
}

/// Whether the environment says this is a CI run: `CI` set to anything but empty, `0` or `false`.
pub fn on_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// `n` values uniform in [lo, hi) from `seed`.
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// `rows` one-hot rows of width `classes`.
pub fn one_hot(rows: usize, classes: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = vec![0.0; rows * classes];
    for r in 0..rows {
        t[r * classes + rng.random_range(0..classes)] = 1.0;
    }
    t
}

/// The awkward sizes every kernel is tested on.
pub const AWKWARD: [usize; 5] = [1, 7, 63, 65, 257];

/// Shapes (m, k, n) in which every dimension takes every awkward size, plus one that spans many
/// workgroups in every direction.
pub fn awkward_shapes() -> Vec<(usize, usize, usize)> {
    let s = AWKWARD;
    let mut v = Vec::new();
    for i in 0..s.len() {
        v.push((s[i], s[(i + 1) % 5], s[(i + 2) % 5]));
        v.push((s[i], s[(i + 3) % 5], s[(i + 1) % 5]));
    }
    v.push((300, 190, 270));
    v
}

/// Outputs, activations and the loss after one step: f32 sums in another order and a few ulps
/// from exp/tanh.
pub const OUTPUT_TOL: Tolerance = Tolerance::new(1e-4, 1e-5);
/// Gradients are sums over the batch of products of small deltas: absolute error dominates.
pub const GRAD_TOL: Tolerance = Tolerance::new(1e-3, 2e-6);
/// Parameters after one update: `w − η g` carries the gradient's error times η.
pub const PARAM_TOL: Tolerance = Tolerance::new(1e-5, 1e-6);

/// Every hidden activation that trains.
pub const HIDDEN: [Activation; 5] = [
    Activation::Identity,
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Relu,
    Activation::LeakyRelu(0.01),
];

/// Output activation and loss pairs that make sense.
pub const OUTPUT_PAIRS: [(Activation, Loss); 8] = [
    (Activation::Identity, Loss::SquaredError),
    (Activation::Sigmoid, Loss::SquaredError),
    (Activation::Tanh, Loss::SquaredError),
    (Activation::Relu, Loss::SquaredError),
    (Activation::LeakyRelu(0.01), Loss::SquaredError),
    (Activation::Softmax, Loss::SquaredError),
    (Activation::Softmax, Loss::CrossEntropy),
    (Activation::Sigmoid, Loss::BinaryCrossEntropy),
];

/// A line on stderr that shows even when the harness captures output.
pub fn report(line: String) {
    let _ = writeln!(std::io::stderr(), "[gpumlp tests] {line}");
}

/// Targets that suit the model's loss: 0/1 for BCE, one-hot rows, or values in [0, 1).
pub fn targets(spec: &ModelSpec, rows: usize, seed: u64) -> Vec<f32> {
    let out = spec.outputs();
    match spec.loss {
        Loss::BinaryCrossEntropy => uniform(rows * out, 0.0, 1.0, seed)
            .iter()
            .map(|v| v.round())
            .collect(),
        _ if out > 1 => one_hot(rows, out, seed),
        _ => uniform(rows * out, 0.0, 1.0, seed),
    }
}

/// The CPU reference's dense forward: x: [b, k], wb: [(k+1), n] (W then b); returns (a, z).
pub fn dense_reference(
    x: &[f32],
    wb: &[f32],
    b: usize,
    k: usize,
    n: usize,
    act: Activation,
) -> (Vec<f32>, Vec<f32>) {
    let (mut a, mut z) = (vec![0.0; b * n], vec![0.0; b * n]);
    gpumlp::reference::ops::dense_forward(
        &mut a,
        &mut z,
        x,
        &wb[..k * n],
        &wb[k * n..],
        b,
        k,
        n,
        act,
    );
    (a, z)
}

/// Runs `body` on the adapter of `backend` (`vulkan` or `gl`), one test at a time per adapter
/// (GL compiles under one context lock; large kernels from several threads can time it out).
/// Without that adapter: skipped with a printed reason, except under CI, where both are
/// required.
pub fn on(backend: &str, body: fn(&Arc<GpuContext>)) {
    static VULKAN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static GL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let Some(ctx) = gpus().iter().find(|c| c.info.backend == backend) else {
        assert!(!on_ci(), "CI needs a {backend} adapter");
        report(format!("no {backend} adapter here: skipped"));
        return;
    };
    let lock = if backend == "gl" { &GL } else { &VULKAN };
    let _serial = lock.lock().unwrap_or_else(|e| e.into_inner());
    body(ctx)
}

/// One `#[test]` per adapter for each body `fn NAME(&Arc<GpuContext>)`: `NAME::vulkan` and
/// `NAME::gl`, so a failure on GL never hides the Vulkan result (CONVENTIONS.md, rule 18).
/// Use from a test file that declares `mod common;` at its root.
#[allow(unused_macros)]
macro_rules! on_each_adapter {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[test]
            fn vulkan() {
                $crate::common::on("vulkan", super::$body)
            }
            #[test]
            fn gl() {
                $crate::common::on("gl", super::$body)
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use on_each_adapter;
