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
//! The fused step is weighed against the layered one before any matmul (each placement and
//! each step checked against the budget); where it wins, the matmuls are not timed at all.
//!
//! The cache: one JSON file, `tune.json` in `$GPUMLP_CACHE_DIR`, else `$XDG_CACHE_HOME/gpumlp`,
//! else `~/.cache/gpumlp`; written atomically (`files.rs`). An unreadable or corrupt cache is
//! ignored with a warning ([`Tuning::warnings`]), never an error; so is a cache that cannot be
//! written.

use super::device::Capabilities;
use super::kernels::{Kernels, MatmulDims, MatmulMode, MatmulVariant};
use super::plan::{self, KernelSupport, MatmulKey, Tuning};
use super::{GpuBackend, GpuContext, GpuOptions};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::ModelSpec;
use crate::optim::Optimizer;
use cache::{adapter_key, load, save, untimed, untimed_budget, CacheFile, CACHE_VERSION};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timer::Timer;

mod cache;
mod timer;

pub use cache::cache_path;

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

/// Rows, columns and depth of the calibration matmul.
const CALIBRATION: u32 = 256;
/// Repetitions of each candidate after its warm-up, where the budget allows.
const REPS: u32 = 3;
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
    let mut session = Session::new(ctx, rows, options, cache);
    let step = session.step_choice(spec, options);
    let step_from_cache = !step.both || step.cached.is_some();
    // The step first: where the fused step wins, the model's matmuls never run, and the
    // budget is not spent on them.
    session.tuning.fused_mlp = session.decide_step(step, spec, optimizer, options)?;
    let todo = match session.tuning.fused_mlp {
        Some(true) => Vec::new(),
        _ => session.pending_matmuls(spec),
    };
    let from_cache = todo.is_empty() && step_from_cache;
    if !todo.is_empty() {
        session.time_matmuls(todo)?;
    }
    session.tuning.from_cache = from_cache;
    Ok(session.finish(cache, from_cache))
}

/// A matmul still to time, with its candidates.
struct Pending {
    key: MatmulKey,
    dims: MatmulDims,
    /// The output's rows and columns.
    grid: (u32, u32),
    candidates: Vec<MatmulVariant>,
}

/// How fast the device has been so far, to estimate what timing a matmul's candidates costs.
struct Pace {
    /// FLOP per second: the best measured yet.
    rate: f64,
    /// Seconds per candidate beyond its dispatches: compiling the pipeline, buffers.
    overhead: f64,
}

/// Whether the fused step and the layered one are both to be weighed, and what the cache says.
struct StepChoice {
    /// The step's cache key.
    key: String,
    /// The plan allows both steps and no option fixed one.
    both: bool,
    /// Some(Some(fused)): timed by an earlier run; Some(None): left to the static plan by a
    /// run with at least this budget (not timed again).
    cached: Option<Option<bool>>,
}

/// One tuning run: the device it times on, its clock and budget, the cache it reads and
/// writes, and what it has chosen so far.
struct Session<'a> {
    ctx: &'a Arc<GpuContext>,
    caps: Capabilities,
    support: KernelSupport,
    /// The micro-batch rows every matmul is timed at.
    rows: usize,
    start: Instant,
    budget: f64,
    /// `adapter|rows=R`: the start of every cache key.
    prefix: String,
    file: CacheFile,
    timer: Timer<'a>,
    tuning: Tuning,
}

impl<'a> Session<'a> {
    /// Starts the clock and reads the cache (a warning where it is unreadable).
    fn new(
        ctx: &'a Arc<GpuContext>,
        rows: usize,
        options: &GpuOptions,
        cache: Option<&Path>,
    ) -> Self {
        let start = Instant::now();
        let caps = ctx.capabilities();
        let budget = plan::tune_budget(options);
        let mut warnings = Vec::new();
        let file = cache.map(|p| load(p, &mut warnings)).unwrap_or_default();
        let support = plan::kernel_support(&caps, options);
        let timer = Timer::new(ctx, !plan::wall_clock_profiling(&caps));
        let tuning = Tuning {
            budget_seconds: budget,
            timer: timer.name(),
            cache: cache.map(|p| p.display().to_string()),
            warnings,
            ..Default::default()
        };
        Session {
            ctx,
            caps,
            support,
            rows,
            start,
            budget,
            prefix: format!("{}|rows={rows}", adapter_key(ctx)),
            file,
            timer,
            tuning,
        }
    }

    /// Seconds since the tuning started.
    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The cache key of a matmul.
    fn matmul_entry(&self, key: &MatmulKey) -> String {
        format!("{}|{}", self.prefix, key.label())
    }

    /// `spec`'s unique matmuls that the cache does not settle, largest first, each with its
    /// candidates; those it settles are taken (or, left static, counted as skipped).
    fn pending_matmuls(&mut self, spec: &ModelSpec) -> Vec<Pending> {
        let mut todo: Vec<Pending> = Vec::new();
        for (_, _, mode, dims, grid) in plan::step_matmuls(spec, self.rows) {
            let key = MatmulKey::of(mode, &dims);
            if todo.iter().any(|t| t.key == key) {
                continue;
            }
            let candidates = plan::matmul_candidates(&self.caps, &self.support, mode, &dims);
            let entry = self.file.entries.get(&self.matmul_entry(&key));
            let cached = entry
                .and_then(|s| s.parse::<MatmulVariant>().ok())
                .filter(|v| candidates.contains(v));
            match (cached, entry.and_then(|e| untimed_budget(e))) {
                (Some(v), _) => {
                    self.tuning.matmuls.insert(key, v);
                }
                // Left static by a run with at least this budget: static again, without timing.
                (None, Some(b)) if b >= self.budget => self.tuning.skipped += 1,
                _ => todo.push(Pending {
                    key,
                    dims,
                    grid,
                    candidates,
                }),
            }
        }
        let rows = self.rows;
        todo.sort_by_key(|t| std::cmp::Reverse(flops(t.grid, &t.dims, t.key.mode, rows)));
        todo
    }

    /// Whether the fused and the layered step are both to be weighed, and what the cache
    /// says of them.
    fn step_choice(&self, spec: &ModelSpec, options: &GpuOptions) -> StepChoice {
        let key = format!(
            "{}|step {:?} {:?}",
            self.prefix, spec.sizes, spec.activations
        );
        let both = options.fused_mlp.is_none()
            && plan::fused_shape(spec, self.rows, &self.caps, None).is_some()
            && options.fused;
        let cached = match self.file.entries.get(&key).map(String::as_str) {
            Some("fused-mlp") => Some(Some(true)),
            Some("layered") => Some(Some(false)),
            Some(e) if untimed_budget(e).is_some_and(|b| b >= self.budget) => Some(None),
            _ => None,
        };
        StepChoice { key, both, cached }
    }

    /// Times every pending matmul's candidates that the budget allows (calibrating first)
    /// and records the fastest; the others keep the static kernel.
    fn time_matmuls(&mut self, todo: Vec<Pending>) -> Result<()> {
        let kernels = Kernels::new(&self.ctx.device, self.support, Default::default());
        let mut pace = self.calibrate(&kernels)?;
        for t in todo {
            let entry = self.matmul_entry(&t.key);
            match self.fastest(&kernels, &mut pace, &t)? {
                Some(best) => {
                    self.tuning.matmuls.insert(t.key, best);
                    self.file.entries.insert(entry, best.to_string());
                }
                None => {
                    self.tuning.skipped += 1;
                    self.file.entries.insert(entry, untimed(self.budget));
                }
            }
        }
        Ok(())
    }

    /// The first pace: a 256³ forward matmul on the static kernel for that width (a model's
    /// own matmuls can take minutes on a software adapter).
    fn calibrate(&mut self, kernels: &Kernels) -> Result<Pace> {
        let cal = MatmulDims {
            n: CALIBRATION,
            k: CALIBRATION,
            ..Default::default()
        };
        let cal_grid = (CALIBRATION, CALIBRATION);
        let cal_kernel = plan::matmul_config(&self.support, MatmulMode::Forward, &cal).variant;
        let t0 = Instant::now();
        let t = self.timer.time(
            kernels,
            &self.caps,
            MatmulMode::Forward,
            &cal,
            cal_grid,
            CALIBRATION as usize,
            cal_kernel,
            1,
        )?;
        self.tuning.timed += 1;
        Ok(Pace {
            rate: flops(cal_grid, &cal, MatmulMode::Forward, 0) as f64 / t.max(1e-9),
            overhead: (t0.elapsed().as_secs_f64() - t).max(0.0),
        })
    }

    /// The fastest of `t`'s candidates, or `None` where timing them all would not fit (by
    /// `pace`'s estimate) or did not fit what is left of the budget.
    fn fastest(
        &mut self,
        kernels: &Kernels,
        pace: &mut Pace,
        t: &Pending,
    ) -> Result<Option<MatmulVariant>> {
        let f = flops(t.grid, &t.dims, t.key.mode, self.rows) as f64;
        let estimate =
            t.candidates.len() as f64 * ((1 + REPS) as f64 * f / pace.rate + pace.overhead);
        if self.elapsed() + estimate > self.budget {
            return Ok(None);
        }
        let mut best = (f64::INFINITY, t.candidates[0]);
        for &v in &t.candidates {
            if self.elapsed() > self.budget {
                return Ok(None);
            }
            let t0 = Instant::now();
            let secs = self.timer.time(
                kernels, &self.caps, t.key.mode, &t.dims, t.grid, self.rows, v, REPS,
            )?;
            let spent = t0.elapsed().as_secs_f64();
            pace.overhead = 0.5 * pace.overhead + 0.5 * (spent - (1 + REPS) as f64 * secs).max(0.0);
            self.tuning.timed += 1;
            pace.rate = pace.rate.max(f / secs.max(1e-9));
            if secs < best.0 {
                best = (secs, v);
            }
        }
        Ok(Some(best.1))
    }

    /// The fused step (`Some(true)`), the layered one, or the static plan's (`None`): from
    /// the cache, by timing both where the budget allows, else left static and remembered so
    /// the next run does not time it.
    fn decide_step(
        &mut self,
        step: StepChoice,
        spec: &ModelSpec,
        optimizer: Optimizer,
        options: &GpuOptions,
    ) -> Result<Option<bool>> {
        if !step.both {
            return Ok(None);
        }
        if let Some(c) = step.cached {
            return Ok(c);
        }
        if self.elapsed() >= self.budget {
            self.tuning.skipped += 1;
            self.file.entries.insert(step.key, untimed(self.budget));
            return Ok(None);
        }
        let deadline = self.start + Duration::from_secs_f64(self.budget);
        let timed = time_steps(
            self.ctx,
            spec,
            optimizer,
            self.rows,
            options,
            &self.tuning,
            deadline,
        )?;
        let Some(fused) = timed else {
            self.tuning.skipped += 1;
            self.file.entries.insert(step.key, untimed(self.budget));
            return Ok(None);
        };
        self.tuning.timed += 2;
        let value = if fused { "fused-mlp" } else { "layered" };
        self.file.entries.insert(step.key, value.into());
        Ok(Some(fused))
    }

    /// Writes the cache where anything was timed (a warning where it cannot be written) and
    /// returns the tuning with its time.
    fn finish(mut self, cache: Option<&Path>, from_cache: bool) -> Tuning {
        if let (Some(path), false) = (cache, from_cache) {
            self.file.version = CACHE_VERSION;
            if let Err(e) = save(path, &self.file) {
                let warning = format!("the tuning cache could not be written: {e}");
                self.tuning.warnings.push(warning);
            }
        }
        self.tuning.seconds = self.elapsed();
        self.tuning
    }
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

/// 2 × the multiply-adds of one matmul with a `rows × cols` output over batches of `batch`
/// rows (the gradient reduces over the batch, the other forms over `k`).
fn flops(grid: (u32, u32), dims: &MatmulDims, mode: MatmulMode, batch: usize) -> u64 {
    let inner = match mode {
        MatmulMode::Grad => batch as u64,
        _ => dims.k as u64,
    };
    2 * grid.0 as u64 * grid.1 as u64 * inner.max(1)
}

/// Whether the fused step beat the layered one over a few steps of `rows` rows; `None` where
/// `deadline` passed before both were timed (each placement and each step is checked).
fn time_steps(
    ctx: &Arc<GpuContext>,
    spec: &ModelSpec,
    optimizer: Optimizer,
    rows: usize,
    options: &GpuOptions,
    tuning: &Tuning,
    deadline: Instant,
) -> Result<Option<bool>> {
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
            if Instant::now() > deadline {
                return Ok(None);
            }
            let t0 = Instant::now();
            b.step(0, rows, &hyper)?;
            b.flush();
            ctx.wait()?;
            if rep > 0 {
                best[i] = best[i].min(t0.elapsed().as_secs_f64());
            }
        }
    }
    Ok(Some(best[0] <= best[1]))
}
