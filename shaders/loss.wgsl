// Output delta, per-row loss and correctness, their reduction into a per-step slot, and the
// row-wise output activation for prediction. Prepended at load time: activation.wgsl, step.wgsl.
// The formulas match `output_delta_row` in src/cpu/ops.rs.

const LOSS_SQUARED_ERROR: u32 = 0u;
const LOSS_CROSS_ENTROPY: u32 = 1u;
const LOSS_BINARY_CROSS_ENTROPY: u32 = 2u;

struct LossDims {
    out: u32,     // outputs per row
    act: u32,     // output activation code
    loss: u32,    // loss code
    alpha: f32,   // leaky relu slope
}

@group(0) @binding(0) var<uniform> dims: LossDims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> pre: array<f32>;            // a: [B, out]
@group(0) @binding(3) var<storage, read> targets: array<f32>;        // t: [B, out]
@group(0) @binding(4) var<storage, read_write> delta: array<f32>;    // δ: [B, out] = ∂E/∂a
@group(0) @binding(5) var<storage, read_write> row_stats: array<f32>;// [B, 2]: loss, correct
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;    // [steps, 2]

fn y_of(act: u32, base: u32, k: u32, max_a: f32, sum_e: f32) -> f32 {
    let a = pre[base + k];
    if (act == ACT_SOFTMAX) {
        return exp(a - max_a) / sum_e;
    }
    return act_apply(act, dims.alpha, a);
}

// One invocation per row: loss J, δ = scale·∂J/∂a, and whether the row is classified correctly.
@compute @workgroup_size(256)
fn output_delta(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let z0 = nwg.z - 1u;
    let r = gid.y * nwg.x * 256u + gid.x;
    if (r >= step.batch + z0) {
        return;
    }
    let n = dims.out + z0;
    let dact = dims.act + z0;
    let dloss = dims.loss + z0;
    let base = r * n;
    let scale = step.inv_batch;
    var max_a = pre[base];
    for (var k = 1u; k < n; k++) {
        max_a = max(max_a, pre[base + k]);
    }
    var sum_e = 0.0;
    if (dact == ACT_SOFTMAX) {
        for (var k = 0u; k < n; k++) {
            sum_e += exp(pre[base + k] - max_a);
        }
    }
    var j = 0.0;
    if (dloss == LOSS_SQUARED_ERROR) {
        var dot = 0.0;
        for (var k = 0u; k < n; k++) {
            let y = y_of(dact, base, k, max_a, sum_e);
            let e = y - targets[base + k];
            j += 0.5 * e * e;
            dot += y * e;
        }
        for (var k = 0u; k < n; k++) {
            let y = y_of(dact, base, k, max_a, sum_e);
            let e = y - targets[base + k];
            if (dact == ACT_SOFTMAX) {
                delta[base + k] = scale * y * (e - dot);
            } else {
                delta[base + k] = scale * e * act_derivative(dact, dims.alpha, pre[base + k]);
            }
        }
    } else if (dloss == LOSS_CROSS_ENTROPY) {
        let lse = max_a + log(sum_e);
        for (var k = 0u; k < n; k++) {
            let t = targets[base + k];
            j += t * (lse - pre[base + k]);
            delta[base + k] = scale * (exp(pre[base + k] - max_a) / sum_e - t);
        }
    } else {
        for (var k = 0u; k < n; k++) {
            let a = pre[base + k];
            let t = targets[base + k];
            j += max(a, 0.0) - a * t + log(1.0 + exp(-abs(a)));
            delta[base + k] = scale * (sigmoid(a) - t);
        }
    }
    // Correctness: the rule of `is_correct` in src/cpu/ops.rs.
    var ok = true;
    if (n == 1u || dloss == LOSS_BINARY_CROSS_ENTROPY) {
        for (var k = 0u; k < n; k++) {
            let y = y_of(dact, base, k, max_a, sum_e);
            ok = ok && ((y >= 0.5) == (targets[base + k] >= 0.5));
        }
    } else {
        var best_y = 0u;
        var best_t = 0u;
        var y_best = y_of(dact, base, 0u, max_a, sum_e);
        for (var k = 1u; k < n; k++) {
            let y = y_of(dact, base, k, max_a, sum_e);
            if (y > y_best) {
                y_best = y;
                best_y = k;
            }
            if (targets[base + k] > targets[base + best_t]) {
                best_t = k;
            }
        }
        ok = best_y == best_t;
    }
    row_stats[2u * r] = j;
    row_stats[2u * r + 1u] = select(0.0, 1.0, ok);
}

var<workgroup> partial: array<vec2<f32>, 256>;

// One workgroup: stats[step_index] = Σ_rows (loss, correct), in a fixed order (deterministic).
@compute @workgroup_size(256)
fn reduce_stats(@builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let batch = step.batch + nwg.z - 1u; // opaque 0: no per-dispatch recompile on lavapipe
    var acc = vec2<f32>(0.0, 0.0);
    for (var r = lid; r < batch; r += 256u) {
        acc += vec2<f32>(row_stats[2u * r], row_stats[2u * r + 1u]);
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var width = 128u; width > 0u; width >>= 1u) {
        if (lid < width) {
            partial[lid] += partial[lid + width];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        stats[2u * step.step_index] = partial[0].x;
        stats[2u * step.step_index + 1u] = partial[0].y;
    }
}

// Prediction for a softmax output: delta[r, :] = softmax(a[r, :]) (the buffer bound as delta
// holds the outputs here).
@compute @workgroup_size(256)
fn softmax_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let z0 = nwg.z - 1u; // opaque 0: no per-dispatch recompile on lavapipe
    let r = gid.y * nwg.x * 256u + gid.x;
    if (r >= step.batch + z0) {
        return;
    }
    let n = dims.out + z0;
    let base = r * n;
    var max_a = pre[base];
    for (var k = 1u; k < n; k++) {
        max_a = max(max_a, pre[base + k]);
    }
    var sum_e = 0.0;
    for (var k = 0u; k < n; k++) {
        sum_e += exp(pre[base + k] - max_a);
    }
    for (var k = 0u; k < n; k++) {
        delta[base + k] = exp(pre[base + k] - max_a) / sum_e;
    }
}
