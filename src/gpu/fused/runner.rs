//! One fused step on host arrays, read back whole: how the tests check the fused step against
//! the reference. Not for training (it creates every buffer per call); behind the
//! `test-support` feature.

use super::{FusedBuffers, FusedMlp, FusedOptions, MAX_WIDTH};
use crate::backend::OptimizerState;
use crate::error::{Error, Result};
use crate::gpu::kernels::StepUniform;
use crate::gpu::{probe, read_staging, GpuContext};
use crate::model::ModelSpec;
use crate::optim::{Optimizer, StepHyper};
use wgpu::util::DeviceExt;

/// What [`run_step`] reads back: (params after, gradient, [loss sum, correct], optimizer state).
pub type StepOutputs = (Vec<f32>, Vec<f32>, [f32; 2], OptimizerState);

/// One fused step on host arrays, with gradient capture: creates every buffer, runs the step
/// and reads back (params after, gradient, [loss sum, correct], optimizer state). For tests.
#[allow(clippy::too_many_arguments)]
pub fn run_step(
    ctx: &GpuContext,
    spec: &ModelSpec,
    optimizer: Optimizer,
    params: &[f32],
    opt_state: &OptimizerState,
    x: &[f32],
    t: &[f32],
    batch: usize,
    hyper: &StepHyper,
) -> Result<StepOutputs> {
    run_step_with(
        ctx,
        spec,
        optimizer,
        params,
        opt_state,
        x,
        t,
        batch,
        hyper,
        FusedOptions {
            capture_gradients: true,
            max_groups: None,
            max_invocations: None,
        },
    )
}

/// [`run_step`] with explicit [`FusedOptions`] (gradients are read back only when captured).
#[allow(clippy::too_many_arguments)]
pub fn run_step_with(
    ctx: &GpuContext,
    spec: &ModelSpec,
    optimizer: Optimizer,
    params: &[f32],
    opt_state: &OptimizerState,
    x: &[f32],
    t: &[f32],
    batch: usize,
    hyper: &StepHyper,
    options: FusedOptions,
) -> Result<StepOutputs> {
    let p = spec.param_count();
    let check = |what: &str, got: usize, want: usize| {
        if got == want {
            Ok(())
        } else {
            Err(Error::Shape {
                what: what.into(),
                expected: want.to_string(),
                got: got.to_string(),
            })
        }
    };
    if batch == 0 {
        return Err(Error::InvalidConfig("batch size must be at least 1".into()));
    }
    check("params", params.len(), p)?;
    check("x", x.len(), batch * spec.inputs())?;
    check("t", t.len(), batch * spec.outputs())?;
    let slots = optimizer.state_slots();
    check(
        "optimizer m",
        opt_state.m.len(),
        if slots >= 1 { p } else { 0 },
    )?;
    check(
        "optimizer v",
        opt_state.v.len(),
        if slots >= 2 { p } else { 0 },
    )?;
    let device = &ctx.device;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let init = |label: &str, data: &[f32], usage: wgpu::BufferUsages| {
        let mut bytes = bytemuck::cast_slice::<f32, u8>(data).to_vec();
        bytes.resize(bytes.len().max(16), 0);
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &bytes,
            usage,
        })
    };
    let rw = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let step: StepUniform = probe::step_uniform(batch, hyper);
    let step_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("fused step"),
        contents: bytemuck::bytes_of(&step),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let x_buf = init("fused x", x, wgpu::BufferUsages::STORAGE);
    let t_buf = init("fused t", t, wgpu::BufferUsages::STORAGE);
    let params_buf = init("fused params", params, rw);
    let m_buf = init("fused m", &opt_state.m, rw);
    let v_buf = init("fused v", &opt_state.v, rw);
    let grads_len = if options.capture_gradients { p } else { 0 };
    let grads_buf = init("fused grads", &vec![0.0; grads_len], rw);
    let stats_buf = init("fused stats", &[0.0, 0.0], rw);
    let bufs = FusedBuffers {
        step: &step_buf,
        x: &x_buf,
        t: &t_buf,
        params: &params_buf,
        opt_m: &m_buf,
        opt_v: &v_buf,
        grads: &grads_buf,
        stats: &stats_buf,
    };
    let fused = FusedMlp::new(ctx, spec, optimizer, batch, &bufs, options).ok_or_else(|| {
        Error::InvalidModel(format!(
            "the fused step does not take {:?} on {}: every width must be ≤ {MAX_WIDTH}, no step activation, and a 4-row tile must fit the workgroup memory",
            spec.sizes, ctx.info
        ))
    })?;
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("fused step"),
            timestamp_writes: None,
        });
        fused.record(&mut pass, batch, 0);
    }
    let readback: Vec<(wgpu::Buffer, usize)> = [
        (&params_buf, p),
        (&grads_buf, grads_len),
        (&stats_buf, 2),
        (&m_buf, opt_state.m.len()),
        (&v_buf, opt_state.v.len()),
    ]
    .iter()
    .map(|(b, len)| {
        let s = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("fused readback"),
            size: b.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_buffer_to_buffer(b, 0, &s, 0, b.size());
        (s, *len)
    })
    .collect();
    ctx.queue.submit([enc.finish()]);
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Gpu(format!("fused step: {e}")));
    }
    let mut out = Vec::new();
    for (s, len) in &readback {
        let mut v = read_staging(ctx, s)?;
        v.truncate(*len);
        out.push(v);
    }
    let v = out.pop().unwrap_or_default();
    let m = out.pop().unwrap_or_default();
    let stats = out.pop().unwrap_or_default();
    let grads = out.pop().unwrap_or_default();
    let params = out.pop().unwrap_or_default();
    Ok((params, grads, [stats[0], stats[1]], OptimizerState { m, v }))
}
