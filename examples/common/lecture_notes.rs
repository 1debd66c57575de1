//! The lecture notes' two-input network as the notes print it, and the same network in f64:
//! shared by `examples/worked_example.rs` and `tests/worked_examples.rs`.

/// Each quantity the notes print, with the value exactly as printed (the digits matter).
pub const NOTES: [(&str, &str); 7] = [
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
pub fn f64_reference() -> [f64; 7] {
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
pub fn decimals(printed: &str) -> usize {
    printed.split_once('.').map_or(0, |(_, d)| d.len())
}
