//! `gpumlp plan`: how a training step would run on this machine's adapter, or on a named
//! capability profile of a real device (the plan is a pure function of the capabilities).

use crate::choices::BackendChoice;
use crate::LayerSizes;
use anyhow::{bail, Context};
use clap::Args;
use gpumlp::gpu::plan::{micro_batch_rows, plan, plan_tuned, StepPlan};
use gpumlp::gpu::profiles::{profile, PROFILE_NAMES};
use gpumlp::gpu::tune::tune;
use gpumlp::{Activation, AdapterSelector, GpuContext, GpuOptions, Loss, ModelSpec, Optimizer};

#[derive(Args)]
pub struct PlanArgs {
    /// Layer sizes, e.g. 784,512,512,10 or 784-512-512-10.
    #[arg(long, default_value = "784,512,512,10")]
    pub layers: LayerSizes,
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Hidden activation (the output is softmax with cross-entropy, as in `bench`).
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// A capability profile of a real device instead of this machine's adapter.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PROFILE_NAMES))]
    pub profile: Option<String>,
    /// Restrict the live adapter to one backend.
    #[arg(long, value_enum, conflicts_with = "profile")]
    pub backend: Option<BackendChoice>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// On this machine's adapter, time the candidate kernels (or read the tuning cache) and
    /// show the tuned plan beside the static choices (auto: on hardware GPUs only; off: the
    /// static plan). Profiles are always static.
    #[arg(long, default_value = "auto", value_name = "auto|on|off")]
    pub tune: crate::TuneArg,
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let hidden: Activation = args.activation.parse()?;
    let spec = ModelSpec::new(
        &args.layers.0,
        hidden,
        Activation::Softmax,
        Loss::CrossEntropy,
    )?;
    let plan = match &args.profile {
        Some(name) => {
            let caps = profile(name).with_context(|| {
                format!(
                    "unknown --profile '{name}': use one of {}",
                    PROFILE_NAMES.join(", ")
                )
            })?;
            plan(&spec, args.batch, &caps, &GpuOptions::default())?
        }
        None => {
            let mut sel = AdapterSelector::default();
            sel.backend = args.backend.map(|b| b.to_string());
            sel.name = None;
            let ctx = std::sync::Arc::new(GpuContext::new(&sel.or_env())?);
            // Field by field: GpuOptions is to be #[non_exhaustive] (CONVENTIONS, `api`).
            #[allow(clippy::field_reassign_with_default)]
            let options = {
                let mut o = GpuOptions::default();
                o.tune = args.tune.0;
                o
            };
            let caps = ctx.capabilities();
            if gpumlp::gpu::plan::tune_by_default(&caps, options.tune) {
                let micro = micro_batch_rows(&spec, args.batch, &caps, &options)?;
                let cache = gpumlp::gpu::tune::cache_path();
                let t = tune(
                    &ctx,
                    &spec,
                    Optimizer::Sgd,
                    micro,
                    &options,
                    cache.as_deref(),
                )?;
                plan_tuned(&spec, args.batch, &caps, &options, Some(&t))?
            } else {
                plan(&spec, args.batch, &caps, &options)?
            }
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_plan(&plan);
    }
    Ok(())
}

fn print_plan(p: &StepPlan) {
    let d = &p.device;
    println!(
        "{} ({:?}, {:?}): batch {}, {} step, micro-batch {}, {} steps per submit, {} update",
        d.name, d.class, d.api, p.batch, p.step, p.micro_batch, p.steps_per_submit, p.update
    );
    if p.step == "fused-mlp" {
        println!(
            "  fused step: {} rows per tile, {} workgroups",
            p.fused_tile_rows, p.fused_workgroups
        );
    }
    println!(
        "  layer form     kernel              tile (m x n x k)  outputs/inv  workgroups  split-K"
    );
    if let Some(t) = &p.tuning {
        println!("  {}", gpumlp::gpu::tune::summary(t));
        if let Some(s) = p.static_step {
            println!("  static plan's step: {s}");
        }
    }
    for m in &p.matmuls {
        let tuned = match &m.static_kernel {
            Some(s) => format!("  tuned (static: {s})"),
            None => String::new(),
        };
        println!(
            "  {:>5} {:<8} {:<19} {:>4} x {:>3} x {:>2}    {:>11}  {:>5}x{:<5} {:>7}{tuned}",
            m.layer,
            m.form,
            m.kernel,
            m.tile_m,
            m.tile_n,
            m.tile_k,
            m.outputs_per_invocation,
            m.workgroups.0,
            m.workgroups.1,
            m.split_k,
        );
    }
}
