// Fully fused training step for narrow networks (every width ≤ 128), after tiny-cuda-nn's
// fully fused MLP. Prepended at load time: activation.wgsl, step.wgsl. The math is that of
// src/cpu/ops.rs: `dense_forward`, `output_delta_row`, `backprop_delta`, `weight_grad`,
// `optimizer_update`.
//
// Two entry points, recorded back to back:
//   fused_tile     one workgroup walks batch tiles of TILE rows (tile g, g + groups, …): forward
//                  and backward of a tile with its activations in workgroup memory, adding the
//                  tile's weight gradient into the workgroup's own partial slice (no atomics).
//   reduce_update  one invocation per parameter: Σ of the workgroups' partials in workgroup
//                  order, + λW on weights, the optimizer update; workgroup 0 also sums the
//                  per-invocation loss/correct partials into stats[step_index].
// Every sum runs in a fixed order, so a rerun is bit-identical.
//
// Weights reach the block loops through workgroup memory (`stage_rows`, `stage_columns`): slabs
// of W copied by consecutive invocations from consecutive addresses, then read as one vec4 per
// 16 FMAs from swizzled, conflict-free slots. The first version read W straight from storage,
// and in `delta_layer` lanes 4·n floats apart (one cache line per lane per load).

override TILE: u32 = 32u;        // batch rows per tile, a multiple of 4
override STRIDE: u32 = 128u;     // row stride of the workgroup tiles: max width rounded up to 4
override SM_LEN: u32 = 8192u;    // 2 · TILE · STRIDE: two tiles, ping-pong
override W_SLAB: u32 = 16u;      // rows (forward) or columns (delta) of W staged at a time
override W_ROW: u32 = 32u;       // vec4s per staged row: STRIDE / 4 rounded up to a multiple of 8
override WS_LEN: u32 = 512u;     // W_SLAB · W_ROW
override WG: u32 = 256u;         // invocations per workgroup of fused_tile
override GROUPS: u32 = 64u;      // most workgroups of fused_tile (the partial slices)
override LAYERS: u32 = 1u;
override PARAMS: u32 = 1u;       // P
override HIDDEN: u32 = 0u;       // Σ widths of the hidden layers (scratch floats per row)
override LOSS: u32 = 0u;         // Loss::code
override OPT: u32 = 0u;          // OptimizerKind::code, 0: gradient only
override KEEP_GRAD: bool = false;

const LOSS_SQUARED_ERROR: u32 = 0u;
const LOSS_CROSS_ENTROPY: u32 = 1u;
const LOSS_BINARY_CROSS_ENTROPY: u32 = 2u;

// One layer: `FusedLayer` in src/gpu/fused.rs.
struct Layer {
    inputs: u32,
    outputs: u32,
    weight: u32,   // offset of W: [inputs, outputs] in params
    bias: u32,     // offset of b: [outputs]
    act: u32,      // Activation::code
    alpha: f32,    // leaky slope
    a_off: u32,    // offset of this layer's a: [TILE, outputs] in a workgroup's scratch slice
    _pad: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> layers: array<Layer>;        // [LAYERS]
@group(0) @binding(2) var<storage, read> xs: array<f32>;              // x: [B, in]
@group(0) @binding(3) var<storage, read> ts: array<f32>;              // t: [B, out]
@group(0) @binding(4) var<storage, read_write> params: array<f32>;    // [P] (reduce_update)
@group(0) @binding(11) var<storage, read> weights: array<f32>;        // the same [P] (fused_tile)
@group(0) @binding(5) var<storage, read_write> opt_m: array<f32>;     // [P] (momentum, Adam)
@group(0) @binding(6) var<storage, read_write> opt_v: array<f32>;     // [P] (Adam)
@group(0) @binding(7) var<storage, read_write> grads: array<f32>;     // [P] (KEEP_GRAD)
@group(0) @binding(8) var<storage, read_write> stats: array<f32>;     // [steps, 2]
@group(0) @binding(9) var<storage, read_write> scratch: array<f32>;   // [GROUPS, TILE·HIDDEN]: a of hidden layers
@group(0) @binding(10) var<storage, read_write> partial: array<f32>;  // [GROUPS, P] then [GROUPS, WG, 2]

// Two [TILE, STRIDE] tiles: the layer input (z, or x) and its output (a/z forward, δ backward).
var<workgroup> sm: array<f32, SM_LEN>;
// A slab of W staged for the block loops: [W_SLAB, W_ROW] vec4s, row s of the slab holding
// W[i0 + s, 4v..4v+4] at vec4 v (forward), or W[4v..4v+4, j0 + s] (delta, transposed), at the
// swizzled slot `ws_index(s, v)`.
var<workgroup> ws: array<vec4<f32>, WS_LEN>;

// The workgroups fused_tile runs for this step's batch (the host dispatches the same number).
fn groups_for_batch() -> u32 {
    return min((step.batch + TILE - 1u) / TILE, GROUPS);
}

@compute @workgroup_size(WG)
fn fused_tile(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let g = wid.x;
    let batch = step.batch;
    let tiles = (batch + TILE - 1u) / TILE;
    let groups = groups_for_batch();
    let half = TILE * STRIDE;
    let sbase = g * TILE * HIDDEN;
    let last = LAYERS - 1u;
    // Loss and correct count of rows lid, lid + WG, … of this workgroup's tiles.
    var loss_acc = 0.0;
    var ok_acc = 0.0;
    for (var tile = g; tile < tiles; tile += groups) {
        let row0 = tile * TILE;
        let rows = min(TILE, batch - row0);
        let first = tile == g;
        // x → tile 0 (rows past the batch read as zeros).
        load_input(lid, 0u, row0, rows);
        workgroupBarrier();
        // Forward: a_l = z_{l-1}·W + b, z_l = φ(a_l); hidden a_l also to scratch for φ'.
        var cur = 0u;
        for (var l = 0u; l < LAYERS; l++) {
            forward_layer(lid, sbase, l, cur, half - cur);
            workgroupBarrier();
            cur = half - cur;
        }
        storageBarrier();
        // Output delta in place over a_L; per-row loss and correctness.
        let lo = layers[last];
        for (var r = lid; r < TILE; r += WG) {
            let base = cur + r * STRIDE;
            if (r < rows) {
                let res = loss_row(base, (row0 + r) * lo.outputs, lo.outputs, lo.act, lo.alpha);
                loss_acc += res.x;
                ok_acc += res.y;
            } else {
                for (var k = 0u; k < lo.outputs; k++) {
                    sm[base + k] = 0.0;
                }
            }
        }
        workgroupBarrier();
        // Backward, layer by layer: δ_l lives in tile `d`, the other tile takes z_{l-1}, then δ_{l-1}.
        var d = cur;
        for (var li = 0u; li < LAYERS; li++) {
            let l = last - li;
            let o = half - d;
            load_z(lid, sbase, l, o, row0, rows);
            workgroupBarrier();
            grad_layer(lid, g, l, o, d, rows, first);
            workgroupBarrier();
            if (l > 0u) {
                delta_layer(lid, sbase, l, d, o);
                workgroupBarrier();
                d = o;
            }
        }
        storageBarrier();
    }
    let s = GROUPS * PARAMS + 2u * (g * WG + lid);
    partial[s] = loss_acc;
    partial[s + 1u] = ok_acc;
}

// sm[dst + r·STRIDE + i] = x[row0 + r, i], zero past the batch.
fn load_input(lid: u32, dst: u32, row0: u32, rows: u32) {
    let k = layers[0].inputs;
    for (var e = lid; e < TILE * k; e += WG) {
        let r = e / k;
        let i = e % k;
        var v = 0.0;
        if (r < rows) {
            v = xs[(row0 + r) * k + i];
        }
        sm[dst + r * STRIDE + i] = v;
    }
}

// The input of layer l into tile dst: x for the first layer, else φ(a_{l-1}) from scratch.
fn load_z(lid: u32, sbase: u32, l: u32, dst: u32, row0: u32, rows: u32) {
    if (l == 0u) {
        load_input(lid, dst, row0, rows);
        return;
    }
    let lp = layers[l - 1u];
    let k = lp.outputs;
    for (var e = lid; e < TILE * k; e += WG) {
        let r = e / k;
        let i = e % k;
        sm[dst + r * STRIDE + i] = act_apply(lp.act, lp.alpha, scratch[sbase + lp.a_off + e]);
    }
}

// Staging W (ideas taken from CUTLASS-style GEMMs and tiny-cuda-nn): the block loops below read
// W only from workgroup memory, as one vec4 per step, and W reaches workgroup memory in slabs
// that consecutive invocations copy from consecutive addresses (coalesced, whatever the layer's
// width). The vec4 slot of row s is XOR-swizzled by s mod 8, so the transposed stores of
// `stage_columns` spread over 8 bank groups (2-way at most) while a row stays conflict-free for
// the vec4 reads; W_ROW is a multiple of 8, so the swizzle stays inside the row.
fn ws_index(s: u32, v: u32) -> u32 {
    return s * W_ROW + (v ^ (s & 7u));
}

// ws row s ← W[i0 + s, 0..n] for s < rows: `src` is the offset of W[i0, 0]; the copy is
// contiguous in `weights`.
fn stage_rows(lid: u32, src: u32, rows: u32, n: u32) {
    for (var e = lid; e < rows * n; e += WG) {
        let s = e / n;
        let j = e % n;
        ws[ws_index(s, j / 4u)][j % 4u] = weights[src + e];
    }
}

// ws row s ← W[0..k, j0 + s] for s < cols: `src` is the offset of W[0, j0]; runs of `cols`
// consecutive floats per row of W.
fn stage_columns(lid: u32, src: u32, cols: u32, k: u32, n: u32) {
    for (var e = lid; e < k * cols; e += WG) {
        let i = e / cols;
        let s = e % cols;
        ws[ws_index(s, i / 4u)][i % 4u] = weights[src + i * n + s];
    }
}

// acc[q] += Σ_{s < count} sm[s0 + q·STRIDE + s] · ws[ws_index(s, v)]: four tile rows against
// `count` staged rows of W at vec4 slot v (one LDS.128 and four scalar loads per 16 FMAs).
fn block_fma(acc: ptr<function, array<vec4<f32>, 4>>, s0: u32, count: u32, v: u32) {
    for (var s = 0u; s < count; s++) {
        let w = ws[ws_index(s, v)];
        (*acc)[0] += sm[s0 + s] * w;
        (*acc)[1] += sm[s0 + STRIDE + s] * w;
        (*acc)[2] += sm[s0 + 2u * STRIDE + s] * w;
        (*acc)[3] += sm[s0 + 3u * STRIDE + s] * w;
    }
}

// Forward of layer l for the whole tile, in 4×4 register blocks (rows × outputs). Every
// invocation runs the same rounds and slabs (the barriers stay in uniform control flow); those
// past the last block only help staging.
fn forward_layer(lid: u32, sbase: u32, l: u32, src: u32, dst: u32) {
    let ly = layers[l];
    let n = ly.outputs;
    let k = ly.inputs;
    let hidden = l + 1u < LAYERS;
    let ncb = (n + 3u) / 4u;
    let count = (TILE / 4u) * ncb;
    for (var round = 0u; round < count; round += WG) {
        let idx = round + lid;
        let has_block = idx < count;
        let r0 = (idx / ncb) * 4u;
        let c0 = (idx % ncb) * 4u;
        var acc = array<vec4<f32>, 4>();
        for (var i0 = 0u; i0 < k; i0 += W_SLAB) {
            let rows = min(W_SLAB, k - i0);
            workgroupBarrier(); // the previous slab's readers are done
            stage_rows(lid, ly.weight + i0 * n, rows, n);
            workgroupBarrier();
            if (has_block) {
                // Columns past n hold stale values; they are never written out.
                block_fma(&acc, src + r0 * STRIDE + i0, rows, c0 / 4u);
            }
        }
        if (has_block) {
            let cols = min(vec4<u32>(c0, c0 + 1u, c0 + 2u, c0 + 3u), vec4<u32>(n - 1u));
            let b = vec4<f32>(weights[ly.bias + cols.x], weights[ly.bias + cols.y], weights[ly.bias + cols.z], weights[ly.bias + cols.w]);
            for (var q = 0u; q < 4u; q++) {
                let r = r0 + q;
                for (var c = 0u; c < 4u; c++) {
                    let j = c0 + c;
                    if (j < n) {
                        let a = acc[q][c] + b[c];
                        if (hidden) {
                            scratch[sbase + ly.a_off + r * n + j] = a;
                            sm[dst + r * STRIDE + j] = act_apply(ly.act, ly.alpha, a);
                        } else {
                            sm[dst + r * STRIDE + j] = a;
                        }
                    }
                }
            }
        }
    }
}

// y_k of the output row at sm[base..base + n] holding a (before it is overwritten by δ).
fn y_of(base: u32, k: u32, act: u32, alpha: f32, max_a: f32, sum_e: f32) -> f32 {
    let a = sm[base + k];
    if (act == ACT_SOFTMAX) {
        return exp(a - max_a) / sum_e;
    }
    return act_apply(act, alpha, a);
}

// One row of `output_delta_row`: overwrites a with δ = step.inv_batch · ∂J/∂a; returns
// (J, correct) with the rule of `is_correct`.
fn loss_row(base: u32, tbase: u32, n: u32, act: u32, alpha: f32) -> vec2<f32> {
    let scale = step.inv_batch;
    var max_a = sm[base];
    for (var k = 1u; k < n; k++) {
        max_a = max(max_a, sm[base + k]);
    }
    var sum_e = 0.0;
    if (act == ACT_SOFTMAX) {
        for (var k = 0u; k < n; k++) {
            sum_e += exp(sm[base + k] - max_a);
        }
    }
    // Correctness first: it reads y, which δ overwrites.
    var ok = true;
    if (n == 1u || LOSS == LOSS_BINARY_CROSS_ENTROPY) {
        for (var k = 0u; k < n; k++) {
            let y = y_of(base, k, act, alpha, max_a, sum_e);
            ok = ok && ((y >= 0.5) == (ts[tbase + k] >= 0.5));
        }
    } else {
        var best_y = 0u;
        var best_t = 0u;
        var y_best = y_of(base, 0u, act, alpha, max_a, sum_e);
        var t_best = ts[tbase];
        for (var k = 1u; k < n; k++) {
            let y = y_of(base, k, act, alpha, max_a, sum_e);
            if (y > y_best) {
                y_best = y;
                best_y = k;
            }
            let t = ts[tbase + k];
            if (t > t_best) {
                t_best = t;
                best_t = k;
            }
        }
        ok = best_y == best_t;
    }
    var j = 0.0;
    if (LOSS == LOSS_SQUARED_ERROR) {
        var dot = 0.0;
        for (var k = 0u; k < n; k++) {
            let y = y_of(base, k, act, alpha, max_a, sum_e);
            let e = y - ts[tbase + k];
            j += 0.5 * e * e;
            dot += y * e;
        }
        for (var k = 0u; k < n; k++) {
            let a = sm[base + k];
            let y = y_of(base, k, act, alpha, max_a, sum_e);
            let e = y - ts[tbase + k];
            if (act == ACT_SOFTMAX) {
                // The softmax Jacobian applied: δ_k = y_k((y_k − t_k) − Σ_j y_j(y_j − t_j)).
                sm[base + k] = scale * y * (e - dot);
            } else {
                sm[base + k] = scale * e * act_derivative(act, alpha, a);
            }
        }
    } else if (LOSS == LOSS_CROSS_ENTROPY) {
        // J = Σ_k t_k (lse − a_k) with the max-subtracted log-sum-exp; δ = y − t.
        let lse = max_a + log(sum_e);
        for (var k = 0u; k < n; k++) {
            let a = sm[base + k];
            let t = ts[tbase + k];
            j += t * (lse - a);
            sm[base + k] = scale * (exp(a - max_a) / sum_e - t);
        }
    } else {
        // From the pre-activation: J = Σ_k max(a, 0) − a t + ln(1 + e^{−|a|}); δ = σ(a) − t.
        for (var k = 0u; k < n; k++) {
            let a = sm[base + k];
            let t = ts[tbase + k];
            j += max(a, 0.0) - a * t + log(1.0 + exp(-abs(a)));
            sm[base + k] = scale * (sigmoid(a) - t);
        }
    }
    return vec2<f32>(j, select(0.0, 1.0, ok));
}

// The tile's [z, 1]ᵀ·δ of layer l into this workgroup's partial slice, in 4×4 register blocks
// (inputs × outputs) over the tile's valid rows; the blocks of inputs 0..3 also sum δ for the
// bias. The first tile of a workgroup stores, the later ones add.
fn grad_layer(lid: u32, g: u32, l: u32, zt: u32, dt: u32, rows: u32, first: bool) {
    let ly = layers[l];
    let n = ly.outputs;
    let k = ly.inputs;
    let ncb = (n + 3u) / 4u;
    let count = ((k + 3u) / 4u) * ncb;
    let pbase = g * PARAMS;
    for (var idx = lid; idx < count; idx += WG) {
        let i0 = (idx / ncb) * 4u;
        let c0 = (idx % ncb) * 4u;
        let cols = min(vec4<u32>(c0, c0 + 1u, c0 + 2u, c0 + 3u), vec4<u32>(n - 1u));
        let ins = min(vec4<u32>(i0, i0 + 1u, i0 + 2u, i0 + 3u), vec4<u32>(k - 1u));
        var acc0 = vec4<f32>(0.0);
        var acc1 = vec4<f32>(0.0);
        var acc2 = vec4<f32>(0.0);
        var acc3 = vec4<f32>(0.0);
        var bacc = vec4<f32>(0.0);
        for (var r = 0u; r < rows; r++) {
            let dr = dt + r * STRIDE;
            let zr = zt + r * STRIDE;
            let dv = vec4<f32>(sm[dr + cols.x], sm[dr + cols.y], sm[dr + cols.z], sm[dr + cols.w]);
            acc0 += sm[zr + ins.x] * dv;
            acc1 += sm[zr + ins.y] * dv;
            acc2 += sm[zr + ins.z] * dv;
            acc3 += sm[zr + ins.w] * dv;
            bacc += dv;
        }
        var acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
        for (var q = 0u; q < 4u; q++) {
            let i = i0 + q;
            if (i < k) {
                for (var c = 0u; c < 4u; c++) {
                    let j = c0 + c;
                    if (j < n) {
                        let p = pbase + ly.weight + i * n + j;
                        partial[p] = select(partial[p] + acc[q][c], acc[q][c], first);
                    }
                }
            }
        }
        if (i0 == 0u) {
            for (var c = 0u; c < 4u; c++) {
                let j = c0 + c;
                if (j < n) {
                    let p = pbase + ly.bias + j;
                    partial[p] = select(partial[p] + bacc[c], bacc[c], first);
                }
            }
        }
    }
}

// δ_{l-1} = (δ_l·Wᵀ) ⊙ φ'(a_{l-1}) into tile dst, in 4×4 register blocks (rows × inputs),
// with Wᵀ staged in column slabs (`stage_columns`): the rounds and slabs of `forward_layer`.
fn delta_layer(lid: u32, sbase: u32, l: u32, dt: u32, dst: u32) {
    let ly = layers[l];
    let lp = layers[l - 1u];
    let n = ly.outputs;
    let k = ly.inputs;
    let nib = (k + 3u) / 4u;
    let count = (TILE / 4u) * nib;
    for (var round = 0u; round < count; round += WG) {
        let idx = round + lid;
        let has_block = idx < count;
        let r0 = (idx / nib) * 4u;
        let i0 = (idx % nib) * 4u;
        var acc = array<vec4<f32>, 4>();
        for (var j0 = 0u; j0 < n; j0 += W_SLAB) {
            let cols = min(W_SLAB, n - j0);
            workgroupBarrier(); // the previous slab's readers are done
            stage_columns(lid, ly.weight + j0, cols, k, n);
            workgroupBarrier();
            if (has_block) {
                // Inputs past k hold stale values; they are never written out.
                block_fma(&acc, dt + r0 * STRIDE + j0, cols, i0 / 4u);
            }
        }
        if (has_block) {
            for (var q = 0u; q < 4u; q++) {
                let r = r0 + q;
                for (var c = 0u; c < 4u; c++) {
                    let i = i0 + c;
                    if (i < k) {
                        let a = scratch[sbase + lp.a_off + r * k + i];
                        sm[dst + r * STRIDE + i] = acc[q][c] * act_derivative(lp.act, lp.alpha, a);
                    }
                }
            }
        }
    }
}

// True when parameter p is a weight (λW applies), false for a bias.
fn is_weight(p: u32) -> bool {
    for (var l = 0u; l < LAYERS; l++) {
        let ly = layers[l];
        if (p < ly.bias + ly.outputs) {
            return p < ly.bias;
        }
    }
    return false;
}

var<workgroup> red: array<vec2<f32>, 256>;

// One invocation per parameter: g = Σ_groups partial + λW, then the optimizer update. Workgroup
// (0, 0) also reduces the loss/correct partials into stats[step_index].
@compute @workgroup_size(256)
fn reduce_update(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let groups = groups_for_batch();
    let p = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (p < PARAMS) {
        var g = 0.0;
        for (var w = 0u; w < groups; w++) {
            g += partial[w * PARAMS + p];
        }
        let w0 = params[p];
        if (is_weight(p)) {
            g += step.l2 * w0;
        }
        if (KEEP_GRAD) {
            grads[p] = g;
        }
        var m = 0.0;
        var v = 0.0;
        if (OPT == OPT_MOMENTUM || OPT == OPT_ADAM) {
            m = opt_m[p];
        }
        if (OPT == OPT_ADAM) {
            v = opt_v[p];
        }
        params[p] = optimizer_update(OPT, step, w0, g, &m, &v);
        if (OPT == OPT_MOMENTUM || OPT == OPT_ADAM) {
            opt_m[p] = m;
        }
        if (OPT == OPT_ADAM) {
            opt_v[p] = v;
        }
    }
    if (wid.x == 0u && wid.y == 0u) {
        let base = GROUPS * PARAMS;
        var acc = vec2<f32>(0.0, 0.0);
        for (var e = lid; e < groups * WG; e += 256u) {
            acc += vec2<f32>(partial[base + 2u * e], partial[base + 2u * e + 1u]);
        }
        red[lid] = acc;
        workgroupBarrier();
        for (var width = 128u; width > 0u; width >>= 1u) {
            if (lid < width) {
                red[lid] += red[lid + width];
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            stats[2u * step.step_index] = red[0].x;
            stats[2u * step.step_index + 1u] = red[0].y;
        }
    }
}
