// Gathers this step's rows of a device-resident dataset into the batch buffer:
// dst[i, :] = src[order[start + i], :] for i < batch. Prepended: step.wgsl.

struct Gather {
    width: u32,   // values per row
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> g: Gather;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // nwg.z is 1: z0 is an opaque 0 that keeps lavapipe from baking these uniforms into the
    // shader and recompiling it at every dispatch (see matmul.wgsl).
    let z0 = nwg.z - 1u;
    let width = g.width + z0;
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= (step.batch + z0) * width) {
        return;
    }
    let r = i / width;
    let c = i - r * width;
    dst[i] = src[order[step.row_start + z0 + r] * width + c];
}
