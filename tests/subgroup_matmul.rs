//! The subgroup matmul (shaders/matmul_subgroup.wgsl) against the CPU reference: shapes whose
//! widths are multiples of 4 (the kernel's vec4 loads), with awkward batch sizes and sizes that
//! leave partial tiles and partial subgroups. On adapters without 8-lane subgroups the same
//! shapes run the default kernel, which these tests then cover too.

mod common;

use common::{dense_reference, gpus, report, uniform};
use gpumlp::backend::Backend;
use gpumlp::gpu::kernels::{MatmulDims, MatmulMode, MatmulVariant};
use gpumlp::gpu::probe;
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::{Optimizer, OptimizerKind};
use gpumlp::reference::ops::{self, MatmulForm};
use gpumlp::{GpuBackend, GpuContext, GpuOptions, Tolerance};
use std::sync::Arc;

/// f32 sums over up to 516 terms of size ≤ 1, in a different order than the reference.
const MATMUL_TOL: Tolerance = Tolerance::new(1e-4, 2e-5);

/// (batch, k, n): batch awkward; k and n multiples of 4, from one vec4 to many tiles, with
/// partial subgroups (4 of 32 columns, 12 of 16 rows) and partial workgroups.
const SHAPES: [(usize, usize, usize); 8] = [
    (1, 4, 4),
    (7, 64, 68),
    (63, 260, 4),
    (65, 8, 260),
    (257, 68, 64),
    (300, 192, 272),
    (1000, 516, 132),
    (33, 12, 36),
];

/// Whether this adapter runs the subgroup kernel for aligned shapes (lavapipe does).
fn expects_subgroup(ctx: &GpuContext) -> bool {
    gpumlp::gpu::plan::kernel_support(&ctx.capabilities(), &Default::default()).subgroup_matmul
}

fn check_variant(ctx: &GpuContext, mode: MatmulMode, dims: &MatmulDims, want: MatmulVariant) {
    let v = probe::matmul_variant(ctx, mode, dims);
    if expects_subgroup(ctx) {
        assert_eq!(
            v, want,
            "{}: {mode:?} {dims:?} runs the wrong kernel",
            ctx.info
        );
    }
}

/// Runs `check` on every adapter over `shapes` (b, k or m, n), asserting first that each shape
/// runs `want` where the subgroup kernels exist; reports the largest difference.
fn on_every_adapter(
    what: &str,
    mode: MatmulMode,
    want: impl Fn(usize) -> MatmulVariant,
    shapes: &[(usize, usize, usize)],
    check: impl Fn(&GpuContext, usize, usize, usize) -> f32,
) {
    for ctx in gpus() {
        let mut worst = 0.0f32;
        for &(b, inner, n) in shapes {
            let mut dims = MatmulDims {
                n: n as u32,
                ..Default::default()
            };
            match mode {
                MatmulMode::Grad => dims.m = inner as u32,
                _ => dims.k = inner as u32,
            }
            check_variant(ctx, mode, &dims, want(n));
            worst = worst.max(check(ctx, b, inner, n));
        }
        report(format!(
            "{}: {what}: largest |GPU − CPU| {worst:.2e}",
            ctx.info
        ));
    }
}

/// Forward with bias + activation: x [b, k] · W [k, n] + b.
fn check_forward(ctx: &GpuContext, b: usize, k: usize, n: usize) -> f32 {
    let mut worst = 0.0f32;
    for act in [Activation::Identity, Activation::Relu, Activation::Tanh] {
        let x = uniform(b * k, -1.0, 1.0, 40);
        let wb = uniform((k + 1) * n, -1.0, 1.0, 41);
        let (a, z) = probe::forward(ctx, &x, &wb, b, k, n, act).unwrap();
        let (wa, wz) = dense_reference(&x, &wb, b, k, n, act);
        let what = format!("{}: forward {act} [{b}x{k}]·[{k}x{n}]", ctx.info);
        worst = worst.max(MATMUL_TOL.assert_close(&what, &a, &wa).max_abs_diff);
        MATMUL_TOL.assert_close(&what, &z, &wz);
    }
    worst
}

/// Delta with φ': (δ [b, k] · Wᵀ) ⊙ φ'(a_prev), W: [n, k].
fn check_delta(ctx: &GpuContext, b: usize, k: usize, n: usize) -> f32 {
    let mut worst = 0.0f32;
    for act in [Activation::Identity, Activation::Sigmoid, Activation::Relu] {
        let d = uniform(b * k, -1.0, 1.0, 42);
        let w = uniform(n * k, -1.0, 1.0, 43);
        let mut a_prev = uniform(b * n, -1.0, 1.0, 44);
        for v in a_prev.iter_mut().step_by(7) {
            *v = 0.0; // relu'(0) = 1
        }
        let got = probe::delta(ctx, &d, &w, &a_prev, b, k, n, act).unwrap();
        let mut want = vec![0.0; b * n];
        ops::backprop_delta(&mut want, &d, &w, &a_prev, b, n, k, act);
        let what = format!("{}: delta {act} [{b}x{k}]·[{k}x{n}]ᵀ", ctx.info);
        worst = worst.max(MATMUL_TOL.assert_close(&what, &got, &want).max_abs_diff);
    }
    worst
}

#[test]
fn subgroup_forward_matches_reference() {
    let want = |_| MatmulVariant::Subgroup(MatmulMode::Forward);
    on_every_adapter(
        "aligned forward matmuls",
        MatmulMode::Forward,
        want,
        &SHAPES,
        check_forward,
    );
}

#[test]
fn subgroup_delta_matches_reference() {
    // only k needs to be aligned
    let shapes: Vec<_> = SHAPES.into_iter().chain([(65, 12, 7), (9, 4, 1)]).collect();
    let want = |_| MatmulVariant::Subgroup(MatmulMode::Delta);
    on_every_adapter(
        "aligned delta matmuls",
        MatmulMode::Delta,
        want,
        &shapes,
        check_delta,
    );
}

/// The gradient matmul with its fused SGD update (L2 on weights only), against the reference.
fn check_grad(ctx: &GpuContext, b: usize, m: usize, n: usize) -> f32 {
    let z = uniform(b * m, -1.0, 1.0, 45);
    let d = uniform(b * n, -1.0, 1.0, 46);
    let params = uniform((m + 1) * n, -1.0, 1.0, 47);
    let mut want = ops::matmul(MatmulForm::Tn, &z, &d, m, n, b);
    for j in 0..n {
        want.push((0..b).map(|r| d[r * n + j]).sum());
    }
    let what = format!("{}: grad [{m}x{b}]·[{b}x{n}]", ctx.info);
    // gradient only
    let h = Optimizer::Sgd.hyper(0.1, 1, 0.0);
    let out = probe::grad(ctx, &z, &d, &params, &[0.0], &[0.0], b, m, n, None, &h).unwrap();
    let worst = MATMUL_TOL
        .assert_close(&what, &out.grads, &want)
        .max_abs_diff;
    assert_eq!(out.params, params, "{what}: OPT_NONE must not touch params");
    // fused SGD with L2 on the weights (not the bias row)
    let l2 = 0.01;
    let h = Optimizer::Sgd.hyper(0.1, 1, l2);
    let sgd = Some(OptimizerKind::Sgd);
    let out = probe::grad(ctx, &z, &d, &params, &[0.0], &[0.0], b, m, n, sgd, &h).unwrap();
    let updated: Vec<f32> = params
        .iter()
        .zip(&want)
        .enumerate()
        .map(|(i, (p, g))| p - 0.1 * (g + if i < m * n { l2 * p } else { 0.0 }))
        .collect();
    MATMUL_TOL.assert_close(&format!("{what}: SGD update"), &out.params, &updated);
    worst
}

#[test]
fn subgroup_grad_with_fused_update_matches_reference() {
    let want = |_| MatmulVariant::Subgroup(MatmulMode::Grad);
    on_every_adapter(
        "aligned gradient matmuls",
        MatmulMode::Grad,
        want,
        &SHAPES,
        check_grad,
    );
}

/// Gradients of narrow layers (n ≤ 16) that the subgroup kernel cannot take: every lane owns
/// 4 rows and all n columns (lavapipe), or the default kernel elsewhere.
#[test]
fn narrow_grad_matches_reference() {
    let shapes = [
        (1, 1, 1),
        (7, 7, 3),
        (63, 63, 10),
        (65, 65, 1),
        (257, 257, 5),
        (300, 64, 1),
        (1000, 512, 10),
        (33, 5, 16),
        (9, 8, 2),
    ];
    let want = |n: usize| MatmulVariant::NarrowGrad(n as u32);
    on_every_adapter(
        "narrow gradient matmuls",
        MatmulMode::Grad,
        want,
        &shapes,
        check_grad,
    );
}

/// `steps` training steps of `spec` over `rows` rows; the parameters after them and the
/// dispatches per step.
fn train_steps(
    ctx: &Arc<GpuContext>,
    spec: &ModelSpec,
    rows: usize,
    steps: usize,
    options: GpuOptions,
) -> (Vec<f32>, usize) {
    let x = uniform(rows * spec.inputs(), -1.0, 1.0, 50);
    let t = common::targets(spec, rows, 51);
    let opt = Optimizer::Momentum { mu: 0.9 };
    let mut gpu = GpuBackend::new(ctx.clone(), spec, opt, rows, options).unwrap();
    gpu.set_params(&spec.init_params(52)).unwrap();
    gpu.set_train_data(&x, &t, rows).unwrap();
    let order: Vec<u32> = (0..rows as u32).collect();
    gpu.begin_epoch(&order).unwrap();
    for s in 0..steps {
        gpu.step(0, rows, &opt.hyper(0.05, s as u64 + 1, 1e-3))
            .unwrap();
    }
    gpu.finish_epoch().unwrap();
    (gpu.params().unwrap(), gpu.dispatches_per_step())
}

/// The image kernels (operands mirrored into storage images) run the subgroup kernels' loops on
/// the same values, so training with them is bit-identical to training with buffer operands;
/// lavapipe runs them wherever the subgroup kernel runs and every operand fits an image.
#[test]
fn image_operands_train_bit_identically_to_buffer_operands() {
    let mut layered = GpuOptions::default();
    layered.fused_mlp = Some(false);
    let cases = [
        (&[64, 128, 128, 12][..], 257),
        (&[8, 36, 4][..], 1),
        (&[32, 64, 4][..], 4099), // split-K gradients
        (&[12, 20, 7][..], 65),   // only the first layer's forward and gradient qualify
    ];
    for ctx in gpus() {
        for (sizes, rows) in cases {
            let spec = ModelSpec::new(
                sizes,
                Activation::Relu,
                Activation::Softmax,
                Loss::CrossEntropy,
            )
            .unwrap();
            let (with, dispatches_with) = train_steps(ctx, &spec, rows, 3, layered);
            let mut buffers = layered;
            buffers.image_operands = false;
            let (without, dispatches_without) = train_steps(ctx, &spec, rows, 3, buffers);
            let what = format!("{} {sizes:?} batch {rows}", ctx.info);
            assert!(
                with.iter()
                    .zip(&without)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}: image and buffer operands trained differently"
            );
            // The images are refreshed by extra dispatches, only where the subgroup kernel runs.
            if expects_subgroup(ctx) {
                assert!(
                    dispatches_with > dispatches_without,
                    "{what}: no operand was mirrored ({dispatches_with} dispatches)"
                );
            } else {
                assert_eq!(dispatches_with, dispatches_without, "{what}");
            }
        }
        report(format!(
            "{}: image operands bit-identical to buffer operands",
            ctx.info
        ));
    }
}

/// Operands taller than the largest image (a batch past max_texture_dimension_2d) stay in
/// buffers: nothing is mirrored, and the step still trains as with buffers.
#[test]
fn batches_taller_than_an_image_keep_buffer_operands() {
    let mut layered = GpuOptions::default();
    layered.fused_mlp = Some(false);
    let spec = ModelSpec::new(
        &[4, 8, 4],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    for ctx in gpus() {
        let rows = ctx.limits.max_texture_dimension_2d as usize + 1;
        let (with, dispatches_with) = train_steps(ctx, &spec, rows, 1, layered);
        let mut buffers = layered;
        buffers.image_operands = false;
        let (without, dispatches_without) = train_steps(ctx, &spec, rows, 1, buffers);
        assert_eq!(dispatches_with, dispatches_without, "{}", ctx.info);
        assert!(with
            .iter()
            .zip(&without)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
