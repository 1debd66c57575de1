// Tiled matmul in the three forms a training step needs, each with its fused epilogue.
// Prepended at load time: activation.wgsl, step.wgsl.
//
//   MODE_FORWARD  a[B, n] = [x, 1]·[W; b]      (x: [B, k], W: [k, n], b: [n] right after W)
//                 epilogue: out = a, out2 = φ(a)
//   MODE_DELTA    δp[B, n] = (δ[B, k]·Wᵀ) ⊙ φ'(a_prev)   (W: [n, k]; a_prev read from out2)
//   MODE_GRAD     g[m+1, n] = [z, 1]ᵀ·δ + λ[W; 0]   (z: [B, m], δ: [B, n]; the ones row gives
//                 the bias gradient); epilogue: optional gradient write, then the optimizer
//                 update of params (out2) with its state (opt_m, opt_v) in place.
//
// The batch B comes from the per-step uniform, so one pipeline and bind group serve every batch
// size up to the one the buffers were made for. Tiles: 64×64 outputs per workgroup of 16×16
// invocations, 4×4 outputs each, K in slices of 16 through workgroup memory.

const MODE_FORWARD: u32 = 0u;
const MODE_DELTA: u32 = 1u;
const MODE_GRAD: u32 = 2u;

override MODE: u32 = 0u;
override ACT: u32 = 0u;      // forward: φ; delta: the previous layer's φ'
override OPT: u32 = 0u;      // grad: the optimizer (OPT_NONE writes the gradient only)
override KEEP_GRAD: bool = false;

struct Dims {
    n: u32,       // columns of C
    k: u32,       // forward/delta: the shared dimension (without the ones column)
    m: u32,       // grad: rows of W (without the ones row)
    alpha: f32,   // leaky relu slope for ACT
    a_off: u32,
    b_off: u32,
    c_off: u32,
    aux_off: u32, // delta: offset of a_prev in out2
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> lhs: array<f32>;
@group(0) @binding(3) var<storage, read> rhs: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> out2: array<f32>;
@group(0) @binding(6) var<storage, read_write> opt_m: array<f32>;
@group(0) @binding(7) var<storage, read_write> opt_v: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const TM: u32 = 4u;
const TN: u32 = 4u;

var<workgroup> tile_a: array<f32, 1024>; // [BK][BM]
var<workgroup> tile_b: array<f32, 1024>; // [BK][BN]

// A[row, col] of the logical left operand, 0 outside it.
fn load_a(row: u32, col: u32, rows: u32, inner: u32) -> f32 {
    if (row >= rows || col >= inner) {
        return 0.0;
    }
    if (MODE == MODE_GRAD) {
        // zᵀ with a ones row at row m
        if (row == dims.m) {
            return 1.0;
        }
        return lhs[dims.a_off + col * dims.m + row];
    }
    if (MODE == MODE_FORWARD && col == dims.k) {
        return 1.0;
    }
    return lhs[dims.a_off + row * dims.k + col];
}

// B[row, col] of the logical right operand, 0 outside it.
fn load_b(row: u32, col: u32, inner: u32) -> f32 {
    if (row >= inner || col >= dims.n) {
        return 0.0;
    }
    if (MODE == MODE_DELTA) {
        return rhs[dims.b_off + col * dims.k + row];
    }
    return rhs[dims.b_off + row * dims.n + col];
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    var rows: u32;
    var inner: u32;
    if (MODE == MODE_GRAD) {
        rows = dims.m + 1u;
        inner = step.batch;
    } else if (MODE == MODE_FORWARD) {
        rows = step.batch;
        inner = dims.k + 1u;
    } else {
        rows = step.batch;
        inner = dims.k;
    }
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let tid = lid.y * 16u + lid.x;

    var acc: array<array<f32, TN>, TM>;
    for (var k0 = 0u; k0 < inner; k0 += BK) {
        for (var i = 0u; i < 4u; i++) {
            let idx = tid + i * 256u;
            // A tile: contiguous along the operand's stored rows.
            if (MODE == MODE_GRAD) {
                let mm = idx % BM;
                let kk = idx / BM;
                tile_a[kk * BM + mm] = load_a(row0 + mm, k0 + kk, rows, inner);
            } else {
                let kk = idx % BK;
                let mm = idx / BK;
                tile_a[kk * BM + mm] = load_a(row0 + mm, k0 + kk, rows, inner);
            }
            if (MODE == MODE_DELTA) {
                let kk = idx % BK;
                let nn = idx / BK;
                tile_b[kk * BN + nn] = load_b(k0 + kk, col0 + nn, inner);
            } else {
                let nn = idx % BN;
                let kk = idx / BN;
                tile_b[kk * BN + nn] = load_b(k0 + kk, col0 + nn, inner);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a_reg: array<f32, TM>;
            var b_reg: array<f32, TN>;
            for (var i = 0u; i < TM; i++) {
                a_reg[i] = tile_a[kk * BM + lid.y + i * 16u];
            }
            for (var j = 0u; j < TN; j++) {
                b_reg[j] = tile_b[kk * BN + lid.x + j * 16u];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < TM; i++) {
        let row = row0 + lid.y + i * 16u;
        if (row >= rows) {
            continue;
        }
        for (var j = 0u; j < TN; j++) {
            let col = col0 + lid.x + j * 16u;
            if (col >= dims.n) {
                continue;
            }
            let v = acc[i][j];
            let idx = dims.c_off + row * dims.n + col;
            if (MODE == MODE_FORWARD) {
                out[idx] = v;
                out2[idx] = act_apply(ACT, dims.alpha, v);
            } else if (MODE == MODE_DELTA) {
                out[idx] = v * act_derivative(ACT, dims.alpha, out2[dims.aux_off + row * dims.n + col]);
            } else {
                // idx addresses [W; b] of this layer: the bias row is not penalized.
                let p = out2[idx];
                let g = v + select(0.0, step.l2 * p, row < dims.m);
                if (KEEP_GRAD || OPT == OPT_NONE) {
                    out[idx] = g;
                }
                if (OPT != OPT_NONE) {
                    var m = opt_m[idx];
                    var s = opt_v[idx];
                    out2[idx] = optimizer_update(OPT, step, p, g, &m, &s);
                    if (OPT == OPT_MOMENTUM || OPT == OPT_ADAM) {
                        opt_m[idx] = m;
                    }
                    if (OPT == OPT_ADAM) {
                        opt_v[idx] = s;
                    }
                }
            }
        }
    }
}
