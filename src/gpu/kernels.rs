//! Every WGSL source in one place, the uniform structs that mirror them, and pipeline creation.

use super::plan::{self, KernelSupport, Overrides};
use bytemuck::{Pod, Zeroable};

mod bindings;
use bindings::family_slots;
pub use bindings::{
    step_binding, DataBindings, FamilyBindings, LossBindings, MatmulBindings, OptimizerBindings,
    Slot, STEP_UNIFORM_SIZE,
};

/// The kernel families, one `shaders/*.wgsl` file each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// The plain matmul kernels of shaders/matmul.wgsl (tiled and blocked).
    Matmul,
    /// The real-GPU matmul in tiles chosen by override constants ([`GemmConfig`]):
    /// matmul.wgsl + matmul_gemm.wgsl, built on every device.
    MatmulGemm,
    /// The loss and output-delta kernels of shaders/loss.wgsl.
    Loss,
    /// The optimizer update kernels of shaders/optimizer.wgsl.
    Optimizer,
    /// The data kernels of shaders/data.wgsl (e.g. gathering rows).
    Data,
}

/// Shared WGSL: activation functions.
pub const ACTIVATION_WGSL: &str = include_str!("../../shaders/activation.wgsl");
/// Shared WGSL: the per-step uniform and the optimizer update.
pub const STEP_WGSL: &str = include_str!("../../shaders/step.wgsl");
/// WGSL: the plain matmul kernels (tiled and blocked).
pub const MATMUL_WGSL: &str = include_str!("../../shaders/matmul.wgsl");
/// WGSL: the `matmul_gemm` tile kernel, built on top of [`MATMUL_WGSL`].
pub const MATMUL_GEMM_WGSL: &str = include_str!("../../shaders/matmul_gemm.wgsl");
/// WGSL: the loss kernels.
pub const LOSS_WGSL: &str = include_str!("../../shaders/loss.wgsl");
/// WGSL: the optimizer kernels.
pub const OPTIMIZER_WGSL: &str = include_str!("../../shaders/optimizer.wgsl");
/// WGSL: the data kernels.
pub const DATA_WGSL: &str = include_str!("../../shaders/data.wgsl");

impl Family {
    /// Every family, in declaration order.
    pub const ALL: [Family; 5] = [
        Family::Matmul,
        Family::MatmulGemm,
        Family::Loss,
        Family::Optimizer,
        Family::Data,
    ];

    /// The full source of a family: its shared preludes, then its own file. WGSL has no
    /// `#include`, so the preludes are concatenated here (and in the naga validation test).
    pub fn source(self) -> String {
        let (preludes, own): (&[&str], &str) = match self {
            Family::Matmul => (&[ACTIVATION_WGSL, STEP_WGSL], MATMUL_WGSL),
            Family::MatmulGemm => (&[ACTIVATION_WGSL, STEP_WGSL, MATMUL_WGSL], MATMUL_GEMM_WGSL),
            Family::Loss => (&[ACTIVATION_WGSL, STEP_WGSL], LOSS_WGSL),
            Family::Optimizer => (&[STEP_WGSL], OPTIMIZER_WGSL),
            Family::Data => (&[STEP_WGSL], DATA_WGSL),
        };
        let mut s = preludes.join("\n");
        s.push('\n');
        s.push_str(own);
        s
    }

    /// The file a family lives in, for messages.
    pub fn file(self) -> &'static str {
        match self {
            Family::Matmul => "shaders/matmul.wgsl",
            Family::MatmulGemm => "shaders/matmul_gemm.wgsl",
            Family::Loss => "shaders/loss.wgsl",
            Family::Optimizer => "shaders/optimizer.wgsl",
            Family::Data => "shaders/data.wgsl",
        }
    }
}

/// Mirrors `struct Step` in shaders/step.wgsl. Written once per step.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct StepUniform {
    /// Rows in this step's batch.
    pub batch: u32,
    /// Slot of this step's loss in the stats buffer.
    pub step_index: u32,
    /// First position in the epoch order of this step's rows.
    pub row_start: u32,
    /// Padding.
    pub _pad1: u32,
    /// Learning rate.
    pub lr: f32,
    /// L2 regularization strength.
    pub l2: f32,
    /// Momentum coefficient.
    pub momentum: f32,
    /// Adam's first-moment decay rate.
    pub beta1: f32,
    /// Adam's second-moment decay rate.
    pub beta2: f32,
    /// Adam's epsilon.
    pub eps: f32,
    /// `1 - beta1^t`.
    pub bias_correction1: f32,
    /// `1 - beta2^t`.
    pub bias_correction2: f32,
    /// `1 / batch`: the mean over the batch is folded into the output delta.
    pub inv_batch: f32,
    /// Padding.
    pub _pad2: [f32; 3],
}

/// Mirrors `struct Dims` in shaders/matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MatmulDims {
    /// Columns of C.
    pub n: u32,
    /// Forward/delta: the shared dimension (without the ones column).
    pub k: u32,
    /// Grad: rows of W (without the ones row).
    pub m: u32,
    /// Leaky ReLU slope for the activation.
    pub alpha: f32,
    /// Offset of A, in `f32` elements, into the left-hand buffer.
    pub a_off: u32,
    /// Offset of B, in `f32` elements, into the right-hand buffer.
    pub b_off: u32,
    /// Offset of C, in `f32` elements, into the output buffer.
    pub c_off: u32,
    /// Delta: offset of the previous activations in the second output buffer, in `f32` elements.
    pub aux_off: u32,
}

/// Mirrors `struct LossDims` in shaders/loss.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LossDims {
    /// Outputs per row.
    pub out: u32,
    /// Output activation code.
    pub act: u32,
    /// Loss code.
    pub loss: u32,
    /// Leaky ReLU slope.
    pub alpha: f32,
}

/// Mirrors `struct Count` (optimizer.wgsl) and `struct Gather` (data.wgsl): one u32, padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct OneU32 {
    /// The value (a count, or a row width).
    pub value: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// Mirrors `struct Count` (optimizer.wgsl) where a kernel covers `count` elements from `offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Range {
    /// Elements the kernel covers.
    pub count: u32,
    /// First element covered.
    pub offset: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

/// The matmul's three forms (the `MODE` override).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum MatmulMode {
    /// Forward pass: `C = φ(A·W)`.
    Forward = 0,
    /// Backward delta through a layer.
    Delta = 1,
    /// Weight gradient (and optimizer update).
    Grad = 2,
}

/// Matmul workgroup tile: 64×64 outputs of the tiled variant. The blocked variant's tile with its
/// default override constants (128×64) covers at least as much, so a launch that knows only this
/// constant (the probes) still covers C.
pub const MATMUL_TILE: u32 = 64;

/// The matmul kernels: two in shaders/matmul.wgsl, the tiles of shaders/matmul_gemm.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum MatmulVariant {
    /// `matmul_tiled`: 64×64 workgroup tiles staged through workgroup memory, 4×4 register
    /// tiles per invocation. Where no `matmul_gemm` tile fits the device.
    Tiled,
    /// `matmul_blocked`: no workgroup memory and no barriers; each of 64 invocations owns a
    /// 16×8 register block. A tuner candidate on software adapters (lavapipe, llvmpipe), where
    /// every memory access is a per-lane scalar loop and barriers split a workgroup into
    /// coroutines.
    Blocked,
    /// `matmul_gemm` (shaders/matmul_gemm.wgsl): the real-GPU kernel, in the tile `GemmConfig`
    /// (vec4 loads, conflict-free k-major staging, register-prefetch double buffering).
    Gemm(GemmConfig),
}

impl std::fmt::Display for MatmulVariant {
    /// `tiled`, `blocked` or `gemm:128x128x8/8x8`: how the tuner's cache and the plan name it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatmulVariant::Tiled => write!(f, "tiled"),
            MatmulVariant::Blocked => write!(f, "blocked"),
            MatmulVariant::Gemm(g) => write!(f, "gemm:{g}"),
        }
    }
}

impl std::str::FromStr for MatmulVariant {
    type Err = String;

    /// Parses the [`Display`](std::fmt::Display) form.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tiled" => Ok(MatmulVariant::Tiled),
            "blocked" => Ok(MatmulVariant::Blocked),
            _ => match s.strip_prefix("gemm:") {
                Some(g) => g.parse().map(MatmulVariant::Gemm),
                None => Err(format!(
                    "'{s}' is not a matmul kernel: tiled, blocked or gemm:BMxBNxBK/TMxTN"
                )),
            },
        }
    }
}

/// A workgroup tile of `matmul_gemm` (shaders/matmul_gemm.wgsl), its override constants:
/// `bm × bn` outputs per workgroup, K in slabs of `bk` staged twice (double buffering), each
/// invocation owning `tm × tn` outputs as `tm/4 × tn/4` vec4 blocks (CLBlast's MWG, NWG, KWG and
/// MWG/MDIMC, NWG/NDIMC). Plain data: the plan picks one per matmul, the tuner times them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct GemmConfig {
    /// Workgroup tile rows (outputs).
    pub bm: u32,
    /// Workgroup tile columns (outputs).
    pub bn: u32,
    /// K slab depth staged per stage.
    pub bk: u32,
    /// Rows of outputs per invocation (4 or 8).
    pub tm: u32,
    /// Columns of outputs per invocation (4 or 8).
    pub tn: u32,
}

impl GemmConfig {
    /// A tile of `bm × bn` outputs, K slabs of `bk`, `tm × tn` outputs per invocation.
    pub const fn new(bm: u32, bn: u32, bk: u32, tm: u32, tn: u32) -> Self {
        GemmConfig { bm, bn, bk, tm, tn }
    }

    /// The tiles worth timing on a real GPU (see BENCHMARKS.md, "The GEMM candidates"):
    /// large square, half-width, two 64×64 (one under 16 KiB of workgroup memory), and a
    /// narrow one for outputs of at most 16 columns (a classifier's last layer).
    pub const CANDIDATES: &'static [GemmConfig] = &[
        GemmConfig::new(128, 128, 8, 8, 8),
        GemmConfig::new(128, 64, 8, 8, 8),
        GemmConfig::new(64, 64, 16, 4, 4),
        GemmConfig::new(64, 64, 8, 8, 4),
        GemmConfig::new(64, 16, 16, 4, 4),
    ];

    /// The candidate for outputs of at most 16 columns.
    pub const NARROW: GemmConfig = GemmConfig::new(64, 16, 16, 4, 4);

    /// Invocations per workgroup.
    pub const fn invocations(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// Outputs each invocation computes: `tm × tn`.
    pub const fn outputs_per_invocation(&self) -> u32 {
        self.tm * self.tn
    }

    /// Bytes of workgroup memory: two stages of `bk` rows of `bm + 4` and `bn + 4` floats.
    pub const fn workgroup_bytes(&self) -> u32 {
        2 * self.bk * ((self.bm + 4) + (self.bn + 4)) * 4
    }

    /// Whether the kernel is well formed for this tile: register tiles of 4 or 8, every
    /// dimension a multiple of its per-invocation share, and each slab a whole number of vec4
    /// chunks per invocation (at most 4, the kernel's prefetch registers).
    pub const fn valid(&self) -> bool {
        let inv = self.invocations();
        (self.tm == 4 || self.tm == 8)
            && (self.tn == 4 || self.tn == 8)
            && self.bm.is_multiple_of(self.tm)
            && self.bn.is_multiple_of(self.tn)
            && self.bk.is_multiple_of(4)
            && self.bk > 0
            && inv > 0
            && (self.bm * self.bk / 4).is_multiple_of(inv)
            && (self.bn * self.bk / 4).is_multiple_of(inv)
            && self.bm * self.bk / 4 / inv >= 1
            && self.bm * self.bk / 4 / inv <= 4
            && self.bn * self.bk / 4 / inv >= 1
            && self.bn * self.bk / 4 / inv <= 4
    }

    /// Whether a device with `limits` can run this tile.
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        self.valid()
            && self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
            && self.invocations() <= limits.max_compute_invocations_per_workgroup
            && self.invocations() <= limits.max_compute_workgroup_size_x
            && limits.max_storage_buffers_per_shader_stage >= 8
    }

    /// The override constants of shaders/matmul_gemm.wgsl.
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("GBM", self.bm as f64),
            ("GBN", self.bn as f64),
            ("GBK", self.bk as f64),
            ("GTM", self.tm as f64),
            ("GTN", self.tn as f64),
        ]
    }
}

impl std::str::FromStr for GemmConfig {
    type Err = String;

    /// Parses the [`Display`](std::fmt::Display) form, `BMxBNxBK/TMxTN`; the tile must be
    /// [`valid`](GemmConfig::valid).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a GEMM tile BMxBNxBK/TMxTN (e.g. 128x128x8/8x8)");
        let (block, thread) = s.split_once('/').ok_or_else(bad)?;
        let nums = |t: &str| -> Result<Vec<u32>, String> {
            t.split('x')
                .map(|v| v.trim().parse().map_err(|_| bad()))
                .collect()
        };
        let (b, t) = (nums(block)?, nums(thread)?);
        let [bm, bn, bk] = b[..] else {
            return Err(bad());
        };
        let [tm, tn] = t[..] else {
            return Err(bad());
        };
        let g = GemmConfig::new(bm, bn, bk, tm, tn);
        if !g.valid() {
            return Err(format!(
                "{g} is not a tile matmul_gemm can run: per-invocation tiles of 4 or 8, BK a \
                 multiple of 4, and 1 to 4 vec4s of each slab per invocation"
            ));
        }
        Ok(g)
    }
}

impl std::fmt::Display for GemmConfig {
    /// `128x128x8/8x8`: the workgroup tile, then the outputs per invocation.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{}/{}x{}",
            self.bm, self.bn, self.bk, self.tm, self.tn
        )
    }
}

/// A matmul launch shape: which kernel, and (blocked) how its 64 invocations split over
/// columns. Chosen per adapter and per problem shape by [`Kernels::matmul_config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatmulConfig {
    /// The kernel this launch uses.
    pub variant: MatmulVariant,
    /// Blocked: invocations across columns (the `WG_N` override): 1, 2, 4 or 8.
    pub wg_n: u32,
}

/// Outputs per invocation of the blocked variant, along rows and along columns.
pub(crate) const BLOCK_M: u32 = 16;
pub(crate) const BLOCK_N: u32 = 8;
/// Invocations per workgroup of the blocked variant.
pub(crate) const BLOCK_WG: u32 = 64;

impl MatmulConfig {
    /// The entry point in shaders/matmul.wgsl.
    pub fn entry(&self) -> &'static str {
        match self.variant {
            MatmulVariant::Tiled => "matmul_tiled",
            MatmulVariant::Blocked => "matmul_blocked",
            MatmulVariant::Gemm(_) => "matmul_gemm",
        }
    }

    /// The override constants that fix this launch shape's kernel.
    pub fn shape_constants(&self) -> Vec<(&'static str, f64)> {
        match self.variant {
            MatmulVariant::Blocked => vec![("WG_N", self.wg_n as f64)],
            MatmulVariant::Gemm(g) => g.constants(),
            _ => vec![],
        }
    }

    /// The family whose module and bind group layout the kernel uses.
    pub fn family(&self) -> Family {
        match self.variant {
            MatmulVariant::Gemm(_) => Family::MatmulGemm,
            _ => Family::Matmul,
        }
    }

    /// Outputs (rows, columns) one workgroup covers.
    pub fn tile(&self) -> (u32, u32) {
        match self.variant {
            MatmulVariant::Tiled => (MATMUL_TILE, MATMUL_TILE),
            MatmulVariant::Blocked => (BLOCK_WG / self.wg_n * BLOCK_M, self.wg_n * BLOCK_N),
            MatmulVariant::Gemm(g) => (g.bm, g.bn),
        }
    }

    /// Workgroups (x over columns, y over rows) for a `rows × cols` output.
    pub fn groups(&self, rows: u32, cols: u32) -> (u32, u32) {
        let (tm, tn) = self.tile();
        (cols.div_ceil(tn).max(1), rows.div_ceil(tm).max(1))
    }
}

/// Invocations per workgroup of the 1-D kernels.
pub const WORKGROUP_1D: u32 = 256;

/// Shader modules and bind group layouts, made once per device.
pub struct Kernels {
    /// Which matmul kernels this device runs, as the plan decided.
    support: KernelSupport,
    /// The tuner's measured choices, which take precedence over the static plan.
    overrides: Overrides,
    modules: Vec<(Family, wgpu::ShaderModule)>,
    layouts: Vec<(Family, wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
}

impl Kernels {
    /// The modules and layouts of every family, for the kernels `support` names and the
    /// tuner's `overrides` (see [`plan::plan_tuned`]).
    pub fn new(device: &wgpu::Device, support: KernelSupport, overrides: Overrides) -> Self {
        let mut modules = Vec::new();
        let mut layouts = Vec::new();
        for f in Family::ALL {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(f.file()),
                source: wgpu::ShaderSource::Wgsl(f.source().into()),
            });
            modules.push((f, module));
            let entries: Vec<wgpu::BindGroupLayoutEntry> = family_slots(f)
                .into_iter()
                .enumerate()
                .map(|(i, s)| s.layout_entry(i as u32))
                .collect();
            let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(f.file()),
                entries: &entries,
            });
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(f.file()),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
            layouts.push((f, bgl, pl));
        }
        Kernels {
            support,
            overrides,
            modules,
            layouts,
        }
    }

    /// The bind group layout of a family's kernels.
    pub fn bind_group_layout(&self, f: Family) -> &wgpu::BindGroupLayout {
        &self
            .layouts
            .iter()
            .find(|(g, _, _)| *g == f)
            .expect("all families")
            .1
    }

    /// The kernels this device runs.
    pub fn support(&self) -> KernelSupport {
        self.support
    }

    /// Runs `variant` for every launch whatever the adapter (tests, benches and the tuner:
    /// how one candidate is forced). A `Gemm` tile must [`GemmConfig::fits`] the device.
    pub fn with_variant(mut self, variant: MatmulVariant) -> Self {
        self.support.default_variant = variant;
        self.support.gemm_by_shape = false;
        self.overrides = Overrides::default();
        self
    }

    /// Uses `matmul_gemm` with the tile `cfg` for every launch ([`Kernels::with_variant`]).
    pub fn with_gemm(self, cfg: GemmConfig) -> Self {
        self.with_variant(MatmulVariant::Gemm(cfg))
    }

    /// The matmul launch shape for one launch of `mode` with `dims`: the tuner's choice where
    /// it measured this matmul, else the static plan's ([`plan::matmul_config`]).
    pub fn matmul_config_for(&self, mode: MatmulMode, dims: &MatmulDims) -> MatmulConfig {
        let key = plan::MatmulKey::of(mode, dims);
        match self.overrides.get(&key) {
            Some(&variant) => plan::launch_shape(variant, dims),
            None => plan::matmul_config(&self.support, mode, dims),
        }
    }

    /// A compute pipeline for `entry` of family `f` with override constants. The matmul's
    /// generic entry `matmul` resolves to `matmul_blocked` where that is this adapter's
    /// variant, else `matmul_tiled` (64×64).
    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        f: Family,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> wgpu::ComputePipeline {
        let module = &self
            .modules
            .iter()
            .find(|(g, _)| *g == f)
            .expect("all families")
            .1;
        let layout = &self
            .layouts
            .iter()
            .find(|(g, _, _)| *g == f)
            .expect("all families")
            .2;
        let entry = if f == Family::Matmul && entry == "matmul" {
            // matmul.wgsl's own kernels only: `matmul_gemm` lives in another family's module.
            match self.support.default_variant {
                MatmulVariant::Blocked => "matmul_blocked",
                _ => "matmul_tiled",
            }
        } else {
            entry
        };
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(layout),
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        })
    }

    /// The matmul pipeline for a launch shape, mode, activation (φ for forward, φ' for delta)
    /// and optimizer.
    #[allow(clippy::too_many_arguments)] // one per override constant of the pipeline
    pub fn matmul(
        &self,
        device: &wgpu::Device,
        cfg: MatmulConfig,
        mode: MatmulMode,
        act: u32,
        opt: u32,
        keep_grad: bool,
        split_k: bool,
    ) -> wgpu::ComputePipeline {
        let mut constants = vec![
            ("MODE", mode as u32 as f64),
            ("ACT", act as f64),
            ("OPT", opt as f64),
            ("KEEP_GRAD", keep_grad as u32 as f64),
            ("SPLIT_K", split_k as u32 as f64),
        ];
        constants.extend(cfg.shape_constants());
        self.pipeline(device, cfg.family(), cfg.entry(), &constants)
    }

    /// A bind group of family `f` over `bindings`' whole buffers; the step uniform
    /// (binding 1) as one slot, placed by the dispatch's dynamic offset.
    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        f: Family,
        bindings: &impl FamilyBindings,
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .entries(f)
            .into_iter()
            .map(|(binding, b, slot)| wgpu::BindGroupEntry {
                binding,
                resource: match slot {
                    Slot::Step => step_binding(b),
                    _ => b.as_entire_binding(),
                },
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(f.file()),
            layout: self.bind_group_layout(f),
            entries: &entries,
        })
    }
}

/// Workgroup counts for `n` invocations of a 1-D kernel, folded into y past the per-dimension
/// limit (the kernels rebuild the index as `(y · groups_x) · 256 + x`).
pub fn groups_1d(n: u64, max_per_dim: u32) -> (u32, u32) {
    let groups = n.div_ceil(WORKGROUP_1D as u64).max(1);
    let x = groups.min(max_per_dim as u64);
    let y = groups.div_ceil(x);
    (x as u32, y as u32)
}
