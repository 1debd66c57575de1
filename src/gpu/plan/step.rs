//! The whole step as planned: every matmul's kernel and tile, the step (fused or layered), the
//! update, micro-batches and steps per submit, as data (`gpumlp plan` prints it).

use super::*;

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
    /// Output columns per workgroup.
    pub tile_n: u32,
    /// K slab staged per barrier (1: no staging).
    pub tile_k: u32,
    /// Outputs each invocation computes.
    pub outputs_per_invocation: u32,
    /// Invocations per workgroup.
    pub invocations: u32,
    /// Workgroups over columns and rows.
    pub workgroups: (u32, u32),
    /// Slices K (the batch) is split over (grad; 1: not split).
    pub split_k: u32,
    /// `static` (the plan's own rule) or `tuned` (measured at placement, or read from the
    /// tuner's cache).
    pub choice: &'static str,
    /// Where tuned: what the static plan would run (`gemm:64x64x8/8x4`, `blocked`, `tiled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_kernel: Option<String>,
}

/// How the step runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepPlan {
    /// The device planned for.
    pub device: Capabilities,
    /// Rows per training batch.
    pub batch: usize,
    /// `fused-mlp` (one kernel for the whole step) or `layered`.
    pub step: &'static str,
    /// The fused step's batch rows per tile and workgroups (0 when layered).
    pub fused_tile_rows: usize,
    /// The fused step's workgroups (0 when layered).
    pub fused_workgroups: usize,
    /// Rows per micro-batch (the batch, unless a layer's rows would not fit one binding).
    pub micro_batch: usize,
    /// Steps recorded into one queue submit.
    pub steps_per_submit: usize,
    /// Whether the optimizer update runs in the gradient matmul's epilogue (`fused`) or as a
    /// separate pass after the gradient is complete (`split`: micro-batches, replicas).
    pub update: &'static str,
    /// Which matmul kernels the device runs.
    pub kernels: KernelSupport,
    /// Every matmul of a layered step (also listed for a fused one: what it would run).
    pub matmuls: Vec<MatmulPlan>,
    /// What the tuner measured, where it ran (`None`: the static plan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuning: Option<Tuning>,
    /// Where tuned: the step the static plan would run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_step: Option<&'static str>,
}

/// Tile (rows, columns, K slab), outputs per invocation and invocations of a launch shape.
fn tile_of(cfg: &MatmulConfig) -> (u32, u32, u32, u32, u32) {
    let (tm, tn) = cfg.tile();
    match cfg.variant {
        MatmulVariant::Tiled => (tm, tn, 16, 16, 256),
        MatmulVariant::Blocked => (tm, tn, 1, BLOCK_M * BLOCK_N, BLOCK_WG),
        MatmulVariant::Gemm(g) => (
            g.bm,
            g.bn,
            g.bk,
            g.outputs_per_invocation(),
            g.invocations(),
        ),
    }
}

/// The static plan for `spec` at batch `batch` on `caps` (see the module's list).
pub fn plan(
    spec: &ModelSpec,
    batch: usize,
    caps: &Capabilities,
    options: &GpuOptions,
) -> Result<StepPlan> {
    plan_tuned(spec, batch, caps, options, None)
}

/// The fused step's shape where the step is fused under `options` (and `fused_mlp`, the
/// tuner's choice where the caller gave none).
fn fused_step(
    spec: &ModelSpec,
    micro: usize,
    caps: &Capabilities,
    options: &GpuOptions,
    fused_mlp: Option<bool>,
) -> Option<FusedShape> {
    let mut options = *options;
    options.fused_mlp = options.fused_mlp.or(fused_mlp);
    use_fused_mlp(spec, micro, caps, &options)
        .then(|| fused_shape(spec, micro, caps, None))
        .flatten()
}

/// One matmul of a layered step: layer, form, mode, dims, output rows and columns.
pub type StepMatmul = (usize, &'static str, MatmulMode, MatmulDims, (u32, u32));

/// Every matmul of a layered step of `spec` for micro-batches of `micro` rows; the dims name
/// each one's [`MatmulKey`].
pub fn step_matmuls(spec: &ModelSpec, micro: usize) -> Vec<StepMatmul> {
    let mut v = Vec::new();
    for (l, lay) in spec.layout().iter().enumerate() {
        let mut forms = vec![(
            "forward",
            MatmulMode::Forward,
            MatmulDims::forward(lay, 0.0),
            (micro as u32, lay.outputs as u32),
        )];
        if l > 0 {
            forms.push((
                "delta",
                MatmulMode::Delta,
                MatmulDims::delta(lay, 0.0),
                (micro as u32, lay.inputs as u32),
            ));
        }
        forms.push((
            "grad",
            MatmulMode::Grad,
            MatmulDims::grad(lay),
            (lay.inputs as u32 + 1, lay.outputs as u32),
        ));
        v.extend(forms.into_iter().map(|(f, m, d, rc)| (l, f, m, d, rc)));
    }
    v
}

/// The plan with the tuner's measured choices (`tuning`) in place of the static ones where
/// it has them; `options.force_gemm`, `force_tiled_matmul` and `fused_mlp` still win.
pub fn plan_tuned(
    spec: &ModelSpec,
    batch: usize,
    caps: &Capabilities,
    options: &GpuOptions,
    tuning: Option<&Tuning>,
) -> Result<StepPlan> {
    spec.validate()?;
    let micro = micro_batch_rows(spec, batch, caps, options)?;
    let mut options = *options;
    options.fused = fused_update(micro, batch, &options);
    let support = kernel_support(caps, &options);
    let forced = options.force_gemm.is_some() || options.force_tiled_matmul;
    let tuning = tuning.filter(|_| !forced);
    let fused = fused_step(
        spec,
        micro,
        caps,
        &options,
        tuning.and_then(|t| t.fused_mlp),
    );
    let static_fused = fused_step(spec, micro, caps, &options, None);
    let mut matmuls = Vec::new();
    for (l, form, mode, dims, (rows, cols)) in step_matmuls(spec, micro) {
        let static_cfg = matmul_config(&support, mode, &dims);
        let tuned = tuning.and_then(|t| t.matmuls.get(&MatmulKey::of(mode, &dims)));
        let cfg = tuned.map_or(static_cfg, |&v| launch_shape(v, &dims));
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
            choice: if tuned.is_some() { "tuned" } else { "static" },
            static_kernel: tuned.map(|_| static_cfg.variant.to_string()),
        });
    }
    let step_name = |f: &Option<FusedShape>| {
        if f.is_some() {
            "fused-mlp"
        } else {
            "layered"
        }
    };
    Ok(StepPlan {
        device: caps.clone(),
        batch,
        step: step_name(&fused),
        fused_tile_rows: fused.map_or(0, |f| f.tile),
        fused_workgroups: fused.map_or(0, |f| f.groups),
        micro_batch: micro,
        steps_per_submit: options.steps_per_submit.max(1),
        update: if options.fused { "fused" } else { "split" },
        kernels: support,
        matmuls,
        tuning: tuning.cloned(),
        static_step: tuning.map(|_| step_name(&static_fused)),
    })
}
