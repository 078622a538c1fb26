/*
 * layers.cu: every layer of a batch-1 decode step in one persistent, cooperative kernel.
 *
 * A small model's decode step is latency, not bandwidth: smollm2-135m moves under 1 MB per
 * GEMV, and as five kernels a layer each one costs its launch, its wait for the previous
 * kernel and its own dependent chain (about 4 us in a graph). Here one block per SM stays
 * resident for the whole step and the stages of a layer are separated by grid-wide barriers
 * (an arrival counter and a generation word):
 *
 *   A  x * attn_norm staged in shared memory; QKV rows; RoPE; q out, k/v to the paged cache
 *   B  attention of a head (a block per query head, the whole sequence, online softmax),
 *      times that head's columns of o, added into x (atomics: heads meet in the residual)
 *   C  x * ffn_norm staged; gate and up rows of the same index in one block; h = silu(g) u
 *   D  h staged; down rows added into x
 *
 * Each block requests the weights of its share of the next stage between arriving at the
 * barrier and waiting for it, so the chain after the barrier is: input from L2 -> dot
 * products -> store. Weights are read as the GEMV reads them (unit.cuh) and dequantized in
 * registers; x is staged as floats (swizzled so that the lanes' 16-byte reads of consecutive
 * units hit different banks). The RMS statistic is summed while x is staged and applied to
 * the sums.
 *
 * Measured on an H100 (bench/RESULTS.md, 2026-11-27) it is not faster than the graph of five
 * PDL kernels a layer (smollm2-135m Q4_1: 1510 against 1640 tok/s): a barrier costs 1-1.8 us
 * and each stage 2.5-3.5 us after it (attention + o, on one block a head, 5.7 us), about 22
 * us a layer. So the engine runs it only when asked (LODE_CUDA_PERSIST=1);
 * LODE_CUDA_LAYERS_TRACE=1 prints those per-stage times.
 */
#include "kernels/cuda/unit.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace
{

constexpr int T = 256; /* threads a block */
constexpr int NW = T / 32;
constexpr int JP = 6; /* weight units a thread holds in registers (prefetched) */

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p)
{
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ unsigned long long now_ns()
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Grid-wide barrier (arrive, then wait): every block arrives before any leaves, and what a
 * block wrote before arriving is visible to every block after its wait. bar[0] counts the arrivals
 * of this launch (a release add, no reply awaited) and each block waits for the count of its k-th
 * barrier, k nb; the last block to finish resets bar (grid_done). With trace, thread 0 records when
 * the block arrives at and leaves barrier ev (krn_cuda_layers_cfg.trace). */
struct Sync {
    unsigned *bar;
    unsigned long long *trace;
    unsigned target;
    int ev, nev;
    __device__ __forceinline__ void mark(int e, bool leave)
    {
        if (trace && threadIdx.x == 0)
            trace[((int64_t)(leave ? nev + 1 : 0) + e) * gridDim.x + blockIdx.x] = now_ns();
    }
    /* The block's writes so far are released to the grid. The next stage's weights are
     * requested only after this: a release waits for the thread's outstanding accesses, so
     * loads issued before it would put their memory latency on the chain. */
    __device__ __forceinline__ void arrive()
    {
        __syncthreads();
        target += gridDim.x;
        ev++;
        if (threadIdx.x == 0) {
            mark(ev, false);
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar) : "memory");
        }
        __syncthreads();
    }
    /* Returns once every block has arrived. */
    __device__ __forceinline__ void wait()
    {
        if (threadIdx.x == 0) {
            while (ld_acquire(bar) < target) {
            }
            mark(ev, true);
        }
        __syncthreads();
    }
    /* after the last barrier: the last block out resets the counters for the next launch */
    __device__ __forceinline__ void done()
    {
        __syncthreads();
        if (threadIdx.x == 0) {
            mark(ev + 1, false);
            if (atomicAdd(bar + 1, 1u) == gridDim.x - 1) {
                atomicExch(bar, 0u);
                atomicExch(bar + 1, 0u);
            }
        }
    }
};

/* Element k of a staged vector (unit-major, float4 c of unit u at c ^ swz(u)). */
template <int N> __device__ __forceinline__ int xpos(int k)
{
    constexpr int NC = N / 4;
    const int u = k / N, c = (k % N) / 4;
    return (u * NC + (c ^ swz<NC>(u))) * 4 + (k & 3);
}

/* Stages K floats of src (times w when w is not NULL) into xs4; returns the block's sum of
 * src^2 (every thread). Synchronizes the block. */
template <int N>
__device__ __forceinline__ float stage_x(const float *src, const float *w, int K, float4 *xs4,
                                         float *red)
{
    constexpr int NC = N / 4;
    const int tid = threadIdx.x;
    float ss = 0.f;
#pragma unroll 4
    for (int f = tid; f < K / 4; f += T) {
        float4 v = __ldcg((const float4 *)src + f);
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        if (w) {
            float4 g = __ldg((const float4 *)w + f);
            v.x *= g.x, v.y *= g.y, v.z *= g.z, v.w *= g.w;
        }
        const int u = f / NC, c = f % NC;
        xs4[u * NC + (c ^ swz<NC>(u))] = v;
    }
    ss = warp_sum(ss);
    if ((tid & 31) == 0) red[tid >> 5] = ss;
    __syncthreads();
    float t = 0.f;
#pragma unroll
    for (int i = 0; i < NW; i++) t += red[i];
    return t;
}

/* Dot product of one weight unit with the staged x at unit u. */
template <int FMT>
__device__ __forceinline__ float unit_dot(const typename Unit<FMT>::Raw &r, const float4 *xs4,
                                          int u)
{
    typedef Unit<FMT> U;
    constexpr int N = U::N, NC = N / 4;
    float v[N];
    U::decode(r, v);
    float lo = 0.f, hi = 0.f, xsum = 0.f;
#pragma unroll
    for (int c = 0; c < NC; c++) {
        const float4 xv = xs4[u * NC + (c ^ swz<NC>(u))];
        const float t =
            v[4 * c] * xv.x + v[4 * c + 1] * xv.y + v[4 * c + 2] * xv.z + v[4 * c + 3] * xv.w;
        if (c < NC / 2 || NC == 1)
            lo += t;
        else
            hi += t;
        if constexpr (FMT == FMT_Q4M) xsum += xv.x + xv.y + xv.z + xv.w;
    }
    if constexpr (IsQuant<FMT>::v) {
        const float2 s = U::scales(r);
        float d = s.x * lo + s.y * hi;
        if constexpr (FMT == FMT_Q4M) d += U::moff(r) * xsum;
        return d;
    } else {
        return lo + hi;
    }
}

__device__ __forceinline__ void merge(float &m, float &l, float m2, float l2, float *acc,
                                      const float *acc2)
{
    const float M = fmaxf(m, m2);
    const float a1 = m == -INFINITY ? 0.f : __expf(m - M);
    const float a2 = m2 == -INFINITY ? 0.f : __expf(m2 - M);
    l = l * a1 + l2 * a2;
#pragma unroll
    for (int e = 0; e < 8; e++) acc[e] = acc[e] * a1 + acc2[e] * a2;
    m = M;
}

template <int FMT, int HD>
__global__ void __launch_bounds__(T, 1) layers_kernel(const krn_cuda_layers_cfg c, int racc_n)
{
    typedef Unit<FMT> U;
    typedef typename U::Raw Raw;
    constexpr int N = U::N;
    extern __shared__ float4 smem4[];
    float4 *xs4 = smem4;
    const int xs_floats = LODE_MAX(LODE_MAX(c.dim, c.ff), c.n_head * HD);
    float *racc = (float *)smem4 + xs_floats;
    float *red = racc + racc_n; /* NW floats */
    float *am = red + NW;       /* NW: attention maxima */
    float *al = am + NW;        /* NW: attention sums */
    float *aacc = al + NW;      /* NW x HD */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nb = gridDim.x, b = blockIdx.x;
    const int dim = c.dim, ff = c.ff, H = c.n_head, KV = c.n_kv_head;
    const int qkv_rows = (H + 2 * KV) * HD;
    const int nu_d = dim / N, nu_f = ff / N, nu_o = H * HD / N;
    constexpr int upr = HD / N; /* units of a head's columns in a row of o */

    for (int i = tid; i < racc_n; i += T) racc[i] = 0.f;
    Sync sy{c.bar, c.trace, 0u, 0, 4 * c.n_layer};
    sy.mark(0, true);

    Raw raw[JP];
    /* the first units of a stage: items tid + j T, global unit index gu(i) */
    auto prefetch = [&](const krn_cuda_mat &m, int items, auto gu) {
#pragma unroll
        for (int j = 0; j < JP; j++) {
            const int i = tid + j * T;
            if (i < items) raw[j] = U::load(m, gu(i));
        }
    };
    /* every item: its unit's dot product with the staged x handed to sink(i, valid, d),
     * called by every lane (sinks may shuffle) */
    auto run = [&](const krn_cuda_mat &m, int items, auto gu, auto xu, auto sink) {
        for (int base = 0; base < items; base += JP * T) {
            if (base) {
#pragma unroll
                for (int j = 0; j < JP; j++) {
                    const int i = base + tid + j * T;
                    if (i < items) raw[j] = U::load(m, gu(i));
                }
            }
#pragma unroll
            for (int j = 0; j < JP; j++) {
                if (base + j * T >= items) break; /* uniform */
                const int i = base + tid + j * T;
                const bool ok = i < items;
                const float d = ok ? unit_dot<FMT>(raw[j], xs4, xu(i)) : 0.f;
                sink(i, ok, d);
            }
        }
    };

    const int32_t pos = c.pos[0], slot = c.slot[0];
    const int64_t pairs = qkv_rows / 2;
    const int a_r0 = (int)(2 * (pairs * b / nb)), a_nr = (int)(2 * (pairs * (b + 1) / nb)) - a_r0;
    const int c_n0 = (int)((int64_t)ff * b / nb), c_cnt = (int)((int64_t)ff * (b + 1) / nb) - c_n0;
    const int d_r0 = (int)((int64_t)dim * b / nb), d_nr = (int)((int64_t)dim * (b + 1) / nb) - d_r0;

    for (int l = 0; l < c.n_layer; l++) {
        const krn_cuda_layer &L = c.layers[l];

        /* ---- A: RMSNorm, QKV, RoPE, KV write ------------------------------------------- */
        {
            const krn_cuda_mat m = L.qkv;
            auto gu = [&](int i) { return (int64_t)(a_r0 + i / nu_d) * nu_d + i % nu_d; };
            if (l) sy.arrive();
            prefetch(m, a_nr * nu_d, gu);
            if (l) sy.wait();
            const float ss = stage_x<N>(c.x, L.attn_norm, dim, xs4, red);
            const float rstd = rsqrtf(ss / (float)dim + c.eps);
            run(
                m, a_nr * nu_d, gu, [&](int i) { return i % nu_d; },
                [&](int i, bool ok, float d) {
                    if (ok) atomicAdd(&racc[i / nu_d], d);
                });
            __syncthreads();
            for (int t = tid; t < a_nr / 2; t += T) {
                float y0 = racc[2 * t] * rstd, y1 = racc[2 * t + 1] * rstd;
                racc[2 * t] = racc[2 * t + 1] = 0.f;
                const int vr = a_r0 + 2 * t;
                if (vr < (H + KV) * HD) {
                    const int d = vr % HD;
                    float s, co;
                    sincosf((float)pos * c.inv_freq[d / 2], &s, &co);
                    const float a = y0 * co - y1 * s, e = y0 * s + y1 * co;
                    y0 = a, y1 = e;
                }
                if (vr < H * HD) {
                    c.q[vr] = y0;
                    c.q[vr + 1] = y1;
                    continue;
                }
                int kv = vr - H * HD;
                __half *cache = (__half *)L.k_cache;
                if (kv >= KV * HD) {
                    kv -= KV * HD;
                    cache = (__half *)L.v_cache;
                }
                if (slot < 0) continue;
                const int kh = kv / HD, d = kv % HD;
                const int64_t idx =
                    (((int64_t)(slot / KRN_CUDA_KV_BLOCK) * KV + kh) * KRN_CUDA_KV_BLOCK +
                     slot % KRN_CUDA_KV_BLOCK) *
                        HD +
                    d;
                *(__half2 *)(cache + idx) = __floats2half2_rn(y0, y1);
            }
        }

        /* ---- B: attention of head h, times o's columns of h, into x -------------------- */
        {
            const krn_cuda_mat m = L.o;
            int h = b;
            auto gu = [&](int i) { return (int64_t)(i / upr) * nu_o + h * upr + i % upr; };
            constexpr int LPP = HD / 8, PPP = T / LPP, NP = HD == 64 ? 8 : 4;
            const int lp = tid % LPP, pi = tid / LPP;
            const int seq = c.seq_len[0];
            const __half *kc = (const __half *)L.k_cache, *vc = (const __half *)L.v_cache;
            /* this thread's keys and values of a tile: every position but the newest was
             * cached before this step, so the first tile is requested before the barrier */
            uint4 kr[NP], vr[NP];
            auto load_kv = [&](int t0, int j, int which) {
                const int p = t0 + j * PPP + pi;
                if (p >= seq || (which == 1 && p == seq - 1) || (which == 2 && p != seq - 1))
                    return;
                const int32_t blk = c.block_table[p / KRN_CUDA_KV_BLOCK];
                const int64_t row = ((int64_t)blk * KV + (h / (H / KV))) * KRN_CUDA_KV_BLOCK +
                                    p % KRN_CUDA_KV_BLOCK;
                kr[j] = __ldcg((const uint4 *)(kc + row * HD + lp * 8));
                vr[j] = __ldcg((const uint4 *)(vc + row * HD + lp * 8));
            };
            sy.arrive();
            if (h < H) {
                prefetch(m, dim * upr, gu);
#pragma unroll
                for (int j = 0; j < NP; j++) load_kv(0, j, 1);
            }
            sy.wait();
            for (; h < H; h += nb) {
                const float scale = rsqrtf((float)HD);
                float qv[8];
                {
                    const float4 q0 = __ldcg((const float4 *)(c.q + h * HD + lp * 8));
                    const float4 q1 = __ldcg((const float4 *)(c.q + h * HD + lp * 8 + 4));
                    qv[0] = q0.x * scale, qv[1] = q0.y * scale, qv[2] = q0.z * scale;
                    qv[3] = q0.w * scale, qv[4] = q1.x * scale, qv[5] = q1.y * scale;
                    qv[6] = q1.z * scale, qv[7] = q1.w * scale;
                }
                float mr = -INFINITY, lr = 0.f, acc[8];
#pragma unroll
                for (int e = 0; e < 8; e++) acc[e] = 0.f;
                for (int t0 = 0; t0 < seq; t0 += PPP * NP) {
#pragma unroll
                    for (int j = 0; j < NP; j++) load_kv(t0, j, t0 || h != b ? 0 : 2);
                    float s[NP], mt = mr;
#pragma unroll
                    for (int j = 0; j < NP; j++) {
                        float v = 0.f;
                        const int p = t0 + j * PPP + pi;
                        if (p < seq) {
                            const __half2 *k2 = (const __half2 *)&kr[j];
#pragma unroll
                            for (int e = 0; e < 4; e++) {
                                const float2 f = __half22float2(k2[e]);
                                v += qv[2 * e] * f.x + qv[2 * e + 1] * f.y;
                            }
                        }
#pragma unroll
                        for (int o = 1; o < LPP; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                        s[j] = p < seq ? v : -INFINITY;
                        mt = fmaxf(mt, s[j]);
                    }
                    if (mt == -INFINITY) continue;
                    const float alpha = mr == -INFINITY ? 0.f : __expf(mr - mt);
                    lr *= alpha;
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[e] *= alpha;
#pragma unroll
                    for (int j = 0; j < NP; j++) {
                        if (s[j] == -INFINITY) continue;
                        const float pj = __expf(s[j] - mt);
                        lr += pj;
                        const __half2 *v2 = (const __half2 *)&vr[j];
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const float2 f = __half22float2(v2[e]);
                            acc[2 * e] += pj * f.x;
                            acc[2 * e + 1] += pj * f.y;
                        }
                    }
                    mr = mt;
                }
                /* the position groups of a warp, then the warps */
#pragma unroll
                for (int o = LPP; o < 32; o <<= 1) {
                    float a2[8];
                    const float m2 = __shfl_xor_sync(0xffffffffu, mr, o);
                    const float l2 = __shfl_xor_sync(0xffffffffu, lr, o);
#pragma unroll
                    for (int e = 0; e < 8; e++) a2[e] = __shfl_xor_sync(0xffffffffu, acc[e], o);
                    merge(mr, lr, m2, l2, acc, a2);
                }
                if (lane < LPP) {
                    if (lane == 0) am[warp] = mr, al[warp] = lr;
#pragma unroll
                    for (int e = 0; e < 8; e++) aacc[warp * HD + lp * 8 + e] = acc[e];
                }
                __syncthreads();
                if (tid < HD) {
                    float M = -INFINITY;
#pragma unroll
                    for (int w = 0; w < NW; w++) M = fmaxf(M, am[w]);
                    float den = 0.f, o = 0.f;
#pragma unroll
                    for (int w = 0; w < NW; w++) {
                        const float e = am[w] == -INFINITY ? 0.f : __expf(am[w] - M);
                        den += al[w] * e;
                        o += aacc[w * HD + tid] * e;
                    }
                    ((float *)xs4)[xpos<N>(tid)] = den > 0.f ? o / den : 0.f;
                }
                __syncthreads();
                if (h != b) prefetch(m, dim * upr, gu);
                run(
                    m, dim * upr, gu, [&](int i) { return i % upr; },
                    [&](int i, bool ok, float d) {
                        for (int o = 1; o < upr; o <<= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
                        if (ok && i % upr == 0) atomicAdd(&c.x[i / upr], d);
                    });
                __syncthreads(); /* xs4 and the attention scratch are reused */
            }
        }

        /* ---- C: RMSNorm, gate and up, SwiGLU -------------------------------------------- */
        {
            const krn_cuda_mat m = L.gu;
            auto gu = [&](int i) {
                const int r = i / nu_d;
                const int row = r < c_cnt ? c_n0 + r : ff + c_n0 + r - c_cnt;
                return (int64_t)row * nu_d + i % nu_d;
            };
            sy.arrive();
            prefetch(m, 2 * c_cnt * nu_d, gu);
            sy.wait();
            const float ss = stage_x<N>(c.x, L.ffn_norm, dim, xs4, red);
            const float rstd = rsqrtf(ss / (float)dim + c.eps);
            run(
                m, 2 * c_cnt * nu_d, gu, [&](int i) { return i % nu_d; },
                [&](int i, bool ok, float d) {
                    if (ok) atomicAdd(&racc[i / nu_d], d);
                });
            __syncthreads();
            for (int t = tid; t < c_cnt; t += T) {
                const float g = racc[t] * rstd, u = racc[c_cnt + t] * rstd;
                racc[t] = racc[c_cnt + t] = 0.f;
                c.h[c_n0 + t] = silu(g) * u;
            }
        }

        /* ---- D: down projection into x -------------------------------------------------- */
        {
            const krn_cuda_mat m = L.down;
            auto gu = [&](int i) { return (int64_t)(d_r0 + i / nu_f) * nu_f + i % nu_f; };
            sy.arrive();
            prefetch(m, d_nr * nu_f, gu);
            sy.wait();
            stage_x<N>(c.h, nullptr, ff, xs4, red);
            run(
                m, d_nr * nu_f, gu, [&](int i) { return i % nu_f; },
                [&](int i, bool ok, float d) {
                    if (ok) atomicAdd(&racc[i / nu_f], d);
                });
            __syncthreads();
            for (int t = tid; t < d_nr; t += T) {
                c.x[d_r0 + t] = __ldcg(c.x + d_r0 + t) + racc[t];
                racc[t] = 0.f;
            }
        }
    }
    sy.done();
}

/* Shared-memory floats a block takes, and its per-row scratch size. */
static void smem_size(const krn_cuda_layers_cfg *c, int nb, int *racc_n, size_t *bytes)
{
    const int64_t pairs = (int64_t)(c->n_head + 2 * c->n_kv_head) * c->head_dim / 2;
    int r = (int)(2 * cdiv(pairs, nb));
    r = LODE_MAX(r, (int)(2 * cdiv(c->ff, nb)));
    r = LODE_MAX(r, (int)cdiv(c->dim, nb));
    *racc_n = (r + 3) / 4 * 4;
    const int xs = LODE_MAX(LODE_MAX(c->dim, c->ff), c->n_head * c->head_dim);
    *bytes = (size_t)(xs + *racc_n + 3 * NW + NW * c->head_dim) * sizeof(float);
}

typedef void (*kern_t)(const krn_cuda_layers_cfg, int);

static kern_t pick(int fmt, int hd)
{
#define K(F)                                                                                       \
    case F:                                                                                        \
        return hd == 64 ? layers_kernel<F, 64> : layers_kernel<F, 128>;
    if (hd != 64 && hd != 128) return nullptr;
    switch (fmt) {
        K(FMT_F16)
        K(FMT_BF16)
        K(FMT_Q4)
        K(FMT_Q4M)
        K(FMT_Q8)
        K(FMT_Q6)
    default:
        return nullptr;
    }
#undef K
}

/* Blocks of the grid: one a SM, or fewer with LODE_CUDA_LAYERS_BLOCKS=n (to measure the
 * trade between the barrier's arrivals and each block's share of the work). */
static int grid_blocks()
{
    const int sms = krn_cuda_sm_count();
    static int lim = -1;
    if (lim < 0) {
        const char *e = getenv("LODE_CUDA_LAYERS_BLOCKS");
        lim = e && *e ? atoi(e) : 0;
    }
    return lim > 0 && lim < sms ? lim : sms;
}

} // namespace

extern "C" int krn_cuda_layers_supported(const krn_cuda_layers_cfg *c)
{
    kern_t k = pick(c->fmt, c->head_dim);
    if (!k || c->n_kv_head <= 0 || c->n_head % c->n_kv_head || c->dim % 32 || c->ff % 32 ||
        (c->n_head * c->head_dim) % 32 || c->n_layer <= 0)
        return 0;
    const int nb = grid_blocks();
    if (nb <= 0) return 0;
    int racc_n;
    size_t bytes;
    smem_size(c, nb, &racc_n, &bytes);
    if (bytes > 200 * 1024) return 0;
    int dev = 0, coop = 0, occ = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) != cudaSuccess || !coop ||
        cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) !=
            cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, T, bytes) != cudaSuccess ||
        occ < 1) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

static lode_status trace_report(const krn_cuda_layers_cfg *c, int nb, cudaStream_t st)
{
    const int nev = 4 * c->n_layer;
    const size_t n = (size_t)2 * (nev + 1) * nb;
    unsigned long long *h = (unsigned long long *)malloc(n * sizeof *h);
    if (!h) return LODE_ERR_NOMEM;
    cudaError_t e = cudaStreamSynchronize(st);
    if (e == cudaSuccess) e = cudaMemcpy(h, c->trace, n * sizeof *h, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        free(h);
        return krn_cuda_fail(e, "layers trace", __FILE__, __LINE__);
    }
    auto arr = [&](int ev, int b) { return h[(size_t)ev * nb + b]; };
    auto lea = [&](int ev, int b) { return h[(size_t)(nev + 1 + ev) * nb + b]; };
    double stage[4] = {0, 0, 0, 0}, spread[4] = {0, 0, 0, 0}, bar = 0;
    for (int i = 0; i < nev; i++) {
        unsigned long long l0 = 0, a1 = 0, a0 = ~0ull;
        for (int b = 0; b < nb; b++) {
            l0 = LODE_MAX(l0, lea(i, b));
            a1 = LODE_MAX(a1, arr(i + 1, b));
            a0 = LODE_MIN(a0, arr(i + 1, b));
        }
        stage[i % 4] += (double)(a1 - l0);
        spread[i % 4] += (double)(a1 - a0);
        if (i + 1 < nev) {
            unsigned long long l1 = 0;
            for (int b = 0; b < nb; b++) l1 = LODE_MAX(l1, lea(i + 1, b));
            bar += (double)(l1 - a1);
        }
    }
    const double L = c->n_layer, tot = (double)(arr(nev, 0) - lea(0, 0));
    fprintf(stderr,
            "layers trace (%d blocks, us a layer): A norm+qkv+rope %.2f, B attention+o %.2f, "
            "C norm+gate/up %.2f, D down %.2f (each: the slowest block's arrival after the last "
            "block left the barrier before; arrivals spread A %.2f B %.2f C %.2f D %.2f); "
            "barrier (last arrival to last leave) %.2f us each; kernel %.1f us\n",
            nb, stage[0] / L / 1e3, stage[1] / L / 1e3, stage[2] / L / 1e3, stage[3] / L / 1e3,
            spread[0] / L / 1e3, spread[1] / L / 1e3, spread[2] / L / 1e3, spread[3] / L / 1e3,
            bar / (nev - 1) / 1e3, tot / 1e3);
    free(h);
    return LODE_OK;
}

extern "C" lode_status krn_cuda_layers_decode(const krn_cuda_layers_cfg *c, void *stream)
{
    kern_t k = pick(c->fmt, c->head_dim);
    const int nb = grid_blocks();
    if (!k || nb <= 0 || !c->layers || !c->x || !c->q || !c->h || !c->bar)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "layers_decode: bad arguments");
    int racc_n;
    size_t bytes;
    smem_size(c, nb, &racc_n, &bytes);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)nb);
    cfg.blockDim = dim3(T);
    cfg.dynamicSmemBytes = bytes;
    cfg.stream = STREAM(stream);
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeCooperative;
    at[0].val.cooperative = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    krn_cuda_layers_cfg kc = *c;
    unsigned long long *tbuf = nullptr;
    if (!kc.trace) {
        lode_status tst = krn_cuda_layers_trace_buf(
            cfg.stream, (size_t)2 * (4 * c->n_layer + 1) * nb * sizeof *tbuf, &tbuf);
        if (tst) return tst;
    }
    const bool trace = tbuf != nullptr;
    if (trace) kc.trace = tbuf;
    CU_TRY(cudaLaunchKernelEx(&cfg, k, kc, racc_n));
    CU_LAUNCHED("layers_decode");
    if (trace) return trace_report(&kc, nb, cfg.stream);
    return LODE_OK;
}
