//! `gpumlp bench`: a fixed protocol anyone can run. A fixed random batch (inputs uniform in
//! [0, 1), random class labels), softmax cross-entropy, plain SGD with lr 0.1; 3 warm-up steps,
//! then S timed steps, the clock stopped only after the final loss has been read back.

use crate::choices::DeviceChoice;
use crate::{DeviceArgs, LayerSizes};
use anyhow::bail;
use clap::Args;
use gpumlp::{Activation, Backend, Loss, ModelSpec, Optimizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// Layer sizes, e.g. 784,512,512,10 or 784-512-512-10.
    #[arg(long, default_value = "784,512,512,10")]
    pub layers: LayerSizes,
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Hidden activation.
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Print the time of each kernel in one step (needs timestamp queries).
    #[arg(long)]
    pub profile: bool,
    /// Use the first, unfused schedule (separate optimizer pass) for comparison.
    #[arg(long)]
    pub unfused: bool,
    /// Force the fully fused narrow-MLP step (every width ≤ 128) even where it is not the default.
    #[arg(long, conflicts_with = "layered")]
    pub fused_mlp: bool,
    /// Force the layered schedule (never the fully fused step).
    #[arg(long)]
    pub layered: bool,
    /// Use the GPU matmul (shared-memory tiles) even on a CPU adapter, for comparison.
    #[arg(long)]
    pub tiled: bool,
    /// Run every matmul as `matmul_gemm` in this tile, BMxBNxBK/TMxTN (e.g. 128x128x8/8x8;
    /// the candidates are `GemmConfig::CANDIDATES`).
    #[arg(long)]
    pub gemm: Option<gpumlp::gpu::kernels::GemmConfig>,
    /// Training steps recorded per submit (1: submit every step).
    #[arg(long, default_value_t = 8)]
    pub steps_per_submit: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// `gpumlp bench`: the protocol above on the chosen device, printed as one line or JSON, then
/// (with `--profile`) the time of each kernel in one step.
pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.device.device == DeviceChoice::Auto {
        args.device.device = DeviceChoice::Gpu;
    }
    check_flags(&args)?;
    let spec = bench_spec(&args)?;
    check_host(&spec, args.batch)?;
    let data = Batch::random(&spec, args.batch);
    let mut placed = place(&args, &spec)?;
    let timed = time_steps(placed.backend.as_mut(), &spec, &data, args.steps)?;
    print_result(&args, &spec, &placed, &timed);
    if let Some(g) = placed.profiled.take() {
        print_profile(g, &spec, &data)?;
    }
    Ok(())
}

/// Refuses counts of zero, and GPU-only flags on the CPU reference (they would be silently
/// ignored there).
fn check_flags(args: &BenchArgs) -> anyhow::Result<()> {
    if args.steps == 0 || args.batch == 0 || args.steps_per_submit == 0 {
        bail!("--steps, --batch and --steps-per-submit must be at least 1");
    }
    if args.device.device == DeviceChoice::Cpu {
        // These flags choose GPU kernels and schedules: on the CPU reference they would be
        // silently ignored.
        let gpu_only = [
            (args.profile, "--profile"),
            (args.unfused, "--unfused"),
            (args.fused_mlp, "--fused-mlp"),
            (args.layered, "--layered"),
            (args.tiled, "--tiled"),
        ];
        if let Some((_, flag)) = gpu_only.iter().find(|(on, _)| *on) {
            bail!("{flag} applies to GPU kernels, but --device cpu runs the CPU reference: leave {flag} out, or use --device gpu");
        }
    }
    Ok(())
}

/// The benchmarked model: `--layers` with the `--activation` hidden, a softmax classifier.
fn bench_spec(args: &BenchArgs) -> anyhow::Result<ModelSpec> {
    if args.layers.0.last() == Some(&1) {
        bail!("bench trains a softmax classifier, and a softmax over one output is always 1 (the loss is 0 whatever the weights): give the last layer 2 or more units");
    }
    let hidden: Activation = args.activation.parse()?;
    Ok(ModelSpec::new(
        &args.layers.0,
        hidden,
        Activation::Softmax,
        Loss::CrossEntropy,
    )?)
}

/// Refuses a batch or a model the host cannot hold: both are made on the host first.
fn check_host(spec: &ModelSpec, batch: usize) -> anyhow::Result<()> {
    let (inp, out) = (spec.inputs(), spec.outputs());
    let data_bytes = gpumlp::limits::bytes_of(&[batch, inp.saturating_add(out)], 4);
    gpumlp::limits::check_host_bytes(
        &format!(
            "the bench batch ({batch} rows × {} values)",
            inp.saturating_add(out)
        ),
        data_bytes,
        "use a smaller --batch",
    )?;
    spec.check_host_memory(Optimizer::Sgd, 0)?;
    Ok(())
}

/// The fixed random batch every step trains on.
struct Batch {
    rows: usize,
    /// x: [rows, inputs], uniform in [0, 1).
    x: Vec<f32>,
    /// t: [rows, outputs], one-hot random classes.
    t: Vec<f32>,
}

impl Batch {
    /// The batch of seed 0 for `spec`.
    fn random(spec: &ModelSpec, rows: usize) -> Batch {
        let (inp, out) = (spec.inputs(), spec.outputs());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let x: Vec<f32> = (0..rows * inp)
            .map(|_| rng.random_range(0.0..1.0))
            .collect();
        let mut t = vec![0.0f32; rows * out];
        for r in 0..rows {
            t[r * out + rng.random_range(0..out)] = 1.0;
        }
        Batch { rows, x, t }
    }

    /// Loads the model's initial parameters and this batch into `b` and begins an epoch over
    /// it in order.
    fn load_into(&self, b: &mut dyn Backend, spec: &ModelSpec) -> anyhow::Result<()> {
        b.set_params(&spec.init_params(0))?;
        b.set_train_data(&self.x, &self.t, self.rows)?;
        b.begin_epoch(&(0..self.rows as u32).collect::<Vec<_>>())?;
        Ok(())
    }
}

/// The update every step makes: plain SGD, lr 0.1.
fn hyper() -> gpumlp::StepHyper {
    Optimizer::Sgd.hyper(0.1, 1, 0.0)
}

/// The model placed for the bench.
struct Placed {
    backend: Box<dyn Backend>,
    /// With `--profile`: a second GPU backend for the profiled step.
    profiled: Option<gpumlp::GpuBackend>,
    /// What the tuner chose, on a GPU.
    tuning: Option<gpumlp::gpu::plan::Tuning>,
    /// The adapter's name and its backend (`cpu` for the CPU backends).
    adapter: (String, String),
}

/// The model on `--device`: the CPU reference, the fast CPU backend or a GPU adapter.
fn place(args: &BenchArgs, spec: &ModelSpec) -> anyhow::Result<Placed> {
    let batch = args.batch;
    let cpu = |backend: Box<dyn Backend>, adapter: String| Placed {
        backend,
        profiled: None,
        tuning: None,
        adapter: (adapter, "cpu".to_string()),
    };
    match args.device.device()? {
        gpumlp::Device::Reference => {
            spec.check_host_memory(Optimizer::Sgd, batch)?;
            let reference = gpumlp::ReferenceBackend::new(spec, Optimizer::Sgd)?;
            Ok(cpu(Box::new(reference), "cpu-reference".to_string()))
        }
        gpumlp::Device::Cpu => {
            let b = gpumlp::CpuBackend::new(spec, Optimizer::Sgd, batch, args.device.threads)?;
            let name = b.name();
            Ok(cpu(Box::new(b), name))
        }
        gpumlp::Device::Adapter { selector, index } => {
            let ctx = gpumlp::GpuContext::nth(&selector.or_env(), index)?;
            place_gpu(args, spec, std::sync::Arc::new(ctx))
        }
        gpumlp::Device::Gpu(sel) | gpumlp::Device::Auto(sel) => {
            let ctx = gpumlp::GpuContext::new(&sel.or_env())?;
            place_gpu(args, spec, std::sync::Arc::new(ctx))
        }
        other => anyhow::bail!("bench does not know the device {other:?}"),
    }
}

/// The model on the adapter `ctx` with the kernels and schedule the flags ask for; says what
/// the tuner did unless `--json`.
fn place_gpu(
    args: &BenchArgs,
    spec: &ModelSpec,
    ctx: std::sync::Arc<gpumlp::GpuContext>,
) -> anyhow::Result<Placed> {
    let adapter = (ctx.info.name.clone(), ctx.info.backend.clone());
    let options = gpu_options(args);
    let g = gpumlp::GpuBackend::new(ctx, spec, Optimizer::Sgd, args.batch, options)?;
    let tuning = g.tuning().cloned();
    if let (Some(t), false) = (&tuning, args.json) {
        eprintln!("gpumlp: {}", gpumlp::gpu::tune::summary(t));
    }
    let (backend, profiled): (Box<dyn Backend>, _) = if args.profile {
        let ctx = g.context().clone();
        let timed = gpumlp::GpuBackend::new(ctx, spec, Optimizer::Sgd, args.batch, options)?;
        (Box::new(timed), Some(g))
    } else {
        (Box::new(g), None)
    };
    Ok(Placed {
        backend,
        profiled,
        tuning,
        adapter,
    })
}

/// The GPU options the flags ask for.
fn gpu_options(args: &BenchArgs) -> gpumlp::GpuOptions {
    let mut options = gpumlp::GpuOptions::default();
    options.fused = !args.unfused;
    options.capture_gradients = false;
    options.fused_mlp = if args.fused_mlp {
        Some(true)
    } else if args.layered {
        Some(false)
    } else {
        None
    };
    options.tune = args.device.tune.0;
    options.force_tiled_matmul = args.tiled;
    options.force_gemm = args.gemm;
    options.steps_per_submit = args.steps_per_submit.max(1);
    options
}

/// What the timed steps measured.
struct Timed {
    seconds: f64,
    /// The last step's mean loss, read back before the clock stopped.
    final_loss: f64,
}

/// Three warm-up steps, then `steps` timed ones in one epoch.
fn time_steps(
    backend: &mut dyn Backend,
    spec: &ModelSpec,
    data: &Batch,
    steps: usize,
) -> anyhow::Result<Timed> {
    let (batch, hyper) = (data.rows, hyper());
    data.load_into(backend, spec)?;
    for _ in 0..3 {
        backend.step(0, batch, &hyper)?;
    }
    backend.finish_epoch()?;
    let started = Instant::now();
    backend.begin_epoch(&(0..batch as u32).collect::<Vec<_>>())?;
    for _ in 0..steps {
        backend.step(0, batch, &hyper)?;
    }
    let stats = backend.finish_epoch()?;
    Ok(Timed {
        seconds: started.elapsed().as_secs_f64(),
        final_loss: stats.last().map_or(f64::NAN, |s| s.mean_loss()),
    })
}

/// The result: one JSON line with `--json`, else one line for people.
fn print_result(args: &BenchArgs, spec: &ModelSpec, placed: &Placed, timed: &Timed) {
    let (batch, seconds, final_loss) = (args.batch, timed.seconds, timed.final_loss);
    let samples_per_s = batch as f64 * args.steps as f64 / seconds.max(1e-9);
    let gflops =
        6.0 * batch as f64 * spec.macs_per_sample() as f64 * args.steps as f64 / seconds / 1e9;
    let (adapter, backend_name) = &placed.adapter;
    let layers = args
        .layers
        .0
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(",");
    if args.json {
        let line = serde_json::json!({
            "system": "gpumlp",
            "adapter": adapter,
            "backend": backend_name,
            "layers": layers,
            "batch": batch,
            "steps": args.steps,
            "seconds": seconds,
            "samples_per_s": samples_per_s,
            "gflops": gflops,
            "final_loss": final_loss,
            "tune": placed.tuning,
        });
        println!("{line}");
    } else {
        let name = placed.backend.name();
        println!("{name}: layers {layers}, batch {batch}, {} steps in {seconds:.4} s: {samples_per_s:.0} samples/s, {gflops:.2} GFLOP/s, final loss {final_loss:.4}", args.steps);
    }
}

/// `--profile`: the time of each kernel in one step on `g`, with its share of the total.
fn print_profile(mut g: gpumlp::GpuBackend, spec: &ModelSpec, data: &Batch) -> anyhow::Result<()> {
    data.load_into(&mut g, spec)?;
    let times = g.profile_step(0, data.rows, &hyper())?;
    g.finish_epoch()?;
    let total: f64 = times.iter().map(|(_, s)| s).sum();
    println!(
        "profile of one step ({} dispatches, {:.3} ms of kernel time, {} MiB allocated):",
        times.len(),
        total * 1e3,
        g.allocated_bytes() >> 20
    );
    for (label, s) in &times {
        println!(
            "  {:>9.3} ms  {:>5.1}%  {label}",
            s * 1e3,
            100.0 * s / total.max(1e-12)
        );
    }
    Ok(())
}
