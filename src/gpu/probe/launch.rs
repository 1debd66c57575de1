//! One probe launch: host arrays into buffers bound as the kernel family's bindings, one
//! dispatch, every storage buffer read back.

use crate::error::{Error, Result};
use crate::gpu::kernels::{
    DataBindings, Family, FamilyBindings, Kernels, LossBindings, MatmulBindings, OptimizerBindings,
    StepUniform,
};
use crate::gpu::{read_staging, GpuContext};
use wgpu::util::DeviceExt;

/// One kernel launch of a probe: which entry point, with what constants, dims and grid.
pub(super) struct Launch<'a> {
    /// The kernel's family.
    pub family: Family,
    /// Its entry point.
    pub entry: &'a str,
    /// Its override constants.
    pub constants: &'a [(&'a str, f64)],
    /// Binding 0's contents.
    pub dims: &'a [u8],
    /// Workgroups.
    pub grid: (u32, u32, u32),
}

/// [`run`](super::run) with the device's modules and layouts already built.
pub(super) fn run_with(
    kernels: &Kernels,
    ctx: &GpuContext,
    launch: &Launch,
    step: &StepUniform,
    storage: &[&[u8]],
) -> Result<Vec<Vec<f32>>> {
    let device = &ctx.device;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let pipeline = kernels.pipeline(device, launch.family, launch.entry, launch.constants);
    let dims = uniform(device, launch.dims);
    let step = uniform(device, bytemuck::bytes_of(step));
    let bufs: Vec<wgpu::Buffer> = storage.iter().map(|d| upload(device, d)).collect();
    let bind_group = bind_probe(kernels, device, launch, &dims, &step, &bufs)?;
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(launch.entry),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[0]);
        let (x, y, z) = launch.grid;
        pass.dispatch_workgroups(x, y, z);
    }
    let staging: Vec<wgpu::Buffer> = bufs.iter().map(|b| copy_out(device, &mut enc, b)).collect();
    ctx.queue.submit([enc.finish()]);
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Gpu(format!("{}: {e}", launch.entry)));
    }
    staging
        .iter()
        .zip(storage)
        .map(|(s, data)| {
            let mut v = read_staging(ctx, s)?;
            v.truncate(data.len() / 4);
            Ok(v)
        })
        .collect()
}

/// A uniform buffer holding `data`.
fn uniform(device: &wgpu::Device, data: &[u8]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("probe uniform"),
        contents: data,
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

/// A storage buffer holding `data` (at least 16 bytes), readable back.
fn upload(device: &wgpu::Device, data: &[u8]) -> wgpu::Buffer {
    let mut bytes = data.to_vec();
    bytes.resize(bytes.len().max(16), 0);
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("probe storage"),
        contents: &bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    })
}

/// A staging buffer that `enc` fills with `b`'s contents.
fn copy_out(
    device: &wgpu::Device,
    enc: &mut wgpu::CommandEncoder,
    b: &wgpu::Buffer,
) -> wgpu::Buffer {
    let s = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("probe readback"),
        size: b.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    enc.copy_buffer_to_buffer(b, 0, &s, 0, b.size());
    s
}

/// Storage buffers a kernel of `family` binds (its bindings past the dims and the step).
fn storage_bindings(family: Family) -> usize {
    let own = match family {
        Family::Matmul | Family::MatmulGemm => MatmulBindings::SLOTS.len(),
        Family::Loss => LossBindings::SLOTS.len(),
        Family::Optimizer => OptimizerBindings::SLOTS.len(),
        Family::Data => DataBindings::SLOTS.len(),
    };
    own - 2
}

/// The launch's bind group: `dims`, `step`, then the storage buffers `bufs` as the family's
/// bindings from 2 on (the probe's storage order is the shader's binding order).
fn bind_probe(
    kernels: &Kernels,
    device: &wgpu::Device,
    launch: &Launch,
    dims: &wgpu::Buffer,
    step: &wgpu::Buffer,
    bufs: &[wgpu::Buffer],
) -> Result<wgpu::BindGroup> {
    let family = launch.family;
    match (family, bufs) {
        (Family::Matmul | Family::MatmulGemm, [lhs, rhs, out, aux, opt_m, opt_v]) => Ok(kernels
            .bind_group(
                device,
                family,
                &MatmulBindings {
                    dims,
                    step,
                    lhs,
                    rhs,
                    out,
                    aux,
                    opt_m,
                    opt_v,
                },
            )),
        (Family::Loss, [pre, targets, delta, row_stats, stats]) => Ok(kernels.bind_group(
            device,
            family,
            &LossBindings {
                dims,
                step,
                pre,
                targets,
                delta,
                row_stats,
                stats,
            },
        )),
        (Family::Optimizer, [grads, params, opt_m, opt_v]) => Ok(kernels.bind_group(
            device,
            family,
            &OptimizerBindings {
                count: dims,
                step,
                grads,
                params,
                opt_m,
                opt_v,
            },
        )),
        (Family::Data, [order, src, dst]) => Ok(kernels.bind_group(
            device,
            family,
            &DataBindings {
                gather: dims,
                step,
                order,
                src,
                dst,
            },
        )),
        _ => Err(Error::Gpu(format!(
            "{} takes {} storage buffers, got {}",
            launch.entry,
            storage_bindings(family),
            bufs.len()
        ))),
    }
}
