// Activation functions and their derivatives, shared by the matmul epilogues and the loss kernels.
// The codes match `Activation::code` in src/model.rs; the CPU math lives beside them there.

const ACT_IDENTITY: u32 = 0u;
const ACT_SIGMOID: u32 = 1u;
const ACT_TANH: u32 = 2u;
const ACT_RELU: u32 = 3u;
const ACT_LEAKY_RELU: u32 = 4u;
const ACT_SOFTMAX: u32 = 5u;
const ACT_STEP: u32 = 6u;

// 1 / (1 + e^-a) without overflow for large |a|.
fn sigmoid(a: f32) -> f32 {
    if (a >= 0.0) {
        return 1.0 / (1.0 + exp(-a));
    }
    let e = exp(a);
    return e / (1.0 + e);
}

// tanh, clamped so that backends computing it from exponentials never form inf/inf.
fn safe_tanh(a: f32) -> f32 {
    return tanh(clamp(a, -15.0, 15.0));
}

// φ(a), element-wise (softmax is row-wise and handled by the loss kernels: identity here).
fn act_apply(code: u32, alpha: f32, a: f32) -> f32 {
    switch code {
        case 1u: { return sigmoid(a); }
        case 2u: { return safe_tanh(a); }
        case 3u: { return max(a, 0.0); }
        case 4u: { return select(alpha * a, a, a >= 0.0); }
        case 6u: { return select(0.0, 1.0, a >= 0.0); }
        default: { return a; }
    }
}

// φ'(a), with relu'(0) = 1 as the lecture notes define it.
fn act_derivative(code: u32, alpha: f32, a: f32) -> f32 {
    switch code {
        case 1u: {
            let s = sigmoid(a);
            return s * (1.0 - s);
        }
        case 2u: {
            let t = safe_tanh(a);
            return 1.0 - t * t;
        }
        case 3u: { return select(0.0, 1.0, a >= 0.0); }
        case 4u: { return select(alpha, 1.0, a >= 0.0); }
        default: { return 1.0; }
    }
}
