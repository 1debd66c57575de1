// Mirrors a row-major matrix [rows, 4·cols4] held in a storage buffer into an rgba32float storage
// image, texel (c, r) = row r, columns 4c..4c+3, for the image matmul kernels
// (matmul_image.wgsl): on lavapipe an image load gathers the 8 lanes' texels with vector
// instructions, where a storage-buffer load is a per-lane scalar loop. Prepended: step.wgsl.

struct Mirror {
    cols4: u32,       // texels per row
    rows: u32,        // rows to copy, unless batch_rows is set
    offset4: u32,     // where the matrix starts in the buffer, in vec4s
    batch_rows: u32,  // 1: the matrix has the step's batch rows (activations and deltas)
}

@group(0) @binding(0) var<uniform> mirror: Mirror;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> order: array<u32>;   // gather_to_image only
@group(0) @binding(4) var dst: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(256)
fn to_image(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // nwg.z is 1: z0 is an opaque 0 that keeps lavapipe from baking the uniforms into the
    // shader and recompiling it at every dispatch (see matmul.wgsl).
    let z0 = nwg.z - 1u;
    let cols4 = mirror.cols4 + z0;
    let rows = select(mirror.rows, step.batch, mirror.batch_rows != 0u) + z0;
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= rows * cols4) {
        return;
    }
    let r = i / cols4;
    textureStore(dst, vec2<u32>(i - r * cols4, r), src[mirror.offset4 + z0 + i]);
}

// The step's rows of a device-resident dataset [rows, 4·cols4], gathered straight into the
// input's image (data.wgsl's gather_rows, for an input that only image kernels read): image row
// r = src row order[row_start + r].
@compute @workgroup_size(256)
fn gather_to_image(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let z0 = nwg.z - 1u;
    let cols4 = mirror.cols4 + z0;
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= (step.batch + z0) * cols4) {
        return;
    }
    let r = i / cols4;
    let c = i - r * cols4;
    textureStore(dst, vec2<u32>(c, r), src[order[step.row_start + z0 + r] * cols4 + c]);
}
