//! The tuner: at placement, times the plan's candidate kernels ([`plan::matmul_candidates`])
//! for the model's own matmuls at the placement's batch rows, and the fused narrow-MLP step
//! against the layered one where the plan allows both, within a budget; the fastest become
//! the plan's [`Tuning`] input (the plan stays pure). Choices are cached on disk per adapter,
//! driver and shape, so the next placement reads them without timing anything and runs the
//! same kernels (bit-identical reruns keep holding).
//!
//! Timing: each candidate is compiled, run once (warm-up, and the estimate of its cost), then
//! run `REPS` times where that fits the budget; the best repetition counts. By timestamp
//! queries where the plan says they are trustworthy ([`plan::wall_clock_profiling`]), else by
//! the wall clock around a submit and `device.poll`. Gradient matmuls are timed with the
//! split-K slices the plan gives that tile (the reduction pass excluded: it is the same work
//! for every tile of a split).
//!
//! The budget: before a matmul is timed, its cost is estimated from the FLOP rate measured
//! so far (a small calibration dispatch first); a matmul whose candidates would not fit what
//! is left keeps the static plan's kernel and counts as `skipped`. Largest matmuls go first.
//!
//! The cache: one JSON file, `tune.json` in `$GPUMLP_CACHE_DIR`, else `$XDG_CACHE_HOME/gpumlp`,
//! else `~/.cache/gpumlp`; written atomically (`files.rs`). An unreadable or corrupt cache is
//! ignored with a warning ([`Tuning::warnings`]), never an error; so is a cache that cannot be
//! written.

use super::kernels::{Kernels, MatmulDims, MatmulMode, MatmulVariant};
use super::plan::{self, MatmulKey, Tuning};
use super::{GpuBackend, GpuContext, GpuOptions};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::optim::Optimizer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use timer::Timer;

mod timer;

/// Whether placement runs the tuner (`--tune`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tune {
    /// On hardware GPUs, off on software adapters ([`plan::tune_by_default`]).
    #[default]
    Auto,
    /// Always runs the tuner.
    On,
    /// The static plan.
    Off,
}

impl std::str::FromStr for Tune {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Tune::Auto),
            "on" => Ok(Tune::On),
            "off" => Ok(Tune::Off),
            _ => Err(format!("unknown tune setting '{s}': use auto, on or off")),
        }
    }
}

impl std::fmt::Display for Tune {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tune::Auto => "auto",
            Tune::On => "on",
            Tune::Off => "off",
        })
    }
}

/// A matmul still to time: key, dims, output grid, candidates.
type Todo = (MatmulKey, MatmulDims, (u32, u32), Vec<MatmulVariant>);

/// Rows, columns and depth of the calibration matmul.
const CALIBRATION: u32 = 256;
/// Repetitions of each candidate after its warm-up, where the budget allows.
const REPS: u32 = 3;
/// The cache file's format version: entries of another version are ignored.
const CACHE_VERSION: u32 = 1;

/// The cache file: `entries` maps `adapter|rows=R|matmul` (or `|step SIZES`) to a choice.
#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: BTreeMap<String, String>,
}

/// The cache file's path from the environment (see the module's docs), or `None` where no
/// folder is known.
pub fn cache_path() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = var("GPUMLP_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("gpumlp")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("gpumlp")))?;
    Some(dir.join("tune.json"))
}

/// Reads the cache at `path`: empty where there is none; empty with a warning where it
/// cannot be read or parsed.
fn load(path: &Path, warnings: &mut Vec<String>) -> CacheFile {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CacheFile::default(),
        Err(e) => {
            warnings.push(format!(
                "the tuning cache {} cannot be read ({e}): tuning again",
                path.display()
            ));
            return CacheFile::default();
        }
    };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(c) if c.version == CACHE_VERSION => c,
        Ok(_) => CacheFile::default(),
        Err(e) => {
            warnings.push(format!(
                "the tuning cache {} is corrupt ({e}): ignoring it, tuning again and replacing it",
                path.display()
            ));
            CacheFile::default()
        }
    }
}

fn save(path: &Path, cache: &CacheFile) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let text = serde_json::to_string_pretty(cache)
        .map_err(|e| Error::Gpu(format!("tuning cache: {e}")))?;
    crate::files::atomic_write(path, text.as_bytes())
}

/// The adapter and driver part of every cache key.
fn adapter_key(ctx: &GpuContext) -> String {
    let i = &ctx.info;
    format!("{}|{}|{} {}", i.backend, i.name, i.driver, i.driver_info)
}

/// Tunes `spec`'s step for micro-batches of `rows` rows on `ctx` under `options`, reading and
/// writing the cache at `cache` (`None`: no cache). Returns what it chose and how.
pub fn tune(
    ctx: &Arc<GpuContext>,
    spec: &ModelSpec,
    optimizer: Optimizer,
    rows: usize,
    options: &GpuOptions,
    cache: Option<&Path>,
) -> Result<Tuning> {
    let start = Instant::now();
    let caps = ctx.capabilities();
    let budget = plan::tune_budget(options);
    let mut warnings = Vec::new();
    let mut file = cache.map(|p| load(p, &mut warnings)).unwrap_or_default();
    let prefix = format!("{}|rows={rows}", adapter_key(ctx));
    let support = plan::kernel_support(&caps, options);
    let mut timer = Timer::new(ctx, !plan::wall_clock_profiling(&caps));
    let mut tuning = Tuning {
        budget_seconds: budget,
        timer: timer.name(),
        cache: cache.map(|p| p.display().to_string()),
        ..Default::default()
    };
    // Unique matmuls, largest first, each with its candidates.
    let mut todo: Vec<Todo> = Vec::new();
    for (_, _, mode, dims, grid) in plan::step_matmuls(spec, rows) {
        let key = MatmulKey::of(mode, &dims);
        if todo.iter().any(|t| t.0 == key) {
            continue;
        }
        let candidates = plan::matmul_candidates(&caps, &support, mode, &dims);
        let entry = file.entries.get(&format!("{prefix}|{}", key.label()));
        let cached = entry
            .and_then(|s| s.parse::<MatmulVariant>().ok())
            .filter(|v| candidates.contains(v));
        match (cached, entry.and_then(|e| untimed_budget(e))) {
            (Some(v), _) => {
                tuning.matmuls.insert(key, v);
            }
            // Left static by a run with at least this budget: static again, without timing.
            (None, Some(b)) if b >= budget => tuning.skipped += 1,
            _ => todo.push((key, dims, grid, candidates)),
        }
    }
    todo.sort_by_key(|t| std::cmp::Reverse(flops(t.2, &t.1, t.0.mode, rows)));
    let step_key = format!("{prefix}|step {:?} {:?}", spec.sizes, spec.activations);
    let both_steps = options.fused_mlp.is_none()
        && plan::fused_shape(spec, rows, &caps, None).is_some()
        && options.fused;
    // Some(Some(fused)): timed by an earlier run; Some(None): left to the static plan by a run
    // with at least this budget (not timed again).
    let cached_step: Option<Option<bool>> = match file.entries.get(&step_key).map(String::as_str) {
        Some("fused-mlp") => Some(Some(true)),
        Some("layered") => Some(Some(false)),
        Some(e) if untimed_budget(e).is_some_and(|b| b >= budget) => Some(None),
        _ => None,
    };
    let from_cache = todo.is_empty() && (!both_steps || cached_step.is_some());
    if !todo.is_empty() {
        let kernels = Kernels::new(&ctx.device, support, Default::default());
        // Calibration: a 256³ forward matmul on the static kernel for that width, for the
        // first estimate (a model's own matmuls can take minutes on a software adapter).
        let cal = MatmulDims {
            n: CALIBRATION,
            k: CALIBRATION,
            ..Default::default()
        };
        let cal_grid = (CALIBRATION, CALIBRATION);
        let cal_kernel = plan::matmul_config(&support, MatmulMode::Forward, &cal).variant;
        let t0 = Instant::now();
        let t = timer.time(
            &kernels,
            &caps,
            MatmulMode::Forward,
            &cal,
            cal_grid,
            CALIBRATION as usize,
            cal_kernel,
            1,
        )?;
        let mut rate = flops(cal_grid, &cal, MatmulMode::Forward, 0) as f64 / t.max(1e-9);
        // Seconds per candidate beyond its dispatches: compiling the pipeline, buffers.
        let mut overhead = (t0.elapsed().as_secs_f64() - t).max(0.0);
        tuning.timed += 1;
        for (key, dims, grid, cands) in todo {
            let f = flops(grid, &dims, key.mode, rows) as f64;
            let estimate = cands.len() as f64 * ((1 + REPS) as f64 * f / rate + overhead);
            if start.elapsed().as_secs_f64() + estimate > budget {
                tuning.skipped += 1;
                file.entries
                    .insert(format!("{prefix}|{}", key.label()), untimed(budget));
                continue;
            }
            let mut best = (f64::INFINITY, cands[0]);
            let mut complete = true;
            for &v in &cands {
                if start.elapsed().as_secs_f64() > budget {
                    complete = false;
                    break;
                }
                let t0 = Instant::now();
                let t = timer.time(&kernels, &caps, key.mode, &dims, grid, rows, v, REPS)?;
                let spent = t0.elapsed().as_secs_f64();
                overhead = 0.5 * overhead + 0.5 * (spent - (1 + REPS) as f64 * t).max(0.0);
                tuning.timed += 1;
                rate = rate.max(f / t.max(1e-9));
                if t < best.0 {
                    best = (t, v);
                }
            }
            if !complete {
                tuning.skipped += 1;
                file.entries
                    .insert(format!("{prefix}|{}", key.label()), untimed(budget));
                continue;
            }
            tuning.matmuls.insert(key, best.1);
            file.entries
                .insert(format!("{prefix}|{}", key.label()), best.1.to_string());
        }
    }
    tuning.fused_mlp = match cached_step {
        Some(c) if both_steps => c,
        _ if both_steps && start.elapsed().as_secs_f64() < budget => {
            let fused = time_steps(ctx, spec, optimizer, rows, options, &tuning)?;
            tuning.timed += 2;
            file.entries
                .insert(step_key, if fused { "fused-mlp" } else { "layered" }.into());
            Some(fused)
        }
        // Out of budget: the static choice, remembered so the next run does not time it.
        _ if both_steps => {
            tuning.skipped += 1;
            file.entries.insert(step_key, untimed(budget));
            None
        }
        _ => None,
    };
    tuning.from_cache = from_cache;
    if let (Some(path), false) = (cache, from_cache) {
        file.version = CACHE_VERSION;
        if let Err(e) = save(path, &file) {
            warnings.push(format!("the tuning cache could not be written: {e}"));
        }
    }
    tuning.warnings = warnings;
    tuning.seconds = start.elapsed().as_secs_f64();
    Ok(tuning)
}

/// One line saying what the tuner did, with its warnings (for `Placement::reason`).
pub fn summary(t: &Tuning) -> String {
    let mut s = if t.from_cache {
        format!(
            "kernels from the tuning cache ({} matmuls tuned, {} static, {:.3} s)",
            t.matmuls.len(),
            t.skipped,
            t.seconds
        )
    } else {
        format!(
            "tuned {} matmuls in {:.2} s ({} launches timed by {}, budget {:.1} s{})",
            t.matmuls.len(),
            t.seconds,
            t.timed,
            t.timer,
            t.budget_seconds,
            if t.skipped > 0 {
                format!(", {} left static", t.skipped)
            } else {
                String::new()
            }
        )
    };
    for w in &t.warnings {
        s += &format!("; warning: {w}");
    }
    s
}

/// The cache's value for a matmul the tuner could not time within `budget` seconds.
fn untimed(budget: f64) -> String {
    format!("untimed budget={budget}")
}

/// The budget of an [`untimed`] value.
fn untimed_budget(value: &str) -> Option<f64> {
    value.strip_prefix("untimed budget=")?.parse().ok()
}

/// 2 × the multiply-adds of one matmul with a `rows × cols` output over batches of `batch`
/// rows (the gradient reduces over the batch, the other forms over `k`).
fn flops(grid: (u32, u32), dims: &MatmulDims, mode: MatmulMode, batch: usize) -> u64 {
    let inner = match mode {
        MatmulMode::Grad => batch as u64,
        _ => dims.k as u64,
    };
    2 * grid.0 as u64 * grid.1 as u64 * inner.max(1)
}

/// Whether the fused step beat the layered one over a few steps of `rows` rows.
fn time_steps(
    ctx: &Arc<GpuContext>,
    spec: &ModelSpec,
    optimizer: Optimizer,
    rows: usize,
    options: &GpuOptions,
    tuning: &Tuning,
) -> Result<bool> {
    let mut best = [f64::INFINITY; 2];
    for (i, fused) in [true, false].into_iter().enumerate() {
        let mut o = *options;
        o.fused_mlp = Some(fused);
        o.tune = Tune::Off;
        let mut b = GpuBackend::new_tuned(ctx.clone(), spec, optimizer, rows, o, tuning.clone())?;
        let x = vec![0.0f32; rows * spec.inputs()];
        let t = vec![0.0f32; rows * spec.outputs()];
        b.set_train_data(&x, &t, rows)?;
        b.begin_epoch(&(0..rows as u32).collect::<Vec<_>>())?;
        let hyper = optimizer.hyper(0.0, 1, 0.0);
        for rep in 0..=REPS {
            let t0 = Instant::now();
            b.step(0, rows, &hyper)?;
            b.flush();
            ctx.wait()?;
            if rep > 0 {
                best[i] = best[i].min(t0.elapsed().as_secs_f64());
            }
        }
    }
    Ok(best[0] <= best[1])
}
