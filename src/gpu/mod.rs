//! The wgpu backend: buffers, pipelines and bind groups made once when a model is placed, then
//! one command encoder and one submit per training step, with no readback inside a step.

pub mod context;
pub mod fused;
pub mod kernels;
pub mod probe;

pub use context::{list_adapters, AdapterInfo, AdapterSelector, GpuContext};

use crate::backend::{Backend, BatchStats, OptimizerState};
use crate::error::{Error, Result};
use crate::model::{Activation, ModelSpec};
use crate::optim::{Optimizer, StepHyper};
use fused::{FusedBuffers, FusedMlp, FusedOptions};
use kernels::{
    groups_1d, Family, Kernels, LossDims, MatmulConfig, MatmulDims, MatmulMode, OneU32, StepUniform,
};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// How the step is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Fuse the optimizer update into the gradient matmul's epilogue (default). Off: the
    /// gradient is written, then a separate optimizer pass runs (the first, unfused schedule).
    pub fused: bool,
    /// Also write every step's gradient to a buffer, for [`Backend::last_gradients`].
    pub capture_gradients: bool,
    /// Split each step into micro-batches of at most this many rows, accumulating the gradient
    /// (same result as one big batch). `None`: only when a batch does not fit one binding.
    pub micro_batch: Option<usize>,
    /// The fully fused step for narrow nets (every width ≤ 128, `fused.rs`): `None` uses it where
    /// it is faster (GPUs; on CPU adapters the layered schedule measured faster), `Some(true)`
    /// wherever the net is eligible, `Some(false)` never.
    pub fused_mlp: Option<bool>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            fused: true,
            capture_gradients: false,
            micro_batch: None,
            fused_mlp: None,
        }
    }
}

/// How a dispatch's workgroup grid follows the step's batch size.
#[derive(Clone, Copy, Debug)]
enum Grid {
    /// A matmul whose rows are the batch, over `cols` columns, in workgroups of `cfg`'s tile.
    BatchRows { cols: u32, cfg: MatmulConfig },
    /// A fixed grid.
    Fixed(u32, u32),
    /// A 1-D kernel with `per_row` invocations per batch row.
    PerRow { per_row: u32 },
}

/// One recorded kernel launch: pipeline, bind group and grid, built once.
struct Dispatch {
    /// For profiles, e.g. `forward 1 (784x512)`.
    label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: Grid,
}

/// One thing a step records: a kernel launch, or the fully fused step (two launches).
enum Item<'a> {
    Kernel(&'a Dispatch),
    Fused(&'a FusedMlp),
}

impl Item<'_> {
    fn label(&self) -> String {
        match self {
            Item::Kernel(d) => d.label.clone(),
            Item::Fused(f) => format!(
                "fully fused step ({} dispatches, {}-row tiles)",
                f.dispatches(),
                f.shape().tile
            ),
        }
    }
}

/// Per-layer activations and deltas, each `[max_batch, out_l]`.
struct LayerBuffers {
    a: wgpu::Buffer,
    z: wgpu::Buffer,
    delta: wgpu::Buffer,
}

/// The training set when it lives on the device, with its gather launches.
struct DeviceData {
    rows: usize,
    /// Bytes of the data, order and gather buffers (released when the data is replaced).
    bytes: u64,
    order: wgpu::Buffer,
    gather: [Dispatch; 2],
    _x: wgpu::Buffer,
    _t: wgpu::Buffer,
}

/// The training set kept on the host (too large for one binding): rows are gathered on the host
/// and uploaded each step.
struct HostData {
    x: Vec<f32>,
    t: Vec<f32>,
    rows: usize,
    order: Vec<u32>,
}

enum TrainData {
    None,
    Device(DeviceData),
    Host(HostData),
}

/// A model placed on a wgpu device.
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    spec: ModelSpec,
    optimizer: Optimizer,
    options: GpuOptions,
    max_batch: usize,
    /// Rows the batch buffers hold; a step of more rows runs as micro-batches of this size.
    micro: usize,
    kernels: Kernels,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    /// The step's gradient summed over micro-batches (micro-batching only).
    grad_total: Option<wgpu::Buffer>,
    /// `grad_total += grads` (micro-batching only).
    accumulate: Option<Dispatch>,
    /// The fully fused step for narrow nets, when it is used.
    fused_mlp: Option<FusedMlp>,
    opt_m: wgpu::Buffer,
    opt_v: wgpu::Buffer,
    x_batch: wgpu::Buffer,
    t_batch: wgpu::Buffer,
    layers: Vec<LayerBuffers>,
    row_stats: wgpu::Buffer,
    stats: wgpu::Buffer,
    stats_capacity: usize,
    step_uniform: wgpu::Buffer,
    forward: Vec<Dispatch>,
    loss: [Dispatch; 2],
    softmax: Option<Dispatch>,
    backward: Vec<Dispatch>,
    update: Option<Dispatch>,
    data: TrainData,
    /// Rows of each stats slot written since `begin_epoch` (a micro-batched step uses several).
    epoch_lens: Vec<usize>,
    /// The step each stats slot belongs to.
    slot_steps: Vec<usize>,
    bytes: u64,
}

const F32: u64 = 4;

impl GpuBackend {
    /// Places `spec` on `ctx` for batches of up to `max_batch` rows: every buffer, pipeline and
    /// bind group is made here, once. Parameters start at zero (use `set_params`).
    pub fn new(
        ctx: Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        options: GpuOptions,
    ) -> Result<Self> {
        spec.validate()?;
        if max_batch == 0 {
            return Err(Error::InvalidConfig("batch size must be at least 1".into()));
        }
        let fits = check_fits(&ctx, spec, max_batch)?;
        let micro = options.micro_batch.unwrap_or(fits).clamp(1, fits);
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let scope_v = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let built = Self::build(ctx.clone(), spec, optimizer, max_batch, micro, options);
        let validation = pollster::block_on(scope_v.pop());
        let oom = pollster::block_on(scope.pop());
        if let Some(e) = oom {
            return Err(Error::DeviceLimit(format!(
                "out of device memory placing the model with batch {max_batch}: {e}; use a smaller --batch"
            )));
        }
        if let Some(e) = validation {
            return Err(Error::Gpu(format!("placing the model failed: {e}")));
        }
        Ok(built)
    }

    fn build(
        ctx: Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        micro: usize,
        mut options: GpuOptions,
    ) -> Self {
        let micro_batching = micro < max_batch;
        // Micro-batches write partial gradients and update once, in a separate pass.
        options.fused &= !micro_batching;
        let rows = micro;
        let device = &ctx.device;
        let kernels = Kernels::new(device);
        let mut bytes = 0u64;
        let mut storage = |label: &str, len: usize| -> wgpu::Buffer {
            let size = (len.max(4) as u64) * F32;
            bytes += size;
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let p = spec.param_count();
        let slots = optimizer.state_slots();
        let params = storage("params", p);
        let grads = storage(
            "grads",
            if options.fused && !options.capture_gradients {
                1
            } else {
                p
            },
        );
        let opt_m = storage("opt_m", if slots >= 1 { p } else { 1 });
        let opt_v = storage("opt_v", if slots >= 2 { p } else { 1 });
        let grad_total = micro_batching.then(|| storage("grad_total", p));
        let x_batch = storage("x_batch", rows * spec.inputs());
        let t_batch = storage("t_batch", rows * spec.outputs());
        let layers: Vec<LayerBuffers> = spec
            .sizes
            .iter()
            .skip(1)
            .map(|&w| LayerBuffers {
                a: storage("a", rows * w),
                z: storage("z", rows * w),
                delta: storage("delta", rows * w),
            })
            .collect();
        let row_stats = storage("row_stats", rows * 2);
        let stats_capacity = 1024;
        let stats = storage("stats", stats_capacity * 2);
        let step_uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step"),
            size: std::mem::size_of::<StepUniform>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let uniform = |data: &[u8]| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("dims"),
                contents: data,
                usage: wgpu::BufferUsages::UNIFORM,
            })
        };

        let layout = spec.layout();
        let opt_code = if options.fused {
            optimizer.kind().code()
        } else {
            0
        };
        let mut forward = Vec::new();
        let mut backward = Vec::new();
        for (l, lay) in layout.iter().enumerate() {
            let act = spec.activations[l];
            let input = if l == 0 { &x_batch } else { &layers[l - 1].z };
            let cfg = kernels.matmul_config(lay.outputs as u32);
            let dims = uniform(bytemuck::bytes_of(&MatmulDims {
                n: lay.outputs as u32,
                k: lay.inputs as u32,
                m: 0,
                alpha: act.alpha(),
                a_off: 0,
                b_off: lay.weight as u32,
                c_off: 0,
                aux_off: 0,
            }));
            forward.push(Dispatch {
                label: format!(
                    "forward {} [B,{}]x[{},{}] + {}",
                    l + 1,
                    lay.inputs,
                    lay.inputs,
                    lay.outputs,
                    act
                ),
                pipeline: kernels.matmul(device, cfg, MatmulMode::Forward, act.code(), 0, false),
                bind_group: kernels.bind_group(
                    device,
                    Family::Matmul,
                    &[
                        &dims,
                        &step_uniform,
                        input,
                        &params,
                        &layers[l].a,
                        &layers[l].z,
                        &opt_m,
                        &opt_v,
                    ],
                ),
                grid: Grid::BatchRows {
                    cols: lay.outputs as u32,
                    cfg,
                },
            });
        }
        for (l, lay) in layout.iter().enumerate().rev() {
            if l > 0 {
                let prev_act = spec.activations[l - 1];
                let cfg = kernels.matmul_config(lay.inputs as u32);
                let dims = uniform(bytemuck::bytes_of(&MatmulDims {
                    n: lay.inputs as u32,
                    k: lay.outputs as u32,
                    m: 0,
                    alpha: prev_act.alpha(),
                    a_off: 0,
                    b_off: lay.weight as u32,
                    c_off: 0,
                    aux_off: 0,
                }));
                backward.push(Dispatch {
                    label: format!(
                        "delta {} [B,{}]x[{},{}]ᵀ ⊙ {}'",
                        l, lay.outputs, lay.inputs, lay.outputs, prev_act
                    ),
                    pipeline: kernels.matmul(
                        device,
                        cfg,
                        MatmulMode::Delta,
                        prev_act.code(),
                        0,
                        false,
                    ),
                    bind_group: kernels.bind_group(
                        device,
                        Family::Matmul,
                        &[
                            &dims,
                            &step_uniform,
                            &layers[l].delta,
                            &params,
                            &layers[l - 1].delta,
                            &layers[l - 1].a,
                            &opt_m,
                            &opt_v,
                        ],
                    ),
                    grid: Grid::BatchRows {
                        cols: lay.inputs as u32,
                        cfg,
                    },
                });
            }
            let input = if l == 0 { &x_batch } else { &layers[l - 1].z };
            let cfg = kernels.matmul_config(lay.outputs as u32);
            let dims = uniform(bytemuck::bytes_of(&MatmulDims {
                n: lay.outputs as u32,
                k: 0,
                m: lay.inputs as u32,
                alpha: 0.0,
                a_off: 0,
                b_off: 0,
                c_off: lay.weight as u32,
                aux_off: 0,
            }));
            backward.push(Dispatch {
                label: format!(
                    "grad{} {} [{},B]x[B,{}]",
                    if options.fused { "+update" } else { "" },
                    l + 1,
                    lay.inputs + 1,
                    lay.outputs
                ),
                pipeline: kernels.matmul(
                    device,
                    cfg,
                    MatmulMode::Grad,
                    0,
                    opt_code,
                    options.capture_gradients,
                ),
                bind_group: kernels.bind_group(
                    device,
                    Family::Matmul,
                    &[
                        &dims,
                        &step_uniform,
                        input,
                        &layers[l].delta,
                        &grads,
                        &params,
                        &opt_m,
                        &opt_v,
                    ],
                ),
                grid: {
                    let (x, y) = cfg.groups(lay.inputs as u32 + 1, lay.outputs as u32);
                    Grid::Fixed(x, y)
                },
            });
        }
        let count = uniform(bytemuck::bytes_of(&OneU32 {
            value: p as u32,
            _pad: [0; 3],
        }));
        let (gx, gy) = groups_1d(p as u64, ctx.limits.max_compute_workgroups_per_dimension);
        let accumulate = grad_total.as_ref().map(|total| Dispatch {
            label: format!("gradient accumulation [{p}]"),
            pipeline: kernels.pipeline(device, Family::Optimizer, "accumulate", &[]),
            bind_group: kernels.bind_group(
                device,
                Family::Optimizer,
                &[&count, &step_uniform, &grads, total, &opt_m, &opt_v],
            ),
            grid: Grid::Fixed(gx, gy),
        });
        let update = (!options.fused).then(|| {
            let source = grad_total.as_ref().unwrap_or(&grads);
            Dispatch {
                label: format!("optimizer update [{p}]"),
                pipeline: kernels.pipeline(
                    device,
                    Family::Optimizer,
                    "update",
                    &[("OPT", optimizer.kind().code() as f64)],
                ),
                bind_group: kernels.bind_group(
                    device,
                    Family::Optimizer,
                    &[&count, &step_uniform, source, &params, &opt_m, &opt_v],
                ),
                grid: Grid::Fixed(gx, gy),
            }
        });
        let last = layers.last().expect("at least one layer");
        let out_act = spec.output_activation();
        let loss_dims = uniform(bytemuck::bytes_of(&LossDims {
            out: spec.outputs() as u32,
            act: out_act.code(),
            loss: spec.loss.code(),
            alpha: out_act.alpha(),
        }));
        let loss_bg = kernels.bind_group(
            device,
            Family::Loss,
            &[
                &loss_dims,
                &step_uniform,
                &last.a,
                &t_batch,
                &last.delta,
                &row_stats,
                &stats,
            ],
        );
        let loss = [
            Dispatch {
                label: "output delta + loss".into(),
                pipeline: kernels.pipeline(device, Family::Loss, "output_delta", &[]),
                bind_group: loss_bg.clone(),
                grid: Grid::PerRow { per_row: 1 },
            },
            Dispatch {
                label: "loss reduction".into(),
                pipeline: kernels.pipeline(device, Family::Loss, "reduce_stats", &[]),
                bind_group: loss_bg,
                grid: Grid::Fixed(1, 1),
            },
        ];
        let softmax = (out_act == Activation::Softmax).then(|| Dispatch {
            label: "softmax".into(),
            pipeline: kernels.pipeline(device, Family::Loss, "softmax_rows", &[]),
            bind_group: kernels.bind_group(
                device,
                Family::Loss,
                &[
                    &loss_dims,
                    &step_uniform,
                    &last.a,
                    &t_batch,
                    &last.z,
                    &row_stats,
                    &stats,
                ],
            ),
            grid: Grid::PerRow { per_row: 1 },
        });
        // Where the fully fused step is faster: on GPUs (tiny-cuda-nn's result; we could not
        // measure one here), and on CPU adapters only for tiny steps, where dispatch overhead
        // dominates (2-16-2 b256: 2.2x faster on lavapipe; 64-128-128-10 b4096: 1.8x slower).
        let cpu_adapter = ctx.info.device_type.eq_ignore_ascii_case("cpu");
        let tiny_step = rows * spec.macs_per_sample() <= 1 << 20;
        let use_fused = options.fused && options.fused_mlp.unwrap_or(!cpu_adapter || tiny_step);
        let fused_mlp = if use_fused {
            FusedMlp::new(
                &ctx,
                spec,
                optimizer,
                rows,
                &FusedBuffers {
                    step: &step_uniform,
                    x: &x_batch,
                    t: &t_batch,
                    params: &params,
                    opt_m: &opt_m,
                    opt_v: &opt_v,
                    grads: &grads,
                    stats: &stats,
                },
                FusedOptions {
                    capture_gradients: options.capture_gradients,
                    max_groups: None,
                },
            )
        } else {
            None
        };
        if let Some(f) = &fused_mlp {
            bytes += f.allocated_bytes();
        }
        GpuBackend {
            ctx,
            spec: spec.clone(),
            optimizer,
            options,
            max_batch,
            micro,
            kernels,
            params,
            grads,
            grad_total,
            accumulate,
            fused_mlp,
            opt_m,
            opt_v,
            x_batch,
            t_batch,
            layers,
            row_stats,
            stats,
            stats_capacity,
            step_uniform,
            forward,
            loss,
            softmax,
            backward,
            update,
            data: TrainData::None,
            epoch_lens: Vec::new(),
            slot_steps: Vec::new(),
            bytes,
        }
    }

    /// Rows per micro-batch (the batch buffers' size): equal to `max_batch` unless a step is
    /// split with gradient accumulation.
    pub fn micro_batch(&self) -> usize {
        self.micro
    }

    /// Whether steps run as the fully fused narrow-MLP kernel.
    pub fn uses_fused_mlp(&self) -> bool {
        self.fused_mlp.is_some()
    }

    /// The device this backend runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The largest batch this backend was placed for.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn storage_buffer(&mut self, label: &str, contents: &[u8]) -> wgpu::Buffer {
        self.bytes += contents.len() as u64;
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            })
    }

    /// Grows the per-step stats buffer to at least `slots`, keeping its contents and rebuilding
    /// the loss bind groups. Doubling, so a long epoch pays for it a logarithmic number of times.
    fn ensure_stats_capacity(&mut self, slots: usize) {
        if slots <= self.stats_capacity {
            return;
        }
        let cap = slots.next_power_of_two();
        let device = &self.ctx.device;
        self.bytes += ((cap - self.stats_capacity) * 2) as u64 * F32;
        let stats = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("stats"),
            size: (cap * 2) as u64 * F32,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("grow stats"),
        });
        enc.copy_buffer_to_buffer(&self.stats, 0, &stats, 0, self.stats.size());
        self.ctx.queue.submit([enc.finish()]);
        self.stats = stats;
        self.stats_capacity = cap;
        let out_act = self.spec.output_activation();
        let loss_dims = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("loss dims"),
            contents: bytemuck::bytes_of(&LossDims {
                out: self.spec.outputs() as u32,
                act: out_act.code(),
                loss: self.spec.loss.code(),
                alpha: out_act.alpha(),
            }),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let last = self.layers.last().expect("at least one layer");
        let bg = self.kernels.bind_group(
            device,
            Family::Loss,
            &[
                &loss_dims,
                &self.step_uniform,
                &last.a,
                &self.t_batch,
                &last.delta,
                &self.row_stats,
                &self.stats,
            ],
        );
        self.loss[0].bind_group = bg.clone();
        self.loss[1].bind_group = bg;
        if let Some(old) = self.fused_mlp.take() {
            self.bytes -= old.allocated_bytes();
            self.fused_mlp = FusedMlp::new(
                &self.ctx,
                &self.spec,
                self.optimizer,
                self.micro,
                &FusedBuffers {
                    step: &self.step_uniform,
                    x: &self.x_batch,
                    t: &self.t_batch,
                    params: &self.params,
                    opt_m: &self.opt_m,
                    opt_v: &self.opt_v,
                    grads: &self.grads,
                    stats: &self.stats,
                },
                FusedOptions {
                    capture_gradients: self.options.capture_gradients,
                    max_groups: None,
                },
            );
            self.bytes += self.fused_mlp.as_ref().map_or(0, |f| f.allocated_bytes());
        }
    }

    /// Runs one training step with each dispatch in its own timed pass and returns the time of
    /// each (label, seconds). Needs timestamp queries; for `bench --profile`, not for training.
    pub fn profile_step(
        &mut self,
        start: usize,
        len: usize,
        hyper: &StepHyper,
    ) -> Result<Vec<(String, f64)>> {
        if !self.ctx.timestamps {
            return Err(Error::Gpu(format!(
                "{} does not support timestamp queries, so kernels cannot be timed",
                self.ctx.info
            )));
        }
        if len > self.micro {
            return Err(Error::InvalidConfig(format!(
                "profile a step of at most {} rows (one micro-batch)",
                self.micro
            )));
        }
        self.ensure_stats_capacity(self.epoch_lens.len() + 1);
        self.write_step(len, self.epoch_lens.len(), start, hyper, 1.0 / len as f32);
        let d = self.step_items();
        let device = &self.ctx.device;
        let count = (d.len() * 2) as u32;
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile readback"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("profile"),
        });
        for (i, x) in d.iter().enumerate() {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&x.label()),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &queries,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            self.record(&mut pass, x, len);
        }
        enc.resolve_query_set(&queries, 0..count, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, count as u64 * 8);
        self.ctx.queue.submit([enc.finish()]);
        let raw = read_staging(&self.ctx, &staging)?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        let period = self.ctx.queue.get_timestamp_period() as f64 * 1e-9;
        let labels: Vec<String> = d.iter().map(|x| x.label()).collect();
        self.slot_steps
            .push(self.slot_steps.last().map_or(0, |s| s + 1));
        self.epoch_lens.push(len);
        Ok(labels
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    l,
                    ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period,
                )
            })
            .collect())
    }

    /// The per-step uniform. `inv_batch` scales the output delta: 1/rows of the whole step, also
    /// for each of its micro-batches.
    fn write_step(
        &self,
        batch: usize,
        step_index: usize,
        row_start: usize,
        h: &StepHyper,
        inv_batch: f32,
    ) {
        let u = StepUniform {
            batch: batch as u32,
            step_index: step_index as u32,
            row_start: row_start as u32,
            _pad1: 0,
            lr: h.lr,
            l2: h.l2,
            momentum: h.momentum,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            bias_correction1: h.bias_correction1,
            bias_correction2: h.bias_correction2,
            inv_batch,
            _pad2: [0.0; 3],
        };
        self.ctx
            .queue
            .write_buffer(&self.step_uniform, 0, bytemuck::bytes_of(&u));
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>, item: &Item<'_>, batch: usize) {
        let d = match item {
            Item::Kernel(d) => d,
            Item::Fused(f) => return f.record(pass, batch),
        };
        let (x, y) = match d.grid {
            Grid::BatchRows { cols, cfg } => cfg.groups(batch as u32, cols),
            Grid::Fixed(x, y) => (x, y),
            Grid::PerRow { per_row } => groups_1d(
                batch as u64 * per_row as u64,
                self.ctx.limits.max_compute_workgroups_per_dimension,
            ),
        };
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// Records and submits `items` over a batch of `batch` rows, in one encoder; `clear` is
    /// zeroed first.
    fn submit(&self, batch: usize, items: &[Item<'_>], clear: Option<&wgpu::Buffer>) {
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            for d in items {
                self.record(&mut pass, d, batch);
            }
        }
        if let Some(b) = clear {
            // recorded after the pass, so put it in an encoder of its own, submitted first
            let mut first =
                self.ctx
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("clear"),
                    });
            first.clear_buffer(b, 0, None);
            self.ctx.queue.submit([first.finish(), enc.finish()]);
            return;
        }
        self.ctx.queue.submit([enc.finish()]);
    }

    /// What one (micro-)batch records, in order: gathers, then the fused step or the layered
    /// forward, loss, backward (with gradient accumulation or the update where separate).
    fn step_items(&self) -> Vec<Item<'_>> {
        let mut v: Vec<Item> = Vec::new();
        if let TrainData::Device(data) = &self.data {
            v.extend(data.gather.iter().map(Item::Kernel));
        }
        if let Some(f) = &self.fused_mlp {
            v.push(Item::Fused(f));
            return v;
        }
        v.extend(self.forward.iter().map(Item::Kernel));
        v.extend(self.loss.iter().map(Item::Kernel));
        v.extend(self.backward.iter().map(Item::Kernel));
        v.extend(self.accumulate.iter().map(Item::Kernel));
        if self.accumulate.is_none() {
            v.extend(self.update.iter().map(Item::Kernel));
        }
        v
    }

    /// Dispatches per training step (gathers included when the data lives on the device).
    pub fn dispatches_per_step(&self) -> usize {
        self.step_items()
            .iter()
            .map(|i| match i {
                Item::Kernel(_) => 1,
                Item::Fused(f) => f.dispatches(),
            })
            .sum()
    }

    /// Reads `count` f32 from `buf` (a readback: only between steps).
    fn read(&self, buf: &wgpu::Buffer, count: usize) -> Result<Vec<f32>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let size = count as u64 * F32;
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
        self.ctx.queue.submit([enc.finish()]);
        read_staging(&self.ctx, &staging)
    }

    fn upload(&self, buf: &wgpu::Buffer, data: &[f32]) {
        if !data.is_empty() {
            self.ctx
                .queue
                .write_buffer(buf, 0, bytemuck::cast_slice(data));
        }
    }

    fn check_rows(&self, what: &str, data: &[f32], rows: usize, width: usize) -> Result<()> {
        if data.len() != rows * width {
            return Err(Error::shape(
                what,
                format!("{rows} rows × {width} = {} values", rows * width),
                data.len(),
            ));
        }
        crate::data::check_finite(what, data, width)
    }

    /// Runs the forward pass (and with targets the loss) over x in chunks of `max_batch`,
    /// calling `after_chunk(chunk_index, start, len, encoder)` to copy results out.
    fn forward_chunks(
        &mut self,
        x: &[f32],
        t: Option<&[f32]>,
        rows: usize,
        mut after_chunk: impl FnMut(&Self, usize, usize, &mut wgpu::CommandEncoder),
    ) {
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        let hyper = self.optimizer.hyper(0.0, 1, 0.0);
        let mut start = 0;
        let mut chunk = 0;
        while start < rows {
            let len = self.micro.min(rows - start);
            self.upload(&self.x_batch, &x[start * inp..(start + len) * inp]);
            if let Some(t) = t {
                self.upload(&self.t_batch, &t[start * out..(start + len) * out]);
            }
            self.write_step(len, chunk, 0, &hyper, 1.0 / len as f32);
            let mut d: Vec<Item> = self.forward.iter().map(Item::Kernel).collect();
            if t.is_some() {
                d.extend(self.loss.iter().map(Item::Kernel));
            } else if let Some(s) = &self.softmax {
                d.push(Item::Kernel(s));
            }
            let mut enc = self
                .ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("forward"),
                });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("forward"),
                    timestamp_writes: None,
                });
                for x in &d {
                    self.record(&mut pass, x, len);
                }
            }
            after_chunk(self, start, len, &mut enc);
            self.ctx.queue.submit([enc.finish()]);
            start += len;
            chunk += 1;
        }
    }
}

/// Maps a MAP_READ buffer and returns its f32 contents.
fn read_staging(ctx: &GpuContext, staging: &wgpu::Buffer) -> Result<Vec<f32>> {
    let slice = staging.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.wait()?;
    rx.recv()
        .map_err(|_| Error::Gpu("readback callback never ran".into()))?
        .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
    let data = {
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
        bytemuck::cast_slice::<u8, f32>(&view).to_vec()
    };
    staging.unmap();
    Ok(data)
}

/// The largest batch up to `batch` whose every binding fits the device's limit: a larger batch
/// runs as micro-batches of this size. Errors when the parameters or a single row do not fit,
/// naming what to change.
fn check_fits(ctx: &GpuContext, spec: &ModelSpec, batch: usize) -> Result<usize> {
    let limit = ctx.limits.max_storage_buffer_binding_size;
    let params = spec.param_count() as u64 * F32;
    if params > limit {
        return Err(Error::DeviceLimit(format!(
            "the model's {} parameters need {params} bytes, over this device's storage binding limit of {limit} bytes ({}); use fewer or narrower layers",
            spec.param_count(),
            ctx.info
        )));
    }
    let mut fits = batch;
    for (l, &w) in spec.sizes.iter().enumerate() {
        let rows = limit / (w as u64 * F32);
        if rows == 0 {
            let what = if l == 0 {
                "an input row".to_string()
            } else {
                format!("one row of layer {l}")
            };
            return Err(Error::DeviceLimit(format!(
                "{what} ({w} values) is over this device's storage binding limit of {limit} bytes ({}); use narrower layers",
                ctx.info
            )));
        }
        fits = fits.min(rows as usize);
    }
    Ok(fits)
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        self.ctx.info.to_string()
    }
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        if params.len() != self.spec.param_count() {
            return Err(Error::shape(
                "parameters",
                self.spec.param_count(),
                params.len(),
            ));
        }
        crate::data::check_finite("parameters", params, params.len())?;
        self.upload(&self.params, params);
        Ok(())
    }
    fn params(&mut self) -> Result<Vec<f32>> {
        self.read(&self.params, self.spec.param_count())
    }
    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        let p = self.spec.param_count();
        let slots = self.optimizer.state_slots();
        let want = |n: usize| if slots >= n { p } else { 0 };
        if state.m.len() != want(1) || state.v.len() != want(2) {
            return Err(Error::shape(
                "optimizer state",
                format!("m: {}, v: {}", want(1), want(2)),
                format!("m: {}, v: {}", state.m.len(), state.v.len()),
            ));
        }
        self.upload(&self.opt_m, &state.m);
        self.upload(&self.opt_v, &state.v);
        Ok(())
    }
    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        let p = self.spec.param_count();
        let slots = self.optimizer.state_slots();
        Ok(OptimizerState {
            m: if slots >= 1 {
                self.read(&self.opt_m, p)?
            } else {
                Vec::new()
            },
            v: if slots >= 2 {
                self.read(&self.opt_v, p)?
            } else {
                Vec::new()
            },
        })
    }

    fn set_train_data(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<()> {
        if rows == 0 {
            return Err(Error::InvalidData("the training set is empty".into()));
        }
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        self.check_rows("inputs", x, rows, inp)?;
        self.check_rows("targets", t, rows, out)?;
        self.ensure_stats_capacity(rows);
        if let TrainData::Device(old) = std::mem::replace(&mut self.data, TrainData::None) {
            self.bytes -= old.bytes;
        }
        let before = self.bytes;
        let limit = self.ctx.limits.max_storage_buffer_binding_size;
        if (rows * inp) as u64 * F32 > limit || (rows * out) as u64 * F32 > limit {
            self.data = TrainData::Host(HostData {
                x: x.to_vec(),
                t: t.to_vec(),
                rows,
                order: Vec::new(),
            });
            return Ok(());
        }
        let data_x = self.storage_buffer("data_x", bytemuck::cast_slice(x));
        let data_t = self.storage_buffer("data_t", bytemuck::cast_slice(t));
        let order = self.storage_buffer("order", bytemuck::cast_slice(&vec![0u32; rows]));
        let device = &self.ctx.device;
        let gather = |src: &wgpu::Buffer, dst: &wgpu::Buffer, width: usize| {
            let dims = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("gather"),
                contents: bytemuck::bytes_of(&OneU32 {
                    value: width as u32,
                    _pad: [0; 3],
                }),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            Dispatch {
                label: format!("gather rows [B,{width}]"),
                pipeline: self
                    .kernels
                    .pipeline(device, Family::Data, "gather_rows", &[]),
                bind_group: self.kernels.bind_group(
                    device,
                    Family::Data,
                    &[&dims, &self.step_uniform, &order, src, dst],
                ),
                grid: Grid::PerRow {
                    per_row: width as u32,
                },
            }
        };
        let gather = [
            gather(&data_x, &self.x_batch, inp),
            gather(&data_t, &self.t_batch, out),
        ];
        self.data = TrainData::Device(DeviceData {
            rows,
            bytes: self.bytes - before,
            order,
            gather,
            _x: data_x,
            _t: data_t,
        });
        Ok(())
    }

    fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        let rows = match &self.data {
            TrainData::None => {
                return Err(Error::InvalidConfig(
                    "no training data: call set_train_data first".into(),
                ))
            }
            TrainData::Device(d) => d.rows,
            TrainData::Host(h) => h.rows,
        };
        if order.len() != rows || order.iter().any(|&i| i as usize >= rows) {
            return Err(Error::InvalidConfig(format!(
                "epoch order must index the {rows} training rows"
            )));
        }
        match &mut self.data {
            TrainData::Device(d) => {
                self.ctx
                    .queue
                    .write_buffer(&d.order, 0, bytemuck::cast_slice(order))
            }
            TrainData::Host(h) => h.order = order.to_vec(),
            TrainData::None => {}
        }
        self.epoch_lens.clear();
        self.slot_steps.clear();
        Ok(())
    }

    fn step(&mut self, start: usize, len: usize, hyper: &StepHyper) -> Result<()> {
        self.spec.check_trainable()?;
        let rows = match &self.data {
            TrainData::Device(d) => d.rows,
            TrainData::Host(h) => h.rows,
            TrainData::None => 0,
        };
        if len == 0 || len > self.max_batch || start + len > rows {
            return Err(Error::InvalidConfig(format!(
                "step rows {start}..{} must be 1..={} rows inside the epoch's {rows}",
                start + len,
                self.max_batch
            )));
        }
        let step_no = self.slot_steps.last().map_or(0, |s| s + 1);
        // One submit per step; a step larger than the batch buffers runs as micro-batches that
        // accumulate the gradient (λW added once), then one update.
        let chunks = len.div_ceil(self.micro);
        for c in 0..chunks {
            let offset = c * self.micro;
            let rows_here = self.micro.min(len - offset);
            self.ensure_stats_capacity(self.epoch_lens.len() + 1);
            if let TrainData::Host(h) = &self.data {
                let (inp, out) = (self.spec.inputs(), self.spec.outputs());
                let mut x = Vec::with_capacity(rows_here * inp);
                let mut t = Vec::with_capacity(rows_here * out);
                for &r in &h.order[start + offset..start + offset + rows_here] {
                    let r = r as usize;
                    x.extend_from_slice(&h.x[r * inp..(r + 1) * inp]);
                    t.extend_from_slice(&h.t[r * out..(r + 1) * out]);
                }
                self.upload(&self.x_batch, &x);
                self.upload(&self.t_batch, &t);
            }
            let mut h = *hyper;
            if c > 0 {
                h.l2 = 0.0;
            }
            self.write_step(
                rows_here,
                self.epoch_lens.len(),
                start + offset,
                &h,
                1.0 / len as f32,
            );
            let mut items = self.step_items();
            if c + 1 == chunks && self.accumulate.is_some() {
                items.extend(self.update.iter().map(Item::Kernel));
            }
            let clear = if c == 0 {
                self.grad_total.as_ref()
            } else {
                None
            };
            self.submit(rows_here, &items, clear);
            self.epoch_lens.push(rows_here);
            self.slot_steps.push(step_no);
        }
        Ok(())
    }

    fn finish_epoch(&mut self) -> Result<Vec<BatchStats>> {
        let lens = std::mem::take(&mut self.epoch_lens);
        let steps = std::mem::take(&mut self.slot_steps);
        let raw = self.read(&self.stats, lens.len() * 2)?;
        let mut out: Vec<BatchStats> = Vec::new();
        for ((c, len), step) in raw.chunks(2).zip(lens).zip(steps) {
            if out.len() <= step {
                out.push(BatchStats::default());
            }
            let s = &mut out[step];
            s.loss_sum += c[0] as f64;
            s.correct += c[1] as u64;
            s.samples += len as u64;
        }
        Ok(out)
    }

    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.check_rows("inputs", x, rows, self.spec.inputs())?;
        let out = self.spec.outputs();
        let size = (rows * out) as u64 * F32;
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("predict"),
            size: size.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.forward_chunks(x, None, rows, |me, start, len, enc| {
            let z = &me.layers.last().expect("a layer").z;
            enc.copy_buffer_to_buffer(
                z,
                0,
                &staging,
                (start * out) as u64 * F32,
                (len * out) as u64 * F32,
            );
        });
        let mut y = read_staging(&self.ctx, &staging)?;
        y.truncate(rows * out);
        Ok(y)
    }

    fn evaluate(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<BatchStats> {
        self.check_rows("inputs", x, rows, self.spec.inputs())?;
        self.check_rows("targets", t, rows, self.spec.outputs())?;
        if !self.epoch_lens.is_empty() {
            return Err(Error::InvalidConfig(
                "evaluate inside an epoch: call finish_epoch first".into(),
            ));
        }
        let chunks = rows.div_ceil(self.micro);
        self.ensure_stats_capacity(chunks);
        self.forward_chunks(x, Some(t), rows, |_, _, _, _| {});
        let raw = self.read(&self.stats, chunks * 2)?;
        let mut s = BatchStats {
            samples: rows as u64,
            ..Default::default()
        };
        for c in raw.chunks(2) {
            s.loss_sum += c[0] as f64;
            s.correct += c[1] as u64;
        }
        Ok(s)
    }

    fn last_gradients(&mut self) -> Result<Vec<f32>> {
        if self.options.fused && !self.options.capture_gradients {
            return Err(Error::InvalidConfig(
                "gradients are not kept by the fused schedule: place the model with GpuOptions { capture_gradients: true, .. }".into(),
            ));
        }
        let grads = self.grad_total.as_ref().unwrap_or(&self.grads);
        self.read(grads, self.spec.param_count())
    }
    fn allocated_bytes(&self) -> u64 {
        self.bytes
    }
}
