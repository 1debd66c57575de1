//! Timing one matmul launch for the tuner: by timestamp queries or by the wall clock around a
//! submit and `device.poll`, with its pipelines compiled once per launch shape.

use super::super::kernels::{
    Kernels, MatmulBindings, MatmulConfig, MatmulDims, MatmulMode, MatmulVariant, StepUniform,
};
use super::super::{plan, GpuContext};
use crate::error::Result;
use std::sync::Arc;
use std::time::Instant;

/// A compiled candidate: launch shape, form, split-K.
type PipelineKey = (MatmulConfig, MatmulMode, bool);

/// Times one matmul launch by timestamp queries or the wall clock.
pub(super) struct Timer<'a> {
    ctx: &'a GpuContext,
    timestamps: bool,
    /// Pipelines compiled so far: the dims are a uniform, so matmuls of one form share them
    /// (compiling dominates tuning on software adapters, and costs milliseconds on GPUs).
    pipelines: std::collections::HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>,
}

impl<'a> Timer<'a> {
    pub(super) fn new(ctx: &'a GpuContext, trust_timestamps: bool) -> Self {
        Timer {
            ctx,
            timestamps: trust_timestamps && ctx.timestamps,
            pipelines: Default::default(),
        }
    }

    pub(super) fn name(&self) -> &'static str {
        if self.timestamps {
            "timestamps"
        } else {
            "wall-clock"
        }
    }

    /// Seconds of the best of `reps` runs (after one warm-up) of `variant` for the matmul of
    /// `mode` with `dims`, over an output of `grid` (rows, columns) at batch `rows`, on zeroed
    /// buffers of the step's sizes; gradients split K as the plan would for this tile.
    #[allow(clippy::too_many_arguments)] // the matmul's full description
    pub(super) fn time(
        &mut self,
        kernels: &Kernels,
        caps: &super::super::device::Capabilities,
        mode: MatmulMode,
        dims: &MatmulDims,
        grid: (u32, u32),
        rows: usize,
        variant: MatmulVariant,
        reps: u32,
    ) -> Result<f64> {
        let device = &self.ctx.device;
        let cfg = plan::launch_shape(variant, dims);
        let (gx, gy) = cfg.groups(grid.0, grid.1);
        let slices = match mode {
            MatmulMode::Grad => plan::split_k_slices(caps, gx * gy, rows),
            _ => 1,
        };
        let pipeline = self.pipeline(kernels, cfg, mode, slices > 1)?;
        let storage = operands(device, mode, dims, rows, slices);
        let [lhs, rhs, out, aux, opt_m, opt_v] = &storage;
        let step = StepUniform {
            batch: rows as u32,
            inv_batch: 1.0 / rows.max(1) as f32,
            ..Default::default()
        };
        let bindings = MatmulBindings {
            dims: &uniform(device, bytemuck::bytes_of(dims)),
            step: &uniform(device, bytemuck::bytes_of(&step)),
            lhs,
            rhs,
            out,
            aux,
            opt_m,
            opt_v,
        };
        let bind_group = kernels.bind_group(device, cfg.family(), &bindings);
        let dispatch = |pass: &mut wgpu::ComputePass<'_>| {
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[0]);
            pass.dispatch_workgroups(gx, gy, slices);
        };
        self.best_of(&dispatch, reps)
    }

    /// The pipeline of a candidate, compiled on first use.
    fn pipeline(
        &mut self,
        kernels: &Kernels,
        cfg: MatmulConfig,
        mode: MatmulMode,
        split_k: bool,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = (cfg, mode, split_k);
        if let Some(p) = self.pipelines.get(&key) {
            return Ok(p.clone());
        }
        let p = self.ctx.scoped("compiling a tuner candidate", || {
            kernels.matmul(&self.ctx.device, cfg, mode, 0, 0, true, split_k)
        })?;
        let p = Arc::new(p);
        self.pipelines.insert(key, p.clone());
        Ok(p)
    }

    /// Seconds of the best of `reps` runs of `dispatch` after one warm-up (which is also the
    /// answer where `reps` is at most 1).
    fn best_of(&self, dispatch: &dyn Fn(&mut wgpu::ComputePass<'_>), reps: u32) -> Result<f64> {
        let mut best = self.wall(dispatch)?;
        if reps > 1 {
            for _ in 0..reps {
                let t = if self.timestamps {
                    self.stamped(dispatch)?
                } else {
                    self.wall(dispatch)?
                };
                best = best.min(t);
            }
        }
        Ok(best)
    }

    /// One dispatch submitted alone, timed from submit to `device.poll` returning.
    fn wall(&self, dispatch: &dyn Fn(&mut wgpu::ComputePass<'_>)) -> Result<f64> {
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("tune"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("tune"),
                timestamp_writes: None,
            });
            dispatch(&mut pass);
        }
        let t = Instant::now();
        self.ctx.queue.submit([enc.finish()]);
        self.ctx.wait()?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// One dispatch between two timestamps.
    fn stamped(&self, dispatch: &dyn Fn(&mut wgpu::ComputePass<'_>)) -> Result<f64> {
        let device = &self.ctx.device;
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("tune"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tune resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tune readback"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("tune"),
        });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("tune"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &queries,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            dispatch(&mut pass);
        }
        enc.resolve_query_set(&queries, 0..2, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, 16);
        self.ctx.queue.submit([enc.finish()]);
        let raw = super::super::read_staging(self.ctx, &staging)?;
        let bytes: &[u8] = bytemuck::cast_slice(&raw);
        let tick = |i: usize| bytemuck::pod_read_unaligned::<u64>(&bytes[8 * i..8 * i + 8]);
        let period = self.ctx.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(tick(1).saturating_sub(tick(0)) as f64 * period)
    }
}

/// Zeroed operands of the step's sizes for the matmul of `mode` with `dims` at batch `rows`:
/// lhs, rhs, out, out2, opt_m, opt_v (matmul.wgsl bindings 2-7); split-K partials in `out`.
fn operands(
    device: &wgpu::Device,
    mode: MatmulMode,
    dims: &MatmulDims,
    rows: usize,
    slices: u32,
) -> [wgpu::Buffer; 6] {
    let (n, k, m, r) = (dims.n as u64, dims.k as u64, dims.m as u64, rows as u64);
    let b_end = dims.b_off as u64;
    // In floats.
    let sizes: [u64; 6] = match mode {
        MatmulMode::Forward => [r * k, b_end + (k + 1) * n, r * n, r * n, 1, 1],
        MatmulMode::Delta => [r * k, b_end + (n + 1) * k, r * n, r * n, 1, 1],
        MatmulMode::Grad => {
            let p = (m + 1) * n;
            [r * m, r * n, slices as u64 * p, p, p, p]
        }
    };
    sizes.map(|len| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tune operand"),
            size: len.max(4) * 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    })
}

/// A uniform buffer holding `bytes`.
fn uniform(device: &wgpu::Device, bytes: &[u8]) -> wgpu::Buffer {
    wgpu::util::DeviceExt::create_buffer_init(
        device,
        &wgpu::util::BufferInitDescriptor {
            label: Some("tune uniform"),
            contents: bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        },
    )
}
