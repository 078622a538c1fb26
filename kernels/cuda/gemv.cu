/*
 * gemv.cu: the decode matrix-vector product y[b] = W x[b] for 1..16 rows b, over every
 * weight layout of unit.cuh, with dequantization fused into the weight loads.
 *
 * Decode is bound by reading W once, so the kernel is built around that stream: each warp
 * owns R = 2 consecutive rows, each lane reads whole 16-byte units of both rows (two loads of
 * each row in flight), and the input rows x[b] sit in shared memory in chunks, XOR-swizzled
 * so that the lanes' 16-byte reads of different units hit different banks. Quantized values
 * are turned into floats with the 2^23 exponent trick (one PRMT and one FADD each) and the
 * scale is applied once per half unit.
 *
 * The input and the output are fused with the neighbouring ops of a llama layer, so a decode
 * step is five launches a layer: x can be RMS-normalized, SwiGLU-combined or assembled from
 * the decode-attention splits while it is loaded, and y can be added to the residual,
 * rotated (RoPE) and written into the paged KV cache, or, for a [gate | up] matrix, written
 * as silu(gate) * up by warps that own a gate row and its up row (so the down projection
 * stages h alone).
 *
 * Small matrices make each launch's fixed latency count, so: the first weights are requested
 * before the kernel waits for its predecessor (programmatic dependent launch, launch_k);
 * the input stage keeps one round of loads in flight per thread; the grid is one wave of
 * blocks (occupancy API) with equal shares of row groups, so x is staged once per block;
 * and the next row group's weights are requested while the current one is reduced. At batch
 * 1 an RMS-normalized input is staged as x * norm_w in one pass, its statistic applied to the
 * finished sums (one barrier instead of three). Long matrices of short rows (at most 32 units,
 * a small model's head) take eight rows a warp at batch 1, so a round carries more bytes.
 */
#include "kernels/cuda/unit.cuh"

#include <stdlib.h>
#include <string.h>

namespace
{

constexpr int WARPS = 8;
constexpr int R = 2;               /* rows per warp; even, so RoPE pairs stay in one warp */
constexpr int SMEM_FLOATS = 24576; /* 96 KB of shared memory a block at most */
constexpr int AUX_PER_ROW = 128;   /* floats of per-row scratch (RMS, attention weights) */

struct GemvP {
    krn_cuda_mat w;
    int batch;
    int xmode, ymode;
    const float *x;
    int64_t ldx;
    const float *norm_w;
    float eps;
    krn_cuda_attn_parts attn;
    float *y;
    int64_t ldy;
    krn_cuda_rope rope;
    int cu;     /* units per chunk */
    int64_t nu; /* units per row */
    int ks;     /* the K range is split over gridDim.y blocks (KRN_Y_ADD only: atomic adds) */
    unsigned long long *tr;
};

/* Units of each row a lane loads together (one round) */
template <int BT> constexpr int unr()
{
    return BT >= 8 ? 2 : 4;
}

/* Shared-memory words a staged unit of x takes for one batch row: N floats, or for quantized
 * layouts 8 words of int8 values, the sums of its two halves and its scale. */
template <int FMT> struct XF {
    static constexpr int v = IsQuant<FMT>::v ? 11 : Unit<FMT>::N;
};

__device__ __forceinline__ float4 f4(const float *p)
{
    return *(const float4 *)p;
}

/* Decode-attention splits whose partial sums the input stage loads together: one where the
 * weights' registers are many (Q8_0, Q6_K: more would cost the kernel its second block an SM
 * or spill), else 4; their (max, sum) pairs load twice as many at a time. */
template <int FMT> constexpr int attn_batch()
{
    return FMT == FMT_Q8 || FMT == FMT_Q6 ? 1 : 4;
}

/* Whether the input stage combines the attention splits in one pass (load_x): each split's
 * (max, sum) pair requested with its partial sums, so no per-head pre-pass and no barrier
 * before the staging. Float weights only: on an H200 it gained 0.3-0.4% on llama3-8b BF16 and
 * 0.9-1.0% on llama3.2-1b BF16, and lost 0.4-0.9% on llama3-8b Q4_0 (the pair loads beside the
 * weights' registers; Q8_0 and Q6_K spill with it), so the quantized layouts keep the pre-pass. */
template <int FMT> constexpr bool attn_one_pass()
{
    return !IsQuant<FMT>::v;
}

template <int AB, bool ONE>
__device__ __forceinline__ float4 load_x(const GemvP &p, int b, int64_t k, const float *aux)
{
    const int64_t K = p.w.cols;
    switch (p.xmode) {
    case KRN_X_RMSNORM: {
        float4 v = f4(p.x + b * p.ldx + k), g = f4(p.norm_w + k);
        float s = aux[b];
        return make_float4(v.x * s * g.x, v.y * s * g.y, v.z * s * g.z, v.w * s * g.w);
    }
    case KRN_X_SWIGLU: {
        float4 g = f4(p.x + b * p.ldx + k), u = f4(p.x + b * p.ldx + K + k);
        return make_float4(silu(g.x) * u.x, silu(g.y) * u.y, silu(g.z) * u.z, silu(g.w) * u.w);
    }
    case KRN_X_ATTN: {
        const krn_cuda_attn_parts &a = p.attn;
        int h = (int)(k / a.head_dim), d = (int)(k % a.head_dim);
        int ns = (int)cdiv(a.seq_len[b], krn_attn_split_len(a.seq_len[b], a.n_split));
        int bh = b * a.n_head + h;
        if constexpr (ONE) {
            /* the splits AB at a time, folded with a running rescale (the pair is one load for
             * the lanes of a head) */
            float mx = -INFINITY, den = 0.f;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int s0 = 0; s0 < ns; s0 += AB) {
                float2 m[AB];
                float4 c[AB];
#pragma unroll
                for (int j = 0; j < AB; j++) {
                    const int64_t i = (int64_t)bh * a.n_split + s0 + j;
                    m[j] = make_float2(-INFINITY, 0.f);
                    c[j] = make_float4(0.f, 0.f, 0.f, 0.f);
                    if (s0 + j < ns)
                        m[j] = *(const float2 *)(a.ml + 2 * i),
                        c[j] = f4(a.acc + i * a.head_dim + d);
                }
                float mn = mx;
#pragma unroll
                for (int j = 0; j < AB; j++) mn = fmaxf(mn, m[j].x);
                const float r = mx == -INFINITY ? 0.f : __expf(mx - mn);
                den *= r, v.x *= r, v.y *= r, v.z *= r, v.w *= r;
#pragma unroll
                for (int j = 0; j < AB; j++) {
                    const float e = s0 + j < ns ? __expf(m[j].x - mn) : 0.f;
                    den += e * m[j].y;
                    v.x += e * c[j].x, v.y += e * c[j].y, v.z += e * c[j].z, v.w += e * c[j].w;
                }
                mx = mn;
            }
            const float inv = den > 0.f ? 1.f / den : 0.f;
            return make_float4(v.x * inv, v.y * inv, v.z * inv, v.w * inv);
        }
        /* else the per-head max and 1 / sum come from the pre-pass */
        float mx = aux[2 * bh], inv = aux[2 * bh + 1];
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        /* the splits' loads are issued AB at a time, so a combine costs a few round trips to
         * L2 rather than one a split */
        for (int s0 = 0; s0 < ns; s0 += AB) {
            float m[AB];
            float4 c[AB];
#pragma unroll
            for (int j = 0; j < AB; j++) {
                const int64_t i = (int64_t)bh * a.n_split + s0 + j;
                m[j] = -INFINITY;
                c[j] = make_float4(0.f, 0.f, 0.f, 0.f);
                if (s0 + j < ns) m[j] = a.ml[2 * i], c[j] = f4(a.acc + i * a.head_dim + d);
            }
#pragma unroll
            for (int j = 0; j < AB; j++) {
                const float e = __expf(m[j] - mx);
                v.x += e * c[j].x, v.y += e * c[j].y, v.z += e * c[j].z, v.w += e * c[j].w;
            }
        }
        return make_float4(v.x * inv, v.y * inv, v.z * inv, v.w * inv);
    }
    default:
        return f4(p.x + b * p.ldx + k);
    }
}

/* fold: x * norm_w at k (batch row 0), adding x's squares to ss. */
__device__ __forceinline__ float4 load_x_fold(const GemvP &p, int64_t k, float &ss)
{
    float4 v = f4(p.x + k), g = f4(p.norm_w + k);
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    return make_float4(v.x * g.x, v.y * g.y, v.z * g.z, v.w * g.w);
}

/* fold: the warp's sum of squares to aux[1 + warp] (read after the staging barrier). */
__device__ __forceinline__ void fold_partial(float ss, float *aux, int lane, int warp)
{
    ss = warp_sum(ss);
    if (lane == 0) aux[1 + warp] = ss;
}

__device__ __forceinline__ void store_rope(const GemvP &p, int b, int64_t n, float y0, float y1)
{
    const krn_cuda_rope &r = p.rope;
    int64_t vr = r.row0 + n;
    int hd = r.head_dim;
    int64_t qrows = (int64_t)r.n_head * hd, kvrows = (int64_t)r.n_kv_head * hd;
    if (vr < qrows + kvrows) {
        int d = (int)(vr % hd);
        float s, c;
        sincosf((float)r.pos[b] * r.inv_freq[d / 2], &s, &c);
        float a = y0 * c - y1 * s, e = y0 * s + y1 * c;
        y0 = a, y1 = e;
    }
    if (vr < qrows) {
        p.y[b * p.ldy + vr] = y0;
        p.y[b * p.ldy + vr + 1] = y1;
        return;
    }
    int64_t kv = vr - qrows;
    __half *cache = (__half *)r.k_cache;
    if (kv >= kvrows) {
        kv -= kvrows;
        cache = (__half *)r.v_cache;
    }
    int kh = (int)(kv / hd), d = (int)(kv % hd);
    int32_t slot = r.slot[b];
    if (slot < 0) return;
    int64_t idx = (((int64_t)(slot / KRN_CUDA_KV_BLOCK) * r.n_kv_head + kh) * KRN_CUDA_KV_BLOCK +
                   slot % KRN_CUDA_KV_BLOCK) *
                      hd +
                  d;
    *(__half2 *)(cache + idx) = __floats2half2_rn(y0, y1);
}

/* Batches 1 and 2 are held to two blocks an SM (128 registers): left free, ptxas gives the
 * Q8_0 and Q6_K instances 160-190 registers and one block an SM, slower. */
template <int FMT, int BT, int RW = R>
__global__ void __launch_bounds__(WARPS * 32, BT <= 2 ? 2 : 1) gemv_kernel(const GemvP p)
{
    typedef Unit<FMT> U;
    constexpr int N = U::N, NC = N / 4;
    constexpr bool QUANT = IsQuant<FMT>::v;
    extern __shared__ float4 smem4[];
    float *xs = (float *)smem4;
    const int CU = p.cu;
    float *aux = xs + BT * CU * XF<FMT>::v; /* per-row scratch after the staged x */
    /* quantized layouts: x as int8 words [BT][CU][8], then the half sums [BT][CU][2] and the
     * scales [BT][CU] of x, all inside the float area */
    float *qsum = xs + BT * CU * 8;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t K = p.w.cols, rows = p.w.rows;

    /* blocks loop over groups of WARPS * RW rows; when x fits in one chunk it is staged once.
     * KRN_Y_SWIGLU pairs the rows instead: a warp takes gate row i and up row half + i, so
     * that it can write silu(gate) * up itself and the down projection reads h, not both */
    const bool pairs = RW == 2 && p.ymode == KRN_Y_SWIGLU; /* a gate row and an up row a warp */
    const int64_t half = rows / 2;
    const int64_t nrg = pairs ? (half + WARPS - 1) / WARPS : (rows + WARPS * RW - 1) / (WARPS * RW);
    const int64_t u_begin = p.nu * blockIdx.y / p.ks, u_end = p.nu * (blockIdx.y + 1) / p.ks;
    const bool one_chunk = u_end - u_begin <= CU;
    /* batch 1 with the whole row in one chunk: the RMS statistic is summed while x is staged
     * (x * norm_w, quantized per 32 without it, since the scale of a unit is linear in it) and
     * applied to the finished sums, so the input stage is one pass and one barrier */
    const bool fold = BT == 1 && p.xmode == KRN_X_RMSNORM && p.ks == 1 && one_chunk;
    float rstd = 1.f;

    /* UNR units of each of the RW rows are loaded per lane before any is used: 8 loads of
     * 16 bytes in flight a lane (4 at the largest batches, to keep registers) */
    constexpr int UNR = RW > R ? 1 : unr<BT>(); /* RW > R: rows of at most 32 units */
    typename U::Raw raw[UNR][RW];
    int64_t row_base = 0, rowi[RW];
    auto set_rows = [&](int64_t rg) {
        if (pairs) {
            row_base = rg * WARPS + warp; /* the output index i */
            rowi[0] = LODE_MIN(row_base, half - 1);
            rowi[1] = rowi[0] + half;
            return;
        }
        row_base = (rg * WARPS + warp) * RW;
#pragma unroll
        for (int r = 0; r < RW; r++) rowi[r] = LODE_MIN(row_base + r, rows - 1);
    };
    auto load_group = [&](int64_t c0, int cu, int u0) {
#pragma unroll
        for (int j = 0; j < UNR; j++) {
            int uu = LODE_MIN(u0 + 32 * j, cu - 1);
#pragma unroll
            for (int r = 0; r < RW; r++) raw[j][r] = U::load(p.w, rowi[r] * p.nu + c0 + uu);
        }
    };

    /* the first weights depend on no earlier kernel: they are on their way before the wait
     * for the previous kernel's output (programmatic launch) and while x is prepared */
    ktrace(p.tr, 0);
    int64_t rg = blockIdx.x;
    set_rows(rg);
    {
        const int cu0 = (int)LODE_MIN((int64_t)CU, u_end - u_begin);
        if (lane < cu0) load_group(u_begin, cu0, lane);
    }
    pdl_wait();
    ktrace(p.tr, 1);
    pdl_trigger();

    if (fold) {
        /* statistic summed during staging */
    } else if (p.xmode == KRN_X_RMSNORM) {
        /* all warps share each row's sum of squares: one round of loads in flight */
        float *red = aux + BT;
        for (int b = 0; b < p.batch; b++) {
            float ss = 0.f;
#pragma unroll 4
            for (int64_t k = 4 * tid; k < K; k += 4 * WARPS * 32) {
                float4 v = f4(p.x + b * p.ldx + k);
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            }
            ss = warp_sum(ss);
            if (lane == 0) red[warp * BT + b] = ss;
        }
        __syncthreads();
        if (tid < p.batch) {
            float ss = 0.f;
#pragma unroll
            for (int w = 0; w < WARPS; w++) ss += red[w * BT + tid];
            aux[tid] = rsqrtf(ss / (float)K + p.eps);
        }
    } else if (p.xmode == KRN_X_ATTN && !attn_one_pass<FMT>()) {
        const krn_cuda_attn_parts &a = p.attn;
        for (int i = tid; i < p.batch * a.n_head; i += WARPS * 32) {
            int b = i / a.n_head;
            int ns = (int)cdiv(a.seq_len[b], krn_attn_split_len(a.seq_len[b], a.n_split));
            const float *ml = a.ml + (int64_t)i * a.n_split * 2;
            float mx = -INFINITY, den = 0.f;
            if constexpr (attn_batch<FMT>() == 1) {
                for (int s = 0; s < ns; s++) mx = fmaxf(mx, ml[2 * s]);
                for (int s = 0; s < ns; s++) den += __expf(ml[2 * s] - mx) * ml[2 * s + 1];
            } else {
                /* the splits' (max, sum) pairs are requested PB at a time and folded with a
                 * running rescale: one round trip to L2 for up to 8 splits */
                constexpr int PB = 2 * attn_batch<FMT>();
                for (int s0 = 0; s0 < ns; s0 += PB) {
                    float2 v[PB];
#pragma unroll
                    for (int j = 0; j < PB; j++)
                        v[j] = s0 + j < ns ? *(const float2 *)(ml + 2 * (s0 + j))
                                           : make_float2(-INFINITY, 0.f);
                    float m = mx;
#pragma unroll
                    for (int j = 0; j < PB; j++) m = fmaxf(m, v[j].x);
                    den = mx == -INFINITY ? 0.f : den * __expf(mx - m);
#pragma unroll
                    for (int j = 0; j < PB; j++)
                        if (s0 + j < ns) den += __expf(v[j].x - m) * v[j].y;
                    mx = m;
                }
            }
            aux[2 * i] = mx;
            aux[2 * i + 1] = den > 0.f ? 1.f / den : 0.f;
        }
    }
    if (!fold && !(p.xmode == KRN_X_ATTN && attn_one_pass<FMT>())) __syncthreads();

    /* pref: raw already holds the first units of this row group (loaded before the wait, or
     * while the previous row group was reduced and stored) */
    bool staged = false, pref = true;
    for (; rg < nrg; rg += gridDim.x) {
        if (!pref) set_rows(rg);
        const int64_t rb = row_base;
        float acc[BT][RW];
#pragma unroll
        for (int b = 0; b < BT; b++)
#pragma unroll
            for (int r = 0; r < RW; r++) acc[b][r] = 0.f;

        for (int64_t c0 = u_begin; c0 < u_end; c0 += CU) {
            const int cu = (int)LODE_MIN((int64_t)CU, u_end - c0);
            /* the first weights are on their way while x is staged */
            if (!pref && lane < cu) load_group(c0, cu, lane);
            pref = false;
            float4 *xs4 = (float4 *)xs;
            if (!(one_chunk && staged)) {
                if constexpr (QUANT) {
                    /* x as int8 with one scale per 32 (8 threads a unit), and the sums of each half
                     */
                    const int total = BT * cu * NC;
                    constexpr int PF = 4; /* loads of x in flight a thread */
                    float ss = 0.f;       /* fold: this thread's share of sum x^2 */
                    for (int base = 0; base < total; base += WARPS * 32 * PF) {
                        float4 vv[PF];
#pragma unroll
                        for (int j = 0; j < PF; j++) {
                            const int f = base + j * WARPS * 32 + tid;
                            vv[j] = make_float4(0.f, 0.f, 0.f, 0.f);
                            if (f < total) {
                                const int b = f / (cu * NC), rr = f % (cu * NC);
                                const int64_t k = (c0 + rr / NC) * N + 4 * (rr % NC);
                                if (fold)
                                    vv[j] = load_x_fold(p, k, ss);
                                else if (b < p.batch)
                                    vv[j] = load_x<attn_batch<FMT>(), attn_one_pass<FMT>()>(p, b, k,
                                                                                            aux);
                            }
                        }
#pragma unroll
                        for (int j = 0; j < PF; j++) {
                            if (base + j * WARPS * 32 >= total) break; /* uniform in the block */
                            const int f = base + j * WARPS * 32 + tid;
                            const bool act = f < total;
                            int b = 0, u = 0, c = 0;
                            float4 v = vv[j];
                            if (act) {
                                b = f / (cu * NC);
                                int rr = f % (cu * NC);
                                u = rr / NC, c = rr % NC;
                            }
                            const Q8Lane q = q8_lane(v);
                            if (act) {
                                int h = (c >> 2) ^ ((u >> 2) & 1);
                                ((int *)xs)[(b * CU + u) * 8 + h * 4 + (c & 3)] = q.word;
                                if ((c & 3) == 0)
                                    qsum[(b * CU + u) * 2 + (c >> 2)] = (float)q.half_sum;
                                if (c == 0) qsum[2 * BT * CU + b * CU + u] = q.scale;
                            }
                        }
                    }
                    if (fold) fold_partial(ss, aux, lane, warp);
                } else {
                    constexpr int PF = 4; /* loads of x in flight a thread */
                    const int total = BT * cu * NC;
                    float ss = 0.f;
                    for (int base = tid; base < total; base += WARPS * 32 * PF) {
                        float4 vv[PF];
#pragma unroll
                        for (int j = 0; j < PF; j++) {
                            const int f = base + j * WARPS * 32;
                            const int b = f / (cu * NC), rr = f % (cu * NC);
                            const int64_t k = (c0 + rr / NC) * N + 4 * (rr % NC);
                            vv[j] = make_float4(0.f, 0.f, 0.f, 0.f);
                            if (f < total && fold)
                                vv[j] = load_x_fold(p, k, ss);
                            else if (f < total && b < p.batch)
                                vv[j] =
                                    load_x<attn_batch<FMT>(), attn_one_pass<FMT>()>(p, b, k, aux);
                        }
#pragma unroll
                        for (int j = 0; j < PF; j++) {
                            const int f = base + j * WARPS * 32;
                            if (f >= total) break;
                            const int b = f / (cu * NC), rr = f % (cu * NC), u = rr / NC,
                                      c = rr % NC;
                            xs4[b * CU * NC + u * NC + (c ^ swz<NC>(u))] = vv[j];
                        }
                    }
                    if (fold) fold_partial(ss, aux, lane, warp);
                }
                __syncthreads();
                if (!staged) ktrace(p.tr, 2);
                staged = true;
                if (fold) {
                    float t = 0.f;
#pragma unroll
                    for (int w = 0; w < WARPS; w++) t += aux[1 + w];
                    rstd = rsqrtf(t / (float)K + p.eps);
                }
            }

            for (int u0 = lane; u0 < cu; u0 += 32 * UNR) {
                if (u0 != lane) load_group(c0, cu, u0);
#pragma unroll
                for (int h = 0; h < UNR; h++) {
                    const int uu = u0 + 32 * h;
                    if (uu >= cu) break;
                    if constexpr (QUANT) {
                        int lo[RW][4], hi[RW][4];
                        float2 sc[RW];
                        float mo[RW];
#pragma unroll
                        for (int r = 0; r < RW; r++) {
                            U::decode_i8(raw[h][r], lo[r], hi[r]);
                            sc[r] = U::scales(raw[h][r]);
                            mo[r] = U::moff(raw[h][r]);
                        }
                        const int hsw = (uu >> 2) & 1;
#pragma unroll
                        for (int b = 0; b < BT; b++) {
                            const int *xw = (const int *)xs + (b * CU + uu) * 8;
                            int4 x0 = *(const int4 *)(xw + 4 * hsw),
                                 x1 = *(const int4 *)(xw + 4 * (hsw ^ 1));
                            float2 sx = *(const float2 *)(qsum + (b * CU + uu) * 2);
                            float dx = qsum[2 * BT * CU + b * CU + uu];
#pragma unroll
                            for (int r = 0; r < RW; r++) {
                                int dl = __dp4a(lo[r][0], x0.x, 0);
                                dl = __dp4a(lo[r][1], x0.y, dl);
                                dl = __dp4a(lo[r][2], x0.z, dl);
                                dl = __dp4a(lo[r][3], x0.w, dl);
                                int dh = __dp4a(hi[r][0], x1.x, 0);
                                dh = __dp4a(hi[r][1], x1.y, dh);
                                dh = __dp4a(hi[r][2], x1.z, dh);
                                dh = __dp4a(hi[r][3], x1.w, dh);
                                float a = sc[r].x * ((float)dl - U::OFF * sx.x) +
                                          sc[r].y * ((float)dh - U::OFF * sx.y);
                                if constexpr (FMT == FMT_Q4M) a += mo[r] * (sx.x + sx.y);
                                acc[b][r] += dx * a;
                            }
                        }
                    } else {
                        float wv[RW][N];
#pragma unroll
                        for (int r = 0; r < RW; r++) U::decode(raw[h][r], wv[r]);
#pragma unroll
                        for (int b = 0; b < BT; b++) {
                            float plo[RW], phi[RW];
#pragma unroll
                            for (int r = 0; r < RW; r++) plo[r] = phi[r] = 0.f;
#pragma unroll
                            for (int c = 0; c < NC; c++) {
                                float4 xv = xs4[b * CU * NC + uu * NC + (c ^ swz<NC>(uu))];
#pragma unroll
                                for (int r = 0; r < RW; r++) {
                                    float t = wv[r][4 * c] * xv.x + wv[r][4 * c + 1] * xv.y +
                                              wv[r][4 * c + 2] * xv.z + wv[r][4 * c + 3] * xv.w;
                                    if (c < NC / 2)
                                        plo[r] += t;
                                    else
                                        phi[r] += t;
                                }
                            }
#pragma unroll
                            for (int r = 0; r < RW; r++) acc[b][r] += plo[r] + phi[r];
                        }
                    }
                }
            }
            if (!one_chunk) __syncthreads();
        }
        if (one_chunk && rg + gridDim.x < nrg) {
            /* the next row group's first units are on their way during the reduction */
            const int cu0 = (int)(u_end - u_begin);
            set_rows(rg + gridDim.x);
            if (lane < cu0) load_group(u_begin, cu0, lane);
            pref = true;
        }

#pragma unroll
        for (int b = 0; b < BT; b++)
#pragma unroll
            for (int r = 0; r < RW; r++) acc[b][r] = warp_sum(acc[b][r]) * (BT == 1 ? rstd : 1.f);

#pragma unroll
        for (int b = 0; b < BT; b++) {
            if (lane != b || b >= p.batch) continue;
            if (p.ymode == KRN_Y_ROPE_KV) {
#pragma unroll
                for (int r = 0; r < RW; r += 2)
                    if (rb + r + 1 < rows) store_rope(p, b, rb + r, acc[b][r], acc[b][r + 1]);
            } else if (pairs) {
                if (rb < half) p.y[b * p.ldy + rb] = silu(acc[b][0]) * acc[b][1];
            } else {
#pragma unroll
                for (int r = 0; r < RW; r++) {
                    int64_t n = rb + r;
                    if (n >= rows) continue;
                    float *dst = p.y + b * p.ldy + n;
                    if (p.ks > 1)
                        atomicAdd(dst, acc[b][r]); /* K splits meet here (KRN_Y_ADD only) */
                    else if (p.ymode == KRN_Y_ADD)
                        *dst += acc[b][r];
                    else
                        *dst = acc[b][r];
                }
            }
        }
    }
    ktrace(p.tr, 3);
}

/* Whether the K range of a batch-1 GEMV that adds onto the residual (o, down) is split by
 * load rounds (split_by_rounds); LODE_CUDA_GEMV_SPLIT=0 (read once) keeps only the split
 * that gives every SM four blocks, for comparison. */
static bool split_by_rounds_on(void)
{
    static int on = -1;
    return krn_cuda_env_on("LODE_CUDA_GEMV_SPLIT", &on);
}

/* The K split (ks0..8) of a matrix of nu units a row and nrg row groups that makes the fewest
 * dependent round trips a block, where `slots` blocks are resident at once: each block stages
 * its share of x (rounds of WARPS * 32 * 4 items, `items` a unit), then takes its row groups
 * one after another, each in rounds of `round` units a row loaded together. A round costs a
 * memory latency whether it carries 22 units or `round`: four blocks an SM split the 448
 * units of llama3-8b's down projection into 3 x 150, two rounds a row group, where 4 x 112
 * takes one. Splits coarser than ks0 are not taken: fewer blocks staging a longer x cost more
 * than the model says when x is assembled from the attention splits (o, measured). Returns
 * ks0 when nothing is better. */
static int split_by_rounds(int64_t nu, unsigned nrg, int slots, int cu, int round, int items,
                           int ks0)
{
    int best = ks0;
    int64_t best_cost = INT64_MAX;
    for (int ks = ks0; ks <= 8; ks++) {
        const int64_t ups = (nu + ks - 1) / ks;
        if (ks > ks0 && ups < 32) break;
        if (ups > cu) continue;
        const int64_t wave = LODE_MAX(1, slots / ks), per = ((int64_t)nrg + wave - 1) / wave;
        const int64_t cost = per * ((ups + round - 1) / round) +
                             (ups * items + WARPS * 32 * 4 - 1) / (WARPS * 32 * 4);
        if (cost < best_cost) best_cost = cost, best = ks;
    }
    return best;
}

template <int FMT, int BT, int RW = R> lode_status launch(GemvP &p, cudaStream_t st)
{
    int cu = (SMEM_FLOATS - BT * AUX_PER_ROW) / (BT * XF<FMT>::v);
    if (cu >= p.nu)
        cu = (int)p.nu;
    else if (cu >= 32)
        cu -= cu % 32;
    p.cu = cu;
    size_t smem = (size_t)(BT * cu * XF<FMT>::v + BT * AUX_PER_ROW) * sizeof(float);
    /* enough blocks to fill the GPU a few times over, each looping over row groups */
    unsigned blocks = cdiv(p.w.rows, WARPS * RW);
    const int sms = krn_cuda_sm_count();
    if (sms < 1) return krn_cuda_fail_msg(LODE_ERR_CUDA, "gemv: cannot read the SM count");
    static thread_local size_t occ_smem = 0;
    static thread_local int occ = 0;
    if (occ_smem != smem || !occ) {
        CU_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, gemv_kernel<FMT, BT, RW>,
                                                             WARPS * 32, smem));
        occ_smem = smem;
        if (occ < 1) occ = 1;
    }
    /* few rows (o and down projections): split K so that every SM has several blocks; the
     * partial sums meet in atomic adds onto the residual */
    p.ks = 1;
    if (p.ymode == KRN_Y_ADD && blocks < (unsigned)sms * 4u) {
        int64_t ks = ((int64_t)sms * 4 + blocks - 1) / blocks;
        ks = LODE_MIN(ks, LODE_MIN((int64_t)8, p.nu / 64));
        p.ks = (int)LODE_MAX(ks, (int64_t)1);
        if (BT == 1 && split_by_rounds_on())
            p.ks = split_by_rounds(p.nu, blocks, sms * occ, cu, 32 * unr<BT>(), Unit<FMT>::N / 4,
                                   p.ks);
    }
    if ((p.nu + p.ks - 1) / p.ks <= cu) {
        /* x staged once a block: one wave of blocks (as many as fit at once), each taking an
         * equal share of the row groups, so the staging is paid once per block and no block
         * waits for a second wave */
        unsigned wave = (unsigned)LODE_MAX(1, sms * occ / p.ks);
        unsigned per = cdiv(blocks, wave);
        blocks = cdiv(blocks, per);
    }
    {
        static const char *names[] = {"gemv-rms", "gemv-swiglu", "gemv-attn", "gemv-plain"};
        const char *nm = p.xmode == KRN_X_RMSNORM  ? names[0]
                         : p.xmode == KRN_X_SWIGLU ? names[1]
                         : p.xmode == KRN_X_ATTN   ? names[2]
                                                   : names[3];
        p.tr = krn_ktrace_slot(nm, blocks * (unsigned)p.ks, krn_cuda_mat_bytes(&p.w), st);
    }
    CU_TRY(launch_k(gemv_kernel<FMT, BT, RW>, dim3(blocks, (unsigned)p.ks), dim3(WARPS * 32), smem,
                    st, p));
    CU_LAUNCHED("gemv");
    return LODE_OK;
}

/* Rows of at most 32 units (576 columns of smollm2-135m) fill 18 of a warp's 32 lanes, one
 * load a lane and row: a long matrix of them (its head, 49152 rows) is a chain of a dozen
 * round trips a block. Eight rows a warp put four times the bytes in flight a round. Batch 1,
 * stored outputs (the head), and only where two rows a warp would take several row groups a
 * block; LODE_CUDA_GEMV_SHORT=0 (read once) keeps two rows a warp, for comparison. */
constexpr int RW_SHORT = 8;
static bool short_rows(const GemvP &p)
{
    static int on = -1;
    return krn_cuda_env_on("LODE_CUDA_GEMV_SHORT", &on) && p.nu <= 32 && p.ymode == KRN_Y_STORE &&
           cdiv(p.w.rows, WARPS * R) > (unsigned)(4 * krn_cuda_sm_count());
}

template <int FMT> lode_status launch_fmt(GemvP &p, cudaStream_t st)
{
    if (p.batch <= 1 && short_rows(p)) return launch<FMT, 1, RW_SHORT>(p, st);
    if (p.batch <= 1) return launch<FMT, 1>(p, st);
    if (p.batch <= 2) return launch<FMT, 2>(p, st);
    if (p.batch <= 4) return launch<FMT, 4>(p, st);
    if (p.batch <= 8) return launch<FMT, 8>(p, st);
    return launch<FMT, 16>(p, st);
}

template <int FMT> lode_status prepare_fmt()
{
    const int lim = SMEM_FLOATS * (int)sizeof(float);
    CU_TRY(cudaFuncSetAttribute(gemv_kernel<FMT, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                lim));
    CU_TRY(cudaFuncSetAttribute(gemv_kernel<FMT, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                lim));
    CU_TRY(cudaFuncSetAttribute(gemv_kernel<FMT, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                lim));
    CU_TRY(cudaFuncSetAttribute(gemv_kernel<FMT, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                lim));
    CU_TRY(cudaFuncSetAttribute(gemv_kernel<FMT, 16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                lim));
    CU_TRY(cudaFuncSetAttribute(gemv_kernel<FMT, 1, RW_SHORT>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, lim));
    return LODE_OK;
}

} // namespace

extern "C" lode_status krn_cuda_prepare(void)
{
    lode_status st;
    if ((st = prepare_fmt<FMT_F32>()) || (st = prepare_fmt<FMT_F16>()) ||
        (st = prepare_fmt<FMT_BF16>()) || (st = prepare_fmt<FMT_Q4>()) ||
        (st = prepare_fmt<FMT_Q4M>()) || (st = prepare_fmt<FMT_Q8>()) ||
        (st = prepare_fmt<FMT_Q6>()) || (st = krn_cuda_attn_prepare()))
        return st;
    krn_ktrace_init();
    return LODE_OK;
}

lode_status krn_cuda_prepare_once(void)
{
    static thread_local int prepared = -1;
    int dev = 0;
    CU_TRY(cudaGetDevice(&dev));
    if (prepared != dev) {
        lode_status st = krn_cuda_prepare();
        if (st) return st;
        prepared = dev;
    }
    return LODE_OK;
}

extern "C" lode_status krn_cuda_gemv(const krn_cuda_gemv_args *a, void *stream)
{
    lode_status pst = krn_cuda_prepare_once();
    if (pst) return pst;
    const krn_cuda_mat *w = a->w;
    if (!w || !w->fmt || a->batch < 1 || a->batch > KRN_CUDA_MAX_BATCH || !a->y)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemv: bad arguments");
    if (w->cols % 4 || (a->xmode != KRN_X_ATTN && (!a->x || a->ldx % 4 || ((uintptr_t)a->x & 15))))
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemv: x must be 16-byte aligned rows");
    if (a->xmode == KRN_X_RMSNORM && !a->norm_w)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemv: RMSNORM needs norm_w");
    if (a->xmode == KRN_X_ATTN &&
        (!a->attn || a->attn->n_head * 2 > AUX_PER_ROW || a->attn->head_dim % 4 ||
         (int64_t)a->attn->n_head * a->attn->head_dim != w->cols))
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemv: bad attention input");
    if (a->ymode == KRN_Y_ROPE_KV && (!a->rope || a->rope->head_dim % 2 || a->rope->row0 % 2))
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemv: bad RoPE output");
    if (a->ymode == KRN_Y_SWIGLU && w->rows % 2)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemv: SWIGLU output needs [gate | up] rows");
    GemvP p;
    memset(&p, 0, sizeof p);
    p.w = *w;
    p.batch = a->batch;
    p.xmode = a->xmode;
    p.ymode = a->ymode;
    p.x = a->x;
    p.ldx = a->ldx;
    p.norm_w = a->norm_w;
    p.eps = a->eps;
    if (a->attn) p.attn = *a->attn;
    p.y = a->y;
    p.ldy = a->ldy;
    if (a->rope) p.rope = *a->rope;
    p.nu = w->cols / unit_elems(w->fmt);
    cudaStream_t st = STREAM(stream);
#define GO(F) return launch_fmt<F>(p, st)
    FMT_DISPATCH(w->fmt, GO)
#undef GO
    return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "gemv: layout");
}
