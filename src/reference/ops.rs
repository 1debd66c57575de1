//! The reference kernels: naive, readable loops, one per GPU kernel, outputs first in each
//! comment. Every GPU kernel is tested against these.

use crate::model::{sigmoid, softmax_row, Activation, Loss};
use crate::optim::{OptimizerKind, StepHyper};

/// Which operand a matmul reads transposed. `c: [m, n] = op(a) · op(b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulForm {
    /// `x·W`: a `[m, k]`, b `[k, n]` (forward).
    Nn,
    /// `δ·Wᵀ`: a `[m, k]`, b stored `[n, k]` (delta backpropagation).
    Nt,
    /// `xᵀ·δ`: a stored `[k, m]`, b `[k, n]` (weight gradient).
    Tn,
}

/// c: [m, n] = op(a) · op(b), accumulated in f32 in k order.
pub fn matmul(form: MatmulForm, a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                let av = match form {
                    MatmulForm::Tn => a[p * m + i],
                    _ => a[i * k + p],
                };
                let bv = match form {
                    MatmulForm::Nt => b[j * k + p],
                    _ => b[p * n + j],
                };
                acc += av * bv;
            }
            c[i * n + j] = acc;
        }
    }
    c
}

/// Dense layer forward. a, z: [rows, out]; x: [rows, inp]; w: [inp, out]; b: [out].
/// `a = x·W + b`, `z = φ(a)` (softmax row-wise).
#[allow(clippy::too_many_arguments)]
pub fn dense_forward(
    a: &mut [f32],
    z: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    rows: usize,
    inp: usize,
    out: usize,
    act: Activation,
) {
    for r in 0..rows {
        for j in 0..out {
            let mut acc = 0.0f32;
            for i in 0..inp {
                acc += x[r * inp + i] * w[i * out + j];
            }
            acc += b[j];
            a[r * out + j] = acc;
            z[r * out + j] = act.apply(acc);
        }
        if act == Activation::Softmax {
            softmax_row(&mut z[r * out..(r + 1) * out]);
        }
    }
}

/// Per-sample loss, output delta and correctness for one row.
/// delta: [out] = ∂J/∂a scaled by `scale` (1/B for the batch mean); a, t: [out].
/// Returns (J, correct).
pub fn output_delta_row(
    delta: &mut [f32],
    a: &[f32],
    t: &[f32],
    act: Activation,
    loss: Loss,
    scale: f32,
) -> (f32, bool) {
    let out = a.len();
    let mut y: Vec<f32> = a.iter().map(|&v| act.apply(v)).collect();
    if act == Activation::Softmax {
        softmax_row(&mut y);
    }
    let j = match loss {
        Loss::SquaredError => {
            let mut j = 0.0f32;
            for k in 0..out {
                let e = y[k] - t[k];
                j += 0.5 * e * e;
            }
            if act == Activation::Softmax {
                // δ_k = y_k((y_k − t_k) − Σ_j y_j(y_j − t_j)): the softmax Jacobian applied.
                let dot: f32 = (0..out).map(|k| y[k] * (y[k] - t[k])).sum();
                for k in 0..out {
                    delta[k] = scale * y[k] * ((y[k] - t[k]) - dot);
                }
            } else {
                for k in 0..out {
                    delta[k] = scale * (y[k] - t[k]) * act.derivative(a[k]);
                }
            }
            j
        }
        Loss::CrossEntropy => {
            let max = a.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + a.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
            let mut j = 0.0f32;
            for k in 0..out {
                j += t[k] * (lse - a[k]);
                delta[k] = scale * (y[k] - t[k]);
            }
            j
        }
        Loss::BinaryCrossEntropy => {
            let mut j = 0.0f32;
            for k in 0..out {
                let v = a[k];
                j += v.max(0.0) - v * t[k] + (-v.abs()).exp().ln_1p();
                delta[k] = scale * (sigmoid(v) - t[k]);
            }
            j
        }
    };
    (j, is_correct(&y, t, loss))
}

/// The classification rule both backends use. y, t: [out].
/// One output: `(y ≥ ½) == (t ≥ ½)`; binary cross-entropy with several outputs: every output so;
/// otherwise argmax(y) == argmax(t), ties to the first index.
pub fn is_correct(y: &[f32], t: &[f32], loss: Loss) -> bool {
    if y.len() == 1 || loss == Loss::BinaryCrossEntropy {
        y.iter().zip(t).all(|(&y, &t)| (y >= 0.5) == (t >= 0.5))
    } else {
        argmax(y) == argmax(t)
    }
}

/// Index of the largest value, ties to the first.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Delta backpropagation. delta_prev: [rows, inp] = (δ: [rows, out] · Wᵀ) ⊙ φ'(a_prev: [rows, inp]),
/// i.e. `δ_j = φ'(a_j)·Σ_k w_jk δ_k`. w: [inp, out].
#[allow(clippy::too_many_arguments)]
pub fn backprop_delta(
    delta_prev: &mut [f32],
    delta: &[f32],
    w: &[f32],
    a_prev: &[f32],
    rows: usize,
    inp: usize,
    out: usize,
    act_prev: Activation,
) {
    for r in 0..rows {
        for j in 0..inp {
            let mut acc = 0.0f32;
            for k in 0..out {
                acc += delta[r * out + k] * w[j * out + k];
            }
            delta_prev[r * inp + j] = acc * act_prev.derivative(a_prev[r * inp + j]);
        }
    }
}

/// Weight and bias gradients. gw: [inp, out] = zᵀ·δ + λW (`∂J/∂w_ij = z_i δ_j`); gb: [out] = Σ_rows δ
/// (biases are not penalized). z_prev: [rows, inp]; delta: [rows, out] (already scaled by 1/B).
#[allow(clippy::too_many_arguments)]
pub fn weight_grad(
    gw: &mut [f32],
    gb: &mut [f32],
    z_prev: &[f32],
    delta: &[f32],
    w: &[f32],
    l2: f32,
    rows: usize,
    inp: usize,
    out: usize,
) {
    for i in 0..inp {
        for j in 0..out {
            let mut acc = 0.0f32;
            for r in 0..rows {
                acc += z_prev[r * inp + i] * delta[r * out + j];
            }
            gw[i * out + j] = acc + l2 * w[i * out + j];
        }
    }
    for j in 0..out {
        let mut acc = 0.0f32;
        for r in 0..rows {
            acc += delta[r * out + j];
        }
        gb[j] = acc;
    }
}

/// One optimizer update over every parameter. params, grads, m, v: [P] (m, v unused by SGD; v
/// unused by momentum, whose velocity lives in m).
pub fn optimizer_update(
    params: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grads: &[f32],
    kind: OptimizerKind,
    h: &StepHyper,
) {
    for i in 0..params.len() {
        params[i] = update_one(params[i], &mut m[i], &mut v[i], grads[i], kind, h);
    }
}

/// The update of one parameter, shared by the reference's whole-vector update.
pub fn update_one(
    p: f32,
    m: &mut f32,
    v: &mut f32,
    g: f32,
    kind: OptimizerKind,
    h: &StepHyper,
) -> f32 {
    match kind {
        OptimizerKind::Sgd => p - h.lr * g,
        OptimizerKind::Momentum => {
            *m = h.momentum * *m + g;
            p - h.lr * *m
        }
        OptimizerKind::Adam => {
            *m = h.beta1 * *m + (1.0 - h.beta1) * g;
            *v = h.beta2 * *v + (1.0 - h.beta2) * g * g;
            let m_hat = *m / h.bias_correction1;
            let v_hat = *v / h.bias_correction2;
            p - h.lr * m_hat / (v_hat.sqrt() + h.eps)
        }
    }
}
