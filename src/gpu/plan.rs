//! The one place that decides how a training step runs on a device: a pure function of the
//! model, the batch, the adapter's [`Capabilities`] and the [`GpuOptions`]. Nothing else in
//! the crate looks at an adapter's class, vendor or API. It makes no wgpu object, so tests
//! feed it the profiles of devices we do not have (`profiles.rs`), and `gpumlp plan` prints it.
//!
//! What it decides:
//! - which matmul kernels this device runs ([`kernel_support`]) and, per layer and form,
//!   the kernel and its tile ([`matmul_config`]), or the tuner's measured choice where it ran
//!   (an input, [`Tuning`]: the plan stays pure; `tune.rs` does the measuring);
//! - the candidates the tuner may time ([`matmul_candidates`]) and whether it runs by default
//!   ([`tune_by_default`]);
//! - split-K factors for gradient matmuls whose output grid would leave the device idle
//!   ([`split_k_slices`]);
//! - the fused narrow-MLP step or the layered one, and the fused step's tile
//!   ([`use_fused_mlp`], [`fused_shape`]);
//! - rows per micro-batch ([`micro_batch_rows`]) and steps per submit;
//! - how `bench --profile` and the tuner time dispatches ([`wall_clock_profiling`]);
//! - which adapters `--device auto` picks unasked, and in what order ([`auto_selectable`],
//!   [`adapter_preference`]).

use super::device::{Api, Capabilities, DeviceClass};
use super::fused::FusedShape;
use super::kernels::{
    GemmConfig, MatmulConfig, MatmulDims, MatmulMode, MatmulVariant, BLOCK_M, BLOCK_N, BLOCK_WG,
};
use super::{GpuOptions, Tune};
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use serde::Serialize;
use std::collections::BTreeMap;

mod step;
pub use step::{plan, plan_tuned, step_matmuls, MatmulPlan, StepMatmul, StepPlan};

/// Which matmul kernels a device runs, before any shape is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KernelSupport {
    /// The kernel for every launch when no `matmul_gemm` tile is chosen by shape: `Tiled`
    /// where no GEMM tile fits the device, or a forced variant (`force_gemm`, the tuner).
    pub default_variant: MatmulVariant,
    /// `matmul_gemm` with a tile chosen per matmul by its shape ([`gemm_tile`]), on every
    /// device where a tile fits: real GPUs and the software adapters run the same kernels.
    pub gemm_by_shape: bool,
}

/// One matmul of a placed step, as the tuner and its cache name it: the form and the sizes
/// that fix its kernel (the batch rows are the placement's, the same for every key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MatmulKey {
    /// Forward, delta or grad.
    pub mode: MatmulMode,
    /// Output columns, the reduced dimension (forward, delta) and the gradient's rows.
    pub n: u32,
    /// The reduced (shared) dimension, for forward and delta.
    pub k: u32,
    /// The gradient's rows, for grad (0 otherwise).
    pub m: u32,
}

impl MatmulKey {
    /// The key of a matmul with these dimensions.
    pub fn of(mode: MatmulMode, dims: &MatmulDims) -> Self {
        MatmulKey {
            mode,
            n: dims.n,
            k: dims.k,
            m: dims.m,
        }
    }

    /// `forward n=512 k=784 m=0`, for cache keys and messages.
    pub fn label(&self) -> String {
        let form = match self.mode {
            MatmulMode::Forward => "forward",
            MatmulMode::Delta => "delta",
            MatmulMode::Grad => "grad",
        };
        format!("{form} n={} k={} m={}", self.n, self.k, self.m)
    }
}

/// The tuner's measured choices, one kernel per matmul it timed.
pub type Overrides = BTreeMap<MatmulKey, MatmulVariant>;

/// What the tuner measured, fed to [`plan_tuned`] as an input.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Tuning {
    /// The chosen kernel of each matmul it timed (or read from its cache).
    #[serde(skip)]
    pub matmuls: Overrides,
    /// The fused narrow-MLP step (`true`) or the layered one, where it timed both.
    pub fused_mlp: Option<bool>,
    /// Whether every choice came from the on-disk cache (nothing was timed).
    pub from_cache: bool,
    /// Candidate launches timed, and the seconds the tuning took (timing, compiling, cache).
    pub timed: usize,
    /// Seconds the tuning took (timing, compiling, cache).
    pub seconds: f64,
    /// The budget it ran under, in seconds; matmuls it could not time within it keep the
    /// static plan's kernel (`skipped`).
    pub budget_seconds: f64,
    /// Matmuls not timed within the budget (they keep the static plan's kernel).
    pub skipped: usize,
    /// How candidates were timed: `timestamps` or `wall-clock`.
    pub timer: &'static str,
    /// The cache file read and written, if any.
    pub cache: Option<String>,
    /// What went wrong on the way without stopping it (a corrupt or unwritable cache).
    pub warnings: Vec<String>,
}

fn software(caps: &Capabilities) -> bool {
    caps.class == DeviceClass::Software
}

/// The kernels `caps` runs under `options`: the GEMM family by shape wherever its static
/// tiles fit, on hardware and software adapters alike, else `matmul_tiled`.
pub fn kernel_support(caps: &Capabilities, options: &GpuOptions) -> KernelSupport {
    if let Some(g) = options.force_gemm {
        return KernelSupport {
            default_variant: MatmulVariant::Gemm(g),
            gemm_by_shape: false,
        };
    }
    KernelSupport {
        default_variant: MatmulVariant::Tiled,
        gemm_by_shape: !options.force_tiled_matmul
            && gemm_fits(&gemm_tile(16), caps)
            && gemm_fits(&gemm_tile(17), caps),
    }
}

/// Whether the tuner runs at placement under `tune`: `Auto` times on hardware GPUs, where the
/// best tile depends on the device and the shape, and not on software adapters, which are
/// the correctness device (CI): there the static plan keeps every run on the real-GPU kernels
/// and costs no tuning time (`--tune on` still times them, the blocked kernel included).
pub fn tune_by_default(caps: &Capabilities, tune: Tune) -> bool {
    match tune {
        Tune::On => true,
        Tune::Off => false,
        Tune::Auto => !software(caps),
    }
}

/// The tuner's budget in seconds: `options.tune_budget_ms`, else 2 s (the target for the
/// largest suite model on a GPU).
pub fn tune_budget(options: &GpuOptions) -> f64 {
    options.tune_budget_ms.map_or(2.0, |ms| ms as f64 / 1000.0)
}

/// The kernels the tuner may time for one matmul on `caps`: the static plan's choice first,
/// then every GEMM tile that fits (the narrow one only for outputs of at most 32 columns, the
/// 128-wide ones only where the output has at least 64 columns), and on software adapters the
/// barrier-free blocked kernel.
pub fn matmul_candidates(
    caps: &Capabilities,
    support: &KernelSupport,
    mode: MatmulMode,
    dims: &MatmulDims,
) -> Vec<MatmulVariant> {
    let mut v = vec![matmul_config(support, mode, dims).variant];
    for g in GemmConfig::CANDIDATES {
        let useful = if *g == GemmConfig::NARROW {
            dims.n <= 32
        } else {
            2 * dims.n >= g.bn || g.bn <= 64
        };
        if useful && gemm_fits(g, caps) && !v.contains(&MatmulVariant::Gemm(*g)) {
            v.push(MatmulVariant::Gemm(*g));
        }
    }
    if software(caps) && !v.contains(&MatmulVariant::Blocked) {
        v.push(MatmulVariant::Blocked);
    }
    v
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

/// The static launch shape of one matmul of `mode` with `dims`: the GEMM tile for its width
/// where the device runs the GEMM family by shape, else the device's default kernel. The
/// same for every form today; `mode` is the seam for a form-specific tile.
pub fn matmul_config(support: &KernelSupport, mode: MatmulMode, dims: &MatmulDims) -> MatmulConfig {
    let _ = mode;
    let variant = if support.gemm_by_shape {
        MatmulVariant::Gemm(gemm_tile(dims.n))
    } else {
        support.default_variant
    };
    launch_shape(variant, dims)
}

/// The launch shape of `variant` for a matmul with `dims`: the blocked kernel with the fewest
/// lanes across columns that still cover them (narrow outputs leave no lane idle).
pub fn launch_shape(variant: MatmulVariant, dims: &MatmulDims) -> MatmulConfig {
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
    let shape = FusedShape::choose(
        spec,
        caps.max_workgroup_storage,
        caps.max_invocations,
        rows,
        max_groups,
    )?;
    let units = caps.compute_units as usize;
    if units == 0 || shape.groups >= units {
        return Some(shape);
    }
    let tile = (rows / units / 4 * 4).max(4);
    if tile >= shape.tile {
        return Some(shape);
    }
    Some(
        shape
            .with_tile(tile, caps.max_invocations, rows, max_groups)
            .unwrap_or(shape),
    )
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

/// Whether `--device auto` may pick an adapter of `class` without being asked: discrete and
/// integrated GPUs. Software adapters (lavapipe, llvmpipe, WARP, SwiftShader), virtual and
/// unknown ones run only when asked for (the fast CPU backend beats them).
pub fn auto_selectable(class: DeviceClass) -> bool {
    matches!(class, DeviceClass::Discrete | DeviceClass::Integrated)
}

/// Preference order among adapters, lowest first: discrete, integrated, virtual, software,
/// other; then Vulkan, Metal, DX12, GL, other.
pub fn adapter_preference(class: DeviceClass, api: Api) -> (u32, u32) {
    let c = match class {
        DeviceClass::Discrete => 0,
        DeviceClass::Integrated => 1,
        DeviceClass::Virtual => 2,
        DeviceClass::Software => 3,
        DeviceClass::Other => 4,
    };
    let a = match api {
        Api::Vulkan => 0,
        Api::Metal => 1,
        Api::Dx12 => 2,
        Api::Gl => 3,
        Api::Other => 4,
    };
    (c, a)
}

/// Whether the largest bench shapes are worth running here (minutes per step on software).
pub fn large_benchmarks_practical(caps: &Capabilities) -> bool {
    !software(caps)
}

#[cfg(test)]
mod tests;
