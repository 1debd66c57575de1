//! The matmul's launch shapes: its three forms, its kernels (tiled, blocked, the GEMM tiles)
//! and how one launch covers an output.

use super::Family;

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
/// columns. Chosen per adapter and per problem shape by [`Kernels::matmul_config_for`](super::Kernels::matmul_config_for).
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
