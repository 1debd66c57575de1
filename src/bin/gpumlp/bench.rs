//! `gpumlp bench`: a fixed protocol anyone can run. A fixed random batch (inputs uniform in
//! [0, 1), random class labels), softmax cross-entropy, plain SGD with lr 0.1; 3 warm-up steps,
//! then S timed steps, the clock stopped only after the final loss has been read back.

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
    #[arg(long)]
    pub fused_mlp: bool,
    /// Force the layered schedule (never the fully fused step).
    #[arg(long)]
    pub layered: bool,
    /// Never use the subgroup matmul (CPU adapters with 8-lane subgroups), for comparison.
    #[arg(long)]
    pub no_subgroup: bool,
    /// Read the subgroup matmul's operands from the buffers, not from mirroring images.
    #[arg(long)]
    pub no_images: bool,
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

pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.device.device == "auto" {
        args.device.device = "gpu".into();
    }
    if args.steps == 0 || args.batch == 0 || args.steps_per_submit == 0 {
        bail!("--steps, --batch and --steps-per-submit must be at least 1");
    }
    if args.device.device == "cpu" {
        // These flags choose GPU kernels and schedules: on the CPU reference they would be
        // silently ignored.
        let gpu_only = [
            (args.profile, "--profile"),
            (args.unfused, "--unfused"),
            (args.fused_mlp, "--fused-mlp"),
            (args.layered, "--layered"),
            (args.no_subgroup, "--no-subgroup"),
            (args.no_images, "--no-images"),
            (args.tiled, "--tiled"),
        ];
        if let Some((_, flag)) = gpu_only.iter().find(|(on, _)| *on) {
            bail!("{flag} applies to GPU kernels, but --device cpu runs the CPU reference: leave {flag} out, or use --device gpu");
        }
    }
    if args.fused_mlp && args.layered {
        bail!("--fused-mlp and --layered ask for opposite schedules: give one of them");
    }
    if args.layers.0.last() == Some(&1) {
        bail!("bench trains a softmax classifier, and a softmax over one output is always 1 (the loss is 0 whatever the weights): give the last layer 2 or more units");
    }
    let hidden: Activation = args.activation.parse()?;
    let spec = ModelSpec::new(
        &args.layers.0,
        hidden,
        Activation::Softmax,
        Loss::CrossEntropy,
    )?;
    let (inp, out, batch) = (spec.inputs(), spec.outputs(), args.batch);
    // The random batch (inputs and one-hot targets) and the model are made on the host first.
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
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x: Vec<f32> = (0..batch * inp)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let mut t = vec![0.0f32; batch * out];
    for r in 0..batch {
        t[r * out + rng.random_range(0..out)] = 1.0;
    }
    let mut gpu: Option<gpumlp::GpuBackend> = None;
    let mut adapter = ("cpu-reference".to_string(), "cpu".to_string());
    let mut backend: Box<dyn Backend> = match args.device.device()? {
        gpumlp::Device::Reference => {
            spec.check_host_memory(Optimizer::Sgd, batch)?;
            Box::new(gpumlp::ReferenceBackend::new(&spec, Optimizer::Sgd)?)
        }
        gpumlp::Device::Cpu => {
            let cpu = gpumlp::CpuBackend::new(&spec, Optimizer::Sgd, batch, args.device.threads)?;
            adapter = (cpu.name(), "cpu".to_string());
            Box::new(cpu)
        }
        device @ (gpumlp::Device::Gpu(_)
        | gpumlp::Device::Auto(_)
        | gpumlp::Device::Adapter { .. }) => {
            let ctx = std::sync::Arc::new(match device {
                gpumlp::Device::Adapter { selector, index } => {
                    gpumlp::GpuContext::nth(&selector.or_env(), index)?
                }
                gpumlp::Device::Gpu(sel) | gpumlp::Device::Auto(sel) => {
                    gpumlp::GpuContext::new(&sel.or_env())?
                }
                _ => unreachable!("matched above"),
            });
            adapter = (ctx.info.name.clone(), ctx.info.backend.clone());
            let options = gpumlp::GpuOptions {
                fused: !args.unfused,
                capture_gradients: false,
                fused_mlp: if args.fused_mlp {
                    Some(true)
                } else if args.layered {
                    Some(false)
                } else {
                    None
                },
                subgroup_matmul: !args.no_subgroup,
                image_operands: !args.no_images,
                force_tiled_matmul: args.tiled,
                force_gemm: args.gemm,
                steps_per_submit: args.steps_per_submit.max(1),
                ..Default::default()
            };
            let g = gpumlp::GpuBackend::new(ctx, &spec, Optimizer::Sgd, batch, options)?;
            if args.profile {
                gpu = Some(g);
                let ctx = gpu.as_ref().expect("just set").context().clone();
                Box::new(gpumlp::GpuBackend::new(
                    ctx,
                    &spec,
                    Optimizer::Sgd,
                    batch,
                    options,
                )?)
            } else {
                Box::new(g)
            }
        }
    };
    backend.set_params(&spec.init_params(0))?;
    backend.set_train_data(&x, &t, batch)?;
    let order: Vec<u32> = (0..batch as u32).collect();
    let hyper = Optimizer::Sgd.hyper(0.1, 1, 0.0);
    backend.begin_epoch(&order)?;
    for _ in 0..3 {
        backend.step(0, batch, &hyper)?;
    }
    backend.finish_epoch()?;
    let started = Instant::now();
    backend.begin_epoch(&order)?;
    for _ in 0..args.steps {
        backend.step(0, batch, &hyper)?;
    }
    let stats = backend.finish_epoch()?;
    let seconds = started.elapsed().as_secs_f64();
    let final_loss = stats.last().map_or(f64::NAN, |s| s.mean_loss());
    let samples_per_s = batch as f64 * args.steps as f64 / seconds.max(1e-9);
    let gflops =
        6.0 * batch as f64 * spec.macs_per_sample() as f64 * args.steps as f64 / seconds / 1e9;
    let name = backend.name();
    let (adapter, backend_name) = adapter;
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
        });
        println!("{line}");
    } else {
        println!("{name}: layers {layers}, batch {batch}, {} steps in {seconds:.4} s: {samples_per_s:.0} samples/s, {gflops:.2} GFLOP/s, final loss {final_loss:.4}", args.steps);
    }
    if let Some(mut g) = gpu {
        g.set_params(&spec.init_params(0))?;
        g.set_train_data(&x, &t, batch)?;
        g.begin_epoch(&order)?;
        let times = g.profile_step(0, batch, &hyper)?;
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
    }
    Ok(())
}
