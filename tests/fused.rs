//! The fully fused step (src/gpu/fused.rs, shaders/fused.wgsl) against the CPU reference, on
//! every adapter: every activation × loss pair, awkward widths and batches, every optimizer with
//! L2, a bit-identical rerun, and the models it must refuse.

mod common;

use std::sync::Arc;

use common::{
    gpus, one_hot, report, targets, uniform, GRAD_TOL, HIDDEN, OUTPUT_PAIRS, OUTPUT_TOL, PARAM_TOL,
};
use gpumlp::backend::Backend;
use gpumlp::gpu::fused::{self, FusedBuffers, FusedMlp, FusedOptions};
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use gpumlp::{GpuContext, OptimizerState, ReferenceBackend};

fn sizes_name(spec: &ModelSpec) -> String {
    spec.sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// A non-zero optimizer state, so momentum and Adam are checked past their first step.
fn start_state(spec: &ModelSpec, opt: Optimizer) -> OptimizerState {
    let p = spec.param_count();
    let slots = opt.state_slots();
    OptimizerState {
        m: if slots >= 1 {
            uniform(p, -0.01, 0.01, 40)
        } else {
            Vec::new()
        },
        v: if slots >= 2 {
            uniform(p, 0.0, 1e-4, 41)
        } else {
            Vec::new()
        },
    }
}

/// One step on the fused GPU path and on the CPU reference from the same parameters and
/// optimizer state; compares loss, correct count, gradients, parameters and state.
fn compare_one_step(
    ctx: &GpuContext,
    spec: &ModelSpec,
    opt: Optimizer,
    l2: f32,
    rows: usize,
    max_groups: Option<usize>,
) {
    compare_one_step_with(ctx, spec, opt, l2, rows, max_groups, None);
}

/// [`compare_one_step`] with at most `max_invocations` per workgroup of the tile pass.
fn compare_one_step_with(
    ctx: &GpuContext,
    spec: &ModelSpec,
    opt: Optimizer,
    l2: f32,
    rows: usize,
    max_groups: Option<usize>,
    max_invocations: Option<u32>,
) {
    let x = uniform(rows * spec.inputs(), -1.0, 1.0, 30);
    let t = targets(spec, rows, 31);
    let params = spec.init_params(32);
    let state = start_state(spec, opt);
    let hyper = opt.hyper(0.1, 3, l2);
    let mut options = FusedOptions::default();
    options.capture_gradients = true;
    options.max_groups = max_groups;
    options.max_invocations = max_invocations;
    let (g_params, g_grads, g_stats, g_state) = fused::run_step_with(
        ctx, spec, opt, &params, &state, &x, &t, rows, &hyper, options,
    )
    .unwrap();
    let mut cpu = ReferenceBackend::new(spec, opt).unwrap();
    cpu.set_params(&params).unwrap();
    cpu.set_optimizer_state(&state).unwrap();
    let c_stats = cpu.train_batch(&x, &t, rows, &hyper);
    let c_grads = cpu.last_gradients().unwrap();
    let c_params = cpu.params().unwrap();
    let c_state = cpu.optimizer_state().unwrap();
    let what = format!(
        "{} fused ({}) {:?} {:?} {} l2={l2} rows={rows} groups={max_groups:?} invocations={max_invocations:?}",
        ctx.info,
        sizes_name(spec),
        spec.activations,
        spec.loss,
        opt.name()
    );
    OUTPUT_TOL.assert_close(
        &format!("{what}: loss"),
        &[g_stats[0]],
        &[c_stats.loss_sum as f32],
    );
    assert_eq!(g_stats[1] as u64, c_stats.correct, "{what}: correct count");
    GRAD_TOL.assert_close(&format!("{what}: gradients"), &g_grads, &c_grads);
    PARAM_TOL.assert_close(&format!("{what}: updated parameters"), &g_params, &c_params);
    GRAD_TOL.assert_close(&format!("{what}: optimizer m"), &g_state.m, &c_state.m);
    GRAD_TOL.assert_close(&format!("{what}: optimizer v"), &g_state.v, &c_state.v);
}

fn fused_step_matches_reference_for_every_activation_and_loss(ctx: &Arc<GpuContext>) {
    for (out_act, loss) in OUTPUT_PAIRS {
        for hidden in HIDDEN {
            let out = if loss == Loss::BinaryCrossEntropy || out_act != Activation::Softmax {
                3
            } else {
                4
            };
            let spec = ModelSpec::new(&[5, 9, 6, out], hidden, out_act, loss).unwrap();
            compare_one_step(ctx, &spec, Optimizer::Sgd, 0.0, 37, None);
        }
    }
    report(format!(
        "{}: fused step, 40 activation × loss pairs ok",
        ctx.info
    ));
}

fn fused_step_matches_reference_on_awkward_widths_and_batches(ctx: &Arc<GpuContext>) {
    let widths: [&[usize]; 6] = [
        &[1, 1],
        &[7, 63, 1],
        &[65, 128, 7],
        &[128, 65, 63, 128],
        &[63, 1, 65],
        &[2, 128, 128, 128, 10],
    ];
    for (i, sizes) in widths.iter().enumerate() {
        let loss = if sizes.last() == Some(&1) {
            Loss::SquaredError
        } else {
            Loss::CrossEntropy
        };
        let out_act = if loss == Loss::CrossEntropy {
            Activation::Softmax
        } else {
            Activation::Sigmoid
        };
        let hidden = HIDDEN[i % HIDDEN.len()];
        let spec = ModelSpec::new(sizes, hidden, out_act, loss).unwrap();
        for rows in [1, 7, 257] {
            compare_one_step(ctx, &spec, Optimizer::Sgd, 0.0, rows, None);
        }
        // 64 invocations for up to 8·32 blocks of 4×4: several rounds, the last one partial
        compare_one_step_with(ctx, &spec, Optimizer::Sgd, 0.0, 65, None, Some(64));
    }
    report(format!(
        "{}: fused step, awkward widths and batches ok",
        ctx.info
    ));
}

fn fused_step_batch_spanning_many_workgroups_and_tiles_matches_reference(ctx: &Arc<GpuContext>) {
    let spec = ModelSpec::new(
        &[13, 64, 33, 10],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    // Default groups (one tile per workgroup here), then 3 workgroups walking ~10 tiles each.
    for groups in [None, Some(3), Some(1)] {
        compare_one_step(ctx, &spec, Optimizer::adam(), 1e-3, 1000, groups);
    }
    report(format!(
        "{}: fused step, 1000 rows over many tiles ok",
        ctx.info
    ));
}

fn fused_step_matches_reference_for_every_optimizer_with_l2(ctx: &Arc<GpuContext>) {
    for opt in [
        Optimizer::Sgd,
        Optimizer::Momentum { mu: 0.9 },
        Optimizer::adam(),
    ] {
        for l2 in [0.0, 1e-2] {
            let spec = ModelSpec::new(
                &[6, 20, 11, 3],
                Activation::LeakyRelu(0.1),
                Activation::Softmax,
                Loss::CrossEntropy,
            )
            .unwrap();
            compare_one_step(ctx, &spec, opt, l2, 100, None);
        }
    }
    report(format!(
        "{}: fused step, SGD/momentum/Adam × L2 ok",
        ctx.info
    ));
}

/// relu'(0) = 1: a zero input row and zero weights make every hidden pre-activation exactly 0.
fn fused_step_uses_relu_derivative_one_at_zero(ctx: &Arc<GpuContext>) {
    let spec = ModelSpec::new(
        &[3, 4, 2],
        Activation::Relu,
        Activation::Identity,
        Loss::SquaredError,
    )
    .unwrap();
    let mut params = spec.init_params(5);
    let first = spec.layout()[0];
    params[first.weight..first.end()].fill(0.0);
    let x = vec![0.0; 2 * 3];
    let t = vec![1.0, -1.0, 0.5, 0.25];
    let hyper = Optimizer::Sgd.hyper(0.1, 1, 0.0);
    let state = OptimizerState::default();
    let (_, grads, _, _) = fused::run_step(
        ctx,
        &spec,
        Optimizer::Sgd,
        &params,
        &state,
        &x,
        &t,
        2,
        &hyper,
    )
    .unwrap();
    let mut cpu = ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap();
    cpu.set_params(&params).unwrap();
    cpu.train_batch(&x, &t, 2, &hyper);
    let want = cpu.last_gradients().unwrap();
    assert!(
        want[first.bias..first.end()].iter().any(|&g| g != 0.0),
        "the reference must see relu'(0) = 1"
    );
    GRAD_TOL.assert_close(&format!("{}: relu'(0) gradients", ctx.info), &grads, &want);
}

fn fused_step_reruns_bit_identically(ctx: &Arc<GpuContext>) {
    let spec = ModelSpec::new(
        &[17, 96, 96, 5],
        Activation::Sigmoid,
        Activation::Softmax,
        Loss::SquaredError,
    )
    .unwrap();
    let rows = 777;
    let x = uniform(rows * 17, -1.0, 1.0, 50);
    let t = one_hot(rows, 5, 51);
    let params = spec.init_params(52);
    let opt = Optimizer::adam();
    let state = start_state(&spec, opt);
    let hyper = opt.hyper(0.01, 2, 1e-3);
    let run = || {
        fused::run_step_with(ctx, &spec, opt, &params, &state, &x, &t, rows, &hyper, {
            let mut c = FusedOptions::default();
            c.capture_gradients = true;
            c.max_groups = Some(5);
            c
        })
        .unwrap()
    };
    let (p1, g1, s1, st1) = run();
    let (p2, g2, s2, st2) = run();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&p1), bits(&p2), "{}: params differ on rerun", ctx.info);
    assert_eq!(
        bits(&g1),
        bits(&g2),
        "{}: gradients differ on rerun",
        ctx.info
    );
    assert_eq!(bits(&s1), bits(&s2), "{}: stats differ on rerun", ctx.info);
    assert_eq!(
        bits(&st1.m),
        bits(&st2.m),
        "{}: m differs on rerun",
        ctx.info
    );
    assert_eq!(
        bits(&st1.v),
        bits(&st2.v),
        "{}: v differs on rerun",
        ctx.info
    );
}

/// Dummy-bound buffers for `FusedMlp::new` when only eligibility matters.
fn refuses(ctx: &GpuContext, spec: &ModelSpec) -> bool {
    let dummy = |usage| {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 1 << 12,
            usage,
            mapped_at_creation: false,
        })
    };
    let s = wgpu::BufferUsages::STORAGE;
    let (step, x, t, p, m, v, g, st) = (
        dummy(wgpu::BufferUsages::UNIFORM),
        dummy(s),
        dummy(s),
        dummy(s),
        dummy(s),
        dummy(s),
        dummy(s),
        dummy(s),
    );
    let bufs = FusedBuffers {
        step: &step,
        x: &x,
        t: &t,
        params: &p,
        opt_m: &m,
        opt_v: &v,
        grads: &g,
        stats: &st,
    };
    FusedMlp::new(
        ctx,
        spec,
        Optimizer::Sgd,
        64,
        &bufs,
        FusedOptions::default(),
    )
    .is_none()
}

fn fused_step_refuses_wide_layers_and_step_activations(ctx: &Arc<GpuContext>) {
    let wide = ModelSpec::new(
        &[4, 129, 3],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    assert!(refuses(ctx, &wide), "{}: a 129-wide layer", ctx.info);
    let wide_in = ModelSpec::new(
        &[129, 8, 3],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    assert!(refuses(ctx, &wide_in), "{}: a 129-wide input", ctx.info);
    let step = ModelSpec::new(
        &[4, 8, 1],
        Activation::Step,
        Activation::Sigmoid,
        Loss::SquaredError,
    )
    .unwrap();
    assert!(refuses(ctx, &step), "{}: a step activation", ctx.info);
    let ok = ModelSpec::new(
        &[128, 128, 128],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    assert!(
        !refuses(ctx, &ok),
        "{}: a 128-wide model must be taken",
        ctx.info
    );
}

#[test]
fn fused_tile_fits_small_workgroup_memory_or_refuses() {
    let spec = ModelSpec::new(
        &[64, 128, 128, 10],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    // stride 128: a staged W row is 32 vec4s (512 bytes); the slab takes at most a quarter
    let shape = fused::FusedShape::choose(&spec, 16384, 256, 4096, 64).unwrap();
    assert_eq!((shape.w_row, shape.w_slab, shape.tile), (32, 8, 12));
    assert_eq!(shape.workgroup_bytes, 2 * 12 * 128 * 4 + 8 * 32 * 16);
    assert!(shape.workgroup_bytes <= 16384);
    let shape = fused::FusedShape::choose(&spec, 49152, 1024, 4096, 64).unwrap();
    assert_eq!((shape.w_slab, shape.tile, shape.workgroup), (16, 40, 256));
    assert!(shape.workgroup_bytes <= 49152);
    // a narrow model: the swizzle still spans 8 vec4s
    let narrow = ModelSpec::new(
        &[7, 9, 3],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let shape = fused::FusedShape::choose(&narrow, 16384, 256, 4096, 64).unwrap();
    assert_eq!((shape.stride, shape.w_row, shape.w_slab), (12, 8, 32));
    assert!(fused::FusedShape::choose(&spec, 2048, 256, 4096, 64).is_none());
}

/// The workgroup memory `fused_tile` declares, specialized as each device profile's plan
/// specializes it, is what `FusedShape::workgroup_bytes` says (and the plan checked against the
/// device's limit); so is its workgroup size.
#[test]
fn fused_tile_declares_the_planned_workgroup_memory_on_every_profile() {
    use gpumlp::gpu::{plan, profiles};
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let src = fused::source();
    let module = naga::front::wgsl::parse_str(&src).unwrap();
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap();
    for name in profiles::PROFILE_NAMES {
        let caps = profiles::profile(name).unwrap();
        for (sizes, rows) in [(&[64, 128, 128, 10][..], 4096), (&[7, 65, 3][..], 7)] {
            let spec = ModelSpec::new(
                sizes,
                Activation::Tanh,
                Activation::Softmax,
                Loss::CrossEntropy,
            )
            .unwrap();
            let shape = plan::fused_shape(&spec, rows, &caps, None).unwrap();
            let c = FusedMlp::constants(&spec, Optimizer::Sgd, &shape, FusedOptions::default());
            let (m, _) = common::translate::specialize(
                &module,
                &info,
                "fused_tile",
                &common::translate::constants(&c),
            )
            .unwrap_or_else(|e| panic!("{name} {sizes:?}: {e}"));
            let declared: u32 = m
                .global_variables
                .iter()
                .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
                .filter(|(_, v)| matches!(v.name.as_deref(), Some("sm" | "ws")))
                .map(|(_, v)| m.types[v.ty].inner.size(m.to_ctx()))
                .sum();
            assert_eq!(
                declared as usize, shape.workgroup_bytes,
                "{name} {sizes:?}: {shape:?}"
            );
            let ep = m
                .entry_points
                .iter()
                .find(|e| e.name == "fused_tile")
                .unwrap();
            assert_eq!(ep.workgroup_size[0], shape.workgroup, "{name} {sizes:?}");
        }
    }
}

#[test]
fn fused_wgsl_parses_and_validates() {
    let src = fused::source();
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("shaders/fused.wgsl: {}", e.emit_to_string(&src)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("shaders/fused.wgsl: {}", e.emit_to_string(&src)));
}

/// Samples per second of `steps` fused steps (pipelines built outside the timed loop; one submit
/// per step, one readback at the end), and of the layered `GpuBackend` on the same model.
fn time_fused(ctx: &std::sync::Arc<GpuContext>, spec: &ModelSpec, batch: usize, steps: usize) {
    use wgpu::util::DeviceExt;
    let device = &ctx.device;
    let opt = Optimizer::adam();
    let p = spec.param_count();
    let x = uniform(batch * spec.inputs(), -1.0, 1.0, 60);
    let t = targets(spec, batch, 61);
    let params = spec.init_params(62);
    let init = |data: &[f32], usage| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(data),
            usage,
        })
    };
    let s = wgpu::BufferUsages::STORAGE;
    let rw = s | wgpu::BufferUsages::COPY_SRC;
    let step_buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: std::mem::size_of::<gpumlp::gpu::kernels::StepUniform>() as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let (x_buf, t_buf) = (init(&x, s), init(&t, s));
    let params_buf = init(&params, rw);
    let zeros = vec![0.0f32; p];
    let (m_buf, v_buf, g_buf) = (init(&zeros, rw), init(&zeros, rw), init(&[0.0; 4], rw));
    let stats_buf = init(&vec![0.0; 2 * steps], rw);
    let bufs = FusedBuffers {
        step: &step_buf,
        x: &x_buf,
        t: &t_buf,
        params: &params_buf,
        opt_m: &m_buf,
        opt_v: &v_buf,
        grads: &g_buf,
        stats: &stats_buf,
    };
    let fused = FusedMlp::new(ctx, spec, opt, batch, &bufs, FusedOptions::default()).unwrap();
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: stats_buf.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let run = |steps: usize| {
        for i in 0..steps {
            let h = opt.hyper(1e-3, i as u64 + 1, 0.0);
            let mut u = gpumlp::gpu::probe::step_uniform(batch, &h);
            u.step_index = i as u32;
            ctx.queue.write_buffer(&step_buf, 0, bytemuck::bytes_of(&u));
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                fused.record(&mut pass, batch, 0);
            }
            if i + 1 == steps {
                enc.copy_buffer_to_buffer(&stats_buf, 0, &staging, 0, stats_buf.size());
            }
            ctx.queue.submit([enc.finish()]);
        }
        staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        ctx.wait().unwrap();
        let loss: Vec<f32> =
            bytemuck::cast_slice(&staging.slice(..).get_mapped_range().unwrap()).to_vec();
        staging.unmap();
        loss
    };
    run(1); // warm-up: first submit compiles the pipelines on some drivers
    let start = std::time::Instant::now();
    let loss = run(steps);
    let secs = start.elapsed().as_secs_f64();
    report(format!(
        "{} fused {} b{batch}: {steps} steps in {secs:.3}s = {:.0} samples/s, {:.2} ms/step (shape {:?}; loss/row first {:.4} last {:.4})",
        ctx.info,
        sizes_name(spec),
        (steps * batch) as f64 / secs,
        secs * 1e3 / steps as f64,
        fused.shape(),
        loss[0] / batch as f32,
        loss[2 * (steps - 1)] / batch as f32,
    ));
    // The layered schedule on the same model, for comparison.
    let mut gpu =
        gpumlp::GpuBackend::new(ctx.clone(), spec, opt, batch, Default::default()).unwrap();
    gpu.set_params(&params).unwrap();
    gpu.set_train_data(&x, &t, batch).unwrap();
    let order: Vec<u32> = (0..batch as u32).collect();
    let h = opt.hyper(1e-3, 1, 0.0);
    gpu.begin_epoch(&order).unwrap();
    gpu.step(0, batch, &h).unwrap();
    gpu.finish_epoch().unwrap();
    let start = std::time::Instant::now();
    gpu.begin_epoch(&order).unwrap();
    for _ in 0..steps {
        gpu.step(0, batch, &h).unwrap();
    }
    gpu.finish_epoch().unwrap();
    let secs = start.elapsed().as_secs_f64();
    report(format!(
        "{} layered {} b{batch}: {steps} steps in {secs:.3}s = {:.0} samples/s",
        ctx.info,
        sizes_name(spec),
        (steps * batch) as f64 / secs
    ));
}

/// `cargo test --release --test fused -- --ignored --nocapture`; GPUMLP_FUSED_STEPS sets the
/// steps per measurement (default 5).
#[test]
#[ignore]
fn fused_step_throughput() {
    let steps = std::env::var("GPUMLP_FUSED_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let wide = ModelSpec::new(
        &[64, 128, 128, 10],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let deep = ModelSpec::new(
        &[32, 64, 64, 64, 1],
        Activation::Relu,
        Activation::Sigmoid,
        Loss::BinaryCrossEntropy,
    )
    .unwrap();
    for ctx in gpus() {
        time_fused(ctx, &wide, 4096, steps);
        time_fused(ctx, &deep, 65536, steps.div_ceil(4));
    }
}

/// An epoch of more steps than the per-step stats buffer first holds (1,024): the buffer grows
/// and the fused step's reduce pass is rebound to it, so every step's loss still lands.
fn fused_step_epoch_past_the_first_stats_capacity_matches_reference(ctx: &Arc<GpuContext>) {
    let spec = ModelSpec::new(
        &[2, 16, 2],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let rows = 1100;
    let x = uniform(rows * 2, -1.0, 1.0, 50);
    let t = targets(&spec, rows, 51);
    let params = spec.init_params(52);
    let hyper = Optimizer::Sgd.hyper(0.05, 1, 1e-4);
    let order: Vec<u32> = (0..rows as u32).rev().collect();
    let mut o = gpumlp::GpuOptions::default();
    o.fused_mlp = Some(true);
    o.tune = gpumlp::gpu::Tune::Off;
    let mut gpu = gpumlp::GpuBackend::new(ctx.clone(), &spec, Optimizer::Sgd, 1, o).unwrap();
    assert!(gpu.uses_fused_mlp(), "{}", ctx.info);
    let mut cpu = ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap();
    let epoch = |b: &mut dyn Backend| {
        b.set_params(&params).unwrap();
        b.set_train_data(&x, &t, rows).unwrap();
        b.begin_epoch(&order).unwrap();
        for s in 0..rows {
            b.step(s, 1, &hyper).unwrap();
        }
        let stats = b.finish_epoch().unwrap();
        let losses: Vec<f32> = stats.iter().map(|s| s.loss_sum as f32).collect();
        (losses, b.params().unwrap())
    };
    let (g_loss, g_params) = epoch(&mut gpu);
    let (c_loss, c_params) = epoch(&mut cpu);
    assert_eq!(g_loss.len(), rows);
    OUTPUT_TOL.assert_close(&format!("{}: per-step losses", ctx.info), &g_loss, &c_loss);
    PARAM_TOL.assert_close(&format!("{}: parameters", ctx.info), &g_params, &c_params);
    report(format!(
        "{}: fused step, 1,100 steps in one epoch ok",
        ctx.info
    ));
}

common::on_each_adapter!(
    fused_step_epoch_past_the_first_stats_capacity_matches_reference,
    fused_step_matches_reference_for_every_activation_and_loss,
    fused_step_matches_reference_on_awkward_widths_and_batches,
    fused_step_batch_spanning_many_workgroups_and_tiles_matches_reference,
    fused_step_matches_reference_for_every_optimizer_with_l2,
    fused_step_uses_relu_derivative_one_at_zero,
    fused_step_reruns_bit_identically,
    fused_step_refuses_wide_layers_and_step_activations,
);
