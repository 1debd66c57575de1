//! Data parallelism: the split step (`backward_shard`, `shard_gradient`, `apply_gradient`)
//! against `step` on every backend, and N replicas with global batch B against one device with
//! batch B (the parameters must agree within the GPU-vs-CPU trajectory tolerances: summation
//! order is the only difference).

mod common;

use common::{gpus, on_ci, report, targets, uniform, GRAD_TOL, OUTPUT_TOL, PARAM_TOL};
use gpumlp::backend::{Backend, BatchStats, OptimizerState};
use gpumlp::dist::{Collective, DataParallel};
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use gpumlp::train::epoch_order;
use gpumlp::{CpuBackend, GpuBackend, GpuContext, GpuOptions, ReferenceBackend, Tolerance};
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

/// Two shards of one batch, their gradients summed by hand, give the one-shard gradient; an
/// empty shard gives a zero gradient and empty stats.
#[test]
fn shard_gradients_sum_to_the_batch_gradient_and_an_empty_shard_is_zero() {
    let places: [(&str, fn() -> Box<dyn Backend>); 2] = [
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

/// Losses over a trajectory: f32 sums in another order, compounded over the steps (as
/// tests/step.rs allows GPU against CPU).
const TRAJ_LOSS_TOL: Tolerance = Tolerance::new(1e-3, 1e-5);
/// Parameters after a trajectory (tests/step.rs: GPU against CPU after 50 steps).
const TRAJ_PARAM_TOL: Tolerance = Tolerance::new(1e-3, 1e-4);

/// The global batch: odd, so two replicas get uneven shards, and 71 = 10·7 + 1 rows leave a
/// last batch of one row (an empty shard for replica 0).
const BATCH: usize = 7;
const ROWS: usize = 71;
const EPOCHS: usize = 3;

/// Per-step loss sums and samples over a run, and the parameters at its end.
struct Trained {
    losses: Vec<f32>,
    samples: Vec<u64>,
    params: Vec<f32>,
}

/// Trains `b` for `EPOCHS` shuffled epochs of global batches of `BATCH` rows with L2, as the
/// trainer does (one step count across epochs for Adam's bias correction).
fn train(b: &mut dyn Backend, opt: Optimizer) -> Trained {
    let spec = b.spec().clone();
    let x = uniform(ROWS * spec.inputs(), -1.0, 1.0, 70);
    let t = targets(&spec, ROWS, 71);
    b.set_params(&spec.init_params(72)).unwrap();
    b.set_train_data(&x, &t, ROWS).unwrap();
    let (mut losses, mut samples, mut step) = (Vec::new(), Vec::new(), 0);
    for epoch in 0..EPOCHS {
        b.begin_epoch(&epoch_order(ROWS, 73, epoch, true)).unwrap();
        let mut start = 0;
        while start < ROWS {
            let len = BATCH.min(ROWS - start);
            step += 1;
            b.step(start, len, &opt.hyper(0.05, step, 1e-3)).unwrap();
            start += len;
        }
        for s in b.finish_epoch().unwrap() {
            losses.push(s.loss_sum as f32);
            samples.push(s.samples);
        }
    }
    Trained {
        losses,
        samples,
        params: b.params().unwrap(),
    }
}

/// The one-device run every replicated run must match: the reference with batch `BATCH`.
fn one_device(opt: Optimizer) -> Trained {
    train(&mut ReferenceBackend::new(&spec(), opt).unwrap(), opt)
}

/// Trains the replicas from `place` against one device, for momentum and Adam; checks losses,
/// samples and parameters against it, and that the replicas hold the same parameters.
fn replicas_match_one_device(name: &str, place: impl Fn(Optimizer) -> DataParallel) {
    for opt in [Optimizer::Momentum { mu: 0.9 }, Optimizer::adam()] {
        let what = format!("{name} {}", opt.name());
        let want = one_device(opt);
        let mut dp = place(opt);
        let got = train(&mut dp, opt);
        assert_eq!(got.samples, want.samples, "{what}: samples per step");
        let l = TRAJ_LOSS_TOL.assert_close(&format!("{what}: losses"), &got.losses, &want.losses);
        let p = TRAJ_PARAM_TOL.assert_close(&format!("{what}: params"), &got.params, &want.params);
        let mut worst_replica = 0.0f32;
        for i in 1..dp.replicas() {
            let other = dp.replica(i).unwrap().params().unwrap();
            let c =
                PARAM_TOL.assert_close(&format!("{what}: replica {i} vs 0"), &other, &got.params);
            worst_replica = worst_replica.max(c.max_abs_diff);
        }
        report(format!(
            "{what}: {} replicas vs one device, batch {BATCH}, {EPOCHS} epochs: largest |Δ| loss {:.2e}, params {:.2e}; between replicas {worst_replica:.2e}",
            dp.replicas(),
            l.max_abs_diff,
            p.max_abs_diff
        ));
    }
}

/// Room for a replica's shard of a global batch over `n` replicas.
fn shard_rows(n: usize) -> usize {
    BATCH.div_ceil(n)
}

#[test]
fn two_reference_replicas_train_like_one_device() {
    replicas_match_one_device("reference + reference", |opt| {
        let r = || Box::new(ReferenceBackend::new(&spec(), opt).unwrap()) as Box<dyn Backend>;
        DataParallel::new(vec![r(), r()], None).unwrap()
    });
}

#[test]
fn two_cpu_replicas_train_like_one_device() {
    replicas_match_one_device("cpu + cpu", |opt| {
        let c = || {
            Box::new(CpuBackend::new(&spec(), opt, shard_rows(2), Some(1)).unwrap())
                as Box<dyn Backend>
        };
        DataParallel::new(vec![c(), c()], None).unwrap()
    });
}

#[test]
fn lavapipe_and_llvmpipe_replicas_train_like_one_device() {
    on_both(|vk, gl| {
        let name = format!("{} + {}", vk.info, gl.info);
        replicas_match_one_device(&name, |opt| {
            let mut options = GpuOptions::default();
            options.data_parallel = true;
            let g = |ctx: &Arc<GpuContext>| {
                Box::new(
                    GpuBackend::new(ctx.clone(), &spec(), opt, shard_rows(2), options).unwrap(),
                ) as Box<dyn Backend>
            };
            DataParallel::new(vec![g(vk), g(gl)], None).unwrap()
        });
    });
}

#[test]
fn a_gpu_and_a_cpu_replica_train_like_one_device() {
    on("vulkan", |vk| {
        replicas_match_one_device(&format!("{} + cpu", vk.info), |opt| {
            let mut options = GpuOptions::default();
            options.data_parallel = true;
            let gpu = GpuBackend::new(vk.clone(), &spec(), opt, shard_rows(2), options).unwrap();
            let cpu = CpuBackend::new(&spec(), opt, shard_rows(2), Some(1)).unwrap();
            DataParallel::new(vec![Box::new(gpu), Box::new(cpu)], None).unwrap()
        });
    });
}

/// Ranks simulated by threads in this process: each `all_reduce` adds every rank's buffer into
/// a shared total in rank order, then hands the total back (what MPI's all-reduce does).
struct ThreadRanks {
    rank: usize,
    size: usize,
    shared: Arc<(Mutex<(Vec<f64>, usize)>, std::sync::Barrier)>,
}

impl ThreadRanks {
    fn group(size: usize) -> Vec<ThreadRanks> {
        let shared = Arc::new((Mutex::new((Vec::new(), 0)), std::sync::Barrier::new(size)));
        (0..size)
            .map(|rank| ThreadRanks {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect()
    }
    fn sum(&mut self, buf: &mut [f64]) {
        let (lock, barrier) = &*self.shared;
        // Ranks add in rank order (deterministic): rank r waits for its turn.
        loop {
            let mut g = lock.lock().unwrap();
            if g.1 == self.rank {
                if self.rank == 0 {
                    g.0 = buf.to_vec();
                } else {
                    g.0.iter_mut().zip(&*buf).for_each(|(t, b)| *t += b);
                }
                g.1 += 1;
                break;
            }
            drop(g);
            std::thread::yield_now();
        }
        barrier.wait();
        buf.copy_from_slice(&lock.lock().unwrap().0);
        if barrier.wait().is_leader() {
            lock.lock().unwrap().1 = 0;
        }
        barrier.wait();
    }
}

impl Collective for ThreadRanks {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> gpumlp::Result<()> {
        let mut wide: Vec<f64> = buf.iter().map(|&v| v as f64).collect();
        self.sum(&mut wide);
        buf.iter_mut().zip(wide).for_each(|(b, w)| *b = w as f32);
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> gpumlp::Result<()> {
        self.sum(buf);
        Ok(())
    }
}

/// Two ranks (threads standing in for processes) of two CPU replicas each: four shards of a
/// batch of 7 (one of them empty in the last batch of 1 row), trained like one device; every
/// rank ends with the same parameters and the same per-step stats.
#[test]
fn two_ranks_of_two_replicas_train_like_one_device() {
    for opt in [Optimizer::Momentum { mu: 0.9 }, Optimizer::adam()] {
        let want = one_device(opt);
        let runs: Vec<Trained> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadRanks::group(2)
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let r = || {
                            Box::new(CpuBackend::new(&spec(), opt, shard_rows(4), Some(1)).unwrap())
                                as Box<dyn Backend>
                        };
                        let mut dp = DataParallel::new(vec![r(), r()], Some(Box::new(c))).unwrap();
                        assert_eq!(
                            dp.bytes_all_reduced_per_step(),
                            spec().param_count() as u64 * 4
                        );
                        train(&mut dp, opt)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, got) in runs.iter().enumerate() {
            let what = format!("rank {rank} of 2 × 2 cpu replicas {}", opt.name());
            assert_eq!(got.samples, want.samples, "{what}: samples");
            TRAJ_LOSS_TOL.assert_close(&format!("{what}: losses"), &got.losses, &want.losses);
            let p =
                TRAJ_PARAM_TOL.assert_close(&format!("{what}: params"), &got.params, &want.params);
            assert_eq!(got.params, runs[0].params, "{what}: ranks agree");
            report(format!(
                "{what}: params vs one device {:.2e}",
                p.max_abs_diff
            ));
        }
    }
}

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
