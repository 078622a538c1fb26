/*
 * attn_o.cu: batch-1 decode attention and the o projection in one launch, for short contexts.
 *
 * In the five-kernel layer (gemv.cu, attention.cu) the attention is a kernel of its own and
 * the o projection recombines its splits from L2 in every block: on llama3-8b that pair costs
 * 16-19 us a layer for under 10 us of bytes, and on smollm2-135m 9 of the layer's 19.5 us
 * (bench/RESULTS.md). Here one kernel of clusters does both. A cluster has one block per KV
 * head (512 threads, one block a SM); a block
 *
 *   1. reads the sequence length and the block table, requests the cached keys and values of
 *      its KV head, every position but the newest, into shared memory (cp.async), then its
 *      first o weights into registers, all before it waits for the QKV projection
 *      (programmatic launch: only the newest position and q come from that kernel);
 *   2. after the wait, reads q of the KV head's query heads and the newest key and value, and
 *      attends over the whole sequence from shared memory on tensor cores (S = K q^T and
 *      O = P V with mma.m16n8k16, q and P as f16 pairs hi + lo, so the products keep about
 *      22 bits; softmax in f32);
 *   3. stores its heads' outputs into the shared memory of every block of its cluster
 *      (distributed shared memory), so after one cluster barrier each block holds the whole
 *      attention output, and
 *   4. multiplies its rows of o by it and adds them to the residual. A block's rows come in
 *      pairs cut into rounds (tasks) that its warps take in turn; each task's sums go to
 *      shared memory and are added in a fixed order, so the result does not depend on timing
 *      (no atomics).
 *
 * Every cluster computes the attention of every head, once a KV head: the attention is
 * repeated by the number of clusters (15 on llama3-8b on an H200), which costs L2 reads of the
 * cache (1 MB a cluster at 256 tokens), not DRAM bytes. The grid is never more clusters than
 * are resident at once. The cache of a KV head must fit a block's shared memory, so the engine
 * takes this path while the sequence has at most krn_cuda_attn_o_max_len tokens and the split
 * kernels beyond.
 *
 * Quantized weights meet x as the GEMV has it: quantized to 8 bits per 32 values, dot products
 * with __dp4a, the scales applied per unit.
 */
#include "kernels/cuda/unit.cuh"

#include <cooperative_groups.h>
#include <stdlib.h>
#include <string.h>

namespace cg = cooperative_groups;

namespace
{

constexpr int T = 512; /* threads a block */
constexpr int NW = T / 32;
constexpr int R = 2;        /* rows of o a warp */
constexpr int RPB = NW * R; /* rows of o a block */
constexpr int MAXG = 8;     /* query heads a KV head */
constexpr int MAXCL = 8;    /* KV heads (blocks of a cluster; 8 is the portable size) */
constexpr int XMAX = 8192;  /* attention output (n_head * head_dim) a block holds, floats */

/* Longest sequence whose keys and values fit: 256 tokens of 128 dims, 512 of 64. */
template <int HD> constexpr int lmax()
{
    return HD == 128 ? 256 : 512;
}
/* Rows of keys, values and q in shared memory are padded to HD + 8 halves and rows of P to
 * LM + 8, so the fragment loads of a warp (8 rows, 4 pairs) fall in distinct banks. */
template <int HD> constexpr int kstride()
{
    return HD + 8;
}
template <int HD> constexpr int pstride()
{
    return lmax<HD>() + 8;
}

/* Shared memory: keys and values [LM][KS] f16, x [K] f32, q hi and lo [MAXG][KS] f16, softmax
 * scratch [MAXG][LM] f32 (each warp's maximum and sum of a head), P hi and lo [MAXG][PS] f16, P V
 * partials [NW / (HD / 16)][MAXG][HD] f32, the softmax sums [MAXG], the o tasks' sums [parts], and
 * for quantized weights x as int8 [K / 32][8 words] with the sums of each unit's halves [K / 32][2]
 * and its scales [K / 32]. */
template <int HD> constexpr size_t smem_bytes(int K, int parts)
{
    return (size_t)2 * lmax<HD>() * kstride<HD>() * 2 + (size_t)K * 4 +
           (size_t)2 * MAXG * kstride<HD>() * 2 + (size_t)MAXG * lmax<HD>() * 4 +
           (size_t)2 * MAXG * pstride<HD>() * 2 + (size_t)(NW / (HD / 16)) * MAXG * HD * 4 +
           MAXG * 4 + (size_t)parts * 4 + (size_t)K / 32 * 11 * 4;
}

/* Units of a row a lane holds in one round: fewer for the layouts whose units take more
 * registers. */
template <int FMT> constexpr int unr()
{
    return sizeof(typename Unit<FMT>::Raw) > 24 ? 2 : 4;
}

struct AoP {
    krn_cuda_attn_cfg c;
    const float *q;
    const int32_t *seq_len;
    krn_cuda_mat w;
    float *y;
    int64_t nu; /* units a row of o */
    int parts;  /* floats of the o tasks' sums that shared memory holds */
    unsigned long long *tr;
};

/* Event 2 of the trace build (ktrace) is placed by KT2: 0 after the cluster barrier (x in
 * every block, the default), 1 after the keys, values and q are in, 2 after P V. */
#ifndef KT2
#define KT2 0
#endif

template <int FMT, int HD> __global__ void __launch_bounds__(T, 1) attn_o_kernel(const AoP p)
{
    typedef Unit<FMT> U;
    constexpr int N = U::N, NC = N / 4, LM = lmax<HD>(), KS = kstride<HD>(), PS = pstride<HD>();
    constexpr int CPR = HD / 8; /* 16-byte chunks a cache row */
    constexpr int UNR = unr<FMT>();
    constexpr bool QUANT = IsQuant<FMT>::v;
    extern __shared__ float4 smem4[];
    char *sm = (char *)smem4;
    const krn_cuda_attn_cfg &c = p.c;
    const int H = c.n_head, KV = c.n_kv_head, G = H / KV, K = H * HD;
    __half *Ks = (__half *)sm;
    __half *Vs = Ks + (size_t)LM * KS;
    float *xa = (float *)(Vs + (size_t)LM * KS);
    __half *qh = (__half *)(xa + K), *ql = qh + MAXG * KS;
    float *sc = (float *)(ql + MAXG * KS);
    __half *ph = (__half *)(sc + MAXG * LM), *pl = ph + MAXG * PS;
    float *red = (float *)(pl + MAXG * PS);
    float *lsum = red + (NW / (HD / 16)) * MAXG * HD;
    float *part = lsum + MAXG; /* [pairs of the block][rounds][R] */
    /* sized by the host's bound on the tasks of a block: after the largest share of pairs */
    int *xq = (int *)(part + p.parts);
    float *xqs = (float *)(xq + K / 32 * 8), *xqd = xqs + K / 32 * 2;

    cg::cluster_group cl = cg::this_cluster();
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int kvh = (int)cl.block_rank();
    const int64_t rows = p.w.rows, nu = p.nu;
    ktrace(p.tr, 0);
    /* half of a cluster barrier: every block has started before any writes into another's
     * shared memory (the wait is just before those writes) */
    cl_arrive_relaxed();

    /* Rows of o go to blocks in pairs, pair b + i nb to block b, and a block's pairs are cut
     * into tasks of one round (UNR units a lane of both rows), which its warps take in turn:
     * task k = (pair k / nr, round k % nr) to warp k % NW. So a block's extra pairs add a round
     * to some warps, not a pair. Two tasks of a warp are in flight (ra, rb); each task's sums go
     * to shared memory, added in a fixed order at the end. */
    const int nb = (int)gridDim.x, bi = (int)blockIdx.x;
    const int64_t npair = (rows + R - 1) / R;
    const int nr = (int)((nu + 32 * UNR - 1) / (32 * UNR));              /* rounds a row */
    const int npb = bi < npair ? (int)((npair - 1 - bi) / nb + 1) : 0;   /* this block's pairs */
    const int nt = npb * nr > warp ? (npb * nr - 1 - warp) / NW + 1 : 0; /* this warp's tasks */
    typename U::Raw ra[UNR][R], rb[UNR][R];
    auto load_task = [&](typename U::Raw(&raw)[UNR][R], int i) {
        const int k = warp + i * NW;
        const int64_t pr = bi + (int64_t)(k / nr) * nb, u0 = (int64_t)(k % nr) * 32 * UNR + lane;
#pragma unroll
        for (int j = 0; j < UNR; j++) {
            const int64_t uu = LODE_MIN(u0 + 32 * j, nu - 1);
#pragma unroll
            for (int r = 0; r < R; r++)
                raw[j][r] = U::load(p.w, LODE_MIN(pr * R + r, rows - 1) * nu + uu);
        }
    };

    /* the cached keys and values of every position but the newest: seq_len, the block table
     * and those rows were written before the kernel ahead of this one; the length and the
     * table's entries are read together, then the rows requested */
    __shared__ int32_t bts[LM / KRN_CUDA_KV_BLOCK];
    if (tid < LODE_MIN(LM / KRN_CUDA_KV_BLOCK, c.max_blocks)) bts[tid] = c.block_table[tid];
    const int seq = p.seq_len[0];
    if (seq < 1 || seq > LM) __trap(); /* the engine takes this path only for such lengths */
    __syncthreads();
    const __half *kc = (const __half *)c.k_cache, *vc = (const __half *)c.v_cache;
    {
        const int nold = seq - 1, nk = nold * CPR;
        for (int i = tid; i < 2 * nk; i += T) {
            const bool isv = i >= nk;
            const int j = isv ? i - nk : i, t = j / CPR, ch = j % CPR;
            const int64_t row =
                ((int64_t)bts[t / KRN_CUDA_KV_BLOCK] * KV + kvh) * KRN_CUDA_KV_BLOCK +
                t % KRN_CUDA_KV_BLOCK;
            if (isv)
                cp_async16(Vs + (size_t)t * KS + ch * 8, vc + row * HD + ch * 8);
            else
                cp_async16(Ks + (size_t)t * KS + ch * 8, kc + row * HD + ch * 8);
        }
        cp_async_commit();
    }
    /* then the first o weights, needed after the attention */
    if (nt > 0 && lane < nu) load_task(ra, 0);
    /* 4-bit units leave the registers for a warp's second task too (a block's pairs beyond
     * one a warp) */
    constexpr bool PRE2 = FMT == FMT_Q4 || FMT == FMT_Q4M;
    if (PRE2 && nt > 1 && lane < nu) load_task(rb, 1);
    pdl_wait();
    ktrace(p.tr, 1);
    pdl_trigger();

    /* q of this KV head's query heads, scaled, as f16 pairs hi + lo (q = hi + lo to about
     * 2^-22), and the newest key and value; value rows past the sequence up to the next 16
     * are zeroed, since P V reads whole 16-token steps */
    for (int i = tid; i < G * HD; i += T) {
        const float v = __ldcg(p.q + (int64_t)kvh * G * HD + i) * c.scale;
        const __half hi = __float2half_rn(v);
        qh[(i / HD) * KS + i % HD] = hi;
        ql[(i / HD) * KS + i % HD] = __float2half_rn(v - __half2float(hi));
    }
    if (tid < 2 * CPR) {
        const bool isv = tid >= CPR;
        const int ch = tid % CPR, t = seq - 1;
        const int64_t row = cache_row(c, c.block_table, t, kvh); /* its table entry may be new */
        const uint4 v = __ldcg((const uint4 *)((isv ? vc : kc) + row * HD + ch * 8));
        *(uint4 *)((isv ? Vs : Ks) + (size_t)t * KS + ch * 8) = v;
    }
    const int nks = (seq + 15) / 16; /* 16-token steps */
    for (int i = seq * CPR + tid; i < nks * 16 * CPR; i += T)
        *(uint4 *)(Vs + (size_t)(i / CPR) * KS + (i % CPR) * 8) = make_uint4(0, 0, 0, 0);
    cp_async_wait<0>();
    __syncthreads();
    if (KT2 == 1) ktrace(p.tr, 2);

    /* scores on tensor cores: S (16 tokens x 8 heads) = K (16 x HD) q^T, a warp a 16-token
     * step (MTW of them), kept in registers; fragments as in mma.m16n8k16 (row gq = lane / 4,
     * pair tq = lane % 4) */
    const int gq = lane >> 2, tq = lane & 3;
    constexpr int MTW = LM / 16 / NW;
    float s[MTW][4];
#pragma unroll
    for (int i = 0; i < MTW; i++) {
        const int mt = warp + i * NW;
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
        if (mt < nks) {
            const __half *k0 = Ks + (size_t)(mt * 16 + gq) * KS + 2 * tq, *k1 = k0 + 8 * KS;
            const __half *bh = qh + gq * KS + 2 * tq, *bl = ql + gq * KS + 2 * tq;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                const uint32_t a[4] = {ld32(k0 + kk * 16), ld32(k1 + kk * 16),
                                       ld32(k0 + kk * 16 + 8), ld32(k1 + kk * 16 + 8)};
                mma16816(s[i], a, ld32(bh + kk * 16), ld32(bh + kk * 16 + 8));
                mma16816(s[i], a, ld32(bl + kk * 16), ld32(bl + kk * 16 + 8));
            }
        }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int t = mt * 16 + gq + (e >> 1) * 8, g = 2 * tq + (e & 1);
            if (t >= seq || g >= G) s[i][e] = -INFINITY;
        }
    }
    /* softmax from the registers: each warp's maximum of a head, then the block's, then P
     * (f16 hi + lo, zero past the sequence) and each warp's sums, added before P V */
    float *wmax = sc, *wsum = sc + NW * MAXG;
    {
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int i = 0; i < MTW; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) mx[e & 1] = fmaxf(mx[e & 1], s[i][e]);
#pragma unroll
        for (int j = 0; j < 2; j++) {
            mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], 4));
            mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], 8));
            mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], 16));
            if (gq == 0) wmax[warp * MAXG + 2 * tq + j] = mx[j];
        }
    }
    __syncthreads();
    {
        float mb[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
        for (int j = 0; j < 2; j++)
            for (int w = 0; w < NW; w++) mb[j] = fmaxf(mb[j], wmax[w * MAXG + 2 * tq + j]);
#pragma unroll
        for (int i = 0; i < MTW; i++) {
            const int mt = warp + i * NW;
            if (mt >= nks) continue;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int t = mt * 16 + gq + (e >> 1) * 8, g = 2 * tq + (e & 1);
                const float p = g < G && t < seq ? __expf(s[i][e] - mb[e & 1]) : 0.f;
                const __half hi = __float2half_rn(p);
                ph[g * PS + t] = hi;
                pl[g * PS + t] = __float2half_rn(p - __half2float(hi));
                l[e & 1] += p;
            }
        }
#pragma unroll
        for (int j = 0; j < 2; j++) {
            l[j] += __shfl_xor_sync(0xffffffffu, l[j], 4);
            l[j] += __shfl_xor_sync(0xffffffffu, l[j], 8);
            l[j] += __shfl_xor_sync(0xffffffffu, l[j], 16);
            if (gq == 0) wsum[warp * MAXG + 2 * tq + j] = l[j];
        }
    }
    __syncthreads();
    if (tid < G) {
        float l = 0.f;
        for (int w = 0; w < NW; w++) l += wsum[w * MAXG + tid];
        lsum[tid] = l; /* read after the barrier that follows P V */
    }
    /* P V on tensor cores: O (16 heads, 8 used, x 16 dims) += P (16 x 16 tokens) V; warp w
     * takes dims 16 (w % NP) .. and every KSPLIT-th token step from w / NP */
    {
        constexpr int NP = HD / 16, KSPLIT = NW / NP;
        const int pr = warp % NP, part = warp / NP;
        float o0[4] = {0.f, 0.f, 0.f, 0.f}, o1[4] = {0.f, 0.f, 0.f, 0.f};
        for (int ks = part; ks < nks; ks += KSPLIT) {
            const __half *ah = ph + gq * PS + ks * 16 + 2 * tq,
                         *al = pl + gq * PS + ks * 16 + 2 * tq;
            const uint32_t a_hi[4] = {ld32(ah), 0u, ld32(ah + 8), 0u};
            const uint32_t a_lo[4] = {ld32(al), 0u, ld32(al + 8), 0u};
            uint32_t b[4];
            ldsm_x4_trans(b, Vs + (size_t)(ks * 16 + (lane & 15)) * KS + pr * 16 + (lane >> 4) * 8);
            mma16816(o0, a_hi, b[0], b[1]);
            mma16816(o0, a_lo, b[0], b[1]);
            mma16816(o1, a_hi, b[2], b[3]);
            mma16816(o1, a_lo, b[2], b[3]);
        }
        if (gq < G) {
            float *rp = red + (part * MAXG + gq) * HD + pr * 16 + 2 * tq;
            *(float2 *)rp = make_float2(o0[0], o0[1]);
            *(float2 *)(rp + 8) = make_float2(o1[0], o1[1]);
        }
    }
    __syncthreads();
    if (KT2 == 2) ktrace(p.tr, 2);
    /* this KV head's outputs, normalized, into every block of the cluster (x swizzled as the
     * dot products read it: a lane's unit at a time) */
    cl_wait();
    for (int o = tid; o < G * HD / 4; o += T) {
        constexpr int KSPLIT = NW / (HD / 16);
        const int g = 4 * o / HD, d = 4 * o % HD;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int w = 0; w < KSPLIT; w++) {
            const float4 f = *(const float4 *)(red + (w * MAXG + g) * HD + d);
            v.x += f.x, v.y += f.y, v.z += f.z, v.w += f.w;
        }
        const float inv = 1.f / lsum[g];
        v.x *= inv, v.y *= inv, v.z *= inv, v.w *= inv;
        const int k = (kvh * G + g) * HD + d, u = k / N, ch = (k % N) / 4;
        const int at = u * NC + (ch ^ swz<NC>(u));
        for (int b = 0; b < KV; b++) ((float4 *)cl.map_shared_rank(xa, b))[at] = v;
    }
    cl_arrive();
    cl_wait();
    if (KT2 == 0) ktrace(p.tr, 2);
    if constexpr (QUANT) {
        /* x as int8 with one scale per 32 (8 threads a unit), and the sums of each half, as
         * the GEMV stages it: the dot products are __dp4a */
        for (int f0 = 0; f0 < K / 4; f0 += T) { /* K / 4 is a multiple of 8: whole units */
            const int f = f0 + tid, u = f / 8, cc = f % 8;
            const bool act = f < K / 4; /* the shuffles below take the whole warp */
            const float4 v = act ? ((const float4 *)xa)[u * 8 + (cc ^ swz<8>(u))]
                                 : make_float4(0.f, 0.f, 0.f, 0.f);
            const Q8Lane q = q8_lane(v);
            if (!act) continue;
            const int h = (cc >> 2) ^ ((u >> 2) & 1);
            xq[u * 8 + h * 4 + (cc & 3)] = q.word;
            if ((cc & 3) == 0) xqs[u * 2 + (cc >> 2)] = (float)q.half_sum;
            if (cc == 0) xqd[u] = q.scale;
        }
        __syncthreads();
    }

    /* o: the warp's tasks in order, the next requested before this one is used */
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.f;
    const float4 *x4 = (const float4 *)xa;
    auto use_task = [&](typename U::Raw(&raw)[UNR][R], int i) {
        const int k = warp + i * NW;
        const int64_t u0 = (int64_t)(k % nr) * 32 * UNR + lane;
#pragma unroll
        for (int h = 0; h < UNR; h++) {
            const int64_t uu = u0 + 32 * h;
            if (uu >= nu) break;
            if constexpr (QUANT) {
                const int hsw = ((int)uu >> 2) & 1;
                const int *xw = xq + uu * 8;
                const int4 x0 = *(const int4 *)(xw + 4 * hsw),
                           x1 = *(const int4 *)(xw + 4 * (hsw ^ 1));
                const float2 sx = *(const float2 *)(xqs + uu * 2);
                const float dx = xqd[uu];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    int lo[4], hi[4];
                    U::decode_i8(raw[h][r], lo, hi);
                    const float2 s2 = U::scales(raw[h][r]);
                    int dl = __dp4a(lo[0], x0.x, 0);
                    dl = __dp4a(lo[1], x0.y, dl);
                    dl = __dp4a(lo[2], x0.z, dl);
                    dl = __dp4a(lo[3], x0.w, dl);
                    int dh = __dp4a(hi[0], x1.x, 0);
                    dh = __dp4a(hi[1], x1.y, dh);
                    dh = __dp4a(hi[2], x1.z, dh);
                    dh = __dp4a(hi[3], x1.w, dh);
                    float a =
                        s2.x * ((float)dl - U::OFF * sx.x) + s2.y * ((float)dh - U::OFF * sx.y);
                    if constexpr (FMT == FMT_Q4M) a += U::moff(raw[h][r]) * (sx.x + sx.y);
                    acc[r] += dx * a;
                }
            } else {
                float xv[N];
#pragma unroll
                for (int cc = 0; cc < NC; cc++) {
                    const float4 f = x4[uu * NC + (cc ^ swz<NC>((int)uu))];
                    xv[4 * cc] = f.x, xv[4 * cc + 1] = f.y, xv[4 * cc + 2] = f.z,
                           xv[4 * cc + 3] = f.w;
                }
#pragma unroll
                for (int r = 0; r < R; r++) {
                    float v[N];
                    U::decode(raw[h][r], v);
                    float a = 0.f;
#pragma unroll
                    for (int i = 0; i < N; i++) a += v[i] * xv[i];
                    acc[r] += a;
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float v = warp_sum(acc[r]);
            acc[r] = 0.f;
            if (lane == 0) part[k * R + r] = v;
        }
    };
    for (int k = 0; k < nt; k += 2) {
        if (k + 1 < nt && lane < nu && !(PRE2 && k == 0)) load_task(rb, k + 1);
        use_task(ra, k);
        if (k + 2 < nt && lane < nu) load_task(ra, k + 2);
        if (k + 1 < nt) use_task(rb, k + 1);
    }
    __syncthreads();
    for (int i = tid; i < npb * R; i += T) {
        const int il = i / R, r = i % R;
        const int64_t row = (bi + (int64_t)il * nb) * R + r;
        float v = 0.f;
        for (int j = 0; j < nr; j++) v += part[(il * nr + j) * R + r];
        if (row < rows) p.y[row] += v;
    }
    ktrace(p.tr, 3);
}

template <int FMT, int HD>
lode_status launch(const AoP &p0, int kv, unsigned blocks, cudaStream_t st, bool check_only)
{
    /* the o tasks' sums: at most every pair of one cluster's share, by rounds */
    const int64_t npair = (p0.w.rows + R - 1) / R, nr = cdiv(p0.nu, 32 * unr<FMT>());
    const int64_t parts = (cdiv(npair, kv) * nr * R + 3) / 4 * 4; /* x's int8 after it: 16 B */
    const size_t smem = smem_bytes<HD>((int)p0.c.n_head * HD, (int)LODE_MIN(parts, 1 << 20));
    AoP p = p0;
    p.parts = (int)LODE_MIN(parts, 1 << 20);
    if (smem > 227 * 1024) return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "attn_o: shared memory");
    auto k = attn_o_kernel<FMT, HD>;
    CU_TRY(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(T);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = (unsigned)kv;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = krn_cuda_pdl_enabled() ? 2 : 1;
    if (check_only) {
        int n = 0;
        cfg.numAttrs = 1;
        CU_TRY(cudaOccupancyMaxActiveClusters(&n, k, &cfg));
        return n >= 1 ? LODE_OK
                      : krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "attn_o: no cluster fits");
    }
    /* no more clusters than are resident at once: a second wave would double the kernel */
    {
        static thread_local int cap = 0, cap_kv = 0;
        static thread_local size_t cap_smem = 0;
        static thread_local const void *cap_k = nullptr;
        if (cap_k != (const void *)k || cap_smem != smem || cap_kv != kv) {
            cudaLaunchConfig_t oc = cfg;
            oc.numAttrs = 1;
            CU_TRY(cudaOccupancyMaxActiveClusters(&cap, k, &oc));
            cap_k = (const void *)k, cap_smem = smem, cap_kv = kv;
        }
        if (cap < 1) return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "attn_o: no cluster fits");
        blocks = LODE_MIN(blocks, (unsigned)cap * (unsigned)kv);
        if (krn_cuda_mat_bytes(&p0.w) >= ((size_t)1 << 20)) {
            /* every resident cluster (as long as each block has a pair of rows): with fewer,
             * the next kernel's blocks start early on the idle SMs and late on these, and a
             * GEMV of a large o projection's layer (llama3.2-1b) finishes unevenly; the small
             * layers of smollm2-135m lose more to the repeated attention than they gain */
            const unsigned all = (unsigned)cap * (unsigned)kv;
            blocks = (unsigned)LODE_MIN((int64_t)all, npair / kv * kv);
            if (blocks < (unsigned)kv) blocks = (unsigned)kv;
        }
        cfg.gridDim = dim3(blocks);
    }
    p.tr = krn_ktrace_slot("attn-o", blocks, krn_cuda_mat_bytes(&p0.w), st);
    CU_TRY(cudaLaunchKernelEx(&cfg, k, p));
    CU_LAUNCHED("attn_o");
    return LODE_OK;
}

template <int HD>
lode_status launch_fmt(int fmt, const AoP &p, int kv, unsigned blocks, cudaStream_t st, bool check)
{
    switch (fmt) {
    case FMT_F16:
        return launch<FMT_F16, HD>(p, kv, blocks, st, check);
    case FMT_BF16:
        return launch<FMT_BF16, HD>(p, kv, blocks, st, check);
    case FMT_Q4:
        return launch<FMT_Q4, HD>(p, kv, blocks, st, check);
    case FMT_Q4M:
        return launch<FMT_Q4M, HD>(p, kv, blocks, st, check);
    case FMT_Q8:
        return launch<FMT_Q8, HD>(p, kv, blocks, st, check);
    case FMT_Q6:
        return launch<FMT_Q6, HD>(p, kv, blocks, st, check);
    default:
        return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "attn_o: weight layout");
    }
}

lode_status run(const krn_cuda_attn_cfg *c, const float *q, const int32_t *seq_len,
                const krn_cuda_mat *o, float *y, void *stream, bool check)
{
    const int kv = c->n_kv_head, hd = c->head_dim;
    if (kv < 1 || kv > MAXCL || c->n_head % kv || c->n_head / kv > MAXG ||
        (hd != 64 && hd != 128) || (int64_t)c->n_head * hd > XMAX || !o || !o->fmt ||
        o->cols != (int64_t)c->n_head * hd || o->rows < 1 || o->cols % unit_elems(o->fmt))
        return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "attn_o: shape");
    AoP p;
    memset(&p, 0, sizeof p);
    p.c = *c;
    p.q = q;
    p.seq_len = seq_len;
    p.w = *o;
    p.y = y;
    p.nu = o->cols / unit_elems(o->fmt);
    /* blocks of RPB rows, a whole number of clusters */
    unsigned blocks = cdiv(o->rows, RPB);
    blocks = cdiv(blocks, kv) * (unsigned)kv;
    cudaStream_t st = STREAM(stream);
    if (hd == 128) return launch_fmt<128>(o->fmt, p, kv, blocks, st, check);
    return launch_fmt<64>(o->fmt, p, kv, blocks, st, check);
}

} // namespace

extern "C" int krn_cuda_attn_o_max_len(int head_dim)
{
    return head_dim == 128 ? lmax<128>() : head_dim == 64 ? lmax<64>() : 0;
}

extern "C" int krn_cuda_attn_o_supported(const krn_cuda_attn_cfg *c, const krn_cuda_mat *o)
{
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        major < 9) {
        cudaGetLastError();
        return 0;
    }
    if (run(c, NULL, NULL, o, NULL, NULL, true) != LODE_OK) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

extern "C" lode_status krn_cuda_attn_o(const krn_cuda_attn_cfg *c, const float *q,
                                       const int32_t *seq_len, const krn_cuda_mat *o, float *y,
                                       void *stream)
{
    if (!c || !q || !seq_len || !o || !y || !c->k_cache || !c->v_cache || !c->block_table)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "attn_o: bad arguments");
    return run(c, q, seq_len, o, y, stream, false);
}
