//! The lecture notes' two-input network, one forward pass, backward pass and update, printing
//! every number the notes print: `cargo run --release --example worked_example`.
//!
//! For each quantity it prints the notes' value; the same quantity computed in f64 by the short
//! hand-written code below, rounded to as many decimals as the notes print (it must match them
//! exactly, or the example fails); and what each backend computes in f32 (the CPU reference and
//! the best GPU adapter), with its distance from the notes. f32 carries about 7 significant
//! digits, so its 9th decimal differs from the notes' while f64 reproduces every printed digit.

use anyhow::bail;
use gpumlp::{
    Activation, AdapterSelector, Backend, CpuBackend, GpuBackend, GpuContext, GpuOptions, Loss,
    ModelSpec, Optimizer,
};
use std::sync::Arc;

/// Each quantity the notes print, with the value exactly as printed (the digits matter).
const NOTES: [(&str, &str); 7] = [
    ("net_h1", "0.3775"),
    ("out_o1", "0.75136507"),
    ("out_o2", "0.772928465"),
    ("E_total", "0.298371109"),
    ("dE/dw5", "0.082167041"),
    ("w5 after a step, η=0.5", "0.35891648"),
    ("w1 after a step, η=0.5", "0.149780716"),
];

/// The network in f64, written out as the notes do: inputs i1, i2, hidden h1, h2, outputs o1, o2,
/// w1..w4 from the inputs to h1 (w1, w2) and h2 (w3, w4), w5..w8 from the hidden units to o1
/// (w5, w6) and o2 (w7, w8), sigmoid everywhere, `E = ½ Σ (t − out)²`, one step of `w ← w − η ∂E/∂w`.
/// Returns the quantities in the order of [`NOTES`].
fn f64_reference() -> [f64; 7] {
    let sigma = |v: f64| 1.0 / (1.0 + (-v).exp());
    let (i1, i2, t1, t2) = (0.05, 0.10, 0.01, 0.99);
    let (w1, w2, w3, w4) = (0.15, 0.20, 0.25, 0.30);
    let (w5, w6, w7, w8) = (0.40, 0.45, 0.50, 0.55);
    let (b1, b2, eta) = (0.35, 0.60, 0.5);
    // Forward.
    let net_h1 = w1 * i1 + w2 * i2 + b1;
    let net_h2 = w3 * i1 + w4 * i2 + b1;
    let (out_h1, out_h2) = (sigma(net_h1), sigma(net_h2));
    let out_o1 = sigma(w5 * out_h1 + w6 * out_h2 + b2);
    let out_o2 = sigma(w7 * out_h1 + w8 * out_h2 + b2);
    let e_total = 0.5 * (t1 - out_o1).powi(2) + 0.5 * (t2 - out_o2).powi(2);
    // Backward: δ_o = ∂E/∂net_o = (out − t)·out·(1 − out); ∂E/∂w5 = δ_o1·out_h1.
    let delta_o1 = (out_o1 - t1) * out_o1 * (1.0 - out_o1);
    let delta_o2 = (out_o2 - t2) * out_o2 * (1.0 - out_o2);
    let de_dw5 = delta_o1 * out_h1;
    // δ_h1 = (δ_o1·w5 + δ_o2·w7)·out_h1·(1 − out_h1), with the weights before the update.
    let delta_h1 = (delta_o1 * w5 + delta_o2 * w7) * out_h1 * (1.0 - out_h1);
    let de_dw1 = delta_h1 * i1;
    [
        net_h1,
        out_o1,
        out_o2,
        e_total,
        de_dw5,
        w5 - eta * de_dw5,
        w1 - eta * de_dw1,
    ]
}

/// The number of decimals a value is printed with.
fn decimals(printed: &str) -> usize {
    printed.split_once('.').map_or(0, |(_, d)| d.len())
}

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
