//! Placing a model on a device: every buffer, pipeline and bind group, made once (and the
//! stats buffer's rare growth, which rebuilds the bind groups that name it).

use super::plan;
use super::*;

impl GpuBackend {
    pub(super) fn build(
        ctx: Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        micro: usize,
        mut options: GpuOptions,
        tuning: Option<plan::Tuning>,
    ) -> Self {
        let micro_batching = micro < max_batch;
        // Micro-batches and data-parallel replicas write the gradient, then update in a
        // separate pass.
        options.fused = plan::fused_update(micro, max_batch, &options);
        let rows = micro;
        let device = &ctx.device;
        let caps = ctx.capabilities();
        let overrides = tuning.as_ref().map(|t| t.matmuls.clone());
        let kernels = Kernels::new(
            device,
            plan::kernel_support(&caps, &options),
            overrides.unwrap_or_default(),
        );
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
        let grad_dims = |l: &crate::model::LayerLayout| MatmulDims {
            n: l.outputs as u32,
            k: 0,
            m: l.inputs as u32,
            alpha: 0.0,
            a_off: 0,
            b_off: 0,
            c_off: l.weight as u32,
            aux_off: 0,
        };
        let grad_cfg = |l: &crate::model::LayerLayout| {
            kernels.matmul_config_for(MatmulMode::Grad, &grad_dims(l))
        };
        // One buffer for every split-K layer's partial sums: [slices, in + 1, out] at most.
        let partials_len = spec
            .layout()
            .iter()
            .map(|l| {
                let (gx, gy) = grad_cfg(l).groups(l.inputs as u32 + 1, l.outputs as u32);
                let slices = plan::split_k_slices(&caps, gx * gy, rows) as usize;
                if slices > 1 {
                    slices * (l.inputs + 1) * l.outputs
                } else {
                    0
                }
            })
            .max()
            .unwrap_or(0);
        let partials = (partials_len > 0).then(|| storage("split-K partials", partials_len));
        // One StepUniform slot per step of a submit, at the device's uniform offset alignment.
        let align = ctx.limits.min_uniform_buffer_offset_alignment as u64;
        let step_stride = kernels::STEP_UNIFORM_SIZE.div_ceil(align) * align;
        let step_uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step"),
            size: step_stride.saturating_mul(options.steps_per_submit.max(1) as u64),
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
        let forward_dims = |l: usize| MatmulDims {
            n: layout[l].outputs as u32,
            k: layout[l].inputs as u32,
            m: 0,
            alpha: spec.activations[l].alpha(),
            a_off: 0,
            b_off: layout[l].weight as u32,
            c_off: 0,
            aux_off: 0,
        };
        // δ_{l-1} = δ_l · W_lᵀ ⊙ φ'(a_{l-1}), for l ≥ 1
        let delta_dims = |l: usize| MatmulDims {
            n: layout[l].inputs as u32,
            k: layout[l].outputs as u32,
            m: 0,
            alpha: spec.activations[l - 1].alpha(),
            a_off: 0,
            b_off: layout[l].weight as u32,
            c_off: 0,
            aux_off: 0,
        };
        let input_of = |l: usize| if l == 0 { &x_batch } else { &layers[l - 1].z };
        let bind = |f: Family, buffers: &[&wgpu::Buffer]| kernels.bind_group(device, f, buffers);
        let mut forward = Vec::new();
        let mut backward = Vec::new();
        for (l, lay) in layout.iter().enumerate() {
            let act = spec.activations[l];
            let input = input_of(l);
            let fdims = forward_dims(l);
            let cfg = kernels.matmul_config_for(MatmulMode::Forward, &fdims);
            let dims = uniform(bytemuck::bytes_of(&fdims));
            forward.push(Dispatch {
                label: format!(
                    "forward {} [B,{}]x[{},{}] + {}",
                    l + 1,
                    lay.inputs,
                    lay.inputs,
                    lay.outputs,
                    act
                ),
                pipeline: kernels.matmul(
                    device,
                    cfg,
                    MatmulMode::Forward,
                    act.code(),
                    0,
                    false,
                    false,
                ),
                bind_group: bind(
                    cfg.family(),
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
                let ddims = delta_dims(l);
                let cfg = kernels.matmul_config_for(MatmulMode::Delta, &ddims);
                let dims = uniform(bytemuck::bytes_of(&ddims));
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
                        false,
                    ),
                    bind_group: bind(
                        cfg.family(),
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
            let input = input_of(l);
            let cfg = grad_cfg(lay);
            let dims = uniform(bytemuck::bytes_of(&grad_dims(lay)));
            // Split K (the batch) where the gradient has too few tiles to fill the device.
            let (gx, gy) = cfg.groups(lay.inputs as u32 + 1, lay.outputs as u32);
            let slices = plan::split_k_slices(&caps, gx * gy, rows);
            let label = format!(
                "grad{} {} [{},B]x[B,{}]",
                if options.fused { "+update" } else { "" },
                l + 1,
                lay.inputs + 1,
                lay.outputs
            );
            let grad_pipeline = |split: bool| {
                kernels.matmul(
                    device,
                    cfg,
                    MatmulMode::Grad,
                    0,
                    opt_code,
                    options.capture_gradients,
                    split,
                )
            };
            if slices == 1 {
                backward.push(Dispatch {
                    label,
                    pipeline: grad_pipeline(false),
                    bind_group: bind(
                        cfg.family(),
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
                    grid: Grid::Fixed(gx, gy),
                });
            } else {
                let partials = partials.as_ref().expect("allocated for split layers");
                backward.push(Dispatch {
                    label: format!("{label} split-K ×{slices}"),
                    pipeline: grad_pipeline(true),
                    bind_group: bind(
                        cfg.family(),
                        &[
                            &dims,
                            &step_uniform,
                            input,
                            &layers[l].delta,
                            partials,
                            &params,
                            &opt_m,
                            &opt_v,
                        ],
                    ),
                    grid: Grid::Split(gx, gy, slices),
                });
                let reduce_dims = uniform(bytemuck::bytes_of(&MatmulDims {
                    n: lay.outputs as u32,
                    k: slices,
                    m: lay.inputs as u32,
                    alpha: 0.0,
                    a_off: 0,
                    b_off: 0,
                    c_off: lay.weight as u32,
                    aux_off: 0,
                }));
                let elems = ((lay.inputs + 1) * lay.outputs) as u64;
                let (rx, ry) = groups_1d(elems, ctx.limits.max_compute_workgroups_per_dimension);
                backward.push(Dispatch {
                    label: format!(
                        "grad {} split-K reduction{}",
                        l + 1,
                        if options.fused { " +update" } else { "" }
                    ),
                    pipeline: kernels.pipeline(
                        device,
                        Family::Matmul,
                        "grad_reduce",
                        &[
                            ("MODE", MatmulMode::Grad as u32 as f64),
                            ("OPT", opt_code as f64),
                            ("KEEP_GRAD", options.capture_gradients as u32 as f64),
                        ],
                    ),
                    bind_group: kernels.bind_group(
                        device,
                        Family::Matmul,
                        &[
                            &reduce_dims,
                            &step_uniform,
                            partials,
                            &layers[l].delta,
                            &grads,
                            &params,
                            &opt_m,
                            &opt_v,
                        ],
                    ),
                    grid: Grid::Fixed(rx, ry),
                });
            }
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
        let weight_decay = if options.data_parallel {
            let target = grad_total.as_ref().unwrap_or(&grads);
            layout
                .iter()
                .map(|l| {
                    let n = l.weight_len();
                    let range = uniform(bytemuck::bytes_of(&kernels::Range {
                        count: n as u32,
                        offset: l.weight as u32,
                        _pad: [0; 2],
                    }));
                    let (gx, gy) =
                        groups_1d(n as u64, ctx.limits.max_compute_workgroups_per_dimension);
                    Dispatch {
                        label: format!("weight decay [{n}]"),
                        pipeline: kernels.pipeline(device, Family::Optimizer, "weight_decay", &[]),
                        bind_group: kernels.bind_group(
                            device,
                            Family::Optimizer,
                            &[&range, &step_uniform, &params, target, &opt_m, &opt_v],
                        ),
                        grid: Grid::Fixed(gx, gy),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
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
        let mut fused_options = options;
        fused_options.fused_mlp = options
            .fused_mlp
            .or(tuning.as_ref().and_then(|t| t.fused_mlp));
        let use_fused = plan::use_fused_mlp(spec, rows, &caps, &fused_options);
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
                    max_invocations: None,
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
            step_stride,
            tuning,
            pending: Default::default(),
            forward,
            loss,
            softmax,
            backward,
            update,
            weight_decay,
            data: TrainData::None,
            epoch_lens: Vec::new(),
            slot_steps: Vec::new(),
            epoch_steps: 0,
            bytes,
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
                    max_invocations: None,
                },
            );
            self.bytes += self.fused_mlp.as_ref().map_or(0, |f| f.allocated_bytes());
        }
    }
}
