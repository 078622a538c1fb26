/*
 * cluster.cu: a whole decoder layer of a batch-1 decode step on one thread-block cluster.
 *
 * A small model's batch-1 step is a chain of dependent latencies, not a stream of bytes:
 * smollm2-135m moves 2.2 MB a layer (Q4_1), which the copy rate of an H100 moves in under a
 * microsecond, but five kernels a layer cost about 4 us each (launch boundary, input from L2,
 * dot products, stores), and grid-wide barriers in one persistent kernel cost as much as the
 * boundaries they replace (layers.cu). Here a layer is one kernel of one cluster of CL = 16
 * blocks, one block a SM:
 *
 *   - every block copies its share of the layer's weights (its rows of qkv, o, gate, up and
 *     down: 138 KB for smollm2 Q4_1) and the cached keys and values of its share of the
 *     sequence into shared memory with bulk copies as soon as it starts, before it waits for
 *     the previous layer (programmatic launch), so the weights of the next layers stream in
 *     while this one computes, and every dot product reads shared memory;
 *   - the stages of the layer meet at cluster barriers (hardware, within a GPC) and exchange
 *     their outputs by stores into the other blocks' shared memory:
 *       A  x * attn_norm (every block, from L2), its QKV rows, RoPE, k/v into the paged
 *          cache; q to the attending blocks, the new k/v to the one holding the last position
 *       B  the first na blocks attend (4 for a short sequence, more when the cache would not
 *          fit their shared memory), each over KV-cache blocks j with j % na == rank, every
 *          head; the partial softmax state of each head to every block
 *       C  the partials combined (every block), its rows of o added to x; x to every block
 *       D  x * ffn_norm, its gate and up rows, h = silu(g) u; h to every block
 *       E  its down rows added to x, written to global memory for the next layer
 *
 * Quantized weights (Q4_0, Q4_1) meet the input as the GEMV does it: x quantized to 8 bits per
 * 32 values, dot products with __dp4a, the scales applied per unit. The cluster has 16 blocks
 * (a non-portable size Hopper allows); a layer whose share does not fit in a block's shared
 * memory, or a device where such a cluster cannot be resident, takes the five-kernel path.
 *
 * Measured on an H200 (bench/RESULTS.md, 2026-11-27) it is correct but not faster: smollm2-135m
 * Q4_1 decodes at 1441 tok/s against 1654 for the five kernels a layer, about 22 us a layer.
 * The cluster barriers are cheap (0.4-0.7 us) and the weights are in 1.3 us after the wait
 * even in an eager step; the stages are not: 16 SMs do all of a layer's instructions (about 3600 a
 * warp, 16 warps a block, issued at about one a cycle an SM), so each stage takes 2-4.7 us. So the
 * engine runs it only when asked (LODE_CUDA_CLUSTER=1); LODE_CUDA_LAYERS_TRACE=1 prints the
 * per-stage times of an eager step. A faster version needs far fewer instructions a warp, not fewer
 * boundaries.
 */
#include "kernels/cuda/unit.cuh"

#include <cooperative_groups.h>
#include <stdlib.h>
#include <string.h>

namespace cg = cooperative_groups;

namespace
{

constexpr int CL = 16; /* blocks of the cluster */
constexpr int T = 512; /* threads a block */
constexpr int NW = T / 32;
constexpr int MAXG = 4;              /* query heads a KV head, at most */
constexpr int UPT = 3;               /* units of a row a thread takes in a dot product, at most */
constexpr int NA_MIN = 4;            /* blocks that share the attention of a short sequence */
constexpr int SMEM_MAX = 227 * 1024; /* Hopper's opt-in shared memory a block */

/* Where things live in a block's shared memory (bytes from the start), and the shares. */
struct Lay {
    int nu_d, nu_o, nu_f; /* units a row: dim, n_head head_dim, ff */
    int rq, ro, rf;       /* rows a block: qkv, o and down, gate (and as many up) */
    int sb;               /* bytes of scale a unit */
    int wq[5], ws[5];     /* values and scales of the slices: qkv, o, gate, up, down */
    int wqb[5], wsb[5];   /* their sizes */
    int nw[2];            /* attn_norm, ffn_norm [dim] */
    int wbytes;           /* bytes copied in a block: weights and norms */
    int xw, xsum, xsc;    /* the quantized input: int8 words, half sums, scales */
    int xres, qkv, hs;    /* residual x [dim], this token's q|k|v, gathered h [ff] */
    int part;             /* attention partials [CL][n_head][head_dim + 4] */
    int wpart;            /* per-warp attention state [NW][MAXG][head_dim + 4] */
    int racc, red, ew;    /* row sums, block reduction, combine weights [CL][n_head] */
    int mbar;             /* the bulk copies' barrier */
    int kv;               /* cached keys and values: [kvcap][2][n_kv_head][16][head_dim] */
    int kvcap;            /* KV-cache blocks a block stages */
    int smem;             /* total */
};

constexpr int NEV = 26; /* traced moments of a block (LODE_CUDA_LAYERS_TRACE); 24, 25: the
                         SM clock at entry and end */

__device__ __forceinline__ void mark(unsigned long long *tr, int e)
{
    if (tr && threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        tr[e] = t;
    }
}

/* Block sum; every thread gets it. Synchronizes the block. */
__device__ __forceinline__ float bsum(float v, float *red)
{
    v = warp_sum(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = 0.f;
#pragma unroll
    for (int i = 0; i < NW; i++) t += red[i];
    return t;
}

/* The K values of src times w (may be NULL; both in shared memory) times mul, quantized to
 * int8 per 32 (xw: word c of unit u holds elements 4c..4c+3), with the sums of each unit's
 * two halves (xsum) and its scale (xsc), as the GEMV stages its input. Synchronizes. */
__device__ __forceinline__ void quant_x(const float *src, const float *w, float mul, int K, int *xw,
                                        float *xsum, float *xsc)
{
    const int n4 = K / 4, tid = threadIdx.x;
    for (int base = 0; base < n4; base += T) {
        const int f = base + tid;
        const bool act = f < n4;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (act) {
            v = ((const float4 *)src)[f];
            if (w) {
                const float4 g = ((const float4 *)w)[f];
                v.x *= g.x, v.y *= g.y, v.z *= g.z, v.w *= g.w;
            }
            v.x *= mul, v.y *= mul, v.z *= mul, v.w *= mul;
        }
        const Q8Lane q = q8_lane(v);
        if (act) {
            const int u = f / 8, c = f % 8;
            xw[f] = q.word;
            if ((c & 3) == 0) xsum[2 * u + (c >> 2)] = (float)q.half_sum;
            if (c == 0) xsc[u] = q.scale;
        }
    }
    __syncthreads();
}

/* out[r] = row r of a weight slice in shared memory (nr rows of nu <= 32 UPT units: values
 * wq, scales ws) times the quantized input, for r < nr. S threads a row (a power of two, at
 * most 32) take its units, at most UPT each, all loaded before any is used, and meet in
 * shuffles. Synchronizes. */
template <int FMT>
__device__ __forceinline__ void dots(const uint4 *wq, const void *ws, int nr, int nu, const int *xw,
                                     const float *xsum, const float *xsc, float *out)
{
    int S = 1;
    while (S < 32 && S * UPT < nu) S *= 2;
    const int gpr = T / S, g = threadIdx.x / S, j = threadIdx.x % S;
    const int passes = (nr + gpr - 1) / gpr;
    /* a thread meets the same units of x in every row: they stay in registers */
    int4 x0[UPT], x1[UPT];
    float2 sx[UPT];
    float dx[UPT];
#pragma unroll
    for (int k = 0; k < UPT; k++) {
        const int u = LODE_MIN(j + k * S, nu - 1);
        x0[k] = ((const int4 *)xw)[2 * u], x1[k] = ((const int4 *)xw)[2 * u + 1];
        sx[k] = ((const float2 *)xsum)[u];
        dx[k] = xsc[u];
    }
    for (int ps = 0; ps < passes; ps++) {
        const int r = ps * gpr + g;
        uint4 q[UPT];
        uint32_t sc[UPT];
#pragma unroll
        for (int k = 0; k < UPT; k++) {
            const int u = j + k * S;
            q[k] = make_uint4(0u, 0u, 0u, 0u);
            sc[k] = 0u;
            if (r < nr && u < nu) {
                const int i = r * nu + u;
                q[k] = wq[i];
                sc[k] = FMT == FMT_Q4M ? ((const uint32_t *)ws)[i]
                                       : (uint32_t)((const unsigned short *)ws)[i];
            }
        }
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < UPT; k++) {
            const int u = j + k * S;
            if (r >= nr || u >= nu) break;
            int lo[4], hi[4];
            nib_i8(q[k], lo, hi);
            int dl = __dp4a(lo[0], x0[k].x, 0);
            dl = __dp4a(lo[1], x0[k].y, dl);
            dl = __dp4a(lo[2], x0[k].z, dl);
            dl = __dp4a(lo[3], x0[k].w, dl);
            int dh = __dp4a(hi[0], x1[k].x, 0);
            dh = __dp4a(hi[1], x1[k].y, dh);
            dh = __dp4a(hi[2], x1[k].z, dh);
            dh = __dp4a(hi[3], x1[k].w, dh);
            float a;
            if constexpr (FMT == FMT_Q4M) {
                const float2 dm = __half22float2(*(const __half2 *)&sc[k]);
                a = dm.x * (float)(dl + dh) + dm.y * (sx[k].x + sx[k].y);
            } else {
                __half_raw hr;
                hr.x = (unsigned short)sc[k];
                const float d = __half2float(__half(hr));
                a = d * (((float)dl - 8.f * sx[k].x) + ((float)dh - 8.f * sx[k].y));
            }
            acc += dx[k] * a;
        }
        for (int o = S / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (j == 0 && r < nr) out[r] = acc;
    }
    __syncthreads();
}

/* n floats (n % 4 == 0, 16-byte aligned) of src into dst, which is at the same place in the
 * shared memory of blocks [d0, d1) of the cluster: 16-byte stores. */
__device__ __forceinline__ void bcast(cg::cluster_group &cl, float *dst, const float *src, int n,
                                      int d0, int d1)
{
    const int n4 = n / 4;
    for (int i = threadIdx.x; i < n4 * (d1 - d0); i += T) {
        const int d = d0 + i / n4, k = i % n4;
        ((float4 *)cl.map_shared_rank(dst, d))[k] = ((const float4 *)src)[k];
    }
}

__device__ __forceinline__ void h8(const uint4 &r, float *f)
{
    const __half2 *h = (const __half2 *)&r;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        const float2 t = __half22float2(h[e]);
        f[2 * e] = t.x, f[2 * e + 1] = t.y;
    }
}

template <int FMT, int HD>
__global__ void __launch_bounds__(T, 1)
    clayer_kernel(const krn_cuda_layers_cfg c, const krn_cuda_layer L, const Lay y)
{
    cg::cluster_group cl = cg::this_cluster();
    const int rank = (int)cl.block_rank();
    extern __shared__ __align__(128) unsigned char sm[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int dim = c.dim, ff = c.ff, H = c.n_head, KV = c.n_kv_head, G = H / KV;
    constexpr int BLK = KRN_CUDA_KV_BLOCK;
    uint64_t *mbar = (uint64_t *)(sm + y.mbar);
    int *xw = (int *)(sm + y.xw);
    float *xsum = (float *)(sm + y.xsum), *xsc = (float *)(sm + y.xsc);
    float *xres = (float *)(sm + y.xres), *qkv = (float *)(sm + y.qkv), *hs = (float *)(sm + y.hs);
    float *part = (float *)(sm + y.part), *wpart = (float *)(sm + y.wpart);
    float *racc = (float *)(sm + y.racc), *red = (float *)(sm + y.red), *ew = (float *)(sm + y.ew);
    const __half *kvs = (const __half *)(sm + y.kv);
    unsigned long long *tr = c.trace ? c.trace + (size_t)rank * NEV : nullptr;
    mark(tr, 0);
    if (tr && tid == 0) tr[24] = clock64();

    /* The sequence's state was written before this step's graph began (as the decode
     * attention's kv_early assumes): the weights and the cached keys and values are requested
     * before the wait for the previous layer. */
    const int seq = c.seq_len[0];
    const int nblk = (seq + BLK - 1) / BLK;
    /* the blocks that attend: few for a short sequence (fewer partials to exchange), as many
     * as it takes to hold the cached keys and values in shared memory for a long one */
    const int na = LODE_MIN(CL, LODE_MAX(NA_MIN, y.kvcap ? (nblk + y.kvcap - 1) / y.kvcap : CL));
    const int nloc = rank < LODE_MIN(nblk, na) ? (nblk - rank + na - 1) / na : 0; /* KV blocks */
    const int staged = LODE_MIN(nloc, y.kvcap);
    const int kvb = KV * BLK * HD * 2; /* bytes of K (or V) of a KV-cache block */
    if (tid == 0) {
        mbar_init(mbar, 1);
        mbar_init_fence();
        mbar_expect(mbar, (uint32_t)y.wbytes + (uint32_t)staged * 2u * kvb);
        const krn_cuda_mat *ms[5] = {&L.qkv, &L.o, &L.gu, &L.gu, &L.down};
        const int64_t r0[5] = {(int64_t)rank * y.rq, (int64_t)rank * y.ro, (int64_t)rank * y.rf,
                               (int64_t)ff + rank * y.rf, (int64_t)rank * y.ro};
        const int nus[5] = {y.nu_d, y.nu_o, y.nu_d, y.nu_d, y.nu_f};
        for (int i = 0; i < 5; i++) {
            const int64_t u0 = r0[i] * nus[i];
            bulk_copy(sm + y.wq[i], (const uint4 *)ms[i]->q + u0, (uint32_t)y.wqb[i], mbar);
            bulk_copy(sm + y.ws[i], (const char *)ms[i]->s + u0 * y.sb, (uint32_t)y.wsb[i], mbar);
        }
        bulk_copy(sm + y.nw[0], L.attn_norm, (uint32_t)dim * 4u, mbar);
        bulk_copy(sm + y.nw[1], L.ffn_norm, (uint32_t)dim * 4u, mbar);
        for (int j = 0; j < staged; j++) {
            const int64_t phys = c.block_table[j * na + rank];
            bulk_copy(sm + y.kv + (size_t)(2 * j) * kvb, (const char *)L.k_cache + phys * kvb,
                      (uint32_t)kvb, mbar);
            bulk_copy(sm + y.kv + (size_t)(2 * j + 1) * kvb, (const char *)L.v_cache + phys * kvb,
                      (uint32_t)kvb, mbar);
        }
    }
    __syncthreads();
    cl_arrive_relaxed(); /* this block runs: the others may write into its shared memory */
    pdl_trigger();       /* the next layer may start loading its weights */
    pdl_wait();
    mark(tr, 1);

    /* ---- A: RMSNorm, QKV, RoPE, KV write ------------------------------------------------ */
    float ss = 0.f;
    for (int f = tid; f < dim / 4; f += T) {
        const float4 v = __ldcg((const float4 *)c.x + f);
        ((float4 *)xres)[f] = v;
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    ss = bsum(ss, red);
    mbar_wait(mbar, 0);
    mark(tr, 2);
    quant_x(xres, (const float *)(sm + y.nw[0]), rsqrtf(ss / (float)dim + c.eps), dim, xw, xsum,
            xsc);
    dots<FMT>((const uint4 *)(sm + y.wq[0]), sm + y.ws[0], y.rq, y.nu_d, xw, xsum, xsc, racc);
    const int pos = c.pos[0], slot = c.slot[0];
    const int a0 = rank * y.rq;
    for (int t = tid; t < y.rq / 2; t += T) {
        float y0 = racc[2 * t], y1 = racc[2 * t + 1];
        const int vr = a0 + 2 * t;
        if (vr < (H + KV) * HD) {
            float s, co;
            sincosf((float)pos * c.inv_freq[(vr % HD) / 2], &s, &co);
            const float a = y0 * co - y1 * s, e = y0 * s + y1 * co;
            y0 = a, y1 = e;
        }
        if (vr >= H * HD) {
            /* k and v as the cache holds them */
            const __half2 hv = __floats2half2_rn(y0, y1);
            const float2 r = __half22float2(hv);
            y0 = r.x, y1 = r.y;
            int kv = vr - H * HD;
            __half *cache = (__half *)L.k_cache;
            if (kv >= KV * HD) {
                kv -= KV * HD;
                cache = (__half *)L.v_cache;
            }
            if (slot >= 0) {
                const int kh = kv / HD, d = kv % HD;
                const int64_t idx = (((int64_t)(slot / BLK) * KV + kh) * BLK + slot % BLK) * HD + d;
                *(__half2 *)(cache + idx) = hv;
            }
        }
        racc[2 * t] = y0, racc[2 * t + 1] = y1;
    }
    __syncthreads();
    cl_wait(); /* every block of the cluster has started */
    {
        const int last = seq > 0 ? ((seq - 1) / BLK) % na : 0;   /* holds the newest position */
        const int nq = LODE_MAX(0, LODE_MIN(y.rq, H * HD - a0)); /* q rows of this block */
        bcast(cl, qkv + a0, racc, nq, 0, LODE_MIN(nblk, na));
        bcast(cl, qkv + a0 + nq, racc + nq, y.rq - nq, last, last + 1);
    }
    mark(tr, 3);
    cl_arrive();
    cl_wait();
    mark(tr, 4);

    /* ---- B: attention over this block's KV-cache blocks, every head --------------------- */
    {
        constexpr int LPP = HD / 8, PPW = 32 / LPP;
        const int wpk = NW / KV; /* warps a KV head */
        const int kh = warp / wpk, wi = warp % wpk;
        const int lp = lane % LPP, pg = lane / LPP;
        const float scale = rsqrtf((float)HD);
        float m[MAXG], l[MAXG], acc[MAXG][8], qv[MAXG][8];
#pragma unroll
        for (int g = 0; g < MAXG; g++) {
            m[g] = -INFINITY, l[g] = 0.f;
#pragma unroll
            for (int e = 0; e < 8; e++) acc[g][e] = qv[g][e] = 0.f;
            if (g < G && kh < KV) {
                const float4 a = *(const float4 *)(qkv + (kh * G + g) * HD + lp * 8);
                const float4 b = *(const float4 *)(qkv + (kh * G + g) * HD + lp * 8 + 4);
                qv[g][0] = a.x * scale, qv[g][1] = a.y * scale, qv[g][2] = a.z * scale;
                qv[g][3] = a.w * scale, qv[g][4] = b.x * scale, qv[g][5] = b.y * scale;
                qv[g][6] = b.z * scale, qv[g][7] = b.w * scale;
            }
        }
        mark(tr, 12);
        const int npos = nloc * BLK, step = wpk * PPW;
        const int rounds = kh < KV ? (npos + step - 1) / step : 0;
        for (int rd = 0; rd < rounds; rd++) {
            const int it = rd * step + wi * PPW + pg;
            const int j = it / BLK, t = it % BLK, p = (j * na + rank) * BLK + t;
            const bool valid = it < npos && p < seq;
            float kf[8], vf[8];
#pragma unroll
            for (int e = 0; e < 8; e++) kf[e] = vf[e] = 0.f;
            if (valid) {
                if (p == seq - 1) {
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        kf[e] = qkv[(H + kh) * HD + lp * 8 + e];
                        vf[e] = qkv[(H + KV + kh) * HD + lp * 8 + e];
                    }
                } else if (j < staged) {
                    const int64_t o = ((int64_t)kh * BLK + t) * HD + lp * 8;
                    h8(*(const uint4 *)(kvs + (size_t)(2 * j) * (kvb / 2) + o), kf);
                    h8(*(const uint4 *)(kvs + (size_t)(2 * j + 1) * (kvb / 2) + o), vf);
                } else {
                    const int64_t phys = c.block_table[p / BLK];
                    const int64_t o = ((phys * KV + kh) * BLK + t) * HD + lp * 8;
                    h8(__ldcg((const uint4 *)((const __half *)L.k_cache + o)), kf);
                    h8(__ldcg((const uint4 *)((const __half *)L.v_cache + o)), vf);
                }
            }
#pragma unroll
            for (int g = 0; g < MAXG; g++) {
                if (g >= G) break;
                float s = 0.f;
#pragma unroll
                for (int e = 0; e < 8; e++) s += qv[g][e] * kf[e];
#pragma unroll
                for (int o = 1; o < LPP; o <<= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                if (!valid) continue;
                const float mt = fmaxf(m[g], s);
                const float alpha = m[g] == -INFINITY ? 0.f : __expf(m[g] - mt);
                const float pj = __expf(s - mt);
                l[g] = l[g] * alpha + pj;
#pragma unroll
                for (int e = 0; e < 8; e++) acc[g][e] = acc[g][e] * alpha + pj * vf[e];
                m[g] = mt;
            }
        }
        mark(tr, 13);
        /* the position groups of a warp, then the warps of a KV head */
#pragma unroll
        for (int g = 0; g < MAXG; g++) {
            if (g >= G) break;
#pragma unroll
            for (int o = LPP; o < 32; o <<= 1) {
                const float m2 = __shfl_xor_sync(0xffffffffu, m[g], o);
                const float l2 = __shfl_xor_sync(0xffffffffu, l[g], o);
                const float M = fmaxf(m[g], m2);
                const float a1 = m[g] == -INFINITY ? 0.f : __expf(m[g] - M);
                const float a2 = m2 == -INFINITY ? 0.f : __expf(m2 - M);
                l[g] = l[g] * a1 + l2 * a2;
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    const float o2 = __shfl_xor_sync(0xffffffffu, acc[g][e], o);
                    acc[g][e] = acc[g][e] * a1 + o2 * a2;
                }
                m[g] = M;
            }
            if (lane < LPP && kh < KV) {
                float *w = wpart + ((size_t)warp * MAXG + g) * (HD + 4);
                if (lane == 0) w[0] = m[g], w[1] = l[g], w[2] = w[3] = 0.f;
#pragma unroll
                for (int e = 0; e < 8; e++) w[4 + lp * 8 + e] = acc[g][e];
            }
        }
        __syncthreads();
        mark(tr, 14);
        /* this block's partial of each head (max, sum, 2 unused, the weighted values), to
         * every block, which all need every head: 16-byte stores */
        if (nloc > 0) {
            constexpr int W = HD + 4, W4 = W / 4;
            for (int i = tid; i < H * W4; i += T) {
                const int h = i / W4, e4 = i % W4, k2 = h / G, g = h % G;
                float M = -INFINITY;
                for (int w = 0; w < wpk; w++)
                    M = fmaxf(M, wpart[((size_t)(k2 * wpk + w) * MAXG + g) * W]);
                float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
                for (int w = 0; w < wpk; w++) {
                    const float *src = wpart + ((size_t)(k2 * wpk + w) * MAXG + g) * W;
                    const float a = src[0] == -INFINITY ? 0.f : __expf(src[0] - M);
                    const float4 t = ((const float4 *)src)[e4];
                    v.x += a * t.x, v.y += a * t.y, v.z += a * t.z, v.w += a * t.w;
                }
                if (e4 == 0) v.x = M;
                const size_t at = ((size_t)rank * H + h) * W4 + e4;
                for (int d = 0; d < CL; d++) ((float4 *)cl.map_shared_rank(part, d))[at] = v;
            }
        }
    }
    mark(tr, 5);
    cl_arrive();
    cl_wait();
    mark(tr, 6);

    /* ---- C: the partials combined, o, residual ----------------------------------------- */
    {
        const int W = HD + 4, nsrc = LODE_MIN(nblk, na);
        for (int h = tid; h < H; h += T) {
            float M = -INFINITY, den = 0.f;
            for (int s = 0; s < nsrc; s++) M = fmaxf(M, part[((size_t)s * H + h) * W]);
            for (int s = 0; s < nsrc; s++) {
                const float *p = part + ((size_t)s * H + h) * W;
                const float e = p[0] == -INFINITY ? 0.f : __expf(p[0] - M);
                ew[s * H + h] = e;
                den += e * p[1];
            }
            const float inv = den > 0.f ? 1.f / den : 0.f;
            for (int s = 0; s < nsrc; s++) ew[s * H + h] *= inv;
        }
        __syncthreads();
        mark(tr, 20);
        float *att = hs; /* the attention output [n_head head_dim], until h arrives */
        for (int i = tid; i < H * HD; i += T) {
            const int h = i / HD, d = i % HD;
            float v = 0.f;
            for (int s = 0; s < nsrc; s++)
                v += ew[s * H + h] * part[((size_t)s * H + h) * W + 4 + d];
            att[i] = v;
        }
        __syncthreads();
        mark(tr, 21);
        quant_x(att, nullptr, 1.f, H * HD, xw, xsum, xsc);
        mark(tr, 22);
        dots<FMT>((const uint4 *)(sm + y.wq[1]), sm + y.ws[1], y.ro, y.nu_o, xw, xsum, xsc, racc);
        mark(tr, 23);
        const int r0 = rank * y.ro;
        for (int r = tid; r < y.ro; r += T) racc[r] += xres[r0 + r];
        __syncthreads();
        bcast(cl, xres + r0, racc, y.ro, 0, CL);
    }
    mark(tr, 7);
    cl_arrive();
    cl_wait();
    mark(tr, 8);

    /* ---- D: RMSNorm, gate and up, SwiGLU ------------------------------------------------ */
    {
        float s2 = 0.f;
        for (int f = tid; f < dim / 4; f += T) {
            const float4 v = ((const float4 *)xres)[f];
            s2 += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
        s2 = bsum(s2, red);
        mark(tr, 15);
        quant_x(xres, (const float *)(sm + y.nw[1]), rsqrtf(s2 / (float)dim + c.eps), dim, xw, xsum,
                xsc);
        mark(tr, 16);
        dots<FMT>((const uint4 *)(sm + y.wq[2]), sm + y.ws[2], y.rf, y.nu_d, xw, xsum, xsc, racc);
        mark(tr, 17);
        dots<FMT>((const uint4 *)(sm + y.wq[3]), sm + y.ws[3], y.rf, y.nu_d, xw, xsum, xsc,
                  racc + y.rf);
        mark(tr, 18);
        const int r0 = rank * y.rf;
        for (int r = tid; r < y.rf; r += T) racc[r] = silu(racc[r]) * racc[y.rf + r];
        __syncthreads();
        mark(tr, 19);
        bcast(cl, hs + r0, racc, y.rf, 0, CL);
    }
    mark(tr, 9);
    cl_arrive();
    cl_wait();
    mark(tr, 10);

    /* ---- E: down, residual, out ---------------------------------------------------------- */
    {
        quant_x(hs, nullptr, 1.f, ff, xw, xsum, xsc);
        dots<FMT>((const uint4 *)(sm + y.wq[4]), sm + y.ws[4], y.ro, y.nu_f, xw, xsum, xsc, racc);
        const int r0 = rank * y.ro;
        for (int r = tid; r < y.ro; r += T) __stcg(c.x + r0 + r, xres[r0 + r] + racc[r]);
    }
    __syncthreads();
    mark(tr, 11);
    if (tr && tid == 0) tr[25] = clock64();
}

typedef void (*kern_t)(const krn_cuda_layers_cfg, const krn_cuda_layer, const Lay);

static kern_t pick(int fmt, int hd)
{
    if (fmt == FMT_Q4) return hd == 64 ? clayer_kernel<FMT_Q4, 64> : clayer_kernel<FMT_Q4, 128>;
    if (fmt == FMT_Q4M) return hd == 64 ? clayer_kernel<FMT_Q4M, 64> : clayer_kernel<FMT_Q4M, 128>;
    return nullptr;
}

/* LODE_CUDA_CLUSTER_KVCAP=n stages at most n KV-cache blocks a block in shared memory, the
 * rest being read from global memory (for tests of that path; read at each launch, which a
 * captured graph does not repeat). */
static int kvcap_env()
{
    const char *e = getenv("LODE_CUDA_CLUSTER_KVCAP");
    const int cap = e && *e ? atoi(e) : 8;
    return cap < 0 ? 0 : cap;
}

static int up16(int64_t v)
{
    return (int)((v + 15) / 16 * 16);
}

/* The layout of a block's shared memory for this shape, or false when it does not fit. */
static bool plan(const krn_cuda_layers_cfg *c, Lay *y)
{
    memset(y, 0, sizeof *y);
    const int hd = c->head_dim, H = c->n_head, KV = c->n_kv_head;
    if (!pick(c->fmt, hd) || KV <= 0 || H % KV || H / KV > MAXG || KV > NW || c->dim % 32 ||
        c->ff % 32 || (H * hd) % 32 || c->n_layer <= 0)
        return false;
    const int qkv_rows = (H + 2 * KV) * hd;
    if (qkv_rows % (4 * CL) || c->dim % (4 * CL) || c->ff % (4 * CL) || (H * hd) % 4 ||
        c->dim > 32 * 32 * UPT || c->ff > 32 * 32 * UPT || H * hd > 32 * 32 * UPT)
        return false;
    y->nu_d = c->dim / 32, y->nu_o = H * hd / 32, y->nu_f = c->ff / 32;
    y->rq = qkv_rows / CL, y->ro = c->dim / CL, y->rf = c->ff / CL;
    y->sb = c->fmt == FMT_Q4 ? 2 : 4;
    const int rows[5] = {y->rq, y->ro, y->rf, y->rf, y->ro};
    const int nus[5] = {y->nu_d, y->nu_o, y->nu_d, y->nu_d, y->nu_f};
    int off = 0;
    for (int i = 0; i < 5; i++) {
        const int64_t q = (int64_t)rows[i] * nus[i] * 16, s = (int64_t)rows[i] * nus[i] * y->sb;
        /* bulk copies move multiples of 16 bytes from 16-byte aligned addresses */
        if (s % 16) return false;
        y->wq[i] = off, y->wqb[i] = (int)q, off += (int)q;
        y->ws[i] = off, y->wsb[i] = (int)s, off += (int)s;
    }
    y->nw[0] = off, off += c->dim * 4;
    y->nw[1] = off, off += c->dim * 4;
    y->wbytes = off;
    auto take = [&](int bytes) {
        const int at = off;
        off = up16(off + bytes);
        return at;
    };
    const int kmax = LODE_MAX(LODE_MAX(c->dim, c->ff), H * hd);
    y->xw = take(kmax);
    y->xsum = take(kmax / 32 * 8);
    y->xsc = take(kmax / 32 * 4);
    y->xres = take(c->dim * 4);
    y->qkv = take(qkv_rows * 4);
    y->hs = take(LODE_MAX(c->ff, H * hd) * 4);
    y->part = take(CL * H * (hd + 4) * 4);
    y->wpart = take(NW * MAXG * (hd + 4) * 4);
    y->racc = take(LODE_MAX(LODE_MAX(y->rq, y->ro), 2 * y->rf) * 4);
    y->red = take(NW * 4);
    y->ew = take(CL * H * 4);
    y->mbar = take(16);
    off = (off + 127) / 128 * 128;
    y->kv = off;
    const int kvb = 2 * KV * KRN_CUDA_KV_BLOCK * hd * 2;
    if (off > SMEM_MAX) return false;
    y->kvcap = LODE_MIN(LODE_MIN(8, kvcap_env()), (SMEM_MAX - off) / kvb);
    y->smem = off + y->kvcap * kvb;
    return true;
}

} // namespace

extern "C" int krn_cuda_clayer_supported(const krn_cuda_layers_cfg *c)
{
    Lay y;
    if (!plan(c, &y)) return 0;
    kern_t k = pick(c->fmt, c->head_dim);
    int dev = 0, optin = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        major < 9 ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
            cudaSuccess ||
        y.smem > optin) {
        cudaGetLastError();
        return 0;
    }
    if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, y.smem) !=
            cudaSuccess ||
        cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(CL);
    cfg.blockDim = dim3(T);
    cfg.dynamicSmemBytes = y.smem;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = CL;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, k, &cfg) != cudaSuccess || n < 1) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

/* LODE_CUDA_LAYERS_TRACE=1: eager (not captured) steps record when each block of each layer
 * reaches each stage (trace_report prints the times, averaged over the layers, after the
 * last layer) */
static lode_status trace_report(const unsigned long long *dbuf, int n_layer, cudaStream_t st)
{
    const size_t n = (size_t)n_layer * CL * NEV;
    unsigned long long *h = (unsigned long long *)malloc(n * sizeof *h);
    if (!h) return LODE_ERR_NOMEM;
    cudaError_t e = cudaStreamSynchronize(st);
    if (e == cudaSuccess) e = cudaMemcpy(h, dbuf, n * sizeof *h, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        free(h);
        return krn_cuda_fail(e, "cluster trace", __FILE__, __LINE__);
    }
    /* per layer: the first block's entry, the last block's time at each stage event (0..11) */
    constexpr int END = 11;
    double sum[END + 3] = {0};
    for (int l = 0; l < n_layer; l++) {
        unsigned long long first = ~0ull, last[END + 1];
        for (int e2 = 0; e2 <= END; e2++) last[e2] = 0;
        for (int b = 0; b < CL; b++) {
            const unsigned long long *t = h + ((size_t)l * CL + b) * NEV;
            first = LODE_MIN(first, t[0]);
            for (int e2 = 0; e2 <= END; e2++) last[e2] = LODE_MAX(last[e2], t[e2]);
        }
        for (int e2 = 1; e2 <= END; e2++) sum[e2] += (double)(last[e2] - last[e2 - 1]);
        if (l) {
            unsigned long long pend = 0;
            for (int b = 0; b < CL; b++)
                pend = LODE_MAX(pend, h[((size_t)(l - 1) * CL + b) * NEV + END]);
            sum[END + 1] += (double)first - (double)pend;   /* entry after the previous end */
            sum[END + 2] += (double)last[1] - (double)pend; /* wait returned after it */
        }
    }
    /* block 0's parts of stages B, C and D: each event from the one before it */
    double b0[24] = {0}, cyc = 0, ns = 0;
    const int prev[24] = {0, 0,  0,  0, 0,  14, 0,  23, 0, 19, 0,  0,
                          4, 12, 13, 8, 15, 16, 17, 18, 6, 20, 21, 22};
    for (int l = 0; l < n_layer; l++) {
        const unsigned long long *t = h + (size_t)l * CL * NEV;
        for (int e2 : {5, 7, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23})
            b0[e2] += (double)(t[e2] - t[prev[e2]]);
        cyc += (double)(t[25] - t[24]);
        ns += (double)(t[END] - t[0]);
    }
    const double L = n_layer, L1 = n_layer > 1 ? n_layer - 1 : 1;
    auto u = [&](double v) { return v / L / 1e3; };
    fprintf(stderr,
            "cluster layer trace, block 0 (us a layer; SM clock %.0f MHz): B q %.2f, rounds %.2f, "
            "merge %.2f, send %.2f; C weights %.2f, values %.2f, quantize %.2f, o %.2f, send "
            "%.2f; D norm %.2f, quantize %.2f, gate %.2f, up %.2f, swiglu %.2f, send %.2f\n",
            ns > 0 ? cyc / ns * 1e3 : 0.0, u(b0[12]), u(b0[13]), u(b0[14]), u(b0[5]), u(b0[20]),
            u(b0[21]), u(b0[22]), u(b0[23]), u(b0[7]), u(b0[15]), u(b0[16]), u(b0[17]), u(b0[18]),
            u(b0[19]), u(b0[9]));
    fprintf(stderr,
            "cluster layer trace (us a layer, slowest block, from the event before): entry after "
            "previous layer's end %.2f, wait returned after it %.2f; weights in %.2f, A %.2f, "
            "barrier %.2f, B attention %.2f, barrier %.2f, C combine+o %.2f, barrier %.2f, D "
            "gate/up %.2f, barrier %.2f, E down %.2f\n",
            sum[END + 1] / L1 / 1e3, sum[END + 2] / L1 / 1e3, u(sum[2]), u(sum[3]), u(sum[4]),
            u(sum[5]), u(sum[6]), u(sum[7]), u(sum[8]), u(sum[9]), u(sum[10]), u(sum[11]));
    free(h);
    return LODE_OK;
}

extern "C" lode_status krn_cuda_clayer_decode(const krn_cuda_layers_cfg *c, const krn_cuda_layer *L,
                                              int layer, void *stream)
{
    Lay y;
    kern_t k = pick(c->fmt, c->head_dim);
    if (!k || !plan(c, &y) || !L || !c->x || !c->pos || !c->slot || !c->seq_len || !c->block_table)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "clayer_decode: bad arguments");
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(CL);
    cfg.blockDim = dim3(T);
    cfg.dynamicSmemBytes = y.smem;
    cfg.stream = STREAM(stream);
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = CL;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = krn_cuda_pdl_enabled() ? 2 : 1;
    krn_cuda_layers_cfg kc = *c;
    unsigned long long *tbuf = nullptr;
    if (!kc.trace) {
        lode_status tst = krn_cuda_layers_trace_buf(
            cfg.stream, (size_t)c->n_layer * CL * NEV * sizeof *tbuf, &tbuf);
        if (tst) return tst;
    }
    const bool trace = tbuf != nullptr;
    if (trace) kc.trace = tbuf + (size_t)layer * CL * NEV;
    CU_TRY(cudaLaunchKernelEx(&cfg, k, kc, *L, y));
    CU_LAUNCHED("clayer_decode");
    if (trace && layer == c->n_layer - 1) return trace_report(tbuf, c->n_layer, cfg.stream);
    return LODE_OK;
}
