/*
 * layers.cu: every layer of a batch-1 decode step in one persistent, cooperative kernel whose
 * weights stream through shared memory without waiting for the layer's data dependencies.
 *
 * As kernels of one op each, a decode step drains the memory pipe at every boundary: the
 * next kernel's blocks become resident only as the last ones leave, and each then waits a
 * full memory latency for its first weights (bench/RESULTS.md: 4-6 us a kernel, about half of
 * llama3-8b Q4_0's layer time over the bytes). Here one block per SM stays resident for the
 * step, and its weights do not depend on anything computed: a producer warp copies the
 * block's share of every matrix, layer after layer, into a ring of shared-memory slots
 * (cp.async.bulk on an mbarrier a slot), as far ahead as the ring reaches, while eleven consumer
 * warps work through the stages of a layer (twelve warps a SM still get 168 registers a thread:
 * registers are given per scheduler, three warps each):
 *
 *   A  x * attn_norm quantized to 8 bits per 32 (as the GEMV does); QKV rows; RoPE; q out,
 *      k/v into the paged cache
 *   B  attention, split along the sequence over the blocks (online softmax), into scratch
 *   C  the splits combined and quantized; o rows; added into x
 *   D  x * ffn_norm quantized; gate and up rows of the same index in one block; h = silu(g) u
 *   E  h quantized; down rows; added into x
 *
 * Stages meet at grid-wide barriers (an arrival counter: a release add and an acquire poll by
 * the consumers only). While the consumers wait at a barrier or attend, the producer keeps
 * copying the next stages' weights, so the memory pipe stays full as long as the ring (7 slots
 * of 25 KB a SM on an H100/H200) covers the wait. Each row's dot products are summed by fixed
 * lanes and warps in a fixed order: the result does not depend on timing.
 *
 * Weights: the quantized layouts with one scale array (Q4_0, Q4_1/Q4_K, Q8_0). A slot holds
 * whole rows (their units, then their scales copied from a 16-byte aligned start); rows too
 * long for eleven to a slot are shared by several warps, whose partial sums are added in order.
 *
 * Measured on an H200 (bench/RESULTS.md, 2026-11-27) it is slower than the graph of five
 * kernels a layer: llama3-8b Q4_0 470 against 520 tok/s, smollm2-135m Q4_1 1330 against 1969.
 * Its speed follows the compiler's register allocation closely: a 16-bit member kept across a
 * predicated load went through local memory in the dot product's loop (RW holds scales in 32
 * bits for that), and four key/value tile rows a thread in the attention instead of two cost
 * 14% through spills elsewhere.
 * The ring is not what limits it: the consumers waited for weights 7.5 us of a 66 us layer, and
 * a ring of 4 slots ran as fast as one of 10. The consumer warps are: with eight, Nsight Compute
 * showed 0.29 instructions issued a cycle per scheduler, 2.25 warps each, 0.34 of them eligible
 * (eleven: 458 -> 470 tok/s). Sixteen leave 96-128 registers a thread and spill (slower still). So
 * the engine runs it only when asked (LODE_CUDA_PERSIST=1); LODE_CUDA_LAYERS_TRACE=1 prints the
 * per-stage times of an eager step and how long the consumers waited for weights;
 * LODE_CUDA_LAYERS_SLOTS=n caps the ring at n slots.
 */
#include "kernels/cuda/unit.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace
{

constexpr int NW = 11;                /* consumer warps */
constexpr int NWP = (NW + 3) / 4 * 4; /* NW rounded up to 16 bytes of floats */
constexpr int TC = NW * 32;           /* consumer threads */
constexpr int T = TC + 32;            /* and the producer warp */
constexpr int SLOT = 25376;   /* bytes a ring slot: 11 rows of 4096 Q4_0 weights, scales aligned */
constexpr int MAX_SLOTS = 16; /* ring slots at most */
constexpr int PARTS = NW;     /* partial sums a row at most (the warps sharing a long row) */
constexpr int UPL = 4;        /* units a lane loads before it uses them */
constexpr int STAGES = 5;     /* barriers a layer */
constexpr int MAX_SPLITS = 4; /* attention splits of a head at most */

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

/* barrier of the consumer warps only (the producer never joins) */
__device__ __forceinline__ void cbar()
{
    asm volatile("bar.sync 1, %0;" ::"n"(TC) : "memory");
}

/* Bytes of a unit's values and of its scales in a slot. */
template <int FMT> struct QL {
    static constexpr int QB = FMT == FMT_Q8 ? 32 : 16;
    static constexpr int SB = FMT == FMT_Q4M ? 4 : 2;
};

/* Whole rows of nu units a slot holds: a multiple of the consumer warps (a warp a row), or a
 * power of two below it, each row shared by NW / rows warps; 0 when one row does not fit. */
__host__ __device__ __forceinline__ int rows_per_slot(int nu, int qb, int sb)
{
    const int g = (SLOT - 32) / (nu * (qb + sb));
    if (g >= NW) return g / NW * NW;
    int p = 1;
    while (2 * p <= g) p *= 2;
    return g ? p : 0;
}

/* One unit of weights from a slot (unit i): its values, and its scale bits (a half, or the
 * (d, m) pair of Q4M) in a 32-bit register: a 16-bit struct member kept in registers across a
 * predicated load would be merged into its old value through local memory. */
struct RW {
    uint4 a, b; /* b: Q8's second 16 bytes */
    uint32_t s;
};

template <int FMT>
__device__ __forceinline__ RW rw_at(const uint4 *q, const unsigned char *s, int i)
{
    RW r;
    if constexpr (FMT == FMT_Q8) {
        r.a = q[2 * i];
        r.b = q[2 * i + 1];
        r.s = ((const unsigned short *)s)[i];
    } else if constexpr (FMT == FMT_Q4M) {
        r.a = q[i];
        r.s = ((const uint32_t *)s)[i];
    } else {
        r.a = q[i];
        r.s = ((const unsigned short *)s)[i];
    }
    return r;
}

/* x staged as the GEMV stages it for quantized weights: unit u's 8 words of int8 values (its
 * halves swapped on every other group of 4 units, against bank conflicts), the integer sums
 * of its two halves and its scale. */
struct QX {
    int *q;
    float *hs, *sc;
};

/* One unit of staged x in a lane's registers: its two halves' int8 words, the sum of its
 * integers and its scale. */
struct XR {
    int4 lo, hi;
    float hsum, sc;
};

__device__ __forceinline__ XR x_at(const QX &x, int u)
{
    const int hsw = (u >> 2) & 1;
    XR r;
    r.lo = *(const int4 *)(x.q + u * 8 + 4 * hsw);
    r.hi = *(const int4 *)(x.q + u * 8 + 4 * (hsw ^ 1));
    const float2 hs = *(const float2 *)(x.hs + 2 * u);
    r.hsum = hs.x + hs.y;
    r.sc = x.sc[u];
    return r;
}

__device__ __forceinline__ int dp4a_us(uint32_t a, int b, int c)
{
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

/* The dot product of one weight unit with x's unit in registers (scaled). The 4-bit layouts
 * keep each byte's high nibble in place (16 times its value, an unsigned byte), so a unit
 * costs eight masks and eight dp4a: 16 sum(q x) = 16 lo + hi'. One scale a unit (Q4_0,
 * Q4_1/Q4_K, Q8_0). */
template <int FMT> __device__ __forceinline__ float qdot_r(const RW &r, const XR &x)
{
    if constexpr (FMT == FMT_Q8) {
        int d = __dp4a((int)r.a.x, x.lo.x, 0);
        d = __dp4a((int)r.a.y, x.lo.y, d);
        d = __dp4a((int)r.a.z, x.lo.z, d);
        d = __dp4a((int)r.a.w, x.lo.w, d);
        d = __dp4a((int)r.b.x, x.hi.x, d);
        d = __dp4a((int)r.b.y, x.hi.y, d);
        d = __dp4a((int)r.b.z, x.hi.z, d);
        d = __dp4a((int)r.b.w, x.hi.w, d);
        return x.sc * (__half2float(__ushort_as_half((unsigned short)r.s)) * (float)d);
    } else {
        constexpr uint32_t LO = 0x0F0F0F0Fu, HI = 0xF0F0F0F0u;
        int dl = __dp4a((int)(r.a.x & LO), x.lo.x, 0);
        dl = __dp4a((int)(r.a.y & LO), x.lo.y, dl);
        dl = __dp4a((int)(r.a.z & LO), x.lo.z, dl);
        dl = __dp4a((int)(r.a.w & LO), x.lo.w, dl);
        int dh = dp4a_us(r.a.x & HI, x.hi.x, 0);
        dh = dp4a_us(r.a.y & HI, x.hi.y, dh);
        dh = dp4a_us(r.a.z & HI, x.hi.z, dh);
        dh = dp4a_us(r.a.w & HI, x.hi.w, dh);
        const float t = (float)(16 * dl + dh) * 0.0625f; /* sum(q x) */
        if constexpr (FMT == FMT_Q4M) {
            const float dd = __half2float(__ushort_as_half((unsigned short)(r.s & 0xFFFFu)));
            const float dm = __half2float(__ushort_as_half((unsigned short)(r.s >> 16)));
            return x.sc * fmaf(dd, t, dm * x.hsum);
        } else {
            return x.sc *
                   (__half2float(__ushort_as_half((unsigned short)r.s)) * (t - 8.f * x.hsum));
        }
    }
}

/* Stages K floats (float4 f is cv(ld(f)), times w with NORM) into x, quantized, PF loads in
 * flight a thread; returns their sum of squares (every consumer thread).
 * Synchronizes the consumers. */
template <int PF, bool NORM, class LD, class CV>
__device__ __forceinline__ float stage_q8(LD ld, CV cv, const float *w, int K, const QX &x,
                                          float *red)
{
    typedef decltype(ld(0)) R;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n4 = K / 4;
    float ss = 0.f;
    for (int base = 0; base < n4; base += TC * PF) {
        R v[PF];
        float4 g[NORM ? PF : 1];
#pragma unroll
        for (int j = 0; j < PF; j++) {
            const int f = base + j * TC + tid;
            v[j] = R{};
            if (f < n4) {
                v[j] = ld(f);
                if constexpr (NORM) g[j] = __ldg((const float4 *)w + f);
            }
        }
#pragma unroll
        for (int j = 0; j < PF; j++) {
            if (base + j * TC >= n4) break; /* uniform */
            const int f = base + j * TC + tid;
            const bool act = f < n4; /* uniform over the 8 lanes of a unit */
            float4 t = act ? cv(v[j]) : make_float4(0.f, 0.f, 0.f, 0.f);
            ss += t.x * t.x + t.y * t.y + t.z * t.z + t.w * t.w;
            if constexpr (NORM)
                if (act) t.x *= g[j].x, t.y *= g[j].y, t.z *= g[j].z, t.w *= g[j].w;
            const Q8Lane q = q8_lane(t);
            if (act) {
                const int u = f >> 3, cc = f & 7, h = (cc >> 2) ^ ((u >> 2) & 1);
                x.q[u * 8 + h * 4 + (cc & 3)] = q.word;
                if ((cc & 3) == 0) x.hs[u * 2 + (cc >> 2)] = (float)q.half_sum;
                if (cc == 0) x.sc[u] = q.scale;
            }
        }
    }
    ss = warp_sum(ss);
    if (lane == 0) red[warp] = ss;
    cbar();
    float t = 0.f;
#pragma unroll
    for (int i = 0; i < NW; i++) t += red[i];
    return t;
}

/* Grid-wide barrier of the consumers (arrive, then wait): every block arrives before any
 * leaves, and what a block wrote before arriving is visible to every block after its wait.
 * bar[0] counts the arrivals of this launch (a release add, no reply awaited) and each block
 * waits for the count of its k-th barrier, k nb; the last block to finish resets bar (done).
 * With trace, thread 0 records when the block arrives at and leaves barrier ev. */
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
    __device__ __forceinline__ void arrive()
    {
        cbar();
        target += gridDim.x;
        ev++;
        if (threadIdx.x == 0) {
            mark(ev, false);
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar) : "memory");
        }
    }
    __device__ __forceinline__ void wait()
    {
        if (threadIdx.x == 0) {
            while (ld_acquire(bar) < target) {
            }
            mark(ev, true);
        }
        cbar();
    }
    __device__ __forceinline__ void done()
    {
        cbar();
        if (threadIdx.x == 0) {
            mark(ev + 1, false);
            if (atomicAdd(bar + 1, 1u) == gridDim.x - 1) {
                atomicExch(bar, 0u);
                atomicExch(bar + 1, 0u);
            }
        }
    }
};

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

/* What the kernel reads of a layer, copied into shared memory at entry: the values and scales
 * of qkv, o, gate/up and down, the two norms and the cache. */
struct LayerP {
    const void *q[4], *s[4];
    const float *norm[2];
    void *kc, *vc;
};

/* A block's rows of one matrix of a layer: rows r0..r0+nr of the matrix (nu units each),
 * kept at rows lb.. of the block's sums. */
struct Seg {
    const void *q, *s;
    int r0, nr, nu, lb;
};

/* The block's shares: rows of qkv (whole RoPE pairs), of o and down, and the indices of
 * gate/up. Segment i of a layer: 0 qkv, 1 o, 2 gate, 3 up, 4 down. */
struct Shares {
    int a_r0, a_nr, d_r0, d_nr, c_n0, c_cnt;
    __device__ Shares(const krn_cuda_layers_cfg &c, int HD)
    {
        const int b = blockIdx.x, nb = gridDim.x;
        const int64_t pairs = (int64_t)(c.n_head + 2 * c.n_kv_head) * HD / 2;
        a_r0 = (int)(2 * (pairs * b / nb));
        a_nr = (int)(2 * (pairs * (b + 1) / nb)) - a_r0;
        d_r0 = (int)((int64_t)c.dim * b / nb);
        d_nr = (int)((int64_t)c.dim * (b + 1) / nb) - d_r0;
        c_n0 = (int)((int64_t)c.ff * b / nb);
        c_cnt = (int)((int64_t)c.ff * (b + 1) / nb) - c_n0;
    }
    __device__ Seg seg(const LayerP &L, int i, const krn_cuda_layers_cfg &c, int HD) const
    {
        switch (i) {
        case 0:
            return Seg{L.q[0], L.s[0], a_r0, a_nr, c.dim / 32, 0};
        case 1:
            return Seg{L.q[1], L.s[1], d_r0, d_nr, c.n_head * HD / 32, 0};
        case 2:
            return Seg{L.q[2], L.s[2], c_n0, c_cnt, c.dim / 32, 0};
        case 3:
            return Seg{L.q[2], L.s[2], c.ff + c_n0, c_cnt, c.dim / 32, c_cnt};
        default:
            return Seg{L.q[3], L.s[3], d_r0, d_nr, c.ff / 32, 0};
        }
    }
};

template <int FMT, int HD>
__global__ void __launch_bounds__(T, 1)
    layers_kernel(const krn_cuda_layers_cfg c, int ns, int racc_n)
{
    typedef QL<FMT> Q;
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char *ring = smem;
    uint64_t *full = (uint64_t *)(ring + (size_t)ns * SLOT), *empty = full + ns;
    const int ku = LODE_MAX(LODE_MAX(c.dim, c.ff), c.n_head * HD) / 32;
    QX xs;
    xs.q = (int *)(empty + ns);
    xs.hs = (float *)(xs.q + 8 * ku);
    xs.sc = xs.hs + 2 * ku;
    float *racc = xs.sc + ku;
    float *red = racc + racc_n;              /* NW floats */
    float *am = red + NWP;                   /* NW: attention maxima */
    float *al = am + NWP;                    /* NW: attention sums */
    float *aacc = al + NWP;                  /* NW x HD */
    LayerP *lt = (LayerP *)(aacc + NW * HD); /* [n_layer] */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nb = gridDim.x, b = blockIdx.x;
    const int dim = c.dim, H = c.n_head, KV = c.n_kv_head;
    const Shares sh(c, HD);

    for (int l = tid; l < c.n_layer; l += T) {
        const krn_cuda_layer &L = c.layers[l];
        LayerP p;
        p.q[0] = L.qkv.q, p.q[1] = L.o.q, p.q[2] = L.gu.q, p.q[3] = L.down.q;
        p.s[0] = L.qkv.s, p.s[1] = L.o.s, p.s[2] = L.gu.s, p.s[3] = L.down.s;
        p.norm[0] = L.attn_norm, p.norm[1] = L.ffn_norm;
        p.kc = L.k_cache, p.vc = L.v_cache;
        lt[l] = p;
    }
    if (tid == 0) {
        for (int i = 0; i < ns; i++) {
            mbar_init(&full[i], 1);
            mbar_init(&empty[i], NW);
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (warp == NW) {
        /* the producer: every slot of the step in order, each once the consumers are done
         * with the slot's previous rows */
        if (lane == 0) {
            int n = 0;
            for (int l = 0; l < c.n_layer; l++) {
                const LayerP &L = lt[l];
                for (int i = 0; i < STAGES; i++) {
                    const Seg sg = sh.seg(L, i, c, HD);
                    const int G = rows_per_slot(sg.nu, Q::QB, Q::SB);
                    for (int r = 0; r < sg.nr; r += G, n++) {
                        const int g = LODE_MIN(G, sg.nr - r), s = n % ns, k = n / ns;
                        if (k) mbar_wait(&empty[s], (k - 1) & 1);
                        unsigned char *dst = ring + (size_t)s * SLOT;
                        const int64_t u0 = (int64_t)(sg.r0 + r) * sg.nu, nu = (int64_t)g * sg.nu;
                        const uint32_t qb = (uint32_t)(nu * Q::QB);
                        const uintptr_t s0 = (uintptr_t)sg.s + u0 * Q::SB;
                        const uintptr_t a0 = s0 & ~(uintptr_t)15;
                        const uintptr_t a1 = (s0 + nu * Q::SB + 15) & ~(uintptr_t)15;
                        mbar_expect(&full[s], qb + (uint32_t)(a1 - a0));
                        bulk_copy(dst, (const unsigned char *)sg.q + u0 * Q::QB, qb, &full[s]);
                        bulk_copy(dst + qb, (const void *)a0, (uint32_t)(a1 - a0), &full[s]);
                    }
                }
            }
        }
        return;
    }

    for (int i = tid; i < racc_n; i += TC) racc[i] = 0.f;
    Sync sy{c.bar, c.trace, 0u, 0, STAGES * c.n_layer};
    sy.mark(0, true);
    int n = 0; /* slots consumed */
    unsigned long long waited = 0;

    /* every row of a segment: its dot products with the staged x into racc (rows lb + i,
     * PARTS partial sums a row); returns the partial sums a row took */
    auto consume = [&](const Seg &sg) {
        const int G = rows_per_slot(sg.nu, Q::QB, Q::SB);
        const int wpr = G >= NW ? 1 : NW / G, part = warp % wpr;
        /* a warp takes the same units of every row it meets in the segment (a whole row, or
         * its part of one): the lane's units of x are read once, into registers */
        const int ub = sg.nu * part / wpr, ue = sg.nu * (part + 1) / wpr;
        XR xr[UPL];
#pragma unroll
        for (int j = 0; j < UPL; j++)
            if (ub + lane + 32 * j < ue) xr[j] = x_at(xs, ub + lane + 32 * j);
        for (int r = 0; r < sg.nr; r += G, n++) {
            const int g = LODE_MIN(G, sg.nr - r), s = n % ns, k = n / ns;
            const unsigned long long t0 = c.trace && tid == 0 ? now_ns() : 0;
            mbar_wait(&full[s], k & 1);
            if (c.trace && tid == 0) waited += now_ns() - t0;
            const unsigned char *slot = ring + (size_t)s * SLOT;
            const int64_t u0 = (int64_t)(sg.r0 + r) * sg.nu;
            const uint4 *q = (const uint4 *)slot;
            const unsigned char *sc =
                slot + g * sg.nu * Q::QB + (((uintptr_t)sg.s + u0 * Q::SB) & 15);
            /* the warp's units of a row: all of a lane's requested before any is used */
            auto dots = [&](int row) {
                RW w[UPL];
#pragma unroll
                for (int j = 0; j < UPL; j++)
                    if (ub + lane + 32 * j < ue)
                        w[j] = rw_at<FMT>(q, sc, row * sg.nu + ub + lane + 32 * j);
                float a = 0.f;
#pragma unroll
                for (int j = 0; j < UPL; j++)
                    if (ub + lane + 32 * j < ue) a += qdot_r<FMT>(w[j], xr[j]);
                return warp_sum(a);
            };
            if (wpr == 1) {
                for (int row = warp; row < g; row += NW) {
                    const float a = dots(row);
                    if (lane == 0) racc[(sg.lb + r + row) * PARTS] = a;
                }
            } else {
                const int row = warp / wpr;
                if (row < g) {
                    const float a = dots(row);
                    if (lane == 0) racc[(sg.lb + r + row) * PARTS + part] = a;
                }
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(&empty[s]);
        }
        return wpr;
    };
    /* row i's sum over its wpr partial sums, in order */
    auto rsum = [&](int i, int wpr) {
        float t = racc[i * PARTS];
        for (int p = 1; p < wpr; p++) t += racc[i * PARTS + p];
        return t;
    };

    const int32_t pos = c.pos[0], slot = c.slot[0];
    /* the attention of a head is split along the sequence over blocks (S splits) */
    const int S = LODE_MAX(1, LODE_MIN(LODE_MIN(nb / H, c.att_splits), MAX_SPLITS));
    auto ld_x = [&](int f) { return __ldcg((const float4 *)c.x + f); };
    auto same4 = [](float4 v) { return v; };

    for (int l = 0; l < c.n_layer; l++) {
        const LayerP &L = lt[l];

        /* ---- A: RMSNorm, QKV, RoPE, KV write ------------------------------------------- */
        {
            if (l) {
                sy.arrive();
                sy.wait();
            }
            const float ss = stage_q8<4, true>(ld_x, same4, L.norm[0], dim, xs, red);
            const float rstd = rsqrtf(ss / (float)dim + c.eps);
            const int wpr = consume(sh.seg(L, 0, c, HD));
            cbar();
            for (int t = tid; t < sh.a_nr / 2; t += TC) {
                float y0 = rsum(2 * t, wpr) * rstd, y1 = rsum(2 * t + 1, wpr) * rstd;
                const int vr = sh.a_r0 + 2 * t;
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
                __half *cache = (__half *)L.kc;
                if (kv >= KV * HD) {
                    kv -= KV * HD;
                    cache = (__half *)L.vc;
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

        /* ---- B: attention, split along the sequence ----------------------------------- */
        {
            constexpr int LPP = HD / 8, PPP = TC / LPP, NP = HD == 64 ? 4 : 2;
            const int lp = tid % LPP, pi = tid / LPP;
            const int seq = c.seq_len[0], sl = (seq + S - 1) / S;
            const __half *kc = (const __half *)L.kc, *vc = (const __half *)L.vc;
            /* this thread's keys and values of a tile of positions p0 + t0..: every position
             * but the newest was cached before this step, so the first tile is requested
             * before the barrier */
            uint4 kr[NP], vr[NP];
            auto load_kv = [&](int h, int p0, int p1, int t0, int j, int which) {
                const int p = p0 + t0 + j * PPP + pi;
                if (p >= p1 || (which == 1 && p == seq - 1) || (which == 2 && p != seq - 1)) return;
                const int32_t blk = c.block_table[p / KRN_CUDA_KV_BLOCK];
                const int64_t row = ((int64_t)blk * KV + (h / (H / KV))) * KRN_CUDA_KV_BLOCK +
                                    p % KRN_CUDA_KV_BLOCK;
                kr[j] = __ldcg((const uint4 *)(kc + row * HD + lp * 8));
                vr[j] = __ldcg((const uint4 *)(vc + row * HD + lp * 8));
            };
            sy.arrive();
            if (b < H * S) {
                const int p0 = b / H * sl;
#pragma unroll
                for (int j = 0; j < NP; j++) load_kv(b % H, p0, LODE_MIN(seq, p0 + sl), 0, j, 1);
            }
            sy.wait();
            for (int it = b; it < H * S; it += nb) {
                const int h = it % H, sp = it / H;
                const int p0 = sp * sl, p1 = LODE_MIN(seq, p0 + sl);
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
                for (int t0 = 0; p0 + t0 < p1; t0 += PPP * NP) {
#pragma unroll
                    for (int j = 0; j < NP; j++) load_kv(h, p0, p1, t0, j, t0 || it != b ? 0 : 2);
                    float s[NP], mt = mr;
#pragma unroll
                    for (int j = 0; j < NP; j++) {
                        float v = 0.f;
                        const int p = p0 + t0 + j * PPP + pi;
                        if (p < p1) {
                            const __half2 *k2 = (const __half2 *)&kr[j];
#pragma unroll
                            for (int e = 0; e < 4; e++) {
                                const float2 f = __half22float2(k2[e]);
                                v += qv[2 * e] * f.x + qv[2 * e + 1] * f.y;
                            }
                        }
#pragma unroll
                        for (int o = 1; o < LPP; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                        s[j] = p < p1 ? v : -INFINITY;
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
                cbar();
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
                    /* the split's unnormalized output and its (max, sum) */
                    c.att_acc[(int64_t)it * HD + tid] = o;
                    if (tid == 0) *(float2 *)(c.att_ml + 2 * it) = make_float2(M, den);
                }
                cbar(); /* the attention scratch is reused */
            }
        }

        /* ---- C: o projection into x ---------------------------------------------------- */
        {
            sy.arrive();
            sy.wait();
            /* x: the attention's splits combined (split sp of head h at it = sp H + h) */
            auto ld_att = [&](int f) {
                const int h = 4 * f / HD, d = 4 * f % HD;
                float2 ml[MAX_SPLITS];
                float4 a[MAX_SPLITS];
#pragma unroll
                for (int sp = 0; sp < MAX_SPLITS; sp++)
                    if (sp < S) {
                        ml[sp] = __ldcg((const float2 *)(c.att_ml + 2 * (sp * H + h)));
                        a[sp] =
                            __ldcg((const float4 *)(c.att_acc + (int64_t)(sp * H + h) * HD + d));
                    }
                float M = -INFINITY, den = 0.f;
                float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
                for (int sp = 0; sp < MAX_SPLITS; sp++)
                    if (sp < S) M = fmaxf(M, ml[sp].x);
#pragma unroll
                for (int sp = 0; sp < MAX_SPLITS; sp++)
                    if (sp < S && ml[sp].x != -INFINITY) {
                        const float e = __expf(ml[sp].x - M);
                        den += ml[sp].y * e;
                        o.x += a[sp].x * e, o.y += a[sp].y * e, o.z += a[sp].z * e,
                            o.w += a[sp].w * e;
                    }
                const float r = den > 0.f ? 1.f / den : 0.f;
                return make_float4(o.x * r, o.y * r, o.z * r, o.w * r);
            };
            stage_q8<4, false>(ld_att, same4, nullptr, H * HD, xs, red);
            const int wpr = consume(sh.seg(L, 1, c, HD));
            cbar();
            for (int t = tid; t < sh.d_nr; t += TC)
                c.x[sh.d_r0 + t] = __ldcg(c.x + sh.d_r0 + t) + rsum(t, wpr);
        }

        /* ---- D: RMSNorm, gate and up, SwiGLU ------------------------------------------- */
        {
            sy.arrive();
            sy.wait();
            const float ss = stage_q8<4, true>(ld_x, same4, L.norm[1], dim, xs, red);
            const float rstd = rsqrtf(ss / (float)dim + c.eps);
            consume(sh.seg(L, 2, c, HD));
            const int wpr = consume(sh.seg(L, 3, c, HD));
            cbar();
            for (int t = tid; t < sh.c_cnt; t += TC) {
                const float g = rsum(t, wpr) * rstd, u = rsum(sh.c_cnt + t, wpr) * rstd;
                c.h[sh.c_n0 + t] = silu(g) * u;
            }
        }

        /* ---- E: down projection into x ------------------------------------------------- */
        {
            sy.arrive();
            sy.wait();
            stage_q8<8, false>([&](int f) { return __ldcg((const float4 *)c.h + f); }, same4,
                               nullptr, c.ff, xs, red);
            const int wpr = consume(sh.seg(L, 4, c, HD));
            cbar();
            for (int t = tid; t < sh.d_nr; t += TC)
                c.x[sh.d_r0 + t] = __ldcg(c.x + sh.d_r0 + t) + rsum(t, wpr);
        }
    }
    sy.done();
    if (c.trace && tid == 0)
        c.trace[(size_t)2 * (STAGES * c.n_layer + 1) * gridDim.x + blockIdx.x] = waited;
}

/* Shared memory a block takes besides the ring, and its per-row scratch size (floats). */
static size_t smem_rest(const krn_cuda_layers_cfg *c, int nb, int *racc_n)
{
    const int64_t pairs = (int64_t)(c->n_head + 2 * c->n_kv_head) * c->head_dim / 2;
    int r = (int)(2 * cdiv(pairs, nb));
    r = LODE_MAX(r, (int)(2 * cdiv(c->ff, nb)));
    r = LODE_MAX(r, (int)cdiv(c->dim, nb));
    *racc_n = (r * PARTS + 3) / 4 * 4;
    const int ku = LODE_MAX(LODE_MAX(c->dim, c->ff), c->n_head * c->head_dim) / 32;
    return (size_t)ku * 11 * 4 + (size_t)(*racc_n + 3 * NWP + NW * c->head_dim) * sizeof(float) +
           (size_t)c->n_layer * sizeof(LayerP) + 16;
}

/* Ring slots that fit beside the rest (0: too few to stream). */
static int ring_slots(size_t rest)
{
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
            cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    const int64_t avail = (int64_t)optin - (int64_t)rest - 1024;
    int ns = (int)LODE_MIN((int64_t)MAX_SLOTS, avail / (SLOT + 16));
    const char *e = getenv("LODE_CUDA_LAYERS_SLOTS");
    if (e && atoi(e) > 0) ns = LODE_MIN(ns, atoi(e));
    return ns >= 3 ? ns : 0;
}

static size_t smem_bytes(int ns, size_t rest)
{
    return (size_t)ns * (SLOT + 16) + rest;
}

/* Whether rows of nu units fit a slot and a warp's share of a row is at most UPL units a lane
 * (what consume holds of x in registers). */
static bool lane_units_fit(int nu, int qb, int sb)
{
    const int G = rows_per_slot(nu, qb, sb);
    if (!G) return false;
    const int wpr = G >= NW ? 1 : NW / G;
    return (nu + wpr - 1) / wpr <= 32 * UPL;
}

typedef void (*kern_t)(const krn_cuda_layers_cfg, int, int);

static kern_t pick(int fmt, int hd)
{
#define K(F)                                                                                       \
    case F:                                                                                        \
        return hd == 64 ? layers_kernel<F, 64> : layers_kernel<F, 128>;
    if (hd != 64 && hd != 128) return nullptr;
    switch (fmt) {
        K(FMT_Q4)
        K(FMT_Q4M)
        K(FMT_Q8)
    default:
        return nullptr;
    }
#undef K
}

static void unit_bytes(int fmt, int *qb, int *sb)
{
    *qb = fmt == FMT_Q8 ? 32 : 16;
    *sb = fmt == FMT_Q4M ? 4 : 2;
}

/* Blocks of the grid: one a SM, or fewer with LODE_CUDA_LAYERS_BLOCKS=n. */
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
    int qb, sb;
    unit_bytes(c->fmt, &qb, &sb);
    if (!lane_units_fit(c->dim / 32, qb, sb) || !lane_units_fit(c->ff / 32, qb, sb) ||
        !lane_units_fit(c->n_head * c->head_dim / 32, qb, sb))
        return 0;
    const int nb = grid_blocks();
    if (nb <= 0) return 0;
    int racc_n;
    const size_t rest = smem_rest(c, nb, &racc_n);
    const int ns = ring_slots(rest);
    if (!ns) return 0;
    const size_t bytes = smem_bytes(ns, rest);
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

static lode_status trace_report(const krn_cuda_layers_cfg *c, int nb, int ns, cudaStream_t st)
{
    const int nev = STAGES * c->n_layer;
    const size_t n = (size_t)(2 * (nev + 1) + 1) * nb;
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
    /* event i (0: the start) is left before stage i % STAGES; layer 0 has no barrier before
     * its stage A, so events run A(l=0) as 0, B as 1, ... */
    double stage[STAGES] = {0}, spread[STAGES] = {0}, bar = 0;
    for (int i = 0; i < nev; i++) {
        unsigned long long l0 = 0, a1 = 0, a0 = ~0ull;
        for (int b = 0; b < nb; b++) {
            l0 = LODE_MAX(l0, lea(i, b));
            a1 = LODE_MAX(a1, arr(i + 1, b));
            a0 = LODE_MIN(a0, arr(i + 1, b));
        }
        stage[i % STAGES] += (double)(a1 - l0);
        spread[i % STAGES] += (double)(a1 - a0);
        if (i + 1 < nev) {
            unsigned long long l1 = 0;
            for (int b = 0; b < nb; b++) l1 = LODE_MAX(l1, lea(i + 1, b));
            bar += (double)(l1 - a1);
        }
    }
    const double L = c->n_layer, tot = (double)(arr(nev, 0) - lea(0, 0));
    double wt = 0;
    for (int b = 0; b < nb; b++) wt += (double)h[(size_t)2 * (nev + 1) * nb + b];
    fprintf(stderr, "layers trace: consumers waited for weights %.2f us a layer (block mean)\n",
            wt / nb / L / 1e3);
    fprintf(stderr,
            "layers trace (%d blocks, %d ring slots of %d bytes, us a layer): A norm+qkv+rope "
            "%.2f, B attention %.2f, C o %.2f, D norm+gate/up %.2f, E down %.2f (each: the "
            "slowest block's arrival after the last block left the barrier before; arrivals "
            "spread A %.2f B %.2f C %.2f D %.2f E %.2f); barrier (last arrival to last leave) "
            "%.2f us each; kernel %.1f us\n",
            nb, ns, SLOT, stage[0] / L / 1e3, stage[1] / L / 1e3, stage[2] / L / 1e3,
            stage[3] / L / 1e3, stage[4] / L / 1e3, spread[0] / L / 1e3, spread[1] / L / 1e3,
            spread[2] / L / 1e3, spread[3] / L / 1e3, spread[4] / L / 1e3, bar / (nev - 1) / 1e3,
            tot / 1e3);
    free(h);
    return LODE_OK;
}

extern "C" lode_status krn_cuda_layers_decode(const krn_cuda_layers_cfg *c, void *stream)
{
    kern_t k = pick(c->fmt, c->head_dim);
    const int nb = grid_blocks();
    if (!k || nb <= 0 || !c->layers || !c->x || !c->q || !c->h || !c->bar || !c->att_acc ||
        !c->att_ml || c->att_splits < 1)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "layers_decode: bad arguments");
    int racc_n;
    const size_t rest = smem_rest(c, nb, &racc_n);
    const int ns = ring_slots(rest);
    if (!ns) return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "layers_decode: no room for the ring");
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)nb);
    cfg.blockDim = dim3(T);
    cfg.dynamicSmemBytes = smem_bytes(ns, rest);
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
            cfg.stream, (size_t)(2 * (STAGES * c->n_layer + 1) + 1) * nb * sizeof *tbuf, &tbuf);
        if (tst) return tst;
    }
    const bool trace = tbuf != nullptr;
    if (trace) kc.trace = tbuf;
    CU_TRY(cudaLaunchKernelEx(&cfg, k, kc, ns, racc_n));
    CU_LAUNCHED("layers_decode");
    if (trace) return trace_report(&kc, nb, ns, cfg.stream);
    return LODE_OK;
}
