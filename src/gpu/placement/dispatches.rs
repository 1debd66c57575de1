//! The layered step's dispatches, built once at placement: forward, loss, backward (delta,
//! gradient with split-K and its reduction) and the separate update passes.

use super::super::*;
use super::buffers::StepBuffers;
use crate::gpu::device::Capabilities;
use crate::model::LayerLayout;
use kernels::{LossBindings, MatmulBindings, OptimizerBindings};

/// The gradient matmul of one layer: `g[in + 1, out] = [x | 1]ᵀ · δ` over the batch.
pub(super) struct GradLaunch {
    /// Its dims: `m = in`, `n = out`, written at the layer's weights (`c_off`).
    pub dims: MatmulDims,
    /// Its launch shape.
    pub cfg: MatmulConfig,
    /// Workgroups over the `[in + 1, out]` output.
    pub groups: (u32, u32),
    /// K (the batch) split over this many slices where the output has too few tiles to fill
    /// the device; 1: no split.
    pub slices: u32,
}

/// The gradient launch of layer `l` for `rows`-row batches.
pub(super) fn grad_launch(
    kernels: &Kernels,
    caps: &Capabilities,
    l: &LayerLayout,
    rows: usize,
) -> GradLaunch {
    let dims = MatmulDims::grad(l);
    let cfg = kernels.matmul_config_for(MatmulMode::Grad, &dims);
    let groups = cfg.groups(l.inputs as u32 + 1, l.outputs as u32);
    let slices = plan::split_k_slices(caps, groups.0 * groups.1, rows);
    GradLaunch {
        dims,
        cfg,
        groups,
        slices,
    }
}

/// A forward or delta matmul of the layered step, with its activation epilogue.
struct EpilogueMatmul<'a> {
    /// The dispatch's label in profiles.
    label: String,
    /// Forward (`lhs · W`, φ) or delta (`lhs · Wᵀ`, φ').
    mode: MatmulMode,
    /// The activation whose φ (forward) or φ' (delta) the epilogue applies.
    act: Activation,
    /// Its dims ([`MatmulDims::forward`] or [`MatmulDims::delta`]): output columns `n`.
    dims: MatmulDims,
    /// `[B, k]`: x or z_{l-1} (forward), δ_l (delta).
    lhs: &'a wgpu::Buffer,
    /// `[B, cols]`: a (forward), δ_{l-1} (delta).
    out: &'a wgpu::Buffer,
    /// `[B, cols]`: z written (forward), a_{l-1} read (delta).
    aux: &'a wgpu::Buffer,
}

/// The buffers the loss kernels bind besides their dims.
pub(super) struct LossIo<'a> {
    /// The step uniform.
    pub step: &'a wgpu::Buffer,
    /// The output layer: a is read, δ (or z, for softmax) written.
    pub last: &'a LayerBuffers,
    /// The batch's targets `[B, out]`.
    pub targets: &'a wgpu::Buffer,
    /// Per-row loss and correctness `[B, 2]`.
    pub row_stats: &'a wgpu::Buffer,
    /// Per-step loss and correct count `[steps, 2]`.
    pub stats: &'a wgpu::Buffer,
}

impl LossIo<'_> {
    /// The bind group of `output_delta` and `reduce_stats` (binding 4: δ), or with `softmax`
    /// that of `softmax_rows` (binding 4: z, the probabilities).
    pub(super) fn bind_group(
        &self,
        device: &wgpu::Device,
        kernels: &Kernels,
        spec: &ModelSpec,
        softmax: bool,
    ) -> wgpu::BindGroup {
        let out_act = spec.output_activation();
        let dims = uniform(
            device,
            bytemuck::bytes_of(&LossDims {
                out: spec.outputs() as u32,
                act: out_act.code(),
                loss: spec.loss.code(),
                alpha: out_act.alpha(),
            }),
        );
        let bindings = LossBindings {
            dims: &dims,
            step: self.step,
            pre: &self.last.a,
            targets: self.targets,
            delta: if softmax {
                &self.last.z
            } else {
                &self.last.delta
            },
            row_stats: self.row_stats,
            stats: self.stats,
        };
        kernels.bind_group(device, Family::Loss, &bindings)
    }
}

/// A uniform buffer holding `data`.
fn uniform(device: &wgpu::Device, data: &[u8]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("dims"),
        contents: data,
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

/// What the dispatch builders share: the device, its kernels, the model, the schedule and the
/// step's buffers.
pub(super) struct Builder<'a> {
    /// The device.
    pub ctx: &'a GpuContext,
    /// Its capabilities (split-K).
    pub caps: &'a Capabilities,
    /// Its modules and layouts.
    pub kernels: &'a Kernels,
    /// The model.
    pub spec: &'a ModelSpec,
    /// The optimizer (its code in the update kernels).
    pub optimizer: Optimizer,
    /// The schedule (`fused` as the plan decided).
    pub options: &'a GpuOptions,
    /// Rows per (micro-)batch.
    pub rows: usize,
    /// The step's buffers.
    pub bufs: &'a StepBuffers,
}

impl Builder<'_> {
    pub(super) fn device(&self) -> &wgpu::Device {
        &self.ctx.device
    }

    /// The optimizer fused into the gradient's epilogue, or 0 where the update is separate.
    fn fused_opt_code(&self) -> u32 {
        if self.options.fused {
            self.optimizer.kind().code()
        } else {
            0
        }
    }

    /// Workgroups of a 1-D kernel over `n` elements.
    fn groups_1d(&self, n: usize) -> (u32, u32) {
        groups_1d(
            n as u64,
            self.ctx.limits.max_compute_workgroups_per_dimension,
        )
    }

    /// The input of layer `l`: x `[B, in]`, or the previous layer's z.
    fn input_of(&self, l: usize) -> &wgpu::Buffer {
        match l {
            0 => &self.bufs.x_batch,
            _ => &self.bufs.layers[l - 1].z,
        }
    }

    /// A uniform buffer holding `data`.
    pub(super) fn uniform(&self, data: &[u8]) -> wgpu::Buffer {
        uniform(self.device(), data)
    }

    /// An optimizer-family dispatch of `entry` over a 1-D grid of `n` elements.
    pub(super) fn optimizer_dispatch(
        &self,
        label: String,
        entry: &str,
        constants: &[(&str, f64)],
        bindings: &OptimizerBindings,
        n: usize,
    ) -> Dispatch {
        let (gx, gy) = self.groups_1d(n);
        Dispatch {
            label,
            pipeline: (self.kernels).pipeline(self.device(), Family::Optimizer, entry, constants),
            bind_group: (self.kernels).bind_group(self.device(), Family::Optimizer, bindings),
            grid: Grid::Fixed(gx, gy),
        }
    }
}

impl Builder<'_> {
    /// The forward pass, layer by layer: `a_l = z_{l-1} · W_l + b_l`, `z_l = φ(a_l)`.
    pub(super) fn forward(&self) -> Vec<Dispatch> {
        (0..self.spec.layout().len())
            .map(|l| self.forward_layer(l))
            .collect()
    }

    /// Layer `l`'s forward matmul: `[B, in] · [in, out]`, with φ in its epilogue.
    fn forward_layer(&self, l: usize) -> Dispatch {
        let lay = &self.spec.layout()[l];
        let act = self.spec.activations[l];
        let (i, o) = (lay.inputs, lay.outputs);
        self.activation_matmul(EpilogueMatmul {
            label: format!("forward {} [B,{i}]x[{i},{o}] + {act}", l + 1),
            mode: MatmulMode::Forward,
            act,
            dims: MatmulDims::forward(lay, act.alpha()),
            lhs: self.input_of(l),
            out: &self.bufs.layers[l].a,
            aux: &self.bufs.layers[l].z,
        })
    }

    /// A forward or delta matmul (`lhs · W` or `lhs · Wᵀ`, W from the parameters) with the
    /// activation's φ or φ' in its epilogue, over a `[B, cols]` output.
    fn activation_matmul(&self, m: EpilogueMatmul) -> Dispatch {
        let cfg = self.kernels.matmul_config_for(m.mode, &m.dims);
        let dims = self.uniform(bytemuck::bytes_of(&m.dims));
        let b = self.bufs;
        let bindings = MatmulBindings {
            dims: &dims,
            step: &b.step_uniform,
            lhs: m.lhs,
            rhs: &b.params,
            out: m.out,
            aux: m.aux,
            opt_m: &b.opt_m,
            opt_v: &b.opt_v,
        };
        let device = self.device();
        Dispatch {
            label: m.label,
            pipeline: (self.kernels).matmul(device, cfg, m.mode, m.act.code(), 0, false, false),
            bind_group: self.kernels.bind_group(device, cfg.family(), &bindings),
            grid: Grid::BatchRows {
                cols: m.dims.n,
                cfg,
            },
        }
    }

    /// The backward pass from the output layer down: each layer's gradient, and below the
    /// first its delta.
    pub(super) fn backward(&self) -> Vec<Dispatch> {
        let mut v = Vec::new();
        for l in (0..self.spec.layout().len()).rev() {
            if l > 0 {
                v.push(self.delta(l));
            }
            v.extend(self.grad(l));
        }
        v
    }

    /// `δ_{l-1} = δ_l · W_lᵀ ⊙ φ'(a_{l-1})`, for l ≥ 1: `[B, out] · [in, out]ᵀ`.
    fn delta(&self, l: usize) -> Dispatch {
        let lay = &self.spec.layout()[l];
        let prev_act = self.spec.activations[l - 1];
        let (i, o) = (lay.inputs, lay.outputs);
        self.activation_matmul(EpilogueMatmul {
            label: format!("delta {l} [B,{o}]x[{i},{o}]ᵀ ⊙ {prev_act}'"),
            mode: MatmulMode::Delta,
            act: prev_act,
            dims: MatmulDims::delta(lay, prev_act.alpha()),
            lhs: &self.bufs.layers[l].delta,
            out: &self.bufs.layers[l - 1].delta,
            aux: &self.bufs.layers[l - 1].a,
        })
    }

    /// Layer `l`'s gradient `[in + 1, B] · [B, out]` (with the optimizer update where fused):
    /// one launch, or split-K partial sums and their reduction.
    fn grad(&self, l: usize) -> Vec<Dispatch> {
        let lay = &self.spec.layout()[l];
        let g = grad_launch(self.kernels, self.caps, lay, self.rows);
        let dims = self.uniform(bytemuck::bytes_of(&g.dims));
        let split = g.slices > 1;
        let b = self.bufs;
        let bindings = MatmulBindings {
            dims: &dims,
            step: &b.step_uniform,
            lhs: self.input_of(l),
            rhs: &b.layers[l].delta,
            out: match split {
                true => b.partials.as_ref().expect("allocated for split layers"),
                false => &b.grads,
            },
            aux: &b.params,
            opt_m: &b.opt_m,
            opt_v: &b.opt_v,
        };
        let fused = if self.options.fused { "+update" } else { "" };
        let label = format!(
            "grad{fused} {} [{},B]x[B,{}]",
            l + 1,
            lay.inputs + 1,
            lay.outputs
        );
        let dispatch = Dispatch {
            label: match split {
                true => format!("{label} split-K ×{}", g.slices),
                false => label,
            },
            pipeline: (self.kernels).matmul(
                self.device(),
                g.cfg,
                MatmulMode::Grad,
                0,
                self.fused_opt_code(),
                self.options.capture_gradients,
                split,
            ),
            bind_group: (self.kernels).bind_group(self.device(), g.cfg.family(), &bindings),
            grid: match split {
                true => Grid::Split(g.groups.0, g.groups.1, g.slices),
                false => Grid::Fixed(g.groups.0, g.groups.1),
            },
        };
        match split {
            true => vec![dispatch, self.grad_reduce(l, g.slices)],
            false => vec![dispatch],
        }
    }

    /// Layer `l`'s split-K reduction: sums the `slices` partials `[slices, in + 1, out]` into
    /// the gradient (and updates the parameters where fused).
    fn grad_reduce(&self, l: usize, slices: u32) -> Dispatch {
        let lay = &self.spec.layout()[l];
        let b = self.bufs;
        let dims = self.uniform(bytemuck::bytes_of(&MatmulDims {
            n: lay.outputs as u32,
            k: slices,
            m: lay.inputs as u32,
            c_off: lay.weight as u32,
            ..Default::default()
        }));
        let bindings = MatmulBindings {
            dims: &dims,
            step: &b.step_uniform,
            lhs: b.partials.as_ref().expect("allocated for split layers"),
            rhs: &b.layers[l].delta,
            out: &b.grads,
            aux: &b.params,
            opt_m: &b.opt_m,
            opt_v: &b.opt_v,
        };
        let constants = [
            ("MODE", MatmulMode::Grad as u32 as f64),
            ("OPT", self.fused_opt_code() as f64),
            ("KEEP_GRAD", self.options.capture_gradients as u32 as f64),
        ];
        let (rx, ry) = self.groups_1d((lay.inputs + 1) * lay.outputs);
        let device = self.device();
        Dispatch {
            label: format!(
                "grad {} split-K reduction{}",
                l + 1,
                if self.options.fused { " +update" } else { "" }
            ),
            pipeline: (self.kernels).pipeline(device, Family::Matmul, "grad_reduce", &constants),
            bind_group: self.kernels.bind_group(device, Family::Matmul, &bindings),
            grid: Grid::Fixed(rx, ry),
        }
    }
}
