//! The lecture notes' two-input network, one forward pass, backward pass and update, printing
//! every number the notes print: `cargo run --release --example worked_example`.
//!
//! For each quantity it prints the notes' value; the same quantity computed in f64 by the short
//! hand-written code in common/lecture_notes.rs, rounded to as many decimals as the notes print (it must match them
//! exactly, or the example fails); and what each backend computes in f32 (the CPU reference, the
//! fast CPU backend and the best GPU adapter), with its distance from the notes. f32 carries about 7 significant
//! digits, so its 9th decimal differs from the notes' while f64 reproduces every printed digit.

use anyhow::bail;
use gpumlp::{
    Activation, AdapterSelector, Backend, CpuBackend, GpuBackend, GpuContext, GpuOptions, Loss,
    ModelSpec, Optimizer, ReferenceBackend,
};
use std::sync::Arc;

#[path = "common/lecture_notes.rs"]
mod notes;

use notes::{decimals, f64_reference, NOTES};

/// One backend's f32 values of the quantities in [`NOTES`].
fn run(
    net: &mut dyn Backend,
    first_layer: &mut dyn Backend,
    params: &[f32],
) -> anyhow::Result<[f32; 7]> {
    let (x, t) = ([0.05f32, 0.10], [0.01f32, 0.99]);
    first_layer.set_params(&params[..6])?;
    let net_h = first_layer.predict(&x, 1)?;
    net.set_params(params)?;
    let y = net.predict(&x, 1)?;
    let e = net.evaluate(&x, &t, 1)?;
    net.set_train_data(&x, &t, 1)?;
    net.begin_epoch(&[0])?;
    net.step(0, 1, &Optimizer::Sgd.hyper(0.5, 1, 0.0))?;
    net.finish_epoch()?;
    let g = net.last_gradients()?;
    let p = net.params()?;
    // Layout: W1 [i, h] = 0..4, b1 = 4..6, W2 [h, o] = 6..10, b2 = 10..12; w5 = W2[h1, o1] = p[6],
    // w1 = W1[i1, h1] = p[0].
    Ok([net_h[0], y[0], y[1], e.loss_sum as f32, g[6], p[6], p[0]])
}

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
    // The hidden layer alone, without its activation, gives net_h1.
    let hidden = ModelSpec::new(
        &[2, 2],
        Activation::Identity,
        Activation::Identity,
        Loss::SquaredError,
    )?;

    let mut runs: Vec<(Box<dyn Backend>, Box<dyn Backend>)> = vec![
        (
            Box::new(ReferenceBackend::new(&spec, Optimizer::Sgd)?),
            Box::new(ReferenceBackend::new(&hidden, Optimizer::Sgd)?),
        ),
        (
            Box::new(CpuBackend::new(&spec, Optimizer::Sgd, 1, None)?),
            Box::new(CpuBackend::new(&hidden, Optimizer::Sgd, 1, None)?),
        ),
    ];
    match GpuContext::new(&AdapterSelector::from_env()) {
        Ok(ctx) => {
            let ctx = Arc::new(ctx);
            let mut keep = GpuOptions::default();
            keep.fused = true;
            keep.capture_gradients = true;
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
    let mut columns = Vec::new();
    for (i, (net, first_layer)) in runs.iter_mut().enumerate() {
        let label = (b'A' + i as u8) as char;
        println!("backend {label}: {}", net.name());
        columns.push((label, run(net.as_mut(), first_layer.as_mut(), &params)?));
    }

    let exact = f64_reference();
    let mut header = format!(
        "\n{:<24}{:<14}{:<22}",
        "quantity", "notes", "f64 to notes' digits"
    );
    for (label, _) in &columns {
        header += &format!("{:<28}", format!("{label}: f32 (|f32 − notes|)"));
    }
    println!("{}", header.trim_end());
    let mut mismatches = Vec::new();
    let mut worst_f32 = 0.0f64;
    for (q, (name, printed)) in NOTES.iter().enumerate() {
        let rounded = format!("{:.*}", decimals(printed), exact[q]);
        let verdict = if rounded == *printed {
            "="
        } else {
            mismatches.push(format!("{name}: f64 gives {rounded}, the notes {printed}"));
            "≠"
        };
        let notes: f64 = printed.parse()?;
        let mut row = format!(
            "{name:<24}{printed:<14}{:<22}",
            format!("{rounded} {verdict}")
        );
        for (_, values) in &columns {
            let v = values[q];
            let diff = (v as f64 - notes).abs();
            worst_f32 = worst_f32.max(diff);
            row += &format!("{:<28}", format!("{v:.9} ({diff:.1e})"));
        }
        println!("{}", row.trim_end());
    }
    if !mismatches.is_empty() {
        bail!(
            "the f64 computation does not reproduce the notes' digits: {}",
            mismatches.join("; ")
        );
    }
    println!(
        "\nf64 reproduces every digit the notes print. Each backend computes in f32 (about 7 \
         significant digits): at most {worst_f32:.1e} from the notes."
    );
    Ok(())
}
