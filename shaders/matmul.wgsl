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
// grad only: split K (the batch) over the dispatch's z slices; each slice writes its raw partial
// sum to out[z · (m+1)·n + row·n + col] and `grad_reduce` adds the slices in a fixed order and
// runs the epilogue. For tall, thin gradients ([65, B]·[B, 64] at B = 65536) that would
// otherwise keep one or two workgroups busy while the rest of the device idles.
override SPLIT_K: bool = false;

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

// The K range of this workgroup: all of it, or slice wid.z of nwg.z (multiples of 16).
fn k_range(inner: u32, wid_z: u32, slices: u32) -> vec2<u32> {
    if (!SPLIT_K) {
        return vec2<u32>(0u, inner);
    }
    let chunk = ((inner + slices - 1u) / slices + 15u) / 16u * 16u;
    let begin = min(wid_z * chunk, inner);
    return vec2<u32>(begin, min(begin + chunk, inner));
}

// Where a split-K slice leaves its partial of C[row, col] (rows = m + 1).
fn store_partial(row: u32, col: u32, v: f32, slice: u32) {
    out[(slice * (dims.m + 1u) + row) * dims.n + col] = v;
}

// Sums the split-K partials of every C element in slice order, then runs the grad epilogue.
// dims.k holds the number of slices here. One invocation per element of [(m+1), n].
@compute @workgroup_size(256)
fn grad_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let z0 = min(nwg.z, 1u) - 1u;
    let n = dims.n + z0;
    let total = (dims.m + 1u) * n;
    let e = gid.y * nwg.x * 256u + gid.x;
    if (e >= total) {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < dims.k + z0; s++) {
        v += lhs[s * total + e];
    }
    store_c(e / n, e % n, v);
}

// The fused epilogue for C[row, col] = v of the current MODE (shared by both variants).
fn store_c(row: u32, col: u32, v: f32) {
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

@compute @workgroup_size(16, 16)
fn matmul_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
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
    let kr = k_range(inner, wid.z, nwg.z);
    for (var k0 = kr.x; k0 < kr.y; k0 += BK) {
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
            if (SPLIT_K) {
                store_partial(row, col, acc[i][j], wid.z);
            } else {
                store_c(row, col, acc[i][j]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Barrier-free register-blocked variant, for CPU adapters (lavapipe, llvmpipe, Mesa 22): there
// every storage or workgroup load is a per-lane scalar loop (~10 cycles a lane) and a barrier
// splits the workgroup into coroutines, so the kernel keeps no workgroup memory and maximizes
// FMAs per loaded element: each invocation owns a BTM×BTN block of outputs (rows contiguous,
// columns strided by the WG_N lanes that share a row block, so neighbouring lanes read
// neighbouring addresses) and streams K through registers: per k, BTM + BTN loads feed
// BTM·BTN FMAs. Out-of-range rows and columns are clamped on load (their results are
// discarded), so the interior carries no bounds checks. The K loop is unrolled by hand
// (generated): a private array indexed in a loop stays in memory on llvmpipe, 8× slower.
// 16×16 blocks ran faster still but took over 6 s to compile on GL llvmpipe, past
// wgpu's GL context lock timeout when pipelines are built from several threads.
// Tile: (64 / WG_N)·BTM rows × WG_N·BTN columns; the host picks WG_N per layer.

const BTM: u32 = 16u;
const BTN: u32 = 8u;
const BWG: u32 = 64u;
override WG_N: u32 = 8u;  // lanes across columns (1, 2, 4, 8); BWG / WG_N across rows

@compute @workgroup_size(64)
fn matmul_blocked(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // Sizes pass through an opaque zero so that no loop bound or branch depends on uniform
    // values alone: lavapipe (Mesa 22) otherwise inlines such uniforms and recompiles the
    // shader at every dispatch (milliseconds each). nwg.z >= 1 on every dispatch.
    let z0 = min(nwg.z, 1u) - 1u;
    let batch = step.batch + z0;
    let wg_m = BWG / WG_N;
    let lx = lid % WG_N;
    let ly = lid / WG_N;
    let row0 = (wid.y * wg_m + ly) * BTM;
    let col0 = wid.x * WG_N * BTN + lx;
    let n = dims.n + z0;
    let dk = dims.k + z0;
    let dm = dims.m + z0;

    // Operand addressing: A(r, q) = lhs[a_row[i] + q * a_q], B(q, c) = rhs[b_col[j] + q * b_q].
    var rows: u32;
    var inner: u32;
    var real_rows: u32;     // rows of A backed by memory (grad: the ones row is not)
    var a_r: u32;
    var a_q: u32;
    var b_c: u32;
    var b_q: u32;
    if (MODE == MODE_GRAD) {
        rows = dm + 1u;
        real_rows = dm;
        inner = batch;
        a_r = 1u;
        a_q = dm;
        b_c = 1u;
        b_q = n;
    } else if (MODE == MODE_FORWARD) {
        rows = batch;
        real_rows = rows;
        inner = dk;
        a_r = dk;
        a_q = 1u;
        b_c = 1u;
        b_q = n;
    } else {
        rows = batch;
        real_rows = rows;
        inner = dk;
        a_r = dk;
        a_q = 1u;
        b_c = dk;
        b_q = 1u;
    }
    var a_idx: array<u32, BTM>;
    var a_one: array<bool, BTM>;
    for (var i = 0u; i < BTM; i++) {
        let r = row0 + i;
        a_idx[i] = dims.a_off + min(r, real_rows - 1u) * a_r;
        a_one[i] = MODE == MODE_GRAD && r >= real_rows;
    }
    var b_idx: array<u32, BTN>;
    for (var j = 0u; j < BTN; j++) {
        b_idx[j] = dims.b_off + min(col0 + j * WG_N, n - 1u) * b_c;
    }

    // Unrolled by hand (lavapipe keeps a dynamically indexed private array in memory).
    let ai0 = a_idx[0u];
    let ao0 = a_one[0u];
    let ai1 = a_idx[1u];
    let ao1 = a_one[1u];
    let ai2 = a_idx[2u];
    let ao2 = a_one[2u];
    let ai3 = a_idx[3u];
    let ao3 = a_one[3u];
    let ai4 = a_idx[4u];
    let ao4 = a_one[4u];
    let ai5 = a_idx[5u];
    let ao5 = a_one[5u];
    let ai6 = a_idx[6u];
    let ao6 = a_one[6u];
    let ai7 = a_idx[7u];
    let ao7 = a_one[7u];
    let ai8 = a_idx[8u];
    let ao8 = a_one[8u];
    let ai9 = a_idx[9u];
    let ao9 = a_one[9u];
    let ai10 = a_idx[10u];
    let ao10 = a_one[10u];
    let ai11 = a_idx[11u];
    let ao11 = a_one[11u];
    let ai12 = a_idx[12u];
    let ao12 = a_one[12u];
    let ai13 = a_idx[13u];
    let ao13 = a_one[13u];
    let ai14 = a_idx[14u];
    let ao14 = a_one[14u];
    let ai15 = a_idx[15u];
    let ao15 = a_one[15u];
    let bi0 = b_idx[0u];
    let bi1 = b_idx[1u];
    let bi2 = b_idx[2u];
    let bi3 = b_idx[3u];
    let bi4 = b_idx[4u];
    let bi5 = b_idx[5u];
    let bi6 = b_idx[6u];
    let bi7 = b_idx[7u];
    var c0_0 = vec4<f32>(0.0);
    var c0_1 = vec4<f32>(0.0);
    var c1_0 = vec4<f32>(0.0);
    var c1_1 = vec4<f32>(0.0);
    var c2_0 = vec4<f32>(0.0);
    var c2_1 = vec4<f32>(0.0);
    var c3_0 = vec4<f32>(0.0);
    var c3_1 = vec4<f32>(0.0);
    var c4_0 = vec4<f32>(0.0);
    var c4_1 = vec4<f32>(0.0);
    var c5_0 = vec4<f32>(0.0);
    var c5_1 = vec4<f32>(0.0);
    var c6_0 = vec4<f32>(0.0);
    var c6_1 = vec4<f32>(0.0);
    var c7_0 = vec4<f32>(0.0);
    var c7_1 = vec4<f32>(0.0);
    var c8_0 = vec4<f32>(0.0);
    var c8_1 = vec4<f32>(0.0);
    var c9_0 = vec4<f32>(0.0);
    var c9_1 = vec4<f32>(0.0);
    var c10_0 = vec4<f32>(0.0);
    var c10_1 = vec4<f32>(0.0);
    var c11_0 = vec4<f32>(0.0);
    var c11_1 = vec4<f32>(0.0);
    var c12_0 = vec4<f32>(0.0);
    var c12_1 = vec4<f32>(0.0);
    var c13_0 = vec4<f32>(0.0);
    var c13_1 = vec4<f32>(0.0);
    var c14_0 = vec4<f32>(0.0);
    var c14_1 = vec4<f32>(0.0);
    var c15_0 = vec4<f32>(0.0);
    var c15_1 = vec4<f32>(0.0);
    let kr = k_range(inner, wid.z, nwg.z);
    for (var q = kr.x; q < kr.y; q++) {
        let qa = q * a_q;
        let qb = q * b_q;
        let b0 = vec4<f32>(rhs[bi0 + qb], rhs[bi1 + qb], rhs[bi2 + qb], rhs[bi3 + qb]);
        let b1 = vec4<f32>(rhs[bi4 + qb], rhs[bi5 + qb], rhs[bi6 + qb], rhs[bi7 + qb]);
        let a0 = vec4<f32>(select(lhs[ai0 + qa], 1.0, ao0));
        c0_0 = fma(a0, b0, c0_0);
        c0_1 = fma(a0, b1, c0_1);
        let a1 = vec4<f32>(select(lhs[ai1 + qa], 1.0, ao1));
        c1_0 = fma(a1, b0, c1_0);
        c1_1 = fma(a1, b1, c1_1);
        let a2 = vec4<f32>(select(lhs[ai2 + qa], 1.0, ao2));
        c2_0 = fma(a2, b0, c2_0);
        c2_1 = fma(a2, b1, c2_1);
        let a3 = vec4<f32>(select(lhs[ai3 + qa], 1.0, ao3));
        c3_0 = fma(a3, b0, c3_0);
        c3_1 = fma(a3, b1, c3_1);
        let a4 = vec4<f32>(select(lhs[ai4 + qa], 1.0, ao4));
        c4_0 = fma(a4, b0, c4_0);
        c4_1 = fma(a4, b1, c4_1);
        let a5 = vec4<f32>(select(lhs[ai5 + qa], 1.0, ao5));
        c5_0 = fma(a5, b0, c5_0);
        c5_1 = fma(a5, b1, c5_1);
        let a6 = vec4<f32>(select(lhs[ai6 + qa], 1.0, ao6));
        c6_0 = fma(a6, b0, c6_0);
        c6_1 = fma(a6, b1, c6_1);
        let a7 = vec4<f32>(select(lhs[ai7 + qa], 1.0, ao7));
        c7_0 = fma(a7, b0, c7_0);
        c7_1 = fma(a7, b1, c7_1);
        let a8 = vec4<f32>(select(lhs[ai8 + qa], 1.0, ao8));
        c8_0 = fma(a8, b0, c8_0);
        c8_1 = fma(a8, b1, c8_1);
        let a9 = vec4<f32>(select(lhs[ai9 + qa], 1.0, ao9));
        c9_0 = fma(a9, b0, c9_0);
        c9_1 = fma(a9, b1, c9_1);
        let a10 = vec4<f32>(select(lhs[ai10 + qa], 1.0, ao10));
        c10_0 = fma(a10, b0, c10_0);
        c10_1 = fma(a10, b1, c10_1);
        let a11 = vec4<f32>(select(lhs[ai11 + qa], 1.0, ao11));
        c11_0 = fma(a11, b0, c11_0);
        c11_1 = fma(a11, b1, c11_1);
        let a12 = vec4<f32>(select(lhs[ai12 + qa], 1.0, ao12));
        c12_0 = fma(a12, b0, c12_0);
        c12_1 = fma(a12, b1, c12_1);
        let a13 = vec4<f32>(select(lhs[ai13 + qa], 1.0, ao13));
        c13_0 = fma(a13, b0, c13_0);
        c13_1 = fma(a13, b1, c13_1);
        let a14 = vec4<f32>(select(lhs[ai14 + qa], 1.0, ao14));
        c14_0 = fma(a14, b0, c14_0);
        c14_1 = fma(a14, b1, c14_1);
        let a15 = vec4<f32>(select(lhs[ai15 + qa], 1.0, ao15));
        c15_0 = fma(a15, b0, c15_0);
        c15_1 = fma(a15, b1, c15_1);
    }
    var acc: array<f32, 128>; // [BTM][BTN]
    acc[0u] = c0_0[0u];
    acc[1u] = c0_0[1u];
    acc[2u] = c0_0[2u];
    acc[3u] = c0_0[3u];
    acc[4u] = c0_1[0u];
    acc[5u] = c0_1[1u];
    acc[6u] = c0_1[2u];
    acc[7u] = c0_1[3u];
    acc[8u] = c1_0[0u];
    acc[9u] = c1_0[1u];
    acc[10u] = c1_0[2u];
    acc[11u] = c1_0[3u];
    acc[12u] = c1_1[0u];
    acc[13u] = c1_1[1u];
    acc[14u] = c1_1[2u];
    acc[15u] = c1_1[3u];
    acc[16u] = c2_0[0u];
    acc[17u] = c2_0[1u];
    acc[18u] = c2_0[2u];
    acc[19u] = c2_0[3u];
    acc[20u] = c2_1[0u];
    acc[21u] = c2_1[1u];
    acc[22u] = c2_1[2u];
    acc[23u] = c2_1[3u];
    acc[24u] = c3_0[0u];
    acc[25u] = c3_0[1u];
    acc[26u] = c3_0[2u];
    acc[27u] = c3_0[3u];
    acc[28u] = c3_1[0u];
    acc[29u] = c3_1[1u];
    acc[30u] = c3_1[2u];
    acc[31u] = c3_1[3u];
    acc[32u] = c4_0[0u];
    acc[33u] = c4_0[1u];
    acc[34u] = c4_0[2u];
    acc[35u] = c4_0[3u];
    acc[36u] = c4_1[0u];
    acc[37u] = c4_1[1u];
    acc[38u] = c4_1[2u];
    acc[39u] = c4_1[3u];
    acc[40u] = c5_0[0u];
    acc[41u] = c5_0[1u];
    acc[42u] = c5_0[2u];
    acc[43u] = c5_0[3u];
    acc[44u] = c5_1[0u];
    acc[45u] = c5_1[1u];
    acc[46u] = c5_1[2u];
    acc[47u] = c5_1[3u];
    acc[48u] = c6_0[0u];
    acc[49u] = c6_0[1u];
    acc[50u] = c6_0[2u];
    acc[51u] = c6_0[3u];
    acc[52u] = c6_1[0u];
    acc[53u] = c6_1[1u];
    acc[54u] = c6_1[2u];
    acc[55u] = c6_1[3u];
    acc[56u] = c7_0[0u];
    acc[57u] = c7_0[1u];
    acc[58u] = c7_0[2u];
    acc[59u] = c7_0[3u];
    acc[60u] = c7_1[0u];
    acc[61u] = c7_1[1u];
    acc[62u] = c7_1[2u];
    acc[63u] = c7_1[3u];
    acc[64u] = c8_0[0u];
    acc[65u] = c8_0[1u];
    acc[66u] = c8_0[2u];
    acc[67u] = c8_0[3u];
    acc[68u] = c8_1[0u];
    acc[69u] = c8_1[1u];
    acc[70u] = c8_1[2u];
    acc[71u] = c8_1[3u];
    acc[72u] = c9_0[0u];
    acc[73u] = c9_0[1u];
    acc[74u] = c9_0[2u];
    acc[75u] = c9_0[3u];
    acc[76u] = c9_1[0u];
    acc[77u] = c9_1[1u];
    acc[78u] = c9_1[2u];
    acc[79u] = c9_1[3u];
    acc[80u] = c10_0[0u];
    acc[81u] = c10_0[1u];
    acc[82u] = c10_0[2u];
    acc[83u] = c10_0[3u];
    acc[84u] = c10_1[0u];
    acc[85u] = c10_1[1u];
    acc[86u] = c10_1[2u];
    acc[87u] = c10_1[3u];
    acc[88u] = c11_0[0u];
    acc[89u] = c11_0[1u];
    acc[90u] = c11_0[2u];
    acc[91u] = c11_0[3u];
    acc[92u] = c11_1[0u];
    acc[93u] = c11_1[1u];
    acc[94u] = c11_1[2u];
    acc[95u] = c11_1[3u];
    acc[96u] = c12_0[0u];
    acc[97u] = c12_0[1u];
    acc[98u] = c12_0[2u];
    acc[99u] = c12_0[3u];
    acc[100u] = c12_1[0u];
    acc[101u] = c12_1[1u];
    acc[102u] = c12_1[2u];
    acc[103u] = c12_1[3u];
    acc[104u] = c13_0[0u];
    acc[105u] = c13_0[1u];
    acc[106u] = c13_0[2u];
    acc[107u] = c13_0[3u];
    acc[108u] = c13_1[0u];
    acc[109u] = c13_1[1u];
    acc[110u] = c13_1[2u];
    acc[111u] = c13_1[3u];
    acc[112u] = c14_0[0u];
    acc[113u] = c14_0[1u];
    acc[114u] = c14_0[2u];
    acc[115u] = c14_0[3u];
    acc[116u] = c14_1[0u];
    acc[117u] = c14_1[1u];
    acc[118u] = c14_1[2u];
    acc[119u] = c14_1[3u];
    acc[120u] = c15_0[0u];
    acc[121u] = c15_0[1u];
    acc[122u] = c15_0[2u];
    acc[123u] = c15_0[3u];
    acc[124u] = c15_1[0u];
    acc[125u] = c15_1[1u];
    acc[126u] = c15_1[2u];
    acc[127u] = c15_1[3u];
    if (MODE == MODE_FORWARD) {
        // The ones column of [x, 1] meets the bias row right after W.
        for (var j = 0u; j < BTN; j++) {
            let bias = rhs[b_idx[j] + dk * n];
            for (var i = 0u; i < BTM; i++) {
                acc[i * BTN + j] += bias;
            }
        }
    }

    for (var i = 0u; i < BTM; i++) {
        let row = row0 + i;
        if (row >= rows) {
            break;
        }
        for (var j = 0u; j < BTN; j++) {
            let col = col0 + j * WG_N;
            if (col >= n) {
                break;
            }
            if (SPLIT_K) {
                store_partial(row, col, acc[i * BTN + j], wid.z);
            } else {
                store_c(row, col, acc[i * BTN + j]);
            }
        }
    }
}
