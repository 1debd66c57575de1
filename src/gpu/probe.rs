//! Runs one kernel on host arrays and reads every output back: how the tests (and `--verify`)
//! check each GPU kernel against its CPU reference. Not for training: it creates buffers and a
//! pipeline per call.

use super::kernels::{
    groups_1d, Family, GemmConfig, Kernels, LossDims, MatmulConfig, MatmulDims, MatmulMode,
    MatmulVariant, OneU32, StepUniform,
};
use super::GpuContext;
use crate::error::{Error, Result};
use crate::model::{Activation, Loss};
use crate::optim::{OptimizerKind, StepHyper};

mod launch;
use launch::{run_with, Launch};

/// The per-step uniform for a probe.
pub fn step_uniform(batch: usize, h: &StepHyper) -> StepUniform {
    StepUniform::new(batch, h, 1.0 / batch.max(1) as f32)
}

/// Runs `entry` of `family` once with `dims` as binding 0, `step` as binding 1 and `storage` as
/// the remaining bindings; returns every storage buffer's contents afterwards.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ctx: &GpuContext,
    family: Family,
    entry: &str,
    constants: &[(&str, f64)],
    dims: &[u8],
    step: &StepUniform,
    storage: &[&[u8]],
    grid: (u32, u32),
) -> Result<Vec<Vec<f32>>> {
    let kernels = kernels_for(ctx);
    let launch = Launch {
        family,
        entry,
        constants,
        dims,
        grid: (grid.0, grid.1, 1),
    };
    run_with(&kernels, ctx, &launch, step, storage)
}

/// Which matmul kernel a probe runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulChoice {
    /// `matmul_gemm` in this tile, whatever the adapter; `None`: the kernel a training step
    /// would use for the shape here (`Kernels::matmul_config_for`).
    pub gemm: Option<GemmConfig>,
    /// Any matmul kernel, whatever the adapter (`Blocked`, `Tiled` or a GEMM tile): how the
    /// tests force each tuner candidate. Takes precedence over `gemm`.
    pub variant: Option<MatmulVariant>,
    /// Gradient only: split K (the batch) over this many slices whose partial sums
    /// `grad_reduce` adds and finishes (the training step's split-K path); 0 or 1: no split.
    pub split_k: u32,
}

/// Runs one matmul of `mode` over a `rows × cols` output, with the kernel `choice` names.
/// `storage`: lhs, rhs, out, out2, opt_m, opt_v.
#[allow(clippy::too_many_arguments)]
fn run_matmul(
    ctx: &GpuContext,
    choice: MatmulChoice,
    mode: MatmulMode,
    constants: &[(&str, f64)],
    dims: &MatmulDims,
    step: &StepUniform,
    storage: &[&[u8]],
    rows: usize,
    cols: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut kernels = kernels_for(ctx);
    if let Some(v) = choice.variant.or(choice.gemm.map(MatmulVariant::Gemm)) {
        kernels = kernels.with_variant(v);
    }
    let cfg = kernels.matmul_config_for(mode, dims);
    let mut constants = constants.to_vec();
    constants.push(("MODE", mode as u32 as f64));
    let (gx, gy) = cfg.groups(rows as u32, cols as u32);
    let slices = choice.split_k.max(1);
    if slices == 1 {
        constants.extend(cfg.shape_constants());
        let launch = Launch {
            family: cfg.family(),
            entry: cfg.entry(),
            constants: &constants,
            dims: bytemuck::bytes_of(dims),
            grid: (gx, gy, 1),
        };
        return run_with(&kernels, ctx, &launch, step, storage);
    }
    if mode != MatmulMode::Grad {
        return Err(Error::Gpu("split-K is for the gradient matmul only".into()));
    }
    let split = SplitK {
        kernels: &kernels,
        cfg,
        constants: &constants,
        dims,
        slices,
        groups: (gx, gy),
    };
    split.run(ctx, step, storage, rows * cols)
}

/// A gradient matmul whose K (the batch) is split over `slices`, as the training step splits it.
struct SplitK<'a> {
    kernels: &'a Kernels,
    cfg: MatmulConfig,
    /// The kernel's constants, `MODE` included (not the launch shape's).
    constants: &'a [(&'a str, f64)],
    dims: &'a MatmulDims,
    slices: u32,
    /// Workgroups over the output.
    groups: (u32, u32),
}

impl SplitK<'_> {
    /// Pass 1 writes each slice's partial sums `[slices, outputs]`, bound where the gradient
    /// goes; pass 2, `grad_reduce`, adds them in slice order and runs the epilogue.
    /// `storage`: lhs, rhs, out, out2, opt_m, opt_v.
    fn run(
        &self,
        ctx: &GpuContext,
        step: &StepUniform,
        storage: &[&[u8]],
        outputs: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let partials = vec![0.0f32; self.slices as usize * outputs];
        let mut first: Vec<&[u8]> = storage.to_vec();
        first[2] = f32s(&partials);
        let mut split_constants = self.constants.to_vec();
        split_constants.push(("SPLIT_K", 1.0));
        split_constants.extend(self.cfg.shape_constants());
        let partial_sums = Launch {
            family: self.cfg.family(),
            entry: self.cfg.entry(),
            constants: &split_constants,
            dims: bytemuck::bytes_of(self.dims),
            grid: (self.groups.0, self.groups.1, self.slices),
        };
        let parts = run_with(self.kernels, ctx, &partial_sums, step, &first)?;
        let reduce_dims = MatmulDims {
            k: self.slices,
            ..*self.dims
        };
        let mut second: Vec<&[u8]> = vec![f32s(&parts[2])];
        second.extend_from_slice(&storage[1..]);
        let (rx, ry) = groups_1d(
            outputs as u64,
            ctx.limits.max_compute_workgroups_per_dimension,
        );
        let reduce = Launch {
            family: Family::Matmul,
            entry: "grad_reduce",
            constants: self.constants,
            dims: bytemuck::bytes_of(&reduce_dims),
            grid: (rx, ry, 1),
        };
        run_with(self.kernels, ctx, &reduce, step, &second)
    }
}

/// The matmul launch shape the probes (and a training step) use for `mode` with `dims` here.
pub fn matmul_variant(ctx: &GpuContext, mode: MatmulMode, dims: &MatmulDims) -> MatmulVariant {
    kernels_for(ctx).matmul_config_for(mode, dims).variant
}

/// The kernels the plan gives this context with the default options.
fn kernels_for(ctx: &GpuContext) -> Kernels {
    let support = super::plan::kernel_support(&ctx.capabilities(), &super::GpuOptions::default());
    Kernels::new(&ctx.device, support, Default::default())
}

fn f32s(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// Forward matmul with its epilogue. x: [b, k]; wb: [(k+1), n] (W then b).
/// Returns (a, z), each [b, n].
pub fn forward(
    ctx: &GpuContext,
    x: &[f32],
    wb: &[f32],
    b: usize,
    k: usize,
    n: usize,
    act: Activation,
) -> Result<(Vec<f32>, Vec<f32>)> {
    forward_with(ctx, MatmulChoice::default(), x, wb, b, k, n, act)
}

/// [`forward`] with the kernel `choice` names.
#[allow(clippy::too_many_arguments)]
pub fn forward_with(
    ctx: &GpuContext,
    choice: MatmulChoice,
    x: &[f32],
    wb: &[f32],
    b: usize,
    k: usize,
    n: usize,
    act: Activation,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let dims = MatmulDims {
        n: n as u32,
        k: k as u32,
        alpha: act.alpha(),
        ..Default::default()
    };
    let zeros = vec![0.0f32; b * n];
    let step = step_uniform(b, &crate::optim::Optimizer::Sgd.hyper(0.0, 1, 0.0));
    let mut out = run_matmul(
        ctx,
        choice,
        MatmulMode::Forward,
        &[("ACT", act.code() as f64)],
        &dims,
        &step,
        &[
            f32s(x),
            f32s(wb),
            f32s(&zeros),
            f32s(&zeros),
            f32s(&[0.0]),
            f32s(&[0.0]),
        ],
        b,
        n,
    )?;
    let z = out.swap_remove(3);
    let a = out.swap_remove(2);
    Ok((a, z))
}

/// Delta matmul with its epilogue: (δ: [b, k] · Wᵀ) ⊙ φ'(a_prev: [b, n]); w: [n, k].
#[allow(clippy::too_many_arguments)]
pub fn delta(
    ctx: &GpuContext,
    delta: &[f32],
    w: &[f32],
    a_prev: &[f32],
    b: usize,
    k: usize,
    n: usize,
    act_prev: Activation,
) -> Result<Vec<f32>> {
    delta_with(
        ctx,
        MatmulChoice::default(),
        delta,
        w,
        a_prev,
        b,
        k,
        n,
        act_prev,
    )
}

/// [`delta`] with the kernel `choice` names.
#[allow(clippy::too_many_arguments)]
pub fn delta_with(
    ctx: &GpuContext,
    choice: MatmulChoice,
    delta: &[f32],
    w: &[f32],
    a_prev: &[f32],
    b: usize,
    k: usize,
    n: usize,
    act_prev: Activation,
) -> Result<Vec<f32>> {
    let dims = MatmulDims {
        n: n as u32,
        k: k as u32,
        alpha: act_prev.alpha(),
        ..Default::default()
    };
    let zeros = vec![0.0f32; b * n];
    let step = step_uniform(b, &crate::optim::Optimizer::Sgd.hyper(0.0, 1, 0.0));
    let out = run_matmul(
        ctx,
        choice,
        MatmulMode::Delta,
        &[("ACT", act_prev.code() as f64)],
        &dims,
        &step,
        &[
            f32s(delta),
            f32s(w),
            f32s(&zeros),
            f32s(a_prev),
            f32s(&[0.0]),
            f32s(&[0.0]),
        ],
        b,
        n,
    )?;
    Ok(out.into_iter().nth(2).unwrap_or_default())
}

/// Outputs of the gradient matmul: gradient and updated parameters and optimizer state, each
/// `[(m+1), n]`.
#[derive(Clone, Debug)]
pub struct GradOutputs {
    /// `∂E/∂W` with the bias gradient as the last row (λW included where the form adds it).
    pub grads: Vec<f32>,
    /// The parameters after the fused update.
    pub params: Vec<f32>,
    /// The optimizer's first slot after the update (momentum's velocity, Adam's m).
    pub m: Vec<f32>,
    /// Adam's second moment after the update.
    pub v: Vec<f32>,
}

/// Gradient matmul with the (optional) fused optimizer update: g = [z, 1]ᵀ·δ + λ[W; 0] with
/// z: [b, m], δ: [b, n], params = [W; b]: [(m+1), n].
#[allow(clippy::too_many_arguments)]
pub fn grad(
    ctx: &GpuContext,
    z: &[f32],
    delta: &[f32],
    params: &[f32],
    opt_m: &[f32],
    opt_v: &[f32],
    b: usize,
    m: usize,
    n: usize,
    opt: Option<OptimizerKind>,
    h: &StepHyper,
) -> Result<GradOutputs> {
    let choice = MatmulChoice::default();
    grad_with(ctx, choice, z, delta, params, opt_m, opt_v, b, m, n, opt, h)
}

/// [`grad`] with the kernel `choice` names (and, there, split-K).
#[allow(clippy::too_many_arguments)]
pub fn grad_with(
    ctx: &GpuContext,
    choice: MatmulChoice,
    z: &[f32],
    delta: &[f32],
    params: &[f32],
    opt_m: &[f32],
    opt_v: &[f32],
    b: usize,
    m: usize,
    n: usize,
    opt: Option<OptimizerKind>,
    h: &StepHyper,
) -> Result<GradOutputs> {
    let dims = MatmulDims {
        n: n as u32,
        m: m as u32,
        ..Default::default()
    };
    let grads = vec![0.0f32; (m + 1) * n];
    let step = step_uniform(b, h);
    let mut out = run_matmul(
        ctx,
        choice,
        MatmulMode::Grad,
        &[
            ("OPT", opt.map_or(0, |o| o.code()) as f64),
            ("KEEP_GRAD", 1.0),
        ],
        &dims,
        &step,
        &[
            f32s(z),
            f32s(delta),
            f32s(&grads),
            f32s(params),
            f32s(opt_m),
            f32s(opt_v),
        ],
        m + 1,
        n,
    )?;
    Ok(GradOutputs {
        v: out.pop().unwrap_or_default(),
        m: out.pop().unwrap_or_default(),
        params: out.pop().unwrap_or_default(),
        grads: out.pop().unwrap_or_default(),
    })
}

/// Output delta and per-row stats. a, t: [b, out]; returns (δ: [b, out], row stats [b, 2]:
/// loss and correct, and their sum [2] from the reduction kernel).
pub fn output_delta(
    ctx: &GpuContext,
    a: &[f32],
    t: &[f32],
    b: usize,
    out: usize,
    act: Activation,
    loss: Loss,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let dims = LossDims {
        out: out as u32,
        act: act.code(),
        loss: loss.code(),
        alpha: act.alpha(),
    };
    let step = step_uniform(b, &crate::optim::Optimizer::Sgd.hyper(0.0, 1, 0.0));
    let zeros = vec![0.0f32; b * out];
    let rows = vec![0.0f32; b * 2];
    let (gx, gy) = groups_1d(b as u64, ctx.limits.max_compute_workgroups_per_dimension);
    let first = run(
        ctx,
        Family::Loss,
        "output_delta",
        &[],
        bytemuck::bytes_of(&dims),
        &step,
        &[
            f32s(a),
            f32s(t),
            f32s(&zeros),
            f32s(&rows),
            f32s(&[0.0, 0.0]),
        ],
        (gx, gy),
    )?;
    let reduced = run(
        ctx,
        Family::Loss,
        "reduce_stats",
        &[],
        bytemuck::bytes_of(&dims),
        &step,
        &[
            f32s(a),
            f32s(t),
            f32s(&zeros),
            f32s(&first[3]),
            f32s(&[0.0, 0.0]),
        ],
        (1, 1),
    )?;
    Ok((first[2].clone(), first[3].clone(), reduced[4].clone()))
}

/// The standalone optimizer kernel: returns (params, m, v), each [P].
pub fn optimizer(
    ctx: &GpuContext,
    params: &[f32],
    grads: &[f32],
    opt_m: &[f32],
    opt_v: &[f32],
    opt: OptimizerKind,
    h: &StepHyper,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let count = OneU32 {
        value: params.len() as u32,
        _pad: [0; 3],
    };
    let step = step_uniform(1, h);
    let (gx, gy) = groups_1d(
        params.len() as u64,
        ctx.limits.max_compute_workgroups_per_dimension,
    );
    let mut out = run(
        ctx,
        Family::Optimizer,
        "update",
        &[("OPT", opt.code() as f64)],
        bytemuck::bytes_of(&count),
        &step,
        &[f32s(grads), f32s(params), f32s(opt_m), f32s(opt_v)],
        (gx, gy),
    )?;
    let v = out.pop().unwrap_or_default();
    let m = out.pop().unwrap_or_default();
    let p = out.pop().unwrap_or_default();
    Ok((p, m, v))
}
