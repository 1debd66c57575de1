//! The lecture notes' two-input network, one forward pass, backward pass and update, printing
//! every number the notes print: `cargo run --release --example worked_example`.
//! Runs on the CPU reference and on the best GPU adapter, side by side.

use gpumlp::{
    Activation, AdapterSelector, Backend, CpuBackend, GpuBackend, GpuContext, GpuOptions, Loss,
    ModelSpec, Optimizer,
};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    // w1..w4 = 0.15, 0.20, 0.25, 0.30; w5..w8 = 0.40, 0.45, 0.50, 0.55; biases 0.35, 0.60.
    // Our layout is W: [in, out] row-major, then b.
    let params = vec![
        0.15, 0.25, 0.20, 0.30, 0.35, 0.35, 0.40, 0.50, 0.45, 0.55, 0.60, 0.60,
    ];
    let spec = ModelSpec::new(
        &[2, 2, 2],
        Activation::Sigmoid,
        Activation::Sigmoid,
        Loss::SquaredError,
    )?;
    let hidden = ModelSpec::new(
        &[2, 2],
        Activation::Identity,
        Activation::Identity,
        Loss::SquaredError,
    )?;
    let (x, t) = ([0.05f32, 0.10], [0.01f32, 0.99]);

    let mut runs: Vec<(Box<dyn Backend>, Box<dyn Backend>)> = vec![(
        Box::new(CpuBackend::new(&spec, Optimizer::Sgd)?),
        Box::new(CpuBackend::new(&hidden, Optimizer::Sgd)?),
    )];
    match GpuContext::new(&AdapterSelector::from_env()) {
        Ok(ctx) => {
            let ctx = Arc::new(ctx);
            let keep = GpuOptions {
                fused: true,
                capture_gradients: true,
                ..Default::default()
            };
            runs.push((
                Box::new(GpuBackend::new(
                    ctx.clone(),
                    &spec,
                    Optimizer::Sgd,
                    1,
                    keep,
                )?),
                Box::new(GpuBackend::new(ctx, &hidden, Optimizer::Sgd, 1, keep)?),
            ));
        }
        Err(e) => println!("(no GPU run: {e})"),
    }
    for (mut net, mut first_layer) in runs {
        println!("== {}", net.name());
        first_layer.set_params(&params[..6])?;
        let net_h = first_layer.predict(&x, 1)?;
        println!("net_h1                 = {:.9}   (notes: 0.3775)", net_h[0]);
        net.set_params(&params)?;
        let y = net.predict(&x, 1)?;
        println!("out_o1                 = {:.9}   (notes: 0.75136507)", y[0]);
        println!(
            "out_o2                 = {:.9}   (notes: 0.772928465)",
            y[1]
        );
        let e = net.evaluate(&x, &t, 1)?;
        println!(
            "E_total                = {:.9}   (notes: 0.298371109)",
            e.loss_sum
        );
        net.set_train_data(&x, &t, 1)?;
        net.begin_epoch(&[0])?;
        net.step(0, 1, &Optimizer::Sgd.hyper(0.5, 1, 0.0))?;
        net.finish_epoch()?;
        let g = net.last_gradients()?;
        println!(
            "dE/dw5                 = {:.9}   (notes: 0.082167041)",
            g[6]
        );
        let p = net.params()?;
        println!("w5 after a step, η=0.5 = {:.9}   (notes: 0.35891648)", p[6]);
        println!(
            "w1 after a step, η=0.5 = {:.9}   (notes: 0.149780716)",
            p[0]
        );
    }
    Ok(())
}
