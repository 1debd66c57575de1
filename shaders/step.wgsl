// Per-step values every training kernel reads; written once per step by the host.
// Mirrors `StepUniform` in src/gpu/kernels.rs.
struct Step {
    batch: u32,        // rows in this step's batch
    step_index: u32,   // slot of this step's loss in the stats buffer
    row_start: u32,    // first position in the epoch order of this step's rows
    _pad1: u32,
    lr: f32,
    l2: f32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bias_correction1: f32,  // 1 - beta1^t
    bias_correction2: f32,  // 1 - beta2^t
    inv_batch: f32,         // 1 / batch: the mean over the batch is folded into the output delta
    _pad2: f32,
    _pad3: f32,
    _pad4: f32,
}

// Optimizer codes (OptimizerKind::code): 0 = none (write the gradient only).
const OPT_NONE: u32 = 0u;
const OPT_SGD: u32 = 1u;
const OPT_MOMENTUM: u32 = 2u;
const OPT_ADAM: u32 = 3u;

// The update of one parameter p with gradient g; m, v are its optimizer slots.
fn optimizer_update(opt: u32, s: Step, p: f32, g: f32, m: ptr<function, f32>, v: ptr<function, f32>) -> f32 {
    switch opt {
        case 1u: { return p - s.lr * g; }
        case 2u: {
            *m = s.momentum * (*m) + g;
            return p - s.lr * (*m);
        }
        case 3u: {
            *m = s.beta1 * (*m) + (1.0 - s.beta1) * g;
            *v = s.beta2 * (*v) + (1.0 - s.beta2) * g * g;
            let m_hat = (*m) / s.bias_correction1;
            let v_hat = (*v) / s.bias_correction2;
            return p - s.lr * m_hat / (sqrt(v_hat) + s.eps);
        }
        default: { return p; }
    }
}
