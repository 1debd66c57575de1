//! The tuner (src/gpu/tune.rs), forced on the software adapters: it picks one of the plan's
//! candidates for every matmul, writes its cache, and a second placement reads the cache
//! without timing anything and runs the same kernels; `Tune::Off` is the static plan; a
//! corrupt cache is survived; a budget too small to time anything leaves the static plan.
//! One test case per adapter.

mod common;

use common::{report, targets, uniform};
use gpumlp::backend::Backend;
use gpumlp::gpu::plan::{self, MatmulKey, Tuning};
use gpumlp::gpu::tune::{self, Tune};
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use gpumlp::{GpuBackend, GpuContext, GpuOptions, ReferenceBackend, Tolerance};
use std::path::Path;
use std::sync::Arc;

common::on_each_adapter!(
    tuning_picks_a_planned_candidate_and_caches_it,
    tune_off_is_the_static_plan,
    a_corrupt_cache_is_survived,
    a_tiny_budget_leaves_the_static_plan,
    narrow_nets_time_the_fused_step_against_the_layered_one,
);

/// Awkward widths, small enough to time every candidate within a generous budget.
fn spec() -> ModelSpec {
    ModelSpec::new(
        &[7, 65, 3],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap()
}

const ROWS: usize = 65;

fn options(tune: Tune, budget_ms: u64) -> GpuOptions {
    let mut o = GpuOptions::default();
    o.tune = tune;
    o.tune_budget_ms = Some(budget_ms);
    o.fused_mlp = Some(false);
    o
}

fn run_tuner(ctx: &Arc<GpuContext>, o: &GpuOptions, cache: &Path) -> Tuning {
    tune::tune(ctx, &spec(), Optimizer::Sgd, ROWS, o, Some(cache)).unwrap()
}

/// Every choice is one of the plan's candidates for its matmul.
fn assert_planned(ctx: &GpuContext, t: &Tuning) {
    let caps = ctx.capabilities();
    let support = plan::kernel_support(&caps, &GpuOptions::default());
    for (_, _, mode, dims, _) in plan::step_matmuls(&spec(), ROWS) {
        let key = MatmulKey::of(mode, &dims);
        let chosen = t
            .matmuls
            .get(&key)
            .unwrap_or_else(|| panic!("{}: {} was not tuned: {t:?}", ctx.info, key.label()));
        let candidates = plan::matmul_candidates(&caps, &support, mode, &dims);
        assert!(
            candidates.contains(chosen),
            "{}: {} chose {chosen}, not a candidate ({candidates:?})",
            ctx.info,
            key.label()
        );
    }
}

/// One SGD step of `gpu` against the reference from the same parameters: the tuned kernels
/// must compute the same step.
fn matches_reference(ctx: &GpuContext, gpu: &mut GpuBackend) {
    let spec = spec();
    let x = uniform(ROWS * spec.inputs(), -1.0, 1.0, 1);
    let t = targets(&spec, ROWS, 2);
    let params = spec.init_params(3);
    let mut cpu = ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap();
    let order: Vec<u32> = (0..ROWS as u32).collect();
    let h = Optimizer::Sgd.hyper(0.1, 1, 0.0);
    for b in [gpu as &mut dyn Backend, &mut cpu] {
        b.set_params(&params).unwrap();
        b.set_train_data(&x, &t, ROWS).unwrap();
        b.begin_epoch(&order).unwrap();
        b.step(0, ROWS, &h).unwrap();
        b.finish_epoch().unwrap();
    }
    let what = format!("{}: a step on the tuned kernels", ctx.info);
    Tolerance::new(1e-4, 1e-5).assert_close(&what, &gpu.params().unwrap(), &cpu.params().unwrap());
}

fn tuning_picks_a_planned_candidate_and_caches_it(ctx: &Arc<GpuContext>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("sub").join("tune.json");
    let o = options(Tune::On, 60_000);
    let first = run_tuner(ctx, &o, &cache);
    assert!(!first.from_cache && first.timed > 0, "{first:?}");
    assert_eq!(first.skipped, 0, "a 60 s budget times this model whole");
    assert_eq!(
        first.timer, "wall-clock",
        "software adapters time by the wall clock"
    );
    assert_planned(ctx, &first);
    let text = std::fs::read_to_string(&cache).expect("the cache was written");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json["entries"].as_object().unwrap().len(),
        first.matmuls.len()
    );
    // A second tuning and a placement read the cache: nothing timed, the same kernels.
    let second = run_tuner(ctx, &o, &cache);
    assert!(second.from_cache && second.timed == 0, "{second:?}");
    assert_eq!(second.matmuls, first.matmuls);
    let spec = spec();
    let mut gpu =
        GpuBackend::new_with_cache(ctx.clone(), &spec, Optimizer::Sgd, ROWS, o, Some(&cache))
            .unwrap();
    let t = gpu.tuning().expect("tuned").clone();
    assert!(t.from_cache && t.timed == 0 && t.matmuls == first.matmuls);
    let p = gpu.plan().unwrap();
    assert!(p.matmuls.iter().all(|m| m.choice == "tuned"), "{p:?}");
    matches_reference(ctx, &mut gpu);
    report(format!(
        "{}: tuned {} matmuls in {:.2} s ({} launches), from the cache in {:.4} s",
        ctx.info,
        first.matmuls.len(),
        first.seconds,
        first.timed,
        second.seconds
    ));
}

fn tune_off_is_the_static_plan(ctx: &Arc<GpuContext>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tune.json");
    let spec = spec();
    for tune in [Tune::Off, Tune::Auto] {
        // Auto is off on software adapters (plan::tune_by_default).
        let o = options(tune, 60_000);
        let gpu =
            GpuBackend::new_with_cache(ctx.clone(), &spec, Optimizer::Sgd, ROWS, o, Some(&cache))
                .unwrap();
        assert!(gpu.tuning().is_none(), "{tune}");
        let p = gpu.plan().unwrap();
        let caps = ctx.capabilities();
        assert_eq!(p, plan::plan(&spec, ROWS, &caps, &o).unwrap());
        assert!(p.matmuls.iter().all(|m| m.choice == "static"));
    }
    assert!(!cache.exists(), "no tuning, no cache");
}

fn a_corrupt_cache_is_survived(ctx: &Arc<GpuContext>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tune.json");
    std::fs::write(&cache, b"{\"version\": 1, \"entries\": {\"x\": [").unwrap();
    let o = options(Tune::On, 60_000);
    let t = run_tuner(ctx, &o, &cache);
    assert!(
        t.warnings.iter().any(|w| w.contains("corrupt")),
        "{:?}",
        t.warnings
    );
    assert!(!t.from_cache);
    assert_planned(ctx, &t);
    // Replaced by a valid cache, which the next run reads without a warning.
    let again = run_tuner(ctx, &o, &cache);
    assert!(again.from_cache && again.warnings.is_empty(), "{again:?}");
    // A cache naming a kernel that is not a candidate is retuned, not trusted.
    let text = std::fs::read_to_string(&cache).unwrap();
    let bogus = text.replace("\"gemm:", "\"gemm:999x");
    std::fs::write(&cache, bogus).unwrap();
    let retuned = run_tuner(ctx, &o, &cache);
    assert_planned(ctx, &retuned);
}

fn a_tiny_budget_leaves_the_static_plan(ctx: &Arc<GpuContext>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tune.json");
    let o = options(Tune::On, 1);
    let t = run_tuner(ctx, &o, &cache);
    assert!(t.skipped > 0, "{t:?}");
    assert!(t.matmuls.len() + t.skipped == 5, "{t:?}");
    // The next run with the same budget reads the verdict instead of timing again.
    let again = run_tuner(ctx, &o, &cache);
    assert!(again.from_cache && again.timed == 0, "{again:?}");
    let p = plan::plan_tuned(&spec(), ROWS, &ctx.capabilities(), &o, Some(&again)).unwrap();
    let tuned = p.matmuls.iter().filter(|m| m.choice == "tuned").count();
    assert_eq!(tuned, again.matmuls.len());
}

fn narrow_nets_time_the_fused_step_against_the_layered_one(ctx: &Arc<GpuContext>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tune.json");
    let spec = ModelSpec::new(
        &[2, 16, 2],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let mut o = GpuOptions::default();
    o.tune = Tune::On;
    o.tune_budget_ms = Some(60_000);
    let t = tune::tune(ctx, &spec, Optimizer::Sgd, 256, &o, Some(&cache)).unwrap();
    let fused = t.fused_mlp.expect("both steps are possible and were timed");
    let gpu = GpuBackend::new_with_cache(ctx.clone(), &spec, Optimizer::Sgd, 256, o, Some(&cache))
        .unwrap();
    assert_eq!(
        gpu.uses_fused_mlp(),
        fused,
        "the placement runs the tuned step"
    );
    assert_eq!(gpu.tuning().unwrap().fused_mlp, Some(fused));
    if fused {
        assert!(t.matmuls.is_empty(), "the fused step runs no matmul: {t:?}");
    }
    // A budget that runs out while the steps are placed or timed leaves the static plan, and
    // says so: the next run with that budget does not time them again.
    let mut tiny = o;
    tiny.tune_budget_ms = Some(1);
    let other = dir.path().join("tiny.json");
    let t = tune::tune(ctx, &spec, Optimizer::Sgd, 256, &tiny, Some(&other)).unwrap();
    assert_eq!(t.fused_mlp, None, "{t:?}");
    assert!(t.skipped >= 1 && t.seconds < 1.0, "{t:?}");
    let again = tune::tune(ctx, &spec, Optimizer::Sgd, 256, &tiny, Some(&other)).unwrap();
    assert!(again.from_cache && again.timed == 0, "{again:?}");
    report(format!(
        "{}: 2-16-2 b256: the tuner chose the {} step",
        ctx.info,
        if fused { "fused" } else { "layered" }
    ));
}

/// `gpumlp plan --tune on --json` tunes the live adapter, shows the tuning beside the static
/// choices and writes the cache in `$GPUMLP_CACHE_DIR`; the second run reads it; `--tune off`
/// prints the static plan.
#[test]
fn plan_command_shows_the_tuning_and_caches_it() {
    if !common::gpus().iter().any(|c| c.info.backend == "vulkan") {
        report("no vulkan adapter here: skipped".into());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [("GPUMLP_CACHE_DIR", dir.path().to_str().unwrap())];
    let plan_json = |tune: &str| -> serde_json::Value {
        let args = [
            "plan",
            "--layers",
            "7,65,3",
            "--batch",
            "65",
            "--backend",
            "vulkan",
            "--tune",
            tune,
            "--json",
        ];
        let o = common::cli::run(&args, &env);
        assert!(o.status.success(), "{}", common::cli::text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let first = plan_json("on");
    let t = &first["tuning"];
    assert_eq!(t["from_cache"], false, "{t}");
    assert!(t["timed"].as_u64().unwrap() >= 1, "{t}");
    assert!(
        dir.path().join("tune.json").is_file(),
        "the cache was written"
    );
    for m in first["matmuls"].as_array().unwrap() {
        let tuned = m["choice"] == "tuned";
        assert!(tuned || m["choice"] == "static", "{m}");
        assert_eq!(tuned, m.get("static_kernel").is_some(), "{m}");
    }
    let second = plan_json("on");
    assert_eq!(second["tuning"]["from_cache"], true);
    assert_eq!(second["tuning"]["timed"], 0);
    assert_eq!(
        second["matmuls"], first["matmuls"],
        "the same kernels from the cache"
    );
    let off = plan_json("off");
    assert!(off.get("tuning").is_none());
    assert!(off["matmuls"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["choice"] == "static"));
}
