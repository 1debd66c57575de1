//! Placing a model on a device: every buffer, pipeline and bind group, made once (and the
//! stats buffer's rare growth, which rebuilds the bind groups that name it).

use super::plan;
use super::*;

mod buffers;
mod dispatches;
mod updates;

use buffers::StepBuffers;
use dispatches::{Builder, LossIo};

impl GpuBackend {
    /// Checks what the device must offer, then [`Self::build`] inside error scopes: running out
    /// of memory or a validation error becomes an error, not a panic.
    pub(super) fn place(
        ctx: Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        options: GpuOptions,
        tuning: Option<plan::Tuning>,
    ) -> Result<Self> {
        spec.validate()?;
        if max_batch == 0 {
            return Err(Error::InvalidConfig("batch size must be at least 1".into()));
        }
        if let Some(g) = options.force_gemm {
            if !g.fits(&ctx.limits) {
                return Err(Error::DeviceLimit(format!(
                    "the GEMM tile {g} needs {} bytes of workgroup memory and {} invocations \
                     (valid: {}); {} offers {} bytes and {}: force a smaller tile",
                    g.workgroup_bytes(),
                    g.invocations(),
                    g.valid(),
                    ctx.info,
                    ctx.limits.max_compute_workgroup_storage_size,
                    ctx.limits.max_compute_invocations_per_workgroup
                )));
            }
        }
        check_params_fit(&ctx, spec)?;
        // Each recorded step has its own uniform slot: bounded so the slots fit one buffer.
        let slots_limit = (ctx.limits.max_buffer_size / 256).clamp(1, MAX_STEPS_PER_SUBMIT as u64);
        if options.steps_per_submit as u64 > slots_limit {
            return Err(Error::InvalidConfig(format!(
                "{} steps per submit: at most {slots_limit} are recorded before one submit on this device",
                options.steps_per_submit
            )));
        }
        let micro = plan::micro_batch_rows(spec, max_batch, &ctx.capabilities(), &options)?;
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let scope_v = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let built = Self::build(
            ctx.clone(),
            spec,
            optimizer,
            max_batch,
            micro,
            options,
            tuning,
        );
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

    /// Places `spec` for (micro-)batches of `micro` rows: the step's buffers, then every
    /// dispatch of the layered step, and the fully fused step where the plan uses it.
    fn build(
        ctx: Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        micro: usize,
        mut options: GpuOptions,
        tuning: Option<plan::Tuning>,
    ) -> Self {
        // Micro-batches and data-parallel replicas write the gradient, then update in a
        // separate pass.
        options.fused = plan::fused_update(micro, max_batch, &options);
        let caps = ctx.capabilities();
        let overrides = tuning.as_ref().map(|t| t.matmuls.clone());
        let support = plan::kernel_support(&caps, &options);
        let kernels = Kernels::new(&ctx.device, support, overrides.unwrap_or_default());
        let micro_batching = micro < max_batch;
        let mut bufs = StepBuffers::allocate(
            &ctx,
            &kernels,
            spec,
            optimizer,
            micro,
            micro_batching,
            &options,
        );
        let b = Builder {
            ctx: &ctx,
            caps: &caps,
            kernels: &kernels,
            spec,
            optimizer,
            options: &options,
            rows: micro,
            bufs: &bufs,
        };
        let dispatches = Dispatches {
            forward: b.forward(),
            loss: b.loss(),
            softmax: b.softmax(),
            backward: b.backward(),
            accumulate: b.accumulate(),
            update: b.update(),
            weight_decay: b.weight_decay(),
        };
        let fused_mlp = Self::fused_step(&ctx, spec, optimizer, micro, options, &tuning, &bufs);
        bufs.bytes += fused_mlp.as_ref().map_or(0, |f| f.allocated_bytes());
        let placed = Placed {
            ctx,
            spec: spec.clone(),
            optimizer,
            options,
            max_batch,
            micro,
            kernels,
            tuning,
            fused_mlp,
        };
        Self::assemble(placed, bufs, dispatches)
    }

    /// The fully fused step where the plan (or the tuner's measurement) uses it for this net.
    fn fused_step(
        ctx: &Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        rows: usize,
        options: GpuOptions,
        tuning: &Option<plan::Tuning>,
        b: &StepBuffers,
    ) -> Option<FusedMlp> {
        let mut fused_options = options;
        fused_options.fused_mlp = options
            .fused_mlp
            .or(tuning.as_ref().and_then(|t| t.fused_mlp));
        if !plan::use_fused_mlp(spec, rows, &ctx.capabilities(), &fused_options) {
            return None;
        }
        let buffers = FusedBuffers {
            step: &b.step_uniform,
            x: &b.x_batch,
            t: &b.t_batch,
            params: &b.params,
            opt_m: &b.opt_m,
            opt_v: &b.opt_v,
            grads: &b.grads,
            stats: &b.stats,
        };
        let fused = FusedOptions {
            capture_gradients: options.capture_gradients,
            max_groups: None,
            max_invocations: None,
        };
        FusedMlp::new(ctx, spec, optimizer, rows, &buffers, fused)
    }

    /// The backend from its parts.
    fn assemble(p: Placed, b: StepBuffers, d: Dispatches) -> Self {
        GpuBackend {
            ctx: p.ctx,
            spec: p.spec,
            optimizer: p.optimizer,
            options: p.options,
            max_batch: p.max_batch,
            micro: p.micro,
            kernels: p.kernels,
            params: b.params,
            grads: b.grads,
            grad_total: b.grad_total,
            accumulate: d.accumulate,
            fused_mlp: p.fused_mlp,
            opt_m: b.opt_m,
            opt_v: b.opt_v,
            x_batch: b.x_batch,
            t_batch: b.t_batch,
            layers: b.layers,
            row_stats: b.row_stats,
            stats: b.stats,
            stats_capacity: b.stats_capacity,
            step_uniform: b.step_uniform,
            step_stride: b.step_stride,
            tuning: p.tuning,
            pending: Default::default(),
            forward: d.forward,
            loss: d.loss,
            softmax: d.softmax,
            backward: d.backward,
            update: d.update,
            weight_decay: d.weight_decay,
            data: TrainData::None,
            epoch_lens: Vec::new(),
            slot_steps: Vec::new(),
            epoch_steps: 0,
            bytes: b.bytes,
        }
    }

    /// Grows the per-step stats buffer to at least `slots`, keeping its contents and rebuilding
    /// the loss bind groups. Doubling, so a long epoch pays for it a logarithmic number of times.
    /// Errors (before creating anything) when `slots` do not fit one storage binding.
    pub(super) fn ensure_stats_capacity(&mut self, slots: usize) -> Result<()> {
        if slots <= self.stats_capacity {
            return Ok(());
        }
        let limit = self.ctx.max_binding_bytes();
        let max_slots = self.max_stats_slots();
        if slots > max_slots {
            return Err(Error::DeviceLimit(format!(
                "{slots} steps in one epoch need {} of per-step statistics, over this device's storage binding limit of {limit} bytes ({}): use a larger --batch, so that an epoch has at most {max_slots} steps",
                crate::limits::show_bytes(crate::limits::bytes_of(&[slots, 2], F32)),
                self.ctx.info
            )));
        }
        self.flush(); // queued steps write the old buffer, whose contents are copied below
        let cap = slots.next_power_of_two().min(max_slots);
        let ctx = self.ctx.clone();
        ctx.scoped("growing the per-step statistics buffer", || {
            self.grow_stats(cap)
        })
    }

    /// The most per-step stats slots one binding holds.
    pub(super) fn max_stats_slots(&self) -> usize {
        usize::try_from(self.ctx.max_binding_bytes() / (2 * F32)).unwrap_or(usize::MAX)
    }

    fn grow_stats(&mut self, cap: usize) {
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
        let io = LossIo {
            step: &self.step_uniform,
            last: self.layers.last().expect("at least one layer"),
            targets: &self.t_batch,
            row_stats: &self.row_stats,
            stats: &self.stats,
        };
        let bg = io.bind_group(device, &self.kernels, &self.spec, false);
        self.loss[0].bind_group = bg.clone();
        self.loss[1].bind_group = bg;
        if let Some(fused) = &mut self.fused_mlp {
            fused.rebind_stats(device, &self.stats);
        }
    }
}

/// What placement decided besides the step's buffers and dispatches.
struct Placed {
    ctx: Arc<GpuContext>,
    spec: ModelSpec,
    optimizer: Optimizer,
    options: GpuOptions,
    max_batch: usize,
    micro: usize,
    kernels: Kernels,
    tuning: Option<plan::Tuning>,
    fused_mlp: Option<FusedMlp>,
}

/// The layered step's dispatches, built once.
struct Dispatches {
    forward: Vec<Dispatch>,
    loss: [Dispatch; 2],
    softmax: Option<Dispatch>,
    backward: Vec<Dispatch>,
    accumulate: Option<Dispatch>,
    update: Option<Dispatch>,
    weight_decay: Vec<Dispatch>,
}

/// All parameters must fit one binding: the error names the layer that takes the most of it.
fn check_params_fit(ctx: &GpuContext, spec: &ModelSpec) -> Result<()> {
    let limit = ctx.max_binding_bytes();
    let params = crate::limits::bytes_of(&[spec.param_count()], F32);
    if params > limit {
        // All parameters live in one binding: name the layer that takes the most of it.
        let (l, w) = spec
            .sizes
            .windows(2)
            .enumerate()
            .max_by_key(|(_, w)| w[0] * w[1])
            .expect("at least one layer");
        return Err(Error::DeviceLimit(format!(
            "the model's {} parameters need {params} bytes, over this device's storage binding limit of {limit} bytes ({}); the largest is layer {} ({}x{}, {}): use fewer or narrower layers",
            spec.param_count(),
            ctx.info,
            l + 1,
            w[0],
            w[1],
            crate::limits::show_bytes(crate::limits::bytes_of(&[w[0] * w[1] + w[1]], F32)),
        )));
    }
    Ok(())
}
