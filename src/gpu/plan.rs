//! The one place that decides how a training step runs on a device: a pure function of the
//! model, the batch, the adapter's [`Capabilities`] and the [`GpuOptions`]. Nothing else in
//! the crate looks at an adapter's class, vendor or API. It makes no wgpu object, so tests
//! feed it the profiles of devices we do not have (`profiles.rs`), and `gpumlp plan` prints it.
//!
//! What it decides:
//! - which matmul kernels this device may run ([`kernel_support`]) and, per layer and form,
//!   the kernel and its tile ([`matmul_config`]);
//! - split-K factors for gradient matmuls whose output grid would leave the device idle
//!   ([`split_k_slices`]);
//! - the fused narrow-MLP step or the layered one, and the fused step's tile
//!   ([`use_fused_mlp`], [`fused_shape`]);
//! - rows per micro-batch ([`micro_batch_rows`]) and steps per submit;
//! - how `bench --profile` times dispatches ([`wall_clock_profiling`]).

use super::device::{Api, Capabilities, DeviceClass};
use super::fused::FusedShape;
use super::kernels::{
    GemmConfig, MatmulConfig, MatmulDims, MatmulMode, MatmulVariant, BLOCK_M, BLOCK_N, BLOCK_WG,
    NARROW_GRAD_MAX,
};
use super::GpuOptions;
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use serde::Serialize;

/// Which matmul kernels a device runs, before any shape is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KernelSupport {
    /// `matmul_sg_*`: needs lanes `8·s .. 8·s + 7` of a workgroup to form subgroup `s`, which
    /// holds on lavapipe (Vulkan on a CPU, 8-lane subgroups); where else is unknown.
    pub subgroup_matmul: bool,
    /// `matmul_img_*`: the subgroup kernels reading operands from storage images.
    pub image_matmul: bool,
    /// The kernel for every launch the subgroup kernels do not take: `Blocked` (no barriers)
    /// on software adapters, where a barrier splits a workgroup into coroutines; `Tiled` or a
    /// forced `Gemm` tile elsewhere.
    pub default_variant: MatmulVariant,
    /// Hardware GPUs: `matmul_gemm` with a tile chosen per matmul by its shape
    /// ([`gemm_tile`]) wherever the default variant would run.
    pub gemm_by_shape: bool,
}

fn software(caps: &Capabilities) -> bool {
    caps.class == DeviceClass::Software
}

/// The kernels `caps` runs under `options`.
pub fn kernel_support(caps: &Capabilities, options: &GpuOptions) -> KernelSupport {
    if let Some(g) = options.force_gemm {
        return KernelSupport {
            subgroup_matmul: false,
            image_matmul: false,
            default_variant: MatmulVariant::Gemm(g),
            gemm_by_shape: false,
        };
    }
    let forced_tiled = options.force_tiled_matmul;
    let subgroup_matmul = software(caps)
        && caps.api == Api::Vulkan
        && caps.subgroups
        && caps.subgroup_min == 8
        && caps.subgroup_max == 8
        && options.subgroup_matmul
        && !forced_tiled;
    KernelSupport {
        subgroup_matmul,
        image_matmul: subgroup_matmul && options.image_operands,
        default_variant: if software(caps) && !forced_tiled {
            MatmulVariant::Blocked
        } else {
            MatmulVariant::Tiled
        },
        gemm_by_shape: !software(caps)
            && !forced_tiled
            && GemmConfig::CANDIDATES.iter().any(|g| gemm_fits(g, caps)),
    }
}

/// Whether `caps` can run the tile `g`.
fn gemm_fits(g: &GemmConfig, caps: &Capabilities) -> bool {
    g.valid()
        && g.workgroup_bytes() <= caps.max_workgroup_storage
        && g.invocations() <= caps.max_invocations
        && caps.max_storage_buffers_per_stage >= 8
}

/// The `matmul_gemm` tile for an output of `n` columns until the tuner measures: the narrow
/// tile for a classifier's last layer (n ≤ 16), else 64×64×8 with 8×4 per invocation, which
/// fits 16 KiB of workgroup memory and keeps small grids (784-512-512-10 at b1024: 128 tiles)
/// across every multiprocessor; the 128×128 tiles win only on grids large enough to fill the
/// device with them, which the tuner decides (BENCHMARKS.md, "The GEMM candidates").
pub fn gemm_tile(n: u32) -> GemmConfig {
    if n <= 16 {
        GemmConfig::NARROW
    } else {
        GemmConfig::new(64, 64, 8, 8, 4)
    }
}

/// The launch shape of one matmul of `mode` with `dims`: the subgroup kernel where it runs and
/// every operand row is 16-byte aligned; the narrow gradient kernel for a gradient of at most
/// [`NARROW_GRAD_MAX`] columns there; else the device's default kernel (the blocked one with
/// the fewest lanes across columns that still cover them: narrow outputs leave no lane idle).
pub fn matmul_config(support: &KernelSupport, mode: MatmulMode, dims: &MatmulDims) -> MatmulConfig {
    let aligned = |v: &[u32]| v.iter().all(|&x| x > 0 && x.is_multiple_of(4));
    let offsets = dims.a_off.is_multiple_of(4) && dims.b_off.is_multiple_of(4);
    let fits = match mode {
        MatmulMode::Forward => aligned(&[dims.k, dims.n]),
        MatmulMode::Delta => aligned(&[dims.k]) && dims.n > 0,
        MatmulMode::Grad => aligned(&[dims.m, dims.n]),
    };
    let variant = if support.subgroup_matmul && offsets && fits {
        MatmulVariant::Subgroup(mode)
    } else if support.subgroup_matmul && mode == MatmulMode::Grad && dims.n <= NARROW_GRAD_MAX {
        MatmulVariant::NarrowGrad(dims.n)
    } else if support.gemm_by_shape {
        MatmulVariant::Gemm(gemm_tile(dims.n))
    } else {
        support.default_variant
    };
    let wg_n = match variant {
        MatmulVariant::Blocked => dims.n.div_ceil(BLOCK_N).next_power_of_two().clamp(1, 8),
        _ => 1,
    };
    MatmulConfig { variant, wg_n }
}

/// Workgroups that keep `caps` busy: a software adapter's few cores, or two per compute unit
/// of a GPU (256 where the count is unknown).
fn busy_workgroups(caps: &Capabilities) -> u32 {
    match (software(caps), caps.compute_units) {
        (true, _) => 8,
        (false, 0) => 256,
        (false, units) => 2 * units,
    }
}

/// Split-K slices for a gradient matmul with `tiles` output workgroups over a batch of `rows`:
/// enough to keep the device busy, each slice at least 256 rows, at most 64 slices.
pub fn split_k_slices(caps: &Capabilities, tiles: u32, rows: usize) -> u32 {
    let busy = busy_workgroups(caps);
    if tiles >= busy || rows < 512 {
        return 1;
    }
    (busy / tiles.max(1)).min((rows / 256) as u32).clamp(1, 64)
}

/// Whether the step is the fully fused one (`fused.rs`) rather than the layered schedule:
/// on GPUs wherever the model is eligible (tiny-cuda-nn's result; the tuner will measure it),
/// on software adapters only for tiny steps, where dispatch overhead dominates (2-16-2 b256:
/// 2.2× faster on lavapipe; 64-128-128-10 b4096: 1.8× slower). `options.fused_mlp` overrides.
pub fn use_fused_mlp(
    spec: &ModelSpec,
    rows: usize,
    caps: &Capabilities,
    options: &GpuOptions,
) -> bool {
    let tiny_step = rows.saturating_mul(spec.macs_per_sample()) <= 1 << 20;
    options.fused && options.fused_mlp.unwrap_or(!software(caps) || tiny_step)
}

/// The fused step's launch shape for batches of up to `rows`, or `None` where the model is not
/// eligible or does not fit. The tile is the largest that fits workgroup memory, shrunk where
/// that would leave compute units without a workgroup; `max_groups` (tests) caps the partial
/// slices, else 64 on software adapters and the busy count on GPUs.
pub fn fused_shape(
    spec: &ModelSpec,
    rows: usize,
    caps: &Capabilities,
    max_groups: Option<usize>,
) -> Option<FusedShape> {
    let max_groups = max_groups.unwrap_or(if software(caps) {
        64
    } else {
        busy_workgroups(caps) as usize
    });
    let rows = rows.max(1);
    let choose =
        |limit: u32| FusedShape::choose(spec, limit, caps.max_invocations, rows, max_groups);
    let shape = choose(caps.max_workgroup_storage)?;
    let units = caps.compute_units as usize;
    if units == 0 || shape.groups >= units {
        return Some(shape);
    }
    let tile = (rows / units / 4 * 4).max(4);
    if tile >= shape.tile {
        return Some(shape);
    }
    let limit = (2 * tile * shape.stride * 4) as u32;
    Some(choose(limit).unwrap_or(shape))
}

/// Whether the optimizer update runs in the gradient matmul's epilogue (`true`) or as a separate
/// pass after the whole gradient is known (`false`, the split schedule): split when a step is
/// micro-batched (`micro < batch`) or the model is a data-parallel replica, whose gradient is
/// all-reduced before the update.
pub fn fused_update(micro: usize, batch: usize, options: &GpuOptions) -> bool {
    options.fused && micro >= batch.max(1) && !options.data_parallel
}

/// Rows per micro-batch for batches of `batch` rows: the batch, unless one layer's rows would
/// not fit one storage binding (or buffer), or `options.micro_batch` asks for fewer.
///
/// # Errors
/// [`Error::DeviceLimit`] when a single row of some layer is over the limit.
pub fn micro_batch_rows(
    spec: &ModelSpec,
    batch: usize,
    caps: &Capabilities,
    options: &GpuOptions,
) -> Result<usize> {
    let limit = caps.max_storage_binding.min(caps.max_buffer);
    let mut fits = batch.max(1);
    for (l, &w) in spec.sizes.iter().enumerate() {
        let rows = limit / (w as u64).saturating_mul(4).max(1);
        if rows == 0 {
            let what = if l == 0 {
                "an input row".to_string()
            } else {
                format!("one row of layer {l}")
            };
            return Err(Error::DeviceLimit(format!(
                "{what} ({w} values) is over this device's storage binding limit of {limit} bytes ({}); use narrower layers",
                caps.name
            )));
        }
        fits = fits.min(rows.min(usize::MAX as u64) as usize);
    }
    Ok(options.micro_batch.unwrap_or(fits).clamp(1, fits))
}

/// `bench --profile` times each dispatch by the wall clock (submit and wait) where the device
/// has no timestamp queries or runs on the CPU (where a dispatch's timestamps cover only the
/// coroutine that wrote them); elsewhere with timestamp queries.
pub fn wall_clock_profiling(caps: &Capabilities) -> bool {
    software(caps) || !caps.timestamps
}

/// Whether the largest bench shapes are worth running here (minutes per step on software).
pub fn large_benchmarks_practical(caps: &Capabilities) -> bool {
    !software(caps)
}

/// One matmul of the step as planned.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MatmulPlan {
    /// Layer index (0 = the first weight matrix).
    pub layer: usize,
    /// `forward` (x·W + b, bias and φ in the epilogue), `delta` (δ·Wᵀ ⊙ φ′) or `grad`
    /// (xᵀ·δ, bias gradient, L2 and the optimizer in the epilogue).
    pub form: &'static str,
    /// The WGSL entry point.
    pub kernel: &'static str,
    /// Output rows and columns per workgroup, and the K slab staged per barrier (1: no
    /// staging).
    pub tile_m: u32,
    pub tile_n: u32,
    pub tile_k: u32,
    pub outputs_per_invocation: u32,
    pub invocations: u32,
    /// Workgroups over columns and rows.
    pub workgroups: (u32, u32),
    pub split_k: u32,
}

/// How the step runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepPlan {
    pub device: Capabilities,
    pub batch: usize,
    /// `fused-mlp` (one kernel for the whole step) or `layered`.
    pub step: &'static str,
    /// The fused step's batch rows per tile and workgroups (0 when layered).
    pub fused_tile_rows: usize,
    pub fused_workgroups: usize,
    pub micro_batch: usize,
    pub steps_per_submit: usize,
    /// Whether the optimizer update runs in the gradient matmul's epilogue (`fused`) or as a
    /// separate pass after the gradient is complete (`split`: micro-batches, replicas).
    pub update: &'static str,
    pub kernels: KernelSupport,
    /// Every matmul of a layered step (also listed for a fused one: what it would run).
    pub matmuls: Vec<MatmulPlan>,
}

/// Tile (rows, columns, K slab), outputs per invocation and invocations of a launch shape.
fn tile_of(cfg: &MatmulConfig) -> (u32, u32, u32, u32, u32) {
    let (tm, tn) = cfg.tile();
    match cfg.variant {
        MatmulVariant::Tiled => (tm, tn, 16, 16, 256),
        MatmulVariant::Blocked => (tm, tn, 1, BLOCK_M * BLOCK_N, BLOCK_WG),
        MatmulVariant::Subgroup(_) | MatmulVariant::Image(_) => (tm, tn, 4, tm * tn / 64, 64),
        MatmulVariant::NarrowGrad(n) => (tm, tn, 1, 4 * n, 64),
        MatmulVariant::Gemm(g) => (
            g.bm,
            g.bn,
            g.bk,
            g.outputs_per_invocation(),
            g.invocations(),
        ),
    }
}

/// The whole plan for `spec` at batch `batch` on `caps` (see the module's list).
pub fn plan(
    spec: &ModelSpec,
    batch: usize,
    caps: &Capabilities,
    options: &GpuOptions,
) -> Result<StepPlan> {
    spec.validate()?;
    let micro = micro_batch_rows(spec, batch, caps, options)?;
    let mut options = *options;
    options.fused = fused_update(micro, batch, &options);
    let support = kernel_support(caps, &options);
    let fused = use_fused_mlp(spec, micro, caps, &options)
        .then(|| fused_shape(spec, micro, caps, None))
        .flatten();
    let layout = spec.layout();
    let mut matmuls = Vec::new();
    for (l, lay) in layout.iter().enumerate() {
        let mut forms = vec![(
            "forward",
            MatmulMode::Forward,
            MatmulDims {
                n: lay.outputs as u32,
                k: lay.inputs as u32,
                b_off: lay.weight as u32,
                ..Default::default()
            },
            (micro as u32, lay.outputs as u32),
        )];
        if l > 0 {
            forms.push((
                "delta",
                MatmulMode::Delta,
                MatmulDims {
                    n: lay.inputs as u32,
                    k: lay.outputs as u32,
                    b_off: lay.weight as u32,
                    ..Default::default()
                },
                (micro as u32, lay.inputs as u32),
            ));
        }
        forms.push((
            "grad",
            MatmulMode::Grad,
            MatmulDims {
                n: lay.outputs as u32,
                m: lay.inputs as u32,
                ..Default::default()
            },
            (lay.inputs as u32 + 1, lay.outputs as u32),
        ));
        for (form, mode, dims, (rows, cols)) in forms {
            let cfg = matmul_config(&support, mode, &dims);
            let (tile_m, tile_n, tile_k, outputs_per_invocation, invocations) = tile_of(&cfg);
            let workgroups = cfg.groups(rows, cols);
            let split_k = match mode {
                MatmulMode::Grad => split_k_slices(caps, workgroups.0 * workgroups.1, micro),
                _ => 1,
            };
            matmuls.push(MatmulPlan {
                layer: l,
                form,
                kernel: cfg.entry(),
                tile_m,
                tile_n,
                tile_k,
                outputs_per_invocation,
                invocations,
                workgroups,
                split_k,
            });
        }
    }
    Ok(StepPlan {
        device: caps.clone(),
        batch,
        step: if fused.is_some() {
            "fused-mlp"
        } else {
            "layered"
        },
        fused_tile_rows: fused.map_or(0, |f| f.tile),
        fused_workgroups: fused.map_or(0, |f| f.groups),
        micro_batch: micro,
        steps_per_submit: options.steps_per_submit.max(1),
        update: if options.fused { "fused" } else { "split" },
        kernels: support,
        matmuls,
    })
}

#[cfg(test)]
mod tests;
