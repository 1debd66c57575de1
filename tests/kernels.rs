//! Each GPU kernel against its CPU reference on awkward shapes, on every adapter found.

mod common;

use std::sync::Arc;

use common::{awkward_shapes, dense_reference, one_hot, report, uniform, AWKWARD, OUTPUT_PAIRS};
use gpumlp::gpu::probe;
use gpumlp::model::{Activation, Loss};
use gpumlp::optim::Optimizer;
use gpumlp::reference::ops::{self, MatmulForm};
use gpumlp::{GpuContext, Tolerance};

/// f32 accumulation in a different order over k ≤ 300 terms of size ≤ 1.
const MATMUL_TOL: Tolerance = Tolerance::new(1e-4, 1e-5);
/// Transcendentals (exp, tanh) differ by a few ulps between backends.
const ELEMENTWISE_TOL: Tolerance = Tolerance::new(1e-4, 1e-6);

const ACTIVATIONS: [Activation; 6] = [
    Activation::Identity,
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Step,
];

fn forward_matmul_x_w_plus_b_matches_reference(ctx: &Arc<GpuContext>) {
    for (b, k, n) in awkward_shapes() {
        let x = uniform(b * k, -1.0, 1.0, 1);
        let wb = uniform((k + 1) * n, -1.0, 1.0, 2);
        let (a, z) = probe::forward(ctx, &x, &wb, b, k, n, Activation::Identity).unwrap();
        let mut want = ops::matmul(MatmulForm::Nn, &x, &wb[..k * n], b, n, k);
        for r in 0..b {
            for j in 0..n {
                want[r * n + j] += wb[k * n + j];
            }
        }
        let what = format!("{}: x·W+b [{b}x{k}]·[{k}x{n}]", ctx.info);
        MATMUL_TOL.assert_close(&what, &a, &want);
        MATMUL_TOL.assert_close(&what, &z, &want);
    }
}

fn delta_matmul_delta_wt_matches_reference(ctx: &Arc<GpuContext>) {
    for (b, k, n) in awkward_shapes() {
        let d = uniform(b * k, -1.0, 1.0, 3);
        let w = uniform(n * k, -1.0, 1.0, 4);
        let a_prev = uniform(b * n, -1.0, 1.0, 5);
        let got = probe::delta(ctx, &d, &w, &a_prev, b, k, n, Activation::Identity).unwrap();
        let want = ops::matmul(MatmulForm::Nt, &d, &w, b, n, k);
        MATMUL_TOL.assert_close(
            &format!("{}: δ·Wᵀ [{b}x{k}]·[{k}x{n}]", ctx.info),
            &got,
            &want,
        );
    }
}

fn grad_matmul_xt_delta_matches_reference(ctx: &Arc<GpuContext>) {
    let h = Optimizer::Sgd.hyper(0.0, 1, 0.0);
    for (b, m, n) in awkward_shapes() {
        let z = uniform(b * m, -1.0, 1.0, 6);
        let d = uniform(b * n, -1.0, 1.0, 7);
        let params = uniform((m + 1) * n, -1.0, 1.0, 8);
        let out = probe::grad(ctx, &z, &d, &params, &[0.0], &[0.0], b, m, n, None, &h).unwrap();
        let mut want = ops::matmul(MatmulForm::Tn, &z, &d, m, n, b);
        for j in 0..n {
            want.push((0..b).map(|r| d[r * n + j]).sum());
        }
        let what = format!("{}: [z,1]ᵀ·δ [{m}x{b}]·[{b}x{n}]", ctx.info);
        MATMUL_TOL.assert_close(&what, &out.grads, &want);
        assert_eq!(
            out.params, params,
            "{what}: OPT_NONE must not touch the parameters"
        );
    }
}

fn forward_epilogue_applies_every_activation(ctx: &Arc<GpuContext>) {
    let (b, k, n) = (65, 7, 63);
    for act in ACTIVATIONS {
        let x = uniform(b * k, -1.0, 1.0, 9);
        let wb = uniform((k + 1) * n, -1.0, 1.0, 10);
        let (a, z) = probe::forward(ctx, &x, &wb, b, k, n, act).unwrap();
        let (wa, wz) = dense_reference(&x, &wb, b, k, n, act);
        let what = format!("{}: forward {act}", ctx.info);
        MATMUL_TOL.assert_close(&what, &a, &wa);
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

fn delta_epilogue_applies_every_derivative_with_relu_prime_of_zero_one(ctx: &Arc<GpuContext>) {
    let (b, k, n) = (63, 65, 7);
    for act in ACTIVATIONS.into_iter().filter(|a| *a != Activation::Step) {
        let d = uniform(b * k, -1.0, 1.0, 11);
        let w = uniform(n * k, -1.0, 1.0, 12);
        let mut a_prev = uniform(b * n, -2.0, 2.0, 13);
        // exact zeros: relu'(0) = leaky'(0) = 1
        for v in a_prev.iter_mut().step_by(5) {
            *v = 0.0;
        }
        let got = probe::delta(ctx, &d, &w, &a_prev, b, k, n, act).unwrap();
        let mut w_in_out = vec![0.0; n * k]; // W: [n(inp), k(out)] is what backprop_delta takes
        w_in_out.copy_from_slice(&w);
        let mut want = vec![0.0; b * n];
        ops::backprop_delta(&mut want, &d, &w_in_out, &a_prev, b, n, k, act);
        Tolerance::new(2e-4, 1e-5).assert_close(&format!("{}: delta {act}", ctx.info), &got, &want);
    }
}

/// (batch, output width) for the loss kernel: every awkward size as the batch and as the width
/// (each batch with two widths, each width with two batches), a width of 10, and a batch that
/// spans 274 workgroups of 256 rows.
fn loss_shapes() -> Vec<(usize, usize)> {
    let s = AWKWARD;
    let mut v: Vec<(usize, usize)> = (0..s.len())
        .flat_map(|i| [(s[i], s[i]), (s[i], s[(i + 2) % s.len()])])
        .collect();
    v.push((7, 10));
    v.push((70_001, 3));
    v
}

fn output_delta_loss_and_reduction_match_reference(ctx: &Arc<GpuContext>) {
    for (act, loss) in OUTPUT_PAIRS {
        for (b, out) in loss_shapes() {
            let a = uniform(b * out, -4.0, 4.0, 14);
            let t = if loss == Loss::CrossEntropy || out > 1 && loss != Loss::BinaryCrossEntropy {
                one_hot(b, out, 15)
            } else {
                uniform(b * out, 0.0, 1.0, 15)
                    .iter()
                    .map(|v| v.round())
                    .collect()
            };
            let (delta, rows, sum) = probe::output_delta(ctx, &a, &t, b, out, act, loss).unwrap();
            let mut want_delta = vec![0.0; b * out];
            let mut want_rows = vec![0.0; b * 2];
            for r in 0..b {
                let (j, ok) = ops::output_delta_row(
                    &mut want_delta[r * out..(r + 1) * out],
                    &a[r * out..(r + 1) * out],
                    &t[r * out..(r + 1) * out],
                    act,
                    loss,
                    1.0 / b as f32,
                );
                want_rows[2 * r] = j;
                want_rows[2 * r + 1] = ok as u32 as f32;
            }
            let what = format!("{}: {act} + {loss} [{b}x{out}]", ctx.info);
            ELEMENTWISE_TOL.assert_close(&format!("{what} delta"), &delta, &want_delta);
            ELEMENTWISE_TOL.assert_close(&format!("{what} loss/correct"), &rows, &want_rows);
            // Summed in f64 so that the reference's own rounding over 70k rows stays out
            // of the comparison.
            let want_sum = [
                want_rows.iter().step_by(2).map(|&v| v as f64).sum::<f64>() as f32,
                want_rows
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .map(|&v| v as f64)
                    .sum::<f64>() as f32,
            ];
            Tolerance::new(1e-4, 1e-4).assert_close(&format!("{what} reduced"), &sum, &want_sum);
        }
    }
}

fn optimizer_updates_match_reference_standalone_and_fused(ctx: &Arc<GpuContext>) {
    let (b, m, n) = (65, 63, 7);
    let cases = [
        (Optimizer::Sgd, 0.0),
        (Optimizer::Sgd, 0.01),
        (Optimizer::Momentum { mu: 0.9 }, 0.001),
        (Optimizer::adam(), 0.01),
    ];
    for (opt, l2) in cases {
        let h = opt.hyper(0.05, 3, l2);
        let p = (m + 1) * n;
        let params = uniform(p, -1.0, 1.0, 16);
        let grads = uniform(p, -1.0, 1.0, 17);
        let mm = uniform(p, -0.1, 0.1, 18);
        let vv = uniform(p, 0.0, 0.1, 19);
        // standalone
        let (gp, gm, gv) =
            probe::optimizer(ctx, &params, &grads, &mm, &vv, opt.kind(), &h).unwrap();
        let (mut wp, mut wm, mut wv) = (params.clone(), mm.clone(), vv.clone());
        ops::optimizer_update(&mut wp, &mut wm, &mut wv, &grads, opt.kind(), &h);
        let what = format!("{}: {} standalone", ctx.info, opt.name());
        ELEMENTWISE_TOL.assert_close(&format!("{what} params"), &gp, &wp);
        ELEMENTWISE_TOL.assert_close(&format!("{what} m"), &gm, &wm);
        ELEMENTWISE_TOL.assert_close(&format!("{what} v"), &gv, &wv);
        // fused into the gradient matmul, with L2 on weights only
        let z = uniform(b * m, -1.0, 1.0, 20);
        let d = uniform(b * n, -1.0, 1.0, 21);
        let out = probe::grad(
            ctx,
            &z,
            &d,
            &params,
            &mm,
            &vv,
            b,
            m,
            n,
            Some(opt.kind()),
            &h,
        )
        .unwrap();
        let (gw, [wp, wm, wv]) =
            fused_reference(&z, &d, [&params, &mm, &vv], (b, m, n), l2, opt, &h);
        let what = format!("{}: {} fused, l2 {l2}", ctx.info, opt.name());
        MATMUL_TOL.assert_close(&format!("{what} grads"), &out.grads, &gw);
        Tolerance::new(1e-4, 1e-5).assert_close(&format!("{what} params"), &out.params, &wp);
        if opt.state_slots() >= 1 {
            MATMUL_TOL.assert_close(&format!("{what} m"), &out.m, &wm);
        }
        if opt.state_slots() >= 2 {
            MATMUL_TOL.assert_close(&format!("{what} v"), &out.v, &wv);
        }
    }
}

/// Standalone optimizer update on every awkward size and on 70 001 parameters (274 workgroups),
/// for every optimizer; then the update fused into the gradient matmul's epilogue on the awkward
/// matmul shapes.
fn optimizer_updates_match_reference_on_awkward_sizes(ctx: &Arc<GpuContext>) {
    let optimizers = [
        Optimizer::Sgd,
        Optimizer::Momentum { mu: 0.9 },
        Optimizer::adam(),
    ];
    let mut sizes = AWKWARD.to_vec();
    sizes.push(70_001);
    let mut worst = 0.0f32;
    for opt in optimizers {
        // Step 5: Adam's bias corrections are not 1 yet. L2 is added in the gradient matmul,
        // so it is tested with the fused update below.
        let h = opt.hyper(0.05, 5, 0.0);
        for &p in &sizes {
            let params = uniform(p, -1.0, 1.0, 22);
            let grads = uniform(p, -1.0, 1.0, 23);
            let mm = uniform(p, -0.1, 0.1, 24);
            let vv = uniform(p, 0.0, 0.1, 25);
            let (gp, gm, gv) =
                probe::optimizer(ctx, &params, &grads, &mm, &vv, opt.kind(), &h).unwrap();
            let (mut wp, mut wm, mut wv) = (params.clone(), mm.clone(), vv.clone());
            ops::optimizer_update(&mut wp, &mut wm, &mut wv, &grads, opt.kind(), &h);
            let what = format!("{}: {} standalone, {p} parameters", ctx.info, opt.name());
            assert_eq!(gp.len(), p, "{what}");
            let c = ELEMENTWISE_TOL.assert_close(&format!("{what} params"), &gp, &wp);
            worst = worst.max(c.max_abs_diff);
            if opt.state_slots() >= 1 {
                ELEMENTWISE_TOL.assert_close(&format!("{what} m"), &gm, &wm);
            } else {
                assert_eq!(gm, mm, "{what}: SGD must not touch m");
            }
            if opt.state_slots() >= 2 {
                ELEMENTWISE_TOL.assert_close(&format!("{what} v"), &gv, &wv);
            } else {
                assert_eq!(gv, vv, "{what}: {} must not touch v", opt.name());
            }
        }
        for (b, m, n) in awkward_shapes() {
            let p = (m + 1) * n;
            let params = uniform(p, -1.0, 1.0, 26);
            let mm = uniform(p, -0.1, 0.1, 27);
            let vv = uniform(p, 0.0, 0.1, 28);
            let z = uniform(b * m, -1.0, 1.0, 29);
            let d = uniform(b * n, -1.0, 1.0, 30);
            let h = opt.hyper(0.05, 5, 0.01);
            let out = probe::grad(
                ctx,
                &z,
                &d,
                &params,
                &mm,
                &vv,
                b,
                m,
                n,
                Some(opt.kind()),
                &h,
            )
            .unwrap();
            let (gw, [wp, wm, wv]) =
                fused_reference(&z, &d, [&params, &mm, &vv], (b, m, n), 0.01, opt, &h);
            let what = format!(
                "{}: {} fused into [z,1]ᵀ·δ [{m}x{b}]·[{b}x{n}]",
                ctx.info,
                opt.name()
            );
            MATMUL_TOL.assert_close(&format!("{what} grads"), &out.grads, &gw);
            // Adam divides by √v̂: a gradient error ε moves the step by up to ~η·ε/√v̂.
            let c = Tolerance::new(1e-4, 1e-5).assert_close(
                &format!("{what} params"),
                &out.params,
                &wp,
            );
            worst = worst.max(c.max_abs_diff);
            if opt.state_slots() >= 1 {
                MATMUL_TOL.assert_close(&format!("{what} m"), &out.m, &wm);
            }
            if opt.state_slots() >= 2 {
                MATMUL_TOL.assert_close(&format!("{what} v"), &out.v, &wv);
            }
        }
    }
    report(format!(
        "{}: optimizer updates on awkward sizes: largest |GPU − CPU| parameter {worst:.2e}",
        ctx.info
    ));
}

/// The reference for the gradient matmul with its fused update: the gradient [W; b] of
/// z: [b, m], δ: [b, n] with L2 on W, and the (params, m, v) after the optimizer's step.
fn fused_reference(
    z: &[f32],
    d: &[f32],
    [params, mm, vv]: [&[f32]; 3],
    (b, m, n): (usize, usize, usize),
    l2: f32,
    opt: Optimizer,
    h: &gpumlp::optim::StepHyper,
) -> (Vec<f32>, [Vec<f32>; 3]) {
    let mut gw = vec![0.0; m * n];
    let mut gb = vec![0.0; n];
    ops::weight_grad(&mut gw, &mut gb, z, d, &params[..m * n], l2, b, m, n);
    gw.extend_from_slice(&gb);
    let (mut wp, mut wm, mut wv) = (params.to_vec(), mm.to_vec(), vv.to_vec());
    ops::optimizer_update(&mut wp, &mut wm, &mut wv, &gw, opt.kind(), h);
    (gw, [wp, wm, wv])
}

common::on_each_adapter!(
    forward_matmul_x_w_plus_b_matches_reference,
    delta_matmul_delta_wt_matches_reference,
    grad_matmul_xt_delta_matches_reference,
    forward_epilogue_applies_every_activation,
    delta_epilogue_applies_every_derivative_with_relu_prime_of_zero_one,
    output_delta_loss_and_reduction_match_reference,
    optimizer_updates_match_reference_standalone_and_fused,
    optimizer_updates_match_reference_on_awkward_sizes,
);
