//! The fast backend's passes: one GEMM per row block (through `faer`) with its
//! epilogue fused behind it while the block is still in cache, and the element-wise math
//! written as plain loops over slices that LLVM vectorizes (the `match` hoisted out of them).
//!
//! Why `faer` (0.22, its matmul only): measured on this 2-core AVX-512 Xeon on all the GEMMs of
//! one training step of each suite shape, one thread (BENCHMARKS.md, "Fast CPU backend"): faer
//! 71–81 GFLOP/s on 784-512-512-10 b1024, 67 on 64-128-128-10 b4096, 87 on 784-128-10 b128;
//! `matrixmultiply` 66–84, 50, 66; `gemm` 0.18 42–46, 41, 44. faer takes arbitrary row and column
//! strides (so `Wᵀ`, `xᵀ` and the bias-as-a-row layout need no copies) and its parallelism is a
//! per-call argument (`Par::Seq` here: we split the rows ourselves, so the blocks are fixed and
//! the epilogues fused). Its packing buffers are thread-local and kept, so a step allocates
//! nothing there either. `matrixmultiply` reads its thread count once per process from
//! `MATMUL_NUM_THREADS` and threads inside every call, which would oversubscribe our blocks.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use crate::model::{sigmoid, softmax_row, Activation, Loss};
use crate::optim::{OptimizerKind, StepHyper};
use crate::reference::ops::is_correct;

/// A strided view of a row-major-ish matrix: element (i, j) at `off + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The backing storage.
    pub data: &'a [f32],
    /// Index of element (0, 0) in `data`.
    pub off: usize,
    /// Row stride, in elements.
    pub rs: usize,
    /// Column stride, in elements.
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, ld]` matrix starting at `off`.
    pub fn rows(data: &'a [f32], off: usize, ld: usize) -> Self {
        View {
            data,
            off,
            rs: ld,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with leading dimension `ld`, starting at `off`.
    pub fn transposed(data: &'a [f32], off: usize, ld: usize) -> Self {
        View {
            data,
            off,
            rs: 1,
            cs: ld,
        }
    }
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            let last = self.off + (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < self.data.len(), "GEMM operand out of bounds");
        }
    }
}

/// c: [m, n] (row-major, leading dimension `ldc`) = a: [m, k] · b: [k, n], on this thread.
pub fn gemm(c: &mut [f32], ldc: usize, a: View, b: View, m: usize, n: usize, k: usize) {
    if m == 0 || n == 0 {
        return;
    }
    a.check(m, k);
    b.check(k, n);
    assert!((m - 1) * ldc + n <= c.len(), "GEMM output out of bounds");
    // SAFETY: every element the views reach lies inside their slices (checked just above), and
    // `c` is borrowed mutably, so nothing else reads or writes it meanwhile.
    let (a, b, c) = unsafe {
        (
            MatRef::from_raw_parts(
                a.data.as_ptr().add(a.off),
                m,
                k,
                a.rs as isize,
                a.cs as isize,
            ),
            MatRef::from_raw_parts(
                b.data.as_ptr().add(b.off),
                k,
                n,
                b.rs as isize,
                b.cs as isize,
            ),
            MatMut::from_raw_parts_mut(c.as_mut_ptr(), m, n, ldc as isize, 1),
        )
    };
    matmul(c, Accum::Replace, a, b, 1.0f32, Par::Seq);
    clear_upper_vector_state();
}

/// faer's AVX-512 kernels can return with the upper halves of the vector registers dirty; the
/// epilogues after them are SSE code, and on this Xeon every SSE instruction then waits on those
/// halves (libm's expf in the loss ran ~40× slower). `vzeroupper` clears them.
#[inline]
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked just above), which is all vzeroupper needs.
        unsafe { std::arch::x86_64::_mm256_zeroupper() }
    }
}

/// z: [n] = φ(a: [n]) for a hidden layer (softmax is output-only and handled by the caller).
pub fn activate(z: &mut [f32], a: &[f32], act: Activation) {
    match act {
        Activation::Identity | Activation::Softmax => z.copy_from_slice(a),
        Activation::Relu => z.iter_mut().zip(a).for_each(|(z, &a)| *z = a.max(0.0)),
        _ => z.iter_mut().zip(a).for_each(|(z, &a)| *z = act.apply(a)),
    }
}

/// d: [n] ⊙= φ'(a: [n]).
pub fn times_derivative(d: &mut [f32], a: &[f32], act: Activation) {
    match act {
        Activation::Identity | Activation::Softmax | Activation::Step => {}
        Activation::Relu => d
            .iter_mut()
            .zip(a)
            .for_each(|(d, &a)| *d *= if a >= 0.0 { 1.0 } else { 0.0 }),
        _ => d
            .iter_mut()
            .zip(a)
            .for_each(|(d, &a)| *d *= act.derivative(a)),
    }
}

/// One row's loss and output delta without allocating: the reference's `output_delta_row`,
/// computing `y` into `delta` first. delta: [out] = scale·∂J/∂a; a, t: [out]. Returns (J, correct).
pub fn loss_delta_row(
    delta: &mut [f32],
    a: &[f32],
    t: &[f32],
    act: Activation,
    loss: Loss,
    scale: f32,
) -> (f32, bool) {
    for (y, &a) in delta.iter_mut().zip(a) {
        *y = act.apply(a);
    }
    if act == Activation::Softmax {
        softmax_row(delta);
    }
    let correct = is_correct(delta, t, loss);
    let j = match loss {
        Loss::SquaredError => {
            let j = delta
                .iter()
                .zip(t)
                .fold(0.0f32, |j, (&y, &t)| j + 0.5 * (y - t) * (y - t));
            if act == Activation::Softmax {
                let dot: f32 = delta.iter().zip(t).map(|(&y, &t)| y * (y - t)).sum();
                for (y, &t) in delta.iter_mut().zip(t) {
                    *y = scale * *y * ((*y - t) - dot);
                }
            } else {
                for ((y, &t), &a) in delta.iter_mut().zip(t).zip(a) {
                    *y = scale * (*y - t) * act.derivative(a);
                }
            }
            j
        }
        Loss::CrossEntropy => {
            let max = a.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + a.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
            let mut j = 0.0f32;
            for ((y, &t), &a) in delta.iter_mut().zip(t).zip(a) {
                j += t * (lse - a);
                *y = scale * (*y - t);
            }
            j
        }
        Loss::BinaryCrossEntropy => {
            let mut j = 0.0f32;
            for ((d, &t), &v) in delta.iter_mut().zip(t).zip(a) {
                j += v.max(0.0) - v * t + (-v.abs()).exp().ln_1p();
                *d = scale * (sigmoid(v) - t);
            }
            j
        }
    };
    (j, correct)
}

/// The gradient's epilogue fused with the optimizer: `g += λ·w` (when `l2` is given: weight rows
/// only), then the update of the reference's `update_one`, element by element, in one pass.
/// p, g: [n]; m, v: [n] or empty where the optimizer keeps no such state.
pub fn update(
    p: &mut [f32],
    g: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    l2: Option<f32>,
    kind: OptimizerKind,
    h: &StepHyper,
) {
    if let Some(l2) = l2 {
        g.iter_mut().zip(&*p).for_each(|(g, &w)| *g += l2 * w);
    }
    match kind {
        OptimizerKind::Sgd => p.iter_mut().zip(&*g).for_each(|(p, &g)| *p -= h.lr * g),
        OptimizerKind::Momentum => {
            for ((p, &g), m) in p.iter_mut().zip(&*g).zip(m) {
                *m = h.momentum * *m + g;
                *p -= h.lr * *m;
            }
        }
        OptimizerKind::Adam => {
            for (((p, &g), m), v) in p.iter_mut().zip(&*g).zip(m).zip(v) {
                *m = h.beta1 * *m + (1.0 - h.beta1) * g;
                *v = h.beta2 * *v + (1.0 - h.beta2) * g * g;
                let m_hat = *m / h.bias_correction1;
                let v_hat = *v / h.bias_correction2;
                *p -= h.lr * m_hat / (v_hat.sqrt() + h.eps);
            }
        }
    }
}
