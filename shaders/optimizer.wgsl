// The optimizer update over every parameter, for the unfused schedule (the fused schedule runs
// the same `optimizer_update` in the gradient matmul's epilogue). Prepended: step.wgsl.

override OPT: u32 = 1u;

// `offset`: where `weight_decay` starts (0 for the other kernels, whose uniform is `OneU32`).
struct Count {
    n: u32,
    offset: u32,
}

@group(0) @binding(0) var<uniform> count: Count;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> opt_m: array<f32>;
@group(0) @binding(5) var<storage, read_write> opt_v: array<f32>;

@compute @workgroup_size(256)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= count.n + nwg.z - 1u) { // opaque 0: no per-dispatch recompile on lavapipe
        return;
    }
    var m = opt_m[i];
    var v = opt_v[i];
    params[i] = optimizer_update(OPT, step, params[i], grads[i], &m, &v);
    if (OPT == OPT_MOMENTUM || OPT == OPT_ADAM) {
        opt_m[i] = m;
    }
    if (OPT == OPT_ADAM) {
        opt_v[i] = v;
    }
}

// Gradient accumulation over micro-batches: params[i] += grads[i], where the buffer bound as
// `params` is the running total of the step's gradient and `grads` one micro-batch's part.
@compute @workgroup_size(256)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= count.n + nwg.z - 1u) { // opaque 0: no per-dispatch recompile on lavapipe
        return;
    }
    params[i] += grads[i];
}

// L2 for the split schedule of a data-parallel replica, one launch per layer's weights (not its
// biases): params[offset + i] += l2 · grads[offset + i], where the buffer bound as `params` is
// the step's all-reduced gradient and the one bound as `grads` the parameters.
@compute @workgroup_size(256)
fn weight_decay(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= count.n + nwg.z - 1u) { // opaque 0: no per-dispatch recompile on lavapipe
        return;
    }
    let j = count.offset + i;
    params[j] += step.l2 * grads[j];
}
