//! The separate update passes (gradient accumulation, the optimizer update, weight decay) and
//! the loss and softmax launches, built once at placement.

use super::super::*;
use super::dispatches::{Builder, LossIo};
use kernels::{OptimizerBindings, Range};

impl Builder<'_> {
    /// The `struct Count` uniform of a 1-D optimizer kernel over `n` elements.
    fn count_uniform(&self, n: usize) -> wgpu::Buffer {
        self.uniform(bytemuck::bytes_of(&OneU32 {
            value: n as u32,
            _pad: [0; 3],
        }))
    }

    /// `grad_total += grads` over `[params]` (micro-batching only).
    pub(super) fn accumulate(&self) -> Option<Dispatch> {
        let b = self.bufs;
        let total = b.grad_total.as_ref()?;
        let p = self.spec.param_count();
        let count = self.count_uniform(p);
        let bindings = OptimizerBindings {
            count: &count,
            step: &b.step_uniform,
            grads: &b.grads,
            params: total,
            opt_m: &b.opt_m,
            opt_v: &b.opt_v,
        };
        let label = format!("gradient accumulation [{p}]");
        Some(self.optimizer_dispatch(label, "accumulate", &[], &bindings, p))
    }

    /// The optimizer update over `[params]` from the step's whole gradient, where it is not
    /// fused into the gradient's epilogue.
    pub(super) fn update(&self) -> Option<Dispatch> {
        if self.options.fused {
            return None;
        }
        let b = self.bufs;
        let p = self.spec.param_count();
        let count = self.count_uniform(p);
        let bindings = OptimizerBindings {
            count: &count,
            step: &b.step_uniform,
            grads: b.grad_total.as_ref().unwrap_or(&b.grads),
            params: &b.params,
            opt_m: &b.opt_m,
            opt_v: &b.opt_v,
        };
        let label = format!("optimizer update [{p}]");
        let opt = [("OPT", self.optimizer.kind().code() as f64)];
        Some(self.optimizer_dispatch(label, "update", &opt, &bindings, p))
    }

    /// `g += λW` over each layer's weights `[in, out]`, before the update (data-parallel
    /// replicas only).
    pub(super) fn weight_decay(&self) -> Vec<Dispatch> {
        if !self.options.data_parallel {
            return Vec::new();
        }
        let b = self.bufs;
        let layout = self.spec.layout();
        layout
            .iter()
            .map(|l| {
                let n = l.weight_len();
                let range = self.uniform(bytemuck::bytes_of(&Range {
                    count: n as u32,
                    offset: l.weight as u32,
                    _pad: [0; 2],
                }));
                let bindings = OptimizerBindings {
                    count: &range,
                    step: &b.step_uniform,
                    grads: &b.params,
                    params: b.grad_total.as_ref().unwrap_or(&b.grads),
                    opt_m: &b.opt_m,
                    opt_v: &b.opt_v,
                };
                let label = format!("weight decay [{n}]");
                self.optimizer_dispatch(label, "weight_decay", &[], &bindings, n)
            })
            .collect()
    }

    /// The loss kernels' buffers.
    fn loss_io(&self) -> LossIo<'_> {
        let b = self.bufs;
        LossIo {
            step: &b.step_uniform,
            last: b.layers.last().expect("at least one layer"),
            targets: &b.t_batch,
            row_stats: &b.row_stats,
            stats: &b.stats,
        }
    }

    /// The output delta with each row's loss `[B, out]`, then the step's loss reduced into
    /// its stats slot.
    pub(super) fn loss(&self) -> [Dispatch; 2] {
        let device = self.device();
        let bind_group = self
            .loss_io()
            .bind_group(device, self.kernels, self.spec, false);
        let pipeline = |entry| self.kernels.pipeline(device, Family::Loss, entry, &[]);
        [
            Dispatch {
                label: "output delta + loss".into(),
                pipeline: pipeline("output_delta"),
                bind_group: bind_group.clone(),
                grid: Grid::PerRow { per_row: 1 },
            },
            Dispatch {
                label: "loss reduction".into(),
                pipeline: pipeline("reduce_stats"),
                bind_group,
                grid: Grid::Fixed(1, 1),
            },
        ]
    }

    /// Softmax over each row of the output `[B, out]` into z (prediction without targets),
    /// where the output activation is softmax.
    pub(super) fn softmax(&self) -> Option<Dispatch> {
        if self.spec.output_activation() != Activation::Softmax {
            return None;
        }
        let device = self.device();
        Some(Dispatch {
            label: "softmax".into(),
            pipeline: (self.kernels).pipeline(device, Family::Loss, "softmax_rows", &[]),
            bind_group: (self.loss_io()).bind_group(device, self.kernels, self.spec, true),
            grid: Grid::PerRow { per_row: 1 },
        })
    }
}
