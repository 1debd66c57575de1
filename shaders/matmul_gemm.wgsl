// The real-GPU matmul family: the three forms and fused epilogues of `matmul_tiled`
// (shaders/matmul.wgsl, prepended: Dims, bindings 0-7, load_a/load_b, store_c, store_partial,
// grad_reduce), in workgroup tiles of up to 128×128 chosen by override constants.
// Prepended at load time: activation.wgsl, step.wgsl, matmul.wgsl.
//
// C[rows, cols] = A[rows, inner] · B[inner, cols] in the three forms (see matmul.wgsl):
//   forward  A = [x, 1] (x row-major, k contiguous)   B = [W; b] (row-major, n contiguous)
//   delta    A = δ      (row-major, k contiguous)     B = Wᵀ     (W [n, k]: k contiguous)
//   grad     A = [z, 1]ᵀ (z [B, m]: m contiguous)      B = δ      (row-major, n contiguous)
//
// Where the ideas come from:
// - CUTLASS ("Efficient GEMM in CUDA", media/docs/efficient_gemm.md): the hierarchy
//   workgroup tile (GBM×GBN, a "threadblock tile") → per-invocation register tile (GTM×GTN,
//   the "thread tile" of its SIMT path), a K main loop over GBK-deep slabs ("stages"), and
//   software pipelining with two shared-memory stages: the next slab is fetched from global
//   memory into registers while the current one is multiplied out of workgroup memory, then
//   stored to the other stage, so one barrier per slab suffices.
// - CLBlast Xgemm (src/kernels/level3/xgemm_part*.opencl and its tuning database): the tile
//   sizes as parameters rather than constants (MWG/NWG/KWG = GBM/GBN/GBK, MDIMC/NDIMC =
//   GBM/GTM and GBN/GTN invocations); its tuned NVIDIA entries sit at MWG/NWG 64-128, KWG 16,
//   16×16 invocations (8×8 outputs each), which is where our largest candidate sits; VWM/VWN
//   (vector widths of A and B) are 4 here; STRM/STRN=1 (strided register tiles: an
//   invocation's outputs are GTM/4 × GTN/4 vec4 blocks spread GBM/(GTM/4) apart, so that
//   neighbouring invocations read neighbouring vec4s of workgroup memory: no bank conflicts).
// - The WebGPU matmul write-ups that reach ~1 TFLOP/s on laptop GPUs (Zach Nussbaum,
//   "Optimizing a WebGPU Matmul Kernel for 1TFLOP+"; jott.live's M1 WebGPU tuner at
//   900 GFLOP/s): vec4 storage loads through vec4-typed bindings, register tiles of vec4
//   accumulators updated with fma(vec4(a), b4, acc), fixed-trip loops the compiler unrolls
//   once override constants are known, and tuning tile shapes per device.
// - cubecl's matmul (cubecl-linalg / cubek-matmul: global "double buffering" algorithm, stage
//   configs picked per problem): a small set of named tile configurations tried per device and
//   shape, and split-K for grids too small to fill the device (here: the grad form only,
//   through matmul.wgsl's partials + grad_reduce, with slices a multiple of GBK deep).
//
// Workgroup memory layout, k-major with a 4-float pad per row (stride GBM + 4, GBN + 4):
// operands contiguous along K (forward/delta A, delta B) are transposed on their way in;
// with the pad, the 4 scalar stores of one vec4 from lanes that hold consecutive rows land on
// distinct banks (the pad shifts each k row by 4 banks), and compute reads are whole vec4s of
// one k row. Operands contiguous along M or N are copied as vec4s.
//
// Edges: a vec4 global load is used where the operand row is 16-byte aligned (width and offset
// multiples of 4) and all 4 elements are inside it; otherwise, scalar loads through matmul.wgsl's
// load_a/load_b (which give zeros outside and the ones row/column of the bias). Every shape is
// correct; aligned shapes take the fast path in their interior.

// Tile shape (host: kernels.rs `GemmConfig`). GTM and GTN are 4 or 8.
override GBM: u32 = 64u;
override GBN: u32 = 64u;
override GBK: u32 = 8u;
override GTM: u32 = 8u;
override GTN: u32 = 4u;
// Invocations: (GBM / GTM) along rows × (GBN / GTN) along columns.
override GWG: u32 = (GBM / GTM) * (GBN / GTN);
// Row strides of the staged slabs, in vec4s (GBM + 4 floats, GBN + 4 floats).
override SA4: u32 = GBM / 4u + 1u;
override SB4: u32 = GBN / 4u + 1u;

// Two stages of [GBK][GBM + 4] and [GBK][GBN + 4].
var<workgroup> gemm_a: array<vec4<f32>, 2u * GBK * SA4>;
var<workgroup> gemm_b: array<vec4<f32>, 2u * GBK * SB4>;

// lhs and rhs again, as vec4 arrays (kernels.rs `family_aliases`).
@group(0) @binding(8) var<storage, read> lhs4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> rhs4: array<vec4<f32>>;

// Vec4 chunks per invocation per slab (at most 4: `GemmConfig::valid`).
const MAX_CHUNKS: u32 = 4u;
// Accumulators: at most 8 rows × 2 vec4s.
const MAX_TM: u32 = 8u;
const MAX_TN4: u32 = 2u;

struct Shape {
    rows: u32,
    inner: u32,
    // A vec4 of A (B) along its contiguous dimension may be loaded at once.
    a_vec: bool,
    b_vec: bool,
}

fn gemm_shape() -> Shape {
    var s: Shape;
    if (MODE == MODE_GRAD) {
        s.rows = dims.m + 1u;
        s.inner = step.batch;
        s.a_vec = dims.m % 4u == 0u && dims.a_off % 4u == 0u;
        s.b_vec = dims.n % 4u == 0u && dims.b_off % 4u == 0u;
    } else if (MODE == MODE_FORWARD) {
        s.rows = step.batch;
        s.inner = dims.k + 1u;
        s.a_vec = dims.k % 4u == 0u && dims.a_off % 4u == 0u;
        s.b_vec = dims.n % 4u == 0u && dims.b_off % 4u == 0u;
    } else {
        s.rows = step.batch;
        s.inner = dims.k;
        s.a_vec = dims.k % 4u == 0u && dims.a_off % 4u == 0u;
        s.b_vec = dims.k % 4u == 0u && dims.b_off % 4u == 0u;
    }
    return s;
}

// Chunk c (0 .. GBM·GBK/4) of the A slab at (row0, k0): 4 elements along A's contiguous
// dimension (`stage_a` puts them in place). Consecutive invocations take consecutive chunks,
// so the slab's part of each operand row is read by neighbouring invocations in whole 16-byte
// pieces (full 32-byte sectors: BK ≥ 8 along K, whole rows of the tile along M or N).
fn fetch_a(c: u32, row0: u32, k0: u32, s: Shape) -> vec4<f32> {
    if (MODE == MODE_GRAD) {
        // contiguous along rows (m): chunk = (kk, mm..mm+3)
        let kk = c / (GBM / 4u);
        let mm = (c % (GBM / 4u)) * 4u;
        let r = row0 + mm;
        let q = k0 + kk;
        if (s.a_vec && r + 3u < dims.m && q < s.inner) {
            return lhs4[(dims.a_off + q * dims.m + r) / 4u];
        }
        return vec4<f32>(
            load_a(r, q, s.rows, s.inner),
            load_a(r + 1u, q, s.rows, s.inner),
            load_a(r + 2u, q, s.rows, s.inner),
            load_a(r + 3u, q, s.rows, s.inner),
        );
    }
    // contiguous along k: chunk = (mm, kk..kk+3)
    let mm = c / (GBK / 4u);
    let kk = (c % (GBK / 4u)) * 4u;
    let r = row0 + mm;
    let q = k0 + kk;
    if (s.a_vec && r < s.rows && q + 3u < dims.k) {
        return lhs4[(dims.a_off + r * dims.k + q) / 4u];
    }
    return vec4<f32>(
        load_a(r, q, s.rows, s.inner),
        load_a(r, q + 1u, s.rows, s.inner),
        load_a(r, q + 2u, s.rows, s.inner),
        load_a(r, q + 3u, s.rows, s.inner),
    );
}

fn stage_a(c: u32, v: vec4<f32>, buf: u32) {
    let base = buf * GBK * SA4;
    if (MODE == MODE_GRAD) {
        let kk = c / (GBM / 4u);
        let m4 = c % (GBM / 4u);
        gemm_a[base + kk * SA4 + m4] = v;
    } else {
        // transposed: 4 scalar stores down one column of the k-major slab
        let mm = c / (GBK / 4u);
        let kk = (c % (GBK / 4u)) * 4u;
        for (var i = 0u; i < 4u; i++) {
            gemm_a[base + (kk + i) * SA4 + mm / 4u][mm % 4u] = v[i];
        }
    }
}

// Chunk c (0 .. GBN·GBK/4) of the B slab at (k0, col0).
fn fetch_b(c: u32, col0: u32, k0: u32, s: Shape) -> vec4<f32> {
    if (MODE == MODE_DELTA) {
        // B = Wᵀ, contiguous along k: chunk = (nn, kk..kk+3)
        let nn = c / (GBK / 4u);
        let kk = (c % (GBK / 4u)) * 4u;
        let col = col0 + nn;
        let q = k0 + kk;
        if (s.b_vec && col < dims.n && q + 3u < s.inner) {
            return rhs4[(dims.b_off + col * dims.k + q) / 4u];
        }
        return vec4<f32>(
            load_b(q, col, s.inner),
            load_b(q + 1u, col, s.inner),
            load_b(q + 2u, col, s.inner),
            load_b(q + 3u, col, s.inner),
        );
    }
    // contiguous along columns: chunk = (kk, nn..nn+3)
    let kk = c / (GBN / 4u);
    let nn = (c % (GBN / 4u)) * 4u;
    let col = col0 + nn;
    let q = k0 + kk;
    if (s.b_vec && col + 3u < dims.n && q < s.inner) {
        return rhs4[(dims.b_off + q * dims.n + col) / 4u];
    }
    return vec4<f32>(
        load_b(q, col, s.inner),
        load_b(q, col + 1u, s.inner),
        load_b(q, col + 2u, s.inner),
        load_b(q, col + 3u, s.inner),
    );
}

fn stage_b(c: u32, v: vec4<f32>, buf: u32) {
    let base = buf * GBK * SB4;
    if (MODE == MODE_DELTA) {
        let nn = c / (GBK / 4u);
        let kk = (c % (GBK / 4u)) * 4u;
        for (var i = 0u; i < 4u; i++) {
            gemm_b[base + (kk + i) * SB4 + nn / 4u][nn % 4u] = v[i];
        }
    } else {
        let kk = c / (GBN / 4u);
        let n4 = c % (GBN / 4u);
        gemm_b[base + kk * SB4 + n4] = v;
    }
}

// The K range of this workgroup: all of it, or slice wid_z of `slices` (multiples of GBK).
fn gemm_k_range(inner: u32, wid_z: u32, slices: u32) -> vec2<u32> {
    if (!SPLIT_K) {
        return vec2<u32>(0u, inner);
    }
    let chunk = ((inner + slices - 1u) / slices + GBK - 1u) / GBK * GBK;
    let begin = min(wid_z * chunk, inner);
    return vec2<u32>(begin, min(begin + chunk, inner));
}

@compute @workgroup_size(GWG)
fn matmul_gemm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = gemm_shape();
    let row0 = wid.y * GBM;
    let col0 = wid.x * GBN;
    // Register tile: rows g·(GBM / (GTM/4)) + ty·4 + i, columns h·(GBN / (GTN/4)) + tx·4 + j.
    let lanes_n = GBN / GTN;
    let tx = tid % lanes_n;
    let ty = tid / lanes_n;
    let tm4 = GTM / 4u;
    let tn4 = GTN / 4u;
    let chunks_a = GBM * GBK / 4u / GWG;
    let chunks_b = GBN * GBK / 4u / GWG;

    var acc: array<array<vec4<f32>, MAX_TN4>, MAX_TM>;
    var ra: array<vec4<f32>, MAX_CHUNKS>;
    var rb: array<vec4<f32>, MAX_CHUNKS>;

    let kr = gemm_k_range(s.inner, wid.z, nwg.z);
    let slabs = (kr.y - kr.x + GBK - 1u) / GBK;

    // Prologue: slab 0 into stage 0.
    if (slabs > 0u) {
        for (var i = 0u; i < chunks_a; i++) {
            let c = tid + i * GWG;
            stage_a(c, fetch_a(c, row0, kr.x, s), 0u);
        }
        for (var i = 0u; i < chunks_b; i++) {
            let c = tid + i * GWG;
            stage_b(c, fetch_b(c, col0, kr.x, s), 0u);
        }
    }
    workgroupBarrier();

    for (var t = 0u; t < slabs; t++) {
        let buf = t % 2u;
        let more = t + 1u < slabs;
        // Fetch slab t+1 into registers; its latency hides behind the FMAs below.
        if (more) {
            let k1 = kr.x + (t + 1u) * GBK;
            for (var i = 0u; i < chunks_a; i++) {
                ra[i] = fetch_a(tid + i * GWG, row0, k1, s);
            }
            for (var i = 0u; i < chunks_b; i++) {
                rb[i] = fetch_b(tid + i * GWG, col0, k1, s);
            }
        }
        let abase = buf * GBK * SA4;
        let bbase = buf * GBK * SB4;
        for (var kk = 0u; kk < GBK; kk++) {
            var a: array<vec4<f32>, 2>;
            var b: array<vec4<f32>, MAX_TN4>;
            for (var g = 0u; g < tm4; g++) {
                a[g] = gemm_a[abase + kk * SA4 + g * (GBM / GTM) + ty];
            }
            for (var h = 0u; h < tn4; h++) {
                b[h] = gemm_b[bbase + kk * SB4 + h * lanes_n + tx];
            }
            for (var g = 0u; g < tm4; g++) {
                for (var i = 0u; i < 4u; i++) {
                    let av = vec4<f32>(a[g][i]);
                    for (var h = 0u; h < tn4; h++) {
                        acc[g * 4u + i][h] = fma(av, b[h], acc[g * 4u + i][h]);
                    }
                }
            }
        }
        // Store slab t+1 into the other stage. Nobody reads it now: the barrier that ended
        // slab t-1 saw every invocation finish reading it.
        if (more) {
            for (var i = 0u; i < chunks_a; i++) {
                stage_a(tid + i * GWG, ra[i], 1u - buf);
            }
            for (var i = 0u; i < chunks_b; i++) {
                stage_b(tid + i * GWG, rb[i], 1u - buf);
            }
        }
        workgroupBarrier();
    }

    for (var g = 0u; g < tm4; g++) {
        for (var i = 0u; i < 4u; i++) {
            let row = row0 + g * (GBM / tm4) + ty * 4u + i;
            if (row >= s.rows) {
                continue;
            }
            for (var h = 0u; h < tn4; h++) {
                for (var j = 0u; j < 4u; j++) {
                    let col = col0 + h * (GBN / tn4) + tx * 4u + j;
                    if (col >= dims.n) {
                        continue;
                    }
                    let v = acc[g * 4u + i][h][j];
                    if (SPLIT_K) {
                        store_partial(row, col, v, wid.z);
                    } else {
                        store_c(row, col, v);
                    }
                }
            }
        }
    }
}
