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
    let host = HostStep {
        spec,
        params,
        opt_state,
        x,
        t,
        batch,
    };
    host.check(optimizer)?;
    let device = &ctx.device;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let bufs = host.upload(device, hyper, options.capture_gradients);
    let fused = FusedMlp::new(ctx, spec, optimizer, batch, &bufs.bind(), options).ok_or_else(|| {
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
    let readback = bufs.copy_out(&host, device, &mut enc);
    ctx.queue.submit([enc.finish()]);
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Gpu(format!("fused step: {e}")));
    }
    read_outputs(ctx, &readback)
}

/// The host arrays of one step.
struct HostStep<'a> {
    spec: &'a ModelSpec,
    /// params: [param_count]
    params: &'a [f32],
    opt_state: &'a OptimizerState,
    /// x: [batch, inputs]
    x: &'a [f32],
    /// t: [batch, outputs]
    t: &'a [f32],
    batch: usize,
}

impl HostStep<'_> {
    /// Refuses an empty batch and arrays whose lengths do not fit the model, the batch and
    /// `optimizer`'s state slots.
    fn check(&self, optimizer: Optimizer) -> Result<()> {
        let (spec, batch, p) = (self.spec, self.batch, self.spec.param_count());
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
        check("params", self.params.len(), p)?;
        check("x", self.x.len(), batch * spec.inputs())?;
        check("t", self.t.len(), batch * spec.outputs())?;
        let slots = optimizer.state_slots();
        let m = &self.opt_state.m;
        check("optimizer m", m.len(), if slots >= 1 { p } else { 0 })?;
        let v = &self.opt_state.v;
        check("optimizer v", v.len(), if slots >= 2 { p } else { 0 })
    }

    /// Every buffer of the step, filled from the host arrays (the gradient zeroed, and empty
    /// unless `capture_gradients`).
    fn upload(
        &self,
        device: &wgpu::Device,
        hyper: &StepHyper,
        capture_gradients: bool,
    ) -> StepBuffers {
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
        let step: StepUniform = probe::step_uniform(self.batch, hyper);
        let grads_len = if capture_gradients {
            self.spec.param_count()
        } else {
            0
        };
        StepBuffers {
            step: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("fused step"),
                contents: bytemuck::bytes_of(&step),
                usage: wgpu::BufferUsages::UNIFORM,
            }),
            x: init("fused x", self.x, wgpu::BufferUsages::STORAGE),
            t: init("fused t", self.t, wgpu::BufferUsages::STORAGE),
            params: init("fused params", self.params, rw),
            m: init("fused m", &self.opt_state.m, rw),
            v: init("fused v", &self.opt_state.v, rw),
            grads: init("fused grads", &vec![0.0; grads_len], rw),
            stats: init("fused stats", &[0.0, 0.0], rw),
            grads_len,
        }
    }
}

/// The step's buffers, owned.
struct StepBuffers {
    step: wgpu::Buffer,
    x: wgpu::Buffer,
    t: wgpu::Buffer,
    params: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    grads: wgpu::Buffer,
    /// [loss sum, correct]
    stats: wgpu::Buffer,
    /// The gradient's length: the parameters' where captured, else 0.
    grads_len: usize,
}

impl StepBuffers {
    /// The buffers as the fused step binds them.
    fn bind(&self) -> FusedBuffers<'_> {
        FusedBuffers {
            step: &self.step,
            x: &self.x,
            t: &self.t,
            params: &self.params,
            opt_m: &self.m,
            opt_v: &self.v,
            grads: &self.grads,
            stats: &self.stats,
        }
    }

    /// Records copies of the outputs (params, gradient, stats, m, v) into staging buffers,
    /// returned with the length of each to keep.
    fn copy_out(
        &self,
        host: &HostStep<'_>,
        device: &wgpu::Device,
        enc: &mut wgpu::CommandEncoder,
    ) -> Vec<(wgpu::Buffer, usize)> {
        [
            (&self.params, host.spec.param_count()),
            (&self.grads, self.grads_len),
            (&self.stats, 2),
            (&self.m, host.opt_state.m.len()),
            (&self.v, host.opt_state.v.len()),
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
        .collect()
    }
}

/// Reads the staging buffers of [`StepBuffers::copy_out`] back as the step's outputs.
fn read_outputs(ctx: &GpuContext, readback: &[(wgpu::Buffer, usize)]) -> Result<StepOutputs> {
    let mut out = Vec::new();
    for (s, len) in readback {
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
