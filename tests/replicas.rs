//! Data parallelism: the split step (`backward_shard`, `shard_gradient`, `apply_gradient`)
//! against `step` on every backend, and N replicas with global batch B against one device with
//! batch B (the parameters must agree within the GPU-vs-CPU trajectory tolerances: summation
//! order is the only difference).
// Config structs (GpuOptions) are built from `Default` and then assigned: they are
// `#[non_exhaustive]` outside the library.
#![allow(clippy::field_reassign_with_default)]

mod common;

use common::{gpus, on_ci, report, targets, uniform, GRAD_TOL, OUTPUT_TOL, PARAM_TOL};
use gpumlp::backend::{Backend, BatchStats, OptimizerState};
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use gpumlp::{CpuBackend, GpuBackend, GpuContext, GpuOptions, ReferenceBackend};
use std::sync::{Arc, Mutex};

/// Runs `body` on the adapter of `backend` ("vulkan", "gl"), one test at a time per adapter.
/// Without that adapter: skipped, except under CI, where `gpus()` requires both.
fn on(backend: &str, body: fn(&Arc<GpuContext>)) {
    static VULKAN: Mutex<()> = Mutex::new(());
    static GL: Mutex<()> = Mutex::new(());
    let Some(ctx) = gpus().iter().find(|c| c.info.backend == backend) else {
        assert!(!on_ci(), "CI needs a {backend} adapter");
        report(format!("no {backend} adapter here: skipped"));
        return;
    };
    let lock = if backend == "gl" { &GL } else { &VULKAN };
    let _serial = lock.lock().unwrap_or_else(|e| e.into_inner());
    body(ctx)
}

/// One `#[test]` per adapter for each body: `gpu_split_step::vulkan`, `gpu_split_step::gl`, ...
macro_rules! on_each_adapter {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[test]
            fn vulkan() {
                super::on("vulkan", super::$body)
            }
            #[test]
            fn gl() {
                super::on("gl", super::$body)
            }
        }
    )*};
}

on_each_adapter!(gpu_split_step);

/// Both software adapters, lavapipe (Vulkan) and llvmpipe (GL), as the two replicas of one
/// model, in one test (each adapter serialized as in `on`). Without both: skipped, except
/// under CI.
fn on_both(body: fn(&Arc<GpuContext>, &Arc<GpuContext>)) {
    let find = |b: &str| gpus().iter().find(|c| c.info.backend == b);
    let (Some(vk), Some(gl)) = (find("vulkan"), find("gl")) else {
        assert!(!on_ci(), "CI needs a vulkan and a gl adapter");
        report("no vulkan + gl pair here: skipped".into());
        return;
    };
    body(vk, gl)
}

/// The optimizers every split-step case runs with.
fn optimizers() -> [Optimizer; 3] {
    [
        Optimizer::Sgd,
        Optimizer::Momentum { mu: 0.9 },
        Optimizer::adam(),
    ]
}

/// 7 inputs, two awkward hidden layers, softmax + cross-entropy over 10 classes.
fn spec() -> ModelSpec {
    ModelSpec::with_activations(
        &[7, 65, 63, 10],
        vec![Activation::Tanh, Activation::Relu, Activation::Softmax],
        Loss::CrossEntropy,
    )
    .unwrap()
}

/// What a run leaves: per-step stats, parameters, optimizer state, the last full gradient.
struct Run {
    stats: Vec<BatchStats>,
    params: Vec<f32>,
    state: OptimizerState,
    grads: Vec<f32>,
}

/// Three steps of `batch` rows (the last one shorter) over `rows` rows with L2, each either
/// `step` or the split step on one shard holding the whole batch.
fn three_steps(b: &mut dyn Backend, opt: Optimizer, split: bool) -> Run {
    let spec = b.spec().clone();
    let (rows, batch) = (33, 13);
    let x = uniform(rows * spec.inputs(), -1.0, 1.0, 50);
    let t = targets(&spec, rows, 51);
    b.set_params(&spec.init_params(52)).unwrap();
    b.set_train_data(&x, &t, rows).unwrap();
    let order: Vec<u32> = (0..rows as u32).rev().collect();
    b.begin_epoch(&order).unwrap();
    let mut grad = vec![0.0; spec.param_count()];
    let (mut start, mut t_step) = (0, 0);
    while start < rows {
        let len = batch.min(rows - start);
        t_step += 1;
        let h = opt.hyper(0.05, t_step, 0.01);
        if split {
            b.backward_shard(start, len, len, &h).unwrap();
            b.shard_gradient(&mut grad).unwrap();
            b.apply_gradient(&grad, &h).unwrap();
        } else {
            b.step(start, len, &h).unwrap();
        }
        start += len;
    }
    Run {
        stats: b.finish_epoch().unwrap(),
        params: b.params().unwrap(),
        state: b.optimizer_state().unwrap(),
        grads: b.last_gradients().unwrap(),
    }
}

/// `step` against the split step on backends from `place`, for every optimizer.
fn split_matches_step(name: &str, place: impl Fn(Optimizer) -> Box<dyn Backend>) {
    for opt in optimizers() {
        let what = format!("{name} {}", opt.name());
        let whole = three_steps(place(opt).as_mut(), opt, false);
        let split = three_steps(place(opt).as_mut(), opt, true);
        assert_eq!(whole.stats.len(), split.stats.len(), "{what}: steps");
        for (w, s) in whole.stats.iter().zip(&split.stats) {
            assert_eq!(w.samples, s.samples, "{what}: samples");
            assert_eq!(w.correct, s.correct, "{what}: correct");
            OUTPUT_TOL.assert_close(
                &format!("{what}: loss"),
                &[s.loss_sum as f32],
                &[w.loss_sum as f32],
            );
        }
        let p = PARAM_TOL.assert_close(&format!("{what}: params"), &split.params, &whole.params);
        GRAD_TOL.assert_close(&format!("{what}: m"), &split.state.m, &whole.state.m);
        GRAD_TOL.assert_close(&format!("{what}: v"), &split.state.v, &whole.state.v);
        let g = GRAD_TOL.assert_close(&format!("{what}: gradient"), &split.grads, &whole.grads);
        report(format!(
            "{what}: split step vs step after 3 steps: params {:.2e}, gradient {:.2e}",
            p.max_abs_diff, g.max_abs_diff
        ));
    }
}

#[test]
fn split_step_equals_step_on_the_reference() {
    split_matches_step("reference", |opt| {
        Box::new(ReferenceBackend::new(&spec(), opt).unwrap())
    });
}

#[test]
fn split_step_equals_step_on_the_cpu_backend() {
    for threads in [1, 2] {
        split_matches_step(&format!("cpu ({threads} threads)"), |opt| {
            Box::new(CpuBackend::new(&spec(), opt, 13, Some(threads)).unwrap())
        });
    }
}

/// Places a fresh backend.
type Place = fn() -> Box<dyn Backend>;

/// Two shards of one batch, their gradients summed by hand, give the one-shard gradient; an
/// empty shard gives a zero gradient and empty stats.
#[test]
fn shard_gradients_sum_to_the_batch_gradient_and_an_empty_shard_is_zero() {
    let places: [(&str, Place); 2] = [
        ("reference", || {
            Box::new(ReferenceBackend::new(&spec(), Optimizer::Sgd).unwrap())
        }),
        ("cpu", || {
            Box::new(CpuBackend::new(&spec(), Optimizer::Sgd, 13, Some(2)).unwrap())
        }),
    ];
    for (name, place) in places {
        let spec = spec();
        let rows = 13;
        let x = uniform(rows * spec.inputs(), -1.0, 1.0, 60);
        let t = targets(&spec, rows, 61);
        let order: Vec<u32> = (0..rows as u32).collect();
        let h = Optimizer::Sgd.hyper(0.1, 1, 0.0);
        let mut b = place();
        b.set_params(&spec.init_params(62)).unwrap();
        b.set_train_data(&x, &t, rows).unwrap();
        b.begin_epoch(&order).unwrap();
        let p = spec.param_count();
        let (mut whole, mut a, mut c, mut empty) =
            (vec![0.0; p], vec![0.0; p], vec![0.0; p], vec![1.0; p]);
        b.backward_shard(0, rows, rows, &h).unwrap();
        b.shard_gradient(&mut whole).unwrap();
        b.backward_shard(0, 6, rows, &h).unwrap();
        b.shard_gradient(&mut a).unwrap();
        b.backward_shard(6, 7, rows, &h).unwrap();
        b.shard_gradient(&mut c).unwrap();
        b.backward_shard(rows, 0, rows, &h).unwrap();
        b.shard_gradient(&mut empty).unwrap();
        let stats = b.finish_epoch().unwrap();
        let sum: Vec<f32> = a.iter().zip(&c).map(|(a, c)| a + c).collect();
        let cmp = GRAD_TOL.assert_close(&format!("{name}: shard sum"), &sum, &whole);
        assert!(whole.iter().any(|&g| g != 0.0), "{name}: a zero gradient");
        assert!(
            empty.iter().all(|&g| g == 0.0),
            "{name}: empty shard's gradient"
        );
        assert_eq!(
            stats.iter().map(|s| s.samples).collect::<Vec<_>>(),
            [13, 6, 7, 0],
            "{name}: samples per shard"
        );
        assert_eq!(
            stats[3],
            BatchStats::default(),
            "{name}: empty shard's stats"
        );
        let loss = stats[1].loss_sum + stats[2].loss_sum;
        OUTPUT_TOL.assert_close(
            &format!("{name}: loss"),
            &[loss as f32],
            &[stats[0].loss_sum as f32],
        );
        report(format!(
            "{name}: two shards vs one: gradient {:.2e}",
            cmp.max_abs_diff
        ));
        // A shard outside the epoch, or larger than its global batch, is an error.
        assert!(b.backward_shard(10, 7, 13, &h).is_err());
        assert!(b.backward_shard(0, 7, 6, &h).is_err());
        assert!(b.apply_gradient(&[0.0; 3], &h).is_err());
    }
}

/// On a GPU the split step (placed as a data-parallel replica: the split schedule, plus the
/// weight-decay pass) equals `step` (the default, fused schedule), also when a step runs as
/// micro-batches; a replica placed without `data_parallel` refuses the split step.
fn gpu_split_step(ctx: &Arc<GpuContext>) {
    for micro in [None, Some(5)] {
        let ctx = ctx.clone();
        split_matches_step(&format!("{} micro={micro:?}", ctx.info), move |opt| {
            let mut options = GpuOptions::default();
            options.data_parallel = true;
            options.micro_batch = micro;
            Box::new(GpuBackend::new(ctx.clone(), &spec(), opt, 13, options).unwrap())
        });
    }
    let mut options = GpuOptions::default();
    options.capture_gradients = true;
    let mut b = GpuBackend::new(ctx.clone(), &spec(), Optimizer::Sgd, 13, options).unwrap();
    let mut g = vec![0.0; spec().param_count()];
    assert!(b.shard_gradient(&mut g).is_err());
}

#[path = "replicas/cli.rs"]
mod cli;
#[path = "replicas/trajectories.rs"]
mod trajectories;
