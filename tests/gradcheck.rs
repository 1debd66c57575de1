//! Finite-difference checks of the CPU reference's gradients against an independent float64
//! implementation of the forward pass and loss, for every activation and loss.

mod common;

use common::{one_hot, uniform};
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use gpumlp::ReferenceBackend;

fn act64(act: Activation, a: f64) -> f64 {
    match act {
        Activation::Identity | Activation::Softmax => a,
        Activation::Sigmoid => 1.0 / (1.0 + (-a).exp()),
        Activation::Tanh => a.tanh(),
        Activation::Relu => a.max(0.0),
        Activation::LeakyRelu(alpha) => {
            if a >= 0.0 {
                a
            } else {
                alpha as f64 * a
            }
        }
        Activation::Step => {
            if a >= 0.0 {
                1.0
            } else {
                0.0
            }
        }
        other => panic!("{other:?}: add its f64 math here"),
    }
}

/// E = (1/B) Σ_rows J + (λ/2) Σ W², in float64 from the lecture's formulas.
fn loss64(spec: &ModelSpec, p: &[f64], x: &[f32], t: &[f32], rows: usize, l2: f64) -> f64 {
    let mut total = 0.0;
    for r in 0..rows {
        let mut z: Vec<f64> = x[r * spec.inputs()..(r + 1) * spec.inputs()]
            .iter()
            .map(|&v| v as f64)
            .collect();
        for (lay, &act) in spec.layout().iter().zip(&spec.activations) {
            let a: Vec<f64> = (0..lay.outputs)
                .map(|j| {
                    p[lay.bias + j]
                        + (0..lay.inputs)
                            .map(|i| z[i] * p[lay.weight + i * lay.outputs + j])
                            .sum::<f64>()
                })
                .collect();
            z = a.iter().map(|&v| act64(act, v)).collect();
            if act == Activation::Softmax {
                let s: f64 = a.iter().map(|v| v.exp()).sum();
                z = a.iter().map(|v| v.exp() / s).collect();
            }
        }
        let tr: Vec<f64> = t[r * spec.outputs()..(r + 1) * spec.outputs()]
            .iter()
            .map(|&v| v as f64)
            .collect();
        total += match spec.loss {
            Loss::SquaredError => z
                .iter()
                .zip(&tr)
                .map(|(y, t)| 0.5 * (y - t) * (y - t))
                .sum::<f64>(),
            Loss::CrossEntropy => -z.iter().zip(&tr).map(|(y, t)| t * y.ln()).sum::<f64>(),
            Loss::BinaryCrossEntropy => -z
                .iter()
                .zip(&tr)
                .map(|(y, t)| t * y.ln() + (1.0 - t) * (1.0 - y).ln())
                .sum::<f64>(),
            other => panic!("{other:?}: add its f64 loss here"),
        };
    }
    let w2: f64 = spec
        .layout()
        .iter()
        .map(|l| p[l.weight..l.bias].iter().map(|w| w * w).sum::<f64>())
        .sum();
    total / rows as f64 + 0.5 * l2 * w2
}

fn check(spec: &ModelSpec, l2: f32) {
    let rows = 5;
    let x = uniform(rows * spec.inputs(), -1.0, 1.0, 60);
    let t = match spec.loss {
        Loss::SquaredError
            if spec.outputs() > 1 && spec.output_activation() == Activation::Softmax =>
        {
            one_hot(rows, spec.outputs(), 61)
        }
        Loss::CrossEntropy => one_hot(rows, spec.outputs(), 61),
        _ => uniform(rows * spec.outputs(), 0.05, 0.95, 61),
    };
    let params = spec.init_params(62);
    let mut cpu = ReferenceBackend::new(spec, Optimizer::Sgd).unwrap();
    gpumlp::Backend::set_params(&mut cpu, &params).unwrap();
    cpu.train_batch(&x, &t, rows, &Optimizer::Sgd.hyper(0.0, 1, l2));
    let grads = gpumlp::Backend::last_gradients(&mut cpu).unwrap();
    let p64: Vec<f64> = params.iter().map(|&v| v as f64).collect();
    let h = 1e-6;
    for i in 0..params.len() {
        let (mut up, mut down) = (p64.clone(), p64.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (loss64(spec, &up, &x, &t, rows, l2 as f64)
            - loss64(spec, &down, &x, &t, rows, l2 as f64))
            / (2.0 * h);
        let g = grads[i] as f64;
        assert!(
            (fd - g).abs() <= 1e-3 * fd.abs() + 2e-6,
            "{:?} {}: ∂E/∂p[{i}]: reference {g}, finite difference {fd}",
            spec.activations,
            spec.loss
        );
    }
}

#[test]
fn reference_gradients_match_finite_differences_for_every_activation() {
    for act in [
        Activation::Identity,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::LeakyRelu(0.1),
    ] {
        let spec =
            ModelSpec::new(&[3, 4, 2], act, Activation::Identity, Loss::SquaredError).unwrap();
        check(&spec, 0.0);
        let spec =
            ModelSpec::new(&[3, 4, 3, 2], Activation::Tanh, act, Loss::SquaredError).unwrap();
        check(&spec, 0.1);
    }
}

#[test]
fn reference_gradients_match_finite_differences_for_every_loss() {
    for (out, loss, n) in [
        (Activation::Sigmoid, Loss::SquaredError, 2),
        (Activation::Softmax, Loss::SquaredError, 3),
        (Activation::Softmax, Loss::CrossEntropy, 3),
        (Activation::Sigmoid, Loss::BinaryCrossEntropy, 1),
        (Activation::Sigmoid, Loss::BinaryCrossEntropy, 2),
    ] {
        let spec = ModelSpec::new(&[3, 5, n], Activation::Sigmoid, out, loss).unwrap();
        check(&spec, 0.0);
        check(&spec, 0.05);
    }
}
