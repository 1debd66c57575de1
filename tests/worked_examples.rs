//! The lecture notes' worked examples, to their printed digits, on the CPU reference and on
//! every GPU adapter.

mod common;

use common::gpus;
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use gpumlp::{
    Backend, CpuBackend, Dataset, Error, GpuBackend, GpuOptions, ReferenceBackend, TrainConfig,
    Trainer,
};

/// The CPU reference, the fast CPU backend and one GPU backend per adapter for `spec`.
fn backends(spec: &ModelSpec, batch: usize) -> Vec<Box<dyn Backend>> {
    let mut v: Vec<Box<dyn Backend>> = vec![
        Box::new(ReferenceBackend::new(spec, Optimizer::Sgd).unwrap()),
        Box::new(CpuBackend::new(spec, Optimizer::Sgd, batch, Some(2)).unwrap()),
    ];
    for ctx in gpus() {
        let mut options = GpuOptions::default();
        options.fused = true;
        options.capture_gradients = true;
        v.push(Box::new(
            GpuBackend::new(ctx.clone(), spec, Optimizer::Sgd, batch, options).unwrap(),
        ));
    }
    v
}

/// `|got − want| ≤ tol`, naming the quantity and backend on failure.
fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        approx::abs_diff_eq!(got, want, epsilon = tol),
        "{what}: got {got}, want {want} (±{tol}, off by {:.2e})",
        (got - want).abs()
    );
}

/// The notes' printed values and the same network in f64, shared with the example.
#[path = "../examples/common/lecture_notes.rs"]
mod notes;

use notes::{decimals, f64_reference as two_input_f64, NOTES as TWO_INPUT_NOTES};

/// The f64 computation reproduces every digit the notes print: rounded to the notes' number of
/// decimals, the strings are equal. (f32 cannot: it carries about 7 significant digits, so the
/// backends are checked against the notes with a tolerance instead.)
#[test]
fn two_input_network_in_f64_reproduces_every_printed_digit() {
    let exact = two_input_f64();
    for ((name, printed), v) in TWO_INPUT_NOTES.iter().zip(exact) {
        let decimals = decimals(printed);
        assert_eq!(
            format!("{v:.decimals$}"),
            *printed,
            "{name}: f64 gives {v:.17}"
        );
        // The same as a distance: within half a unit of the notes' last printed digit.
        let half_ulp = 0.5 * 10f64.powi(-(decimals as i32));
        let notes: f64 = printed.parse().unwrap();
        approx::assert_abs_diff_eq!(v, notes, epsilon = 0.99 * half_ulp);
    }
}

/// The two-input network: w1..w4 = 0.15, 0.20, 0.25, 0.30, w5..w8 = 0.40, 0.45, 0.50, 0.55,
/// biases 0.35 and 0.60, sigmoid everywhere, squared error. Parameters in our layout: W: [in, out].
pub fn two_input_params() -> Vec<f32> {
    vec![
        0.15, 0.25, 0.20, 0.30, // W1: rows i1, i2; columns h1, h2
        0.35, 0.35, // b1
        0.40, 0.50, 0.45, 0.55, // W2: rows h1, h2; columns o1, o2
        0.60, 0.60, // b2
    ]
}

#[test]
fn two_input_network_forward_backward_and_update() {
    let spec = ModelSpec::new(
        &[2, 2, 2],
        Activation::Sigmoid,
        Activation::Sigmoid,
        Loss::SquaredError,
    )
    .unwrap();
    let x = [0.05f32, 0.10];
    let t = [0.01f32, 0.99];
    let exact = two_input_f64();
    for mut b in backends(&spec, 1) {
        let name = b.name();
        b.set_params(&two_input_params()).unwrap();
        // hidden net input: a one-layer model with the first layer's weights
        let y = b.predict(&x, 1).unwrap();
        close(&format!("{name}: out_o1"), y[0] as f64, 0.75136507, 1e-7);
        close(&format!("{name}: out_o2"), y[1] as f64, 0.772928465, 1e-7);
        let e = b.evaluate(&x, &t, 1).unwrap();
        close(&format!("{name}: E_total"), e.loss_sum, 0.298371109, 1e-7);
        b.set_train_data(&x, &t, 1).unwrap();
        b.begin_epoch(&[0]).unwrap();
        b.step(0, 1, &Optimizer::Sgd.hyper(0.5, 1, 0.0)).unwrap();
        b.finish_epoch().unwrap();
        let g = b.last_gradients().unwrap();
        close(&format!("{name}: ∂E/∂w5"), g[6] as f64, 0.082167041, 2e-8);
        let p = b.params().unwrap();
        // Against the exact f64 values: f32 is good to a few units of its last place (ε ≈ 1.2e-7
        // relative); 1e-6 leaves room for exp and a different summation order on a GPU.
        let got = [
            y[0] as f64,
            y[1] as f64,
            e.loss_sum,
            g[6] as f64,
            p[6] as f64,
            p[0] as f64,
        ];
        for ((what, got), want) in ["out_o1", "out_o2", "E_total", "∂E/∂w5", "w5'", "w1'"]
            .iter()
            .zip(got)
            .zip(&exact[1..])
        {
            assert!(
                approx::relative_eq!(got, *want, max_relative = 1e-6),
                "{name}: {what} = {got}, f64 gives {want}"
            );
        }
        close(
            &format!("{name}: w5 after one step"),
            p[6] as f64,
            0.35891648,
            1e-7,
        );
        close(
            &format!("{name}: w1 after one step"),
            p[0] as f64,
            0.149780716,
            1e-8,
        );
    }
    // hidden net input 0.3775 = 0.15·0.05 + 0.20·0.10 + 0.35
    let hidden = ModelSpec::new(
        &[2, 2],
        Activation::Identity,
        Activation::Identity,
        Loss::SquaredError,
    )
    .unwrap();
    for mut b in backends(&hidden, 1) {
        b.set_params(&two_input_params()[..6]).unwrap();
        let a = b.predict(&x, 1).unwrap();
        close(&format!("{}: net_h1", b.name()), a[0] as f64, 0.3775, 1e-7);
    }
}

fn sigma(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

#[test]
fn one_input_network_forward_and_gradient() {
    // z = σ(0.5·σ(0.5x+1) + 0.5·σ(x+0.5) + 0.25)
    let spec = ModelSpec::new(
        &[1, 2, 1],
        Activation::Sigmoid,
        Activation::Sigmoid,
        Loss::SquaredError,
    )
    .unwrap();
    let params = vec![0.5, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25];
    for x in [-1.0f64, 0.5, 1.0, 2.0] {
        let (u1, u2) = (0.5 * x + 1.0, x + 0.5);
        let u = 0.5 * sigma(u1) + 0.5 * sigma(u2) + 0.25;
        let z = sigma(u);
        let ds = |v: f64| sigma(v) * (1.0 - sigma(v));
        let want_grad = (z - 1.0) * ds(u) * 0.5 * ds(u2) * x;
        for mut b in backends(&spec, 1) {
            let name = b.name();
            b.set_params(&params).unwrap();
            let y = b.predict(&[x as f32], 1).unwrap();
            close(&format!("{name}: z({x})"), y[0] as f64, z, 1e-7);
            b.set_train_data(&[x as f32], &[1.0], 1).unwrap();
            b.begin_epoch(&[0]).unwrap();
            b.step(0, 1, &Optimizer::Sgd.hyper(0.1, 1, 0.0)).unwrap();
            b.finish_epoch().unwrap();
            let g = b.last_gradients().unwrap();
            // W1 is [1, 2]: index 1 is the weight from x to the second hidden unit
            close(
                &format!("{name}: ∂E/∂w(x→h2) at x={x}"),
                g[1] as f64,
                want_grad,
                1e-7,
            );
        }
    }
}

const TRUTH_TABLE: [f32; 8] = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];

#[test]
fn heaviside_and_and_xor_networks() {
    let and = ModelSpec::new(
        &[2, 1],
        Activation::Step,
        Activation::Step,
        Loss::SquaredError,
    )
    .unwrap();
    for mut b in backends(&and, 4) {
        b.set_params(&[1.0, 1.0, -1.2]).unwrap();
        assert_eq!(
            b.predict(&TRUTH_TABLE, 4).unwrap(),
            vec![0.0, 0.0, 0.0, 1.0],
            "{}: AND",
            b.name()
        );
    }
    // Layer 1: x1, x2 passed through (step(x − 0.5)) and AND; layer 2: step(x1 + x2 − 2·AND − 0.6).
    let xor = ModelSpec::new(
        &[2, 3, 1],
        Activation::Step,
        Activation::Step,
        Loss::SquaredError,
    )
    .unwrap();
    let params = vec![
        1.0, 0.0, 1.0, 0.0, 1.0, 1.0, -0.5, -0.5, -1.2, 1.0, 1.0, -2.0, -0.6,
    ];
    for mut b in backends(&xor, 4) {
        b.set_params(&params).unwrap();
        assert_eq!(
            b.predict(&TRUTH_TABLE, 4).unwrap(),
            vec![0.0, 1.0, 1.0, 0.0],
            "{}: XOR",
            b.name()
        );
    }
    // Training a network with a step is refused with a clear error.
    let data = Dataset::from_classes(TRUTH_TABLE.to_vec(), 2, vec![0, 1, 1, 0], 2).unwrap();
    for b in backends(&xor, 4) {
        let mut trainer = Trainer::new(b, &params, TrainConfig::default()).unwrap();
        match trainer.fit(&data, None, |_| {}) {
            Err(Error::InvalidModel(m)) => assert!(m.contains("step"), "{m}"),
            other => panic!("training a step network must be refused, got {other:?}"),
        }
    }
}

#[test]
fn xor_is_learned_from_a_fixed_seed() {
    let spec = ModelSpec::new(
        &[2, 4, 1],
        Activation::Sigmoid,
        Activation::Sigmoid,
        Loss::SquaredError,
    )
    .unwrap();
    let data = Dataset::from_classes(TRUTH_TABLE.to_vec(), 2, vec![0, 1, 1, 0], 2).unwrap();
    for b in backends(&spec, 4) {
        let name = b.name();
        let mut config = TrainConfig::default();
        config.lr = 2.0;
        config.batch_size = 4;
        config.epochs = 2000;
        config.seed = 1;
        let mut trainer = Trainer::new(b, &spec.init_params(1), config).unwrap();
        trainer.set_train_data(&data).unwrap();
        // Train until every row is classified (and the loss is small), or give up.
        let mut last = trainer.run_epoch(None).unwrap();
        while trainer.epoch() < 2000 && (last.train_accuracy != Some(1.0) || last.train_loss > 0.02)
        {
            last = trainer.run_epoch(None).unwrap();
        }
        assert_eq!(
            last.train_accuracy,
            Some(1.0),
            "{name}: XOR not learned, loss {}",
            last.train_loss
        );
        let y = trainer.predict(&TRUTH_TABLE, 4).unwrap();
        let classes: Vec<u32> = y.iter().map(|&v| (v >= 0.5) as u32).collect();
        assert_eq!(classes, vec![0, 1, 1, 0], "{name}: {y:?}");
    }
}
