//! The real-GPU matmul (shaders/matmul_gemm.wgsl) against the CPU reference, every candidate
//! tile forced one by one: each form with each of its fused epilogues on awkward shapes (and on
//! aligned ones, which take the vec4 paths), split-K on and off, then whole training steps and a
//! 50-step trajectory. One test case per adapter (`vulkan`, `gl`), so a failure on one adapter
//! never hides the other's result.

mod common;

use common::{dense_reference, gpus, on_ci, report, targets, uniform, GRAD_TOL, OUTPUT_TOL};
use gpumlp::backend::Backend;
use gpumlp::gpu::kernels::GemmConfig;
use gpumlp::gpu::probe::{self, MatmulChoice};
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::{Optimizer, StepHyper};
use gpumlp::reference::ops::{self, MatmulForm};
use gpumlp::{Dataset, GpuBackend, GpuContext, GpuOptions, ReferenceBackend, Tolerance};
use std::sync::{Arc, Mutex};

/// f32 sums over up to 300 terms of size ≤ 1 in another order than the reference (as
/// tests/kernels.rs).
const MATMUL_TOL: Tolerance = Tolerance::new(1e-4, 1e-5);
/// exp and tanh differ by a few ulps between backends.
const ELEMENTWISE_TOL: Tolerance = Tolerance::new(1e-4, 1e-6);

/// Runs `body` on the adapter of `backend`, one test at a time per adapter (GL compiles under
/// one context lock; large kernels from several threads can time it out). Without that adapter:
/// skipped, except under CI, where `gpus()` requires both.
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

/// One `#[test]` per adapter for each body: `forward::vulkan`, `forward::gl`, ...
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

on_each_adapter!(forward, delta, grad, training_step, trajectory);

/// The candidates this adapter can run (all of them on lavapipe and llvmpipe: 32 KiB).
fn candidates(ctx: &GpuContext) -> Vec<GemmConfig> {
    let all = GemmConfig::CANDIDATES;
    let fit: Vec<GemmConfig> = all
        .iter()
        .copied()
        .filter(|g| g.fits(&ctx.limits))
        .collect();
    assert!(
        fit.contains(&GemmConfig::new(64, 64, 8, 8, 4)),
        "{}: the smallest candidate must fit in 16 KiB of workgroup memory",
        ctx.info
    );
    if fit.len() < all.len() {
        report(format!(
            "{}: {} of {} candidates fit this adapter",
            ctx.info,
            fit.len(),
            all.len()
        ));
    }
    fit
}

fn forced(g: GemmConfig) -> MatmulChoice {
    MatmulChoice {
        gemm: Some(g),
        split_k: 1,
    }
}

/// (rows, inner, cols): every awkward size in every role, batch 1, aligned widths (the vec4
/// loads, with ragged rows), and one shape spanning many workgroups of every candidate.
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 7, 65),
    (7, 63, 1),
    (63, 257, 7),
    (65, 1, 63),
    (257, 65, 257),
    (1, 64, 16),
    (33, 64, 68),
    (130, 128, 12),
    (300, 192, 272),
];

const ACTIVATIONS: [Activation; 6] = [
    Activation::Identity,
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Step,
];

fn forward(ctx: &Arc<GpuContext>) {
    let mut worst = 0.0f32;
    for g in candidates(ctx) {
        // Identity on every shape; every other activation on an awkward or an aligned one.
        let epilogue_shapes = [(65, 7, 63), (33, 64, 68)];
        let cases = SHAPES.iter().map(|&s| (s, Activation::Identity)).chain(
            ACTIVATIONS[1..]
                .iter()
                .enumerate()
                .map(|(i, &a)| (epilogue_shapes[i % 2], a)),
        );
        for ((b, k, n), act) in cases {
            let x = uniform(b * k, -1.0, 1.0, 1);
            let wb = uniform((k + 1) * n, -1.0, 1.0, 2);
            let (a, z) = probe::forward_with(ctx, forced(g), &x, &wb, b, k, n, act).unwrap();
            let (wa, wz) = dense_reference(&x, &wb, b, k, n, act);
            let what = format!("{}: gemm {g} forward {act} [{b}x{k}]·[{k}x{n}]", ctx.info);
            worst = worst.max(MATMUL_TOL.assert_close(&what, &a, &wa).max_abs_diff);
            if act == Activation::Step {
                // φ jumps at 0: compare where a is not within rounding of 0.
                for i in 0..z.len() {
                    if wa[i].abs() > 1e-4 {
                        assert_eq!(z[i], wz[i], "{what}: element {i}, a = {}", wa[i]);
                    }
                }
            } else {
                ELEMENTWISE_TOL.assert_close(&what, &z, &wz);
            }
        }
    }
    report(format!(
        "{}: gemm forward, every candidate: largest |GPU − CPU| {worst:.2e}",
        ctx.info
    ));
}

fn delta(ctx: &Arc<GpuContext>) {
    let mut worst = 0.0f32;
    for g in candidates(ctx) {
        let epilogue_shapes = [(63, 65, 7), (33, 68, 64)];
        let derivatives = ACTIVATIONS[1..5]
            .iter()
            .enumerate()
            .map(|(i, &a)| (epilogue_shapes[i % 2], a));
        let cases = SHAPES
            .iter()
            .map(|&s| (s, Activation::Identity))
            .chain(derivatives);
        for ((b, k, n), act) in cases {
            let d = uniform(b * k, -1.0, 1.0, 3);
            let w = uniform(n * k, -1.0, 1.0, 4);
            let mut a_prev = uniform(b * n, -2.0, 2.0, 5);
            for v in a_prev.iter_mut().step_by(5) {
                *v = 0.0; // relu'(0) = leaky'(0) = 1
            }
            let got = probe::delta_with(ctx, forced(g), &d, &w, &a_prev, b, k, n, act).unwrap();
            let mut want = vec![0.0; b * n];
            ops::backprop_delta(&mut want, &d, &w, &a_prev, b, n, k, act);
            if act == Activation::Identity {
                // the plain product as well, through the reference's own matmul
                let plain = ops::matmul(MatmulForm::Nt, &d, &w, b, n, k);
                MATMUL_TOL.assert_close("reference δ·Wᵀ", &want, &plain);
            }
            let what = format!("{}: gemm {g} delta {act}' [{b}x{k}]·[{n}x{k}]ᵀ", ctx.info);
            let c = Tolerance::new(2e-4, 1e-5).assert_close(&what, &got, &want);
            worst = worst.max(c.max_abs_diff);
        }
    }
    report(format!(
        "{}: gemm delta, every candidate: largest |GPU − CPU| {worst:.2e}",
        ctx.info
    ));
}

/// The gradient [W; b] of z: [b, m], δ: [b, n] with L2 on W, and (params, m, v) after the
/// optimizer's step (as tests/kernels.rs).
fn fused_reference(
    z: &[f32],
    d: &[f32],
    [params, mm, vv]: [&[f32]; 3],
    (b, m, n): (usize, usize, usize),
    opt: Optimizer,
    h: &StepHyper,
) -> (Vec<f32>, [Vec<f32>; 3]) {
    let mut gw = vec![0.0; m * n];
    let mut gb = vec![0.0; n];
    ops::weight_grad(&mut gw, &mut gb, z, d, &params[..m * n], h.l2, b, m, n);
    gw.extend_from_slice(&gb);
    let (mut wp, mut wm, mut wv) = (params.to_vec(), mm.to_vec(), vv.to_vec());
    ops::optimizer_update(&mut wp, &mut wm, &mut wv, &gw, opt.kind(), h);
    (gw, [wp, wm, wv])
}

fn grad(ctx: &Arc<GpuContext>) {
    // None: the gradient only (OPT_NONE); the others fused into the epilogue (KEEP_GRAD on).
    let optimizers = [
        None,
        Some(Optimizer::Sgd),
        Some(Optimizer::Momentum { mu: 0.9 }),
        Some(Optimizer::adam()),
    ];
    let mut worst = 0.0f32;
    for g in candidates(ctx) {
        for (i, opt) in optimizers.into_iter().enumerate() {
            for split_k in [1, 3] {
                // (batch, m, n): the batch is K here. The plain gradient on every shape
                // unsplit and on three split in 3; each fused optimizer on an awkward shape
                // unsplit and an aligned one split.
                let shapes: &[(usize, usize, usize)] = match (opt, split_k) {
                    (None, 1) => &SHAPES,
                    (None, _) => &[(1, 7, 65), (65, 63, 7), (257, 64, 12)],
                    (Some(_), 1) => &[(65, 63, 7)],
                    (Some(_), _) => &[(257, 64, 12)],
                };
                for &(b, m, n) in shapes {
                    let p = (m + 1) * n;
                    let seed = 10 * i as u64;
                    let z = uniform(b * m, -1.0, 1.0, seed + 1);
                    let d = uniform(b * n, -1.0, 1.0, seed + 2);
                    let params = uniform(p, -1.0, 1.0, seed + 3);
                    let mm = uniform(p, -0.1, 0.1, seed + 4);
                    let vv = uniform(p, 0.0, 0.1, seed + 5);
                    let o = opt.unwrap_or(Optimizer::Sgd);
                    let h = o.hyper(0.05, 5, if opt.is_some() { 0.01 } else { 0.0 });
                    let choice = MatmulChoice {
                        gemm: Some(g),
                        split_k,
                    };
                    let kind = opt.map(|o| o.kind());
                    let out =
                        probe::grad_with(ctx, choice, &z, &d, &params, &mm, &vv, b, m, n, kind, &h)
                            .unwrap();
                    let (gw, [wp, wm, wv]) =
                        fused_reference(&z, &d, [&params, &mm, &vv], (b, m, n), o, &h);
                    let what = format!(
                        "{}: gemm {g} grad{} split-K {split_k} [z,1]ᵀ·δ [{m}x{b}]·[{b}x{n}]",
                        ctx.info,
                        opt.map_or(String::new(), |o| format!(" + {}", o.name())),
                    );
                    let c = MATMUL_TOL.assert_close(&format!("{what} grads"), &out.grads, &gw);
                    worst = worst.max(c.max_abs_diff);
                    let Some(o) = opt else {
                        assert_eq!(out.params, params, "{what}: OPT_NONE touched the params");
                        continue;
                    };
                    // Adam divides by √v̂: a gradient error ε moves the step by ~η·ε/√v̂.
                    Tolerance::new(1e-4, 1e-5).assert_close(
                        &format!("{what} params"),
                        &out.params,
                        &wp,
                    );
                    if o.state_slots() >= 1 {
                        MATMUL_TOL.assert_close(&format!("{what} m"), &out.m, &wm);
                    }
                    if o.state_slots() >= 2 {
                        MATMUL_TOL.assert_close(&format!("{what} v"), &out.v, &wv);
                    }
                }
            }
        }
    }
    report(format!(
        "{}: gemm grad, every candidate, split-K on and off: largest |GPU − CPU| {worst:.2e}",
        ctx.info
    ));
}

/// Every matmul of a step on `g`, layered (the fused narrow-MLP step off).
fn gemm_options(g: GemmConfig) -> GpuOptions {
    GpuOptions {
        force_gemm: Some(g),
        fused_mlp: Some(false),
        capture_gradients: true,
        ..Default::default()
    }
}

/// One Adam step with L2 on both backends from the same parameters; compares outputs, loss,
/// every gradient and the updated parameters. Returns the largest gradient difference.
fn one_step(ctx: &Arc<GpuContext>, spec: &ModelSpec, rows: usize, g: GemmConfig) -> f32 {
    let x = uniform(rows * spec.inputs(), -1.0, 1.0, 30);
    let t = targets(spec, rows, 31);
    let params = spec.init_params(32);
    let opt = Optimizer::adam();
    let hyper = opt.hyper(0.01, 1, 0.001);
    let order: Vec<u32> = (0..rows as u32).collect();
    let mut gpu = GpuBackend::new(ctx.clone(), spec, opt, rows, gemm_options(g)).unwrap();
    let mut cpu = ReferenceBackend::new(spec, opt).unwrap();
    let mut results = Vec::new();
    for b in [&mut gpu as &mut dyn Backend, &mut cpu] {
        b.set_params(&params).unwrap();
        let before = b.predict(&x, rows).unwrap();
        b.set_train_data(&x, &t, rows).unwrap();
        b.begin_epoch(&order).unwrap();
        b.step(0, rows, &hyper).unwrap();
        let stats = b.finish_epoch().unwrap();
        let grads = b.last_gradients().unwrap();
        let after = b.params().unwrap();
        results.push((before, stats[0].loss_sum as f32, grads, after));
    }
    let (gr, cr) = (&results[0], &results[1]);
    let what = format!("{}: gemm {g} step {:?} b{rows}", ctx.info, spec.sizes);
    OUTPUT_TOL.assert_close(&format!("{what}: outputs"), &gr.0, &cr.0);
    OUTPUT_TOL.assert_close(&format!("{what}: loss"), &[gr.1], &[cr.1]);
    let grads = GRAD_TOL.assert_close(&format!("{what}: gradients"), &gr.2, &cr.2);
    // Adam's first step moves each parameter by ~lr·sign(g): tiny gradients near 0 can flip.
    Tolerance::new(1e-4, 1e-5).assert_close(&format!("{what}: parameters"), &gr.3, &cr.3);
    grads.max_abs_diff
}

fn training_step(ctx: &Arc<GpuContext>) {
    let awkward = ModelSpec::with_activations(
        &[7, 65, 63, 10],
        vec![Activation::Tanh, Activation::Relu, Activation::Softmax],
        Loss::CrossEntropy,
    )
    .unwrap();
    // Aligned widths (vec4 loads); 600 rows split the gradient's K on CPU adapters
    // (placement.rs: fewer than 8 tiles, at least 512 rows).
    let aligned = ModelSpec::with_activations(
        &[8, 64, 36, 4],
        vec![
            Activation::LeakyRelu(0.01),
            Activation::Sigmoid,
            Activation::Identity,
        ],
        Loss::SquaredError,
    )
    .unwrap();
    // The 600-row step really splits K: it records grad_reduce dispatches a 256-row one lacks.
    let dispatches = |rows: usize| {
        let g = GemmConfig::CANDIDATES[0];
        GpuBackend::new(ctx.clone(), &aligned, Optimizer::Sgd, rows, gemm_options(g))
            .unwrap()
            .dispatches_per_step()
    };
    assert!(
        dispatches(600) > dispatches(256),
        "{}: the 600-row step should split K",
        ctx.info
    );
    let mut worst = 0.0f32;
    for g in candidates(ctx) {
        worst = worst.max(one_step(ctx, &awkward, 33, g));
        worst = worst.max(one_step(ctx, &aligned, 600, g));
    }
    report(format!(
        "{}: one step with each gemm candidate forced: largest gradient |GPU − CPU| {worst:.2e}",
        ctx.info
    ));
}

/// 50 momentum steps (80 rows in batches of 16, shuffled, 10 epochs) with the largest and the
/// narrow candidate forced, against the reference; a rerun must be bit-identical.
fn trajectory(ctx: &Arc<GpuContext>) {
    let spec = ModelSpec::new(
        &[8, 64, 36, 4],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let (inp, classes, rows) = (spec.inputs(), spec.outputs(), 80);
    let x = uniform(rows * inp, -1.0, 1.0, 40);
    let labels: Vec<u32> = x
        .chunks(inp)
        .map(|r| {
            if r[0] + r[1] > 0.3 {
                0
            } else if r[2] > 0.0 {
                1
            } else {
                classes as u32 - 1
            }
        })
        .collect();
    let data = Dataset::from_classes(x, inp, labels, classes).unwrap();
    let opt = Optimizer::Momentum { mu: 0.9 };
    let run = |backend: Box<dyn Backend>| -> (Vec<f32>, Vec<f32>) {
        let config = gpumlp::TrainConfig {
            lr: 0.05,
            optimizer: opt,
            l2: 1e-3,
            batch_size: 16,
            epochs: 10,
            seed: 7,
            shuffle: true,
            schedule: gpumlp::Schedule::Exponential { gamma: 0.9 },
            ..Default::default()
        };
        let mut trainer = gpumlp::Trainer::new(backend, &spec.init_params(3), config).unwrap();
        let reports = trainer.fit(&data, None, |_| {}).unwrap();
        assert_eq!(trainer.steps(), 50);
        let losses = reports.iter().map(|r| r.train_loss as f32).collect();
        (losses, trainer.params().unwrap())
    };
    let (cpu_loss, cpu_params) = run(Box::new(ReferenceBackend::new(&spec, opt).unwrap()));
    for g in [GemmConfig::CANDIDATES[0], GemmConfig::NARROW] {
        let place = || {
            let options = GpuOptions {
                capture_gradients: false,
                ..gemm_options(g)
            };
            Box::new(GpuBackend::new(ctx.clone(), &spec, opt, 16, options).unwrap())
        };
        let (loss, params) = run(place());
        let what = format!("{}: gemm {g} 50-step trajectory", ctx.info);
        let l =
            Tolerance::new(1e-3, 1e-5).assert_close(&format!("{what} losses"), &loss, &cpu_loss);
        let p = Tolerance::new(1e-3, 1e-4).assert_close(
            &format!("{what} params"),
            &params,
            &cpu_params,
        );
        let (again_loss, again_params) = run(place());
        let same = again_params
            .iter()
            .zip(&params)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(again_loss == loss && same, "{what}: the rerun differs");
        report(format!(
            "{what}: largest |GPU − CPU| loss {:.2e}, parameters {:.2e}; rerun bit-identical",
            l.max_abs_diff, p.max_abs_diff
        ));
    }
}

/// Every candidate, specialized as each form (grad with the fused Adam update, split-K on and
/// off), translates with naga to SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL,
/// desktop 4.3 and ES 3.1), so a kernel those backends would refuse fails here without their
/// hardware; and the workgroup memory the shader declares is what `workgroup_bytes` says.
#[test]
fn every_candidate_translates_for_every_backend() {
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let family = gpumlp::gpu::kernels::Family::MatmulGemm;
    let src = family.source();
    let module = naga::front::wgsl::parse_str(&src).unwrap();
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", family.file(), e.emit_to_string(&src)));
    let entry = "matmul_gemm";
    // (what, MODE, ACT, OPT, KEEP_GRAD, SPLIT_K)
    let forms = [
        ("forward relu", 0, 4, 0, 0, 0),
        ("delta tanh'", 1, 3, 0, 0, 0),
        ("grad + adam", 2, 0, 3, 1, 0),
        ("grad split-K", 2, 0, 0, 0, 1),
    ];
    for g in GemmConfig::CANDIDATES {
        assert!(g.valid(), "{g}");
        for (what, mode, act, opt, keep, split) in forms {
            let mut pairs = g.constants();
            for (name, v) in [
                ("MODE", mode),
                ("ACT", act),
                ("OPT", opt),
                ("KEEP_GRAD", keep),
                ("SPLIT_K", split),
            ] {
                pairs.push((name, v as f64));
            }
            let what = format!("gemm {g} {what}");
            let (m, i) = common::translate::specialize(
                &module,
                &info,
                entry,
                &common::translate::constants(&pairs),
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            // Workgroup memory as declared, against the host's arithmetic.
            let declared: u32 = m
                .global_variables
                .iter()
                .filter(|(_, v)| v.name.as_deref().is_some_and(|n| n.starts_with("gemm_")))
                .map(|(_, v)| m.types[v.ty].inner.size(m.to_ctx()))
                .sum();
            assert_eq!(declared, g.workgroup_bytes(), "{what}: workgroup memory");
            let ep = m.entry_points.iter().find(|e| e.name == entry).unwrap();
            assert_eq!(
                ep.workgroup_size[0],
                g.invocations(),
                "{what}: workgroup size"
            );
            common::translate::for_every_api(&m, &i, entry, true)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

/// The candidate list's promises: every tile well formed, the smallest within 16 KiB of
/// workgroup memory (the WebGPU default limit), none over 32 KiB, no more than 256
/// invocations; a narrow tile for outputs of at most 16 columns; names round-trip.
#[test]
fn candidates_fit_the_limits_they_promise() {
    let all = GemmConfig::CANDIDATES;
    let webgpu = wgpu::Limits::default();
    assert_eq!(webgpu.max_compute_workgroup_storage_size, 16 * 1024);
    let smallest = all.iter().min_by_key(|g| g.workgroup_bytes()).unwrap();
    assert!(smallest.fits(&webgpu), "{smallest} must fit 16 KiB");
    for g in all {
        assert!(g.valid(), "{g}");
        assert!(g.workgroup_bytes() <= 32 * 1024, "{g}");
        assert!(g.invocations() <= 256, "{g}");
        assert_eq!(g.to_string().parse::<GemmConfig>(), Ok(*g));
    }
    assert!(all.contains(&GemmConfig::NARROW) && GemmConfig::NARROW.bn <= 16);
    assert!(all
        .iter()
        .any(|g| (g.bm, g.bn, g.tm, g.tn) == (128, 128, 8, 8)));
    let too_big = GemmConfig::new(128, 128, 32, 8, 8);
    assert!(!too_big.valid() || !too_big.fits(&webgpu));
    assert!("128x128x8/3x3".parse::<GemmConfig>().is_err());
}
