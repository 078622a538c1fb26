/*
 * attention.cu: causal grouped-query attention over lode's paged f16 KV cache.
 *
 * Decode (one query token a sequence) is split along the sequence (flash-decoding): a block
 * per (sequence, KV head, split) scores its tokens for all the query heads that share the
 * KV head, so each key and value is read once; a sequence is cut into at most n_split
 * pieces of a multiple of 32 tokens (krn_attn_split_len), so short sequences still spread
 * over many blocks. The splits' partial sums are combined by the next GEMV's input stage
 * (KRN_X_ATTN) or by krn_cuda_attn_combine.
 *
 * Prefill is FlashAttention-2 style on tensor cores: a block of 4 warps takes 64 queries of
 * one head (the longest query tiles first), walks the 64-key tiles up to the causal limit with
 * K and V staged in shared memory in two stages (the next tile copied while this one is used),
 * computes S = Q K^T and O += P V with mma.sync m16n8k16 (f16 in, f32 accumulate) and keeps the
 * softmax online in registers. Keys are found through the block table, so prefill of a later chunk
 * attends to everything already cached.
 */
#include "kernels/cuda/common.cuh"

#include <type_traits>

#define MAXG 8 /* query heads per KV head */

/* ---- decode ------------------------------------------------------------------------------- */

/* Block (split sp, KV head, sequence b) of 128 threads walks its piece of the sequence in
 * tiles of 32 tokens: 4 threads score a token (a quarter of the head dims each, for the G
 * query heads of the KV head), warp g keeps the online softmax of head g, and warp w
 * accumulates P V over tokens w, w+4, ... of the tile. */
template <int HD>
__global__ void __launch_bounds__(128)
    attn_decode_kernel(krn_cuda_attn_cfg c, const float *q, const int32_t *seq_len, int n_split,
                       float *acc, float *ml, unsigned long long *tr)
{
    ktrace(tr, 0);
    constexpr int TT = 32, QD = HD / 4, DPL = HD / 32;
    __shared__ float qs[MAXG][HD];
    __shared__ float sc[MAXG][TT];
    __shared__ float mrun[MAXG], lrun[MAXG], alpha[MAXG];
    __shared__ float part[4 * MAXG * HD];
    /* kv_early: the sequence lengths, the block table and every key and value but the newest
     * were written before the preceding kernel, so the first tile is requested before waiting
     * for it; the newest position and q come after */
    bool waited = !c.kv_early;
    if (waited) {
        pdl_wait();
        ktrace(tr, 1);
        pdl_trigger();
    }
    constexpr int TPW = TT / 4; /* tokens of a tile whose V rows a warp accumulates */
    const int b = blockIdx.z, kvh = blockIdx.y, sp = blockIdx.x, tid = threadIdx.x;
    const int lane = tid & 31, wp = tid >> 5;
    const int G = c.n_head / c.n_kv_head, H = c.n_head;
    const int seq = seq_len[b];
    const int len = krn_attn_split_len(seq, n_split);
    const int t0 = sp * len, t1 = min(seq, t0 + len);
    if (t0 >= seq) {
        ktrace(tr, 3);
        return;
    }
    const int32_t *bt = c.block_table + (int64_t)b * c.max_blocks;
    const __half *kc = (const __half *)c.k_cache, *vc = (const __half *)c.v_cache;

    auto stage_q = [&]() {
        for (int i = tid; i < G * HD; i += 128) {
            int g = i / HD, d = i % HD;
            qs[g][d] = q[((int64_t)b * H + kvh * G + g) * HD + d] * c.scale;
        }
    };
    if (waited) stage_q();
    if (tid < MAXG) mrun[tid] = -INFINITY, lrun[tid] = 0.f;
    float a[MAXG][DPL];
#pragma unroll
    for (int g = 0; g < MAXG; g++)
#pragma unroll
        for (int i = 0; i < DPL; i++) a[g][i] = 0.f;

    for (int tt = t0; tt < t1; tt += TT) {
        const int n = min(TT, t1 - tt);
        /* this thread's K piece and its warp's V rows of the tile are all requested before
         * any is used: one round trip to memory a tile */
        const int t = tid >> 2, qq = tid & 3, newest = seq - 1;
        uint4 w[QD / 8];
        typedef typename std::conditional<DPL == 4, uint2, uint32_t>::type VRaw;
        VRaw vraw[TPW];
        auto load_k = [&]() {
            const uint4 *kp = (const uint4 *)(kc + cache_row(c, bt, tt + t, kvh) * HD + qq * QD);
#pragma unroll
            for (int d8 = 0; d8 < QD / 8; d8++) w[d8] = kp[d8];
        };
        auto load_v = [&](int i) {
            vraw[i] =
                *(const VRaw *)(vc + cache_row(c, bt, tt + wp + 4 * i, kvh) * HD + lane * DPL);
        };
        if (t < n && (waited || tt + t != newest)) load_k();
#pragma unroll
        for (int i = 0; i < TPW; i++) {
            const int tv = wp + 4 * i;
            if (tv < n && (waited || tt + tv != newest)) load_v(i);
        }
        if (!waited) {
            pdl_wait();
            ktrace(tr, 1);
            pdl_trigger();
            waited = true;
            if (t < n && tt + t == newest) load_k();
#pragma unroll
            for (int i = 0; i < TPW; i++)
                if (wp + 4 * i < n && tt + wp + 4 * i == newest) load_v(i);
            stage_q();
        }
        __syncthreads(); /* previous tile done with sc; qs and mrun visible */
        /* scores: token tid/4, dims (tid%4)*QD .. */
        {
            float s[MAXG];
#pragma unroll
            for (int g = 0; g < MAXG; g++) s[g] = 0.f;
            if (t < n) {
#pragma unroll
                for (int d8 = 0; d8 < QD / 8; d8++) {
                    const __half2 *h2 = (const __half2 *)&w[d8];
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float2 f = __half22float2(h2[e]);
                        const int d = qq * QD + 8 * d8 + 2 * e;
#pragma unroll
                        for (int g = 0; g < MAXG; g++) {
                            if (g >= G) break;
                            s[g] += qs[g][d] * f.x + qs[g][d + 1] * f.y;
                        }
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < MAXG; g++) {
                if (g >= G) break;
                float v = s[g];
                v += __shfl_xor_sync(0xffffffffu, v, 1);
                v += __shfl_xor_sync(0xffffffffu, v, 2);
                if (qq == 0) sc[g][t] = t < n ? v : -INFINITY;
            }
        }
        __syncthreads();
        /* online softmax: warp g for head g */
        for (int g = wp; g < G; g += 4) {
            float v = sc[g][lane];
            float mx = warp_max(v);
            float mnew = fmaxf(mrun[g], mx);
            float p = lane < n ? __expf(v - mnew) : 0.f;
            float l = warp_sum(p);
            sc[g][lane] = p;
            if (lane == 0) {
                float al = __expf(mrun[g] - mnew);
                alpha[g] = al;
                lrun[g] = lrun[g] * al + l;
                mrun[g] = mnew;
            }
        }
        __syncthreads();
        /* P V */
#pragma unroll
        for (int g = 0; g < MAXG; g++) {
            if (g >= G) break;
            float al = alpha[g];
#pragma unroll
            for (int i = 0; i < DPL; i++) a[g][i] *= al;
        }
#pragma unroll
        for (int i = 0; i < TPW; i++) {
            const int t = wp + 4 * i;
            if (t >= n) break;
            float v[DPL];
            if constexpr (DPL == 4) {
                uint2 w2 = vraw[i];
                float2 v01 = __half22float2(*(const __half2 *)&w2.x);
                float2 v23 = __half22float2(*(const __half2 *)&w2.y);
                v[0] = v01.x, v[1] = v01.y, v[2] = v23.x, v[3] = v23.y;
            } else {
                uint32_t w1 = vraw[i];
                float2 v01 = __half22float2(*(const __half2 *)&w1);
                v[0] = v01.x, v[1] = v01.y;
            }
#pragma unroll
            for (int g = 0; g < MAXG; g++) {
                if (g >= G) break;
                float pg = sc[g][t];
#pragma unroll
                for (int i = 0; i < DPL; i++) a[g][i] += pg * v[i];
            }
        }
    }
    ktrace(tr, 2);
#pragma unroll
    for (int g = 0; g < MAXG; g++) {
        if (g >= G) break; /* a[] stays in registers: compile-time indices only */
#pragma unroll
        for (int i = 0; i < DPL; i++) part[(wp * G + g) * HD + lane * DPL + i] = a[g][i];
    }
    __syncthreads();
    for (int o = tid; o < G * HD; o += 128) {
        int g = o / HD, d = o % HD;
        float v = part[(0 * G + g) * HD + d] + part[(1 * G + g) * HD + d] +
                  part[(2 * G + g) * HD + d] + part[(3 * G + g) * HD + d];
        int64_t i = ((int64_t)b * H + kvh * G + g) * n_split + sp;
        acc[i * HD + d] = v;
    }
    if (tid < G) {
        int64_t i = ((int64_t)b * H + kvh * G + tid) * n_split + sp;
        ml[2 * i] = mrun[tid];
        ml[2 * i + 1] = lrun[tid];
    }
    ktrace(tr, 3);
}

extern "C" lode_status krn_cuda_attn_decode(const krn_cuda_attn_cfg *c, const float *q, int batch,
                                            const int32_t *seq_len, int n_split, float *acc,
                                            float *ml, void *stream)
{
    if (c->n_kv_head <= 0 || c->n_head % c->n_kv_head || c->n_head / c->n_kv_head > MAXG ||
        batch <= 0 || n_split <= 0)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "attn_decode: bad heads or batch");
    dim3 grid((unsigned)n_split, (unsigned)c->n_kv_head, (unsigned)batch);
    cudaStream_t st = STREAM(stream);
    unsigned long long *tr = krn_ktrace_slot("attn", grid.x * grid.y * grid.z, 0, st);
    if (c->head_dim == 64)
        CU_TRY(launch_k(attn_decode_kernel<64>, grid, dim3(128), 0, st, *c, q, seq_len, n_split,
                        acc, ml, tr));
    else if (c->head_dim == 128)
        CU_TRY(launch_k(attn_decode_kernel<128>, grid, dim3(128), 0, st, *c, q, seq_len, n_split,
                        acc, ml, tr));
    else
        return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "attn_decode: head_dim must be 64 or 128");
    CU_LAUNCHED("attn_decode");
    return LODE_OK;
}

__global__ void attn_combine_kernel(krn_cuda_attn_parts p, float *out)
{
    int bh = blockIdx.x, b = bh / p.n_head;
    int ns = (int)cdiv(p.seq_len[b], krn_attn_split_len(p.seq_len[b], p.n_split));
    const float *ml = p.ml + (int64_t)bh * p.n_split * 2;
    float mx = -INFINITY, den = 0.f;
    for (int s = 0; s < ns; s++) mx = fmaxf(mx, ml[2 * s]);
    for (int s = 0; s < ns; s++) den += __expf(ml[2 * s] - mx) * ml[2 * s + 1];
    for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        float v = 0.f;
        for (int s = 0; s < ns; s++)
            v += __expf(ml[2 * s] - mx) * p.acc[((int64_t)bh * p.n_split + s) * p.head_dim + d];
        out[(int64_t)bh * p.head_dim + d] = den > 0.f ? v / den : 0.f;
    }
}

extern "C" lode_status krn_cuda_attn_combine(const krn_cuda_attn_parts *p, int batch, float *out,
                                             void *stream)
{
    attn_combine_kernel<<<(unsigned)(batch * p->n_head), 128, 0, STREAM(stream)>>>(*p, out);
    CU_LAUNCHED("attn_combine");
    return LODE_OK;
}

/* ---- prefill ------------------------------------------------------------------------------ */

static __device__ __forceinline__ uint32_t pack_h2(float lo, float hi)
{
    __half2 h = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&h;
}

/* One cp.async group, by NT threads (tid of them): keys and values kt BK .. kt BK + BK - 1 of
 * KV head kvh, found through the block table bt, into K and V tiles of BK rows of KP halves;
 * positions from len on are zero-filled. */
template <int HD, int BK, int KP, int NT>
static __device__ __forceinline__ void kv_tile_async(const krn_cuda_attn_cfg &c, const int32_t *bt,
                                                     int kvh, int64_t len, int kt, __half (*K)[KP],
                                                     __half (*V)[KP], int tid)
{
    const __half *kc = (const __half *)c.k_cache, *vc = (const __half *)c.v_cache;
#pragma unroll
    for (int i = tid; i < BK * HD / 8; i += NT) {
        const int key = i / (HD / 8), c8 = (i % (HD / 8)) * 8;
        const int64_t j = (int64_t)kt * BK + key;
        const __half *kp = kc, *vp = vc;
        int nb = 0;
        if (j < len) {
            const int64_t row = cache_row(c, bt, j, kvh);
            kp = kc + row * HD + c8;
            vp = vc + row * HD + c8;
            nb = 16;
        }
        cp_async16(&K[key][c8], kp, nb);
        cp_async16(&V[key][c8], vp, nb);
    }
    cp_async_commit();
}

/* Shared memory of attn_prefill_kernel<HD>: two stages of a 64-key K and V tile. */
template <int HD> static constexpr size_t prefill_smem()
{
    return (size_t)2 * 2 * 64 * (HD + 8) * sizeof(__half);
}

template <int HD, bool OUT_F16>
__global__ void __launch_bounds__(128)
    attn_prefill_kernel(krn_cuda_attn_cfg c, const __half *q, int64_t n, int64_t pos0, void *out,
                        const int32_t *varlen)
{
    constexpr int BQ = 64, BK = 64, KP = HD + 8;
    if (varlen) {
        /* sequence blockIdx.z of a batch: its first query row, length, position, table row */
        const int32_t *v = varlen + 4 * blockIdx.z;
        n = v[1];
        q += (int64_t)v[0] * c.n_head * HD;
        out = (char *)out + (int64_t)v[0] * c.n_head * HD * 2;
        pos0 = v[2];
        c.block_table += (int64_t)v[3] * c.max_blocks;
    }
    /* K and V tiles as stored (key-major rows, padded by 16 bytes so that 8 consecutive rows
     * start in different banks), two stages: the next tile is copied (cp.async) while this one
     * is used; V reaches the P V product through ldmatrix .trans */
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __half(*Ks)[BK][KP] = (__half(*)[BK][KP])smem_raw; /* [stage][key][dim] */
    __half(*Vs)[BK][KP] = (__half(*)[BK][KP])(smem_raw + 2 * BK * KP * sizeof(__half));
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, H = c.n_head, kvh = h / (H / c.n_kv_head);
    /* the last query tiles, which attend to the most keys, first: the short ones fill in */
    const int64_t qt = gridDim.x - 1 - blockIdx.x;
    if (qt * BQ >= n) return;
    const int64_t r0 = qt * BQ + w * 16 + g, r1 = r0 + 8;
    const float sl2 = c.scale * 1.4426950408889634f;

    uint32_t qf[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        const __half *q0 = q + (r0 * H + h) * HD + kk * 16 + 2 * t;
        const __half *q1 = q + (r1 * H + h) * HD + kk * 16 + 2 * t;
        qf[kk][0] = r0 < n ? ld32(q0) : 0u;
        qf[kk][1] = r1 < n ? ld32(q1) : 0u;
        qf[kk][2] = r0 < n ? ld32(q0 + 8) : 0u;
        qf[kk][3] = r1 < n ? ld32(q1 + 8) : 0u;
    }
    float o[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};

    const int64_t kv_len = pos0 + n;
    const int64_t q_last = LODE_MIN(qt * BQ + BQ - 1, n - 1);
    const int64_t kv_end = pos0 + q_last + 1;
    const int ntiles = (int)cdiv(kv_end, BK);

    /* keys past the cache are zero-filled (and masked: they lie after every query) */
    auto load_tile = [&](int kt, int stage) {
        kv_tile_async<HD, BK, KP, 128>(c, c.block_table, kvh, kv_len, kt, Ks[stage], Vs[stage],
                                       tid);
    };
    if (ntiles > 0) load_tile(0, 0);

    for (int kt = 0; kt < ntiles; kt++) {
        const int st = kt & 1;
        if (kt + 1 < ntiles) {
            load_tile(kt + 1, st ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        float s[BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < BK / 8; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                const __half *kp = &Ks[st][nt * 8 + g][kk * 16 + 2 * t];
                mma16816(s[nt], qf[kk], ld32(kp), ld32(kp + 8));
            }
        }
        /* only tiles reaching past the block's first query need the causal mask */
        const bool diag = (int64_t)kt * BK + BK - 1 > pos0 + qt * BQ;
#pragma unroll
        for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int64_t row = e < 2 ? r0 : r1;
                int64_t col = (int64_t)kt * BK + nt * 8 + 2 * t + (e & 1);
                float v = s[nt][e] * sl2;
                s[nt][e] = diag && col > pos0 + row ? -INFINITY : v;
            }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++)
                mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mnew = fmaxf(mrow[i], mx);
            float muse = mnew == -INFINITY ? 0.f : mnew;
            float alpha = exp2f(mrow[i] - muse);
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++) {
                s[nt][2 * i] = exp2f(s[nt][2 * i] - muse);
                s[nt][2 * i + 1] = exp2f(s[nt][2 * i + 1] - muse);
                sum += s[nt][2 * i] + s[nt][2 * i + 1];
            }
            lrow[i] = lrow[i] * alpha + sum;
            mrow[i] = mnew;
#pragma unroll
            for (int d = 0; d < HD / 8; d++) o[d][2 * i] *= alpha, o[d][2 * i + 1] *= alpha;
        }
#pragma unroll
        for (int ks = 0; ks < BK / 16; ks++) {
            uint32_t a[4] = {pack_h2(s[2 * ks][0], s[2 * ks][1]),
                             pack_h2(s[2 * ks][2], s[2 * ks][3]),
                             pack_h2(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                             pack_h2(s[2 * ks + 1][2], s[2 * ks + 1][3])};
            /* lanes 0-15 address keys ks*16 + 0..15 of dims d*8.., lanes 16-31 of dims (d+1)*8..;
             * transposed, the four 8x8 matrices are the B fragments of d and d + 1 */
            const int vrow = ks * 16 + (lane & 15), vcol = (lane >> 4) * 8;
#pragma unroll
            for (int d = 0; d < HD / 8; d += 2) {
                uint32_t b[4];
                ldsm_x4_trans(b, &Vs[st][vrow][d * 8 + vcol]);
                mma16816(o[d], a, b[0], b[1]);
                mma16816(o[d + 1], a, b[2], b[3]);
            }
        }
        __syncthreads(); /* the stage is refilled by the next iteration's load */
    }

#pragma unroll
    for (int i = 0; i < 2; i++) {
        lrow[i] += __shfl_xor_sync(0xffffffffu, lrow[i], 1);
        lrow[i] += __shfl_xor_sync(0xffffffffu, lrow[i], 2);
    }
    const int64_t ld = (int64_t)H * HD;
#pragma unroll
    for (int d = 0; d < HD / 8; d++) {
        int col = h * HD + d * 8 + 2 * t;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int64_t row = i ? r1 : r0;
            if (row >= n) continue;
            float inv = lrow[i] > 0.f ? 1.f / lrow[i] : 0.f;
            float v0 = o[d][2 * i] * inv, v1 = o[d][2 * i + 1] * inv;
            if (OUT_F16)
                *(__half2 *)((__half *)out + row * ld + col) = __floats2half2_rn(v0, v1);
            else
                *(__nv_bfloat162 *)((__nv_bfloat16 *)out + row * ld + col) =
                    __floats2bfloat162_rn(v0, v1);
        }
    }
}

static lode_status attn_prefill_launch(const krn_cuda_attn_cfg *c, const void *q, int64_t n,
                                       int64_t pos0, void *out, int out_f16, const int32_t *varlen,
                                       int n_seq, void *stream)
{
    if (n <= 0 || n_seq <= 0) return LODE_OK;
    if (c->n_kv_head <= 0 || c->n_head % c->n_kv_head || pos0 < 0)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "attn_prefill: bad heads");
    lode_status pst = krn_cuda_prepare_once();
    if (pst) return pst;
    dim3 grid(cdiv(n, 64), (unsigned)c->n_head, (unsigned)n_seq);
    cudaStream_t st = STREAM(stream);
    const __half *qh = (const __half *)q;
#define PF(HD, F16)                                                                                \
    attn_prefill_kernel<HD, F16>                                                                   \
        <<<grid, 128, prefill_smem<HD>(), st>>>(*c, qh, n, pos0, out, varlen)
    if (c->head_dim == 64) {
        if (out_f16)
            PF(64, true);
        else
            PF(64, false);
    } else if (c->head_dim == 128) {
        if (out_f16)
            PF(128, true);
        else
            PF(128, false);
    } else {
        return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "attn_prefill: head_dim must be 64 or 128");
    }
#undef PF
    CU_LAUNCHED("attn_prefill");
    return LODE_OK;
}

extern "C" lode_status krn_cuda_attn_prefill(const krn_cuda_attn_cfg *c, const void *q, int64_t n,
                                             int64_t pos0, void *out, int out_f16, void *stream)
{
    return attn_prefill_launch(c, q, n, pos0, out, out_f16, NULL, 1, stream);
}

extern "C" lode_status krn_cuda_attn_prefill_varlen(const krn_cuda_attn_cfg *c, const void *q,
                                                    const int32_t *seqs, int n_seq, int64_t max_n,
                                                    void *out, int out_f16, void *stream)
{
    return attn_prefill_launch(c, q, max_n, 0, out, out_f16, seqs, n_seq, stream);
}

/* ---- decode of many sequences ---------------------------------------------------------------- */

/* Shared memory of attn_rows_kernel<HD, *, NW>: two stages of a K and V tile of 16 NW keys. */
template <int HD, int NW> static constexpr size_t rows_smem()
{
    return (size_t)2 * 2 * 16 * NW * (HD + 8) * sizeof(__half);
}

/* Block (KV head, sequence b) of NW warps: the G query heads of the KV head are the rows of
 * one m16 tile (rows G..15 zero), so S = Q K^T and O += P V run on tensor cores with each key
 * and value read once for all G heads. Tiles of 16 NW keys are double-buffered in shared
 * memory (cp.async, zero-filled past the sequence); warp w takes keys 16w..16w+15 of every
 * tile and keeps its own online softmax; the warps' partial results are merged in shared
 * memory at the end, and the output is written in the GEMM's 16-bit type. */
template <int HD, bool OUT_F16, int NW>
__global__ void __launch_bounds__(32 * NW)
    attn_rows_kernel(krn_cuda_attn_cfg c, const __half *q, const int32_t *seq_len, void *out)
{
    constexpr int BK = 16 * NW, KP = HD + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __half(*Ks)[BK][KP] = (__half(*)[BK][KP])smem_raw; /* [stage][key][dim] */
    __half(*Vs)[BK][KP] = (__half(*)[BK][KP])(smem_raw + 2 * BK * KP * 2);
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int kvh = blockIdx.x, b = blockIdx.y, H = c.n_head, G = H / c.n_kv_head;
    const int len = seq_len[b];
    const int32_t *bt = c.block_table + (int64_t)b * c.max_blocks;
    const float sl2 = c.scale * 1.4426950408889634f;
    const int ntiles = (int)cdiv(len, BK);

    auto load_tile = [&](int kt, int stage) {
        kv_tile_async<HD, BK, KP, 32 * NW>(c, bt, kvh, len, kt, Ks[stage], Vs[stage], tid);
    };
    if (ntiles > 0) load_tile(0, 0);

    /* Q fragment: row g is head kvh*G + g (rows >= G and 8..15 are zero) */
    uint32_t qf[HD / 16][2];
    {
        const __half *qr = q + ((int64_t)b * H + kvh * G + g) * HD + 2 * t;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            qf[kk][0] = g < G ? ld32(qr + kk * 16) : 0u;
            qf[kk][1] = g < G ? ld32(qr + kk * 16 + 8) : 0u;
        }
    }
    float o[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float mrow = -INFINITY, lrow = 0.f;

    for (int kt = 0; kt < ntiles; kt++) {
        const int st = kt & 1;
        if (kt + 1 < ntiles) {
            load_tile(kt + 1, st ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int k0 = kt * BK + w * 16; /* this warp's first key */
        if (k0 < len) {
            float s[2][4];
#pragma unroll
            for (int nt = 0; nt < 2; nt++) {
                s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
                for (int kk = 0; kk < HD / 16; kk++) {
                    const __half *kp = &Ks[st][w * 16 + nt * 8 + g][kk * 16 + 2 * t];
                    const uint32_t a[4] = {qf[kk][0], 0u, qf[kk][1], 0u};
                    mma16816(s[nt], a, ld32(kp), ld32(kp + 8));
                }
            }
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int j = k0 + nt * 8 + 2 * t + e;
                    s[nt][e] = j < len ? s[nt][e] * sl2 : -INFINITY;
                    mx = fmaxf(mx, s[nt][e]);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mnew = fmaxf(mrow, mx); /* finite: key k0 < len is in this slice */
            const float alpha = exp2f(mrow - mnew);
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    s[nt][e] = exp2f(s[nt][e] - mnew);
                    sum += s[nt][e];
                }
            lrow = lrow * alpha + sum;
            mrow = mnew;
#pragma unroll
            for (int d = 0; d < HD / 8; d++) o[d][0] *= alpha, o[d][1] *= alpha;
            const uint32_t a[4] = {pack_h2(s[0][0], s[0][1]), 0u, pack_h2(s[1][0], s[1][1]), 0u};
            const int vrow = w * 16 + (lane & 15), vcol = (lane >> 4) * 8;
#pragma unroll
            for (int d = 0; d < HD / 8; d += 2) {
                uint32_t bv[4];
                ldsm_x4_trans(bv, &Vs[st][vrow][d * 8 + vcol]);
                mma16816(o[d], a, bv[0], bv[1]);
                mma16816(o[d + 1], a, bv[2], bv[3]);
            }
        }
        __syncthreads(); /* the stage is refilled by the next iteration's load */
    }

    /* merge the warps: unnormalized rows, running max and sum per warp, in the tile memory */
    lrow += __shfl_xor_sync(0xffffffffu, lrow, 1);
    lrow += __shfl_xor_sync(0xffffffffu, lrow, 2);
    float *ob = (float *)smem_raw;   /* [NW][G][HD] */
    float *mw = ob + NW * MAXG * HD; /* [NW][G] */
    float *lw = mw + NW * MAXG;      /* [NW][G] */
    if (g < G) {
#pragma unroll
        for (int d = 0; d < HD / 8; d++)
            *(float2 *)&ob[(w * G + g) * HD + d * 8 + 2 * t] = make_float2(o[d][0], o[d][1]);
        if (t == 0) mw[w * G + g] = mrow, lw[w * G + g] = lrow;
    }
    __syncthreads();
    for (int i = tid; i < G * HD / 2; i += 32 * NW) {
        const int r = (2 * i) / HD, d = (2 * i) % HD;
        float mx = -INFINITY;
#pragma unroll
        for (int k = 0; k < NW; k++) mx = fmaxf(mx, mw[k * G + r]);
        float v0 = 0.f, v1 = 0.f, den = 0.f;
        if (mx != -INFINITY) {
#pragma unroll
            for (int k = 0; k < NW; k++) {
                const float f = exp2f(mw[k * G + r] - mx);
                const float2 x = *(const float2 *)&ob[(k * G + r) * HD + d];
                v0 += f * x.x, v1 += f * x.y, den += f * lw[k * G + r];
            }
        }
        const float inv = den > 0.f ? 1.f / den : 0.f;
        const int64_t oi = ((int64_t)b * H + kvh * G + r) * HD + d;
        if (OUT_F16)
            *(__half2 *)((__half *)out + oi) = __floats2half2_rn(v0 * inv, v1 * inv);
        else
            *(__nv_bfloat162 *)((__nv_bfloat16 *)out + oi) =
                __floats2bfloat162_rn(v0 * inv, v1 * inv);
    }
}

template <int HD, bool F16, int NW> static cudaError_t rows_prepare_one()
{
    return cudaFuncSetAttribute(attn_rows_kernel<HD, F16, NW>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)rows_smem<HD, NW>());
}

template <int HD, bool F16> static cudaError_t prefill_prepare_one()
{
    return cudaFuncSetAttribute(attn_prefill_kernel<HD, F16>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)prefill_smem<HD>());
}

extern "C" lode_status krn_cuda_attn_prepare(void)
{
    CU_TRY((prefill_prepare_one<64, false>()));
    CU_TRY((prefill_prepare_one<64, true>()));
    CU_TRY((prefill_prepare_one<128, false>()));
    CU_TRY((prefill_prepare_one<128, true>()));
    CU_TRY((rows_prepare_one<64, false, 4>()));
    CU_TRY((rows_prepare_one<64, true, 4>()));
    CU_TRY((rows_prepare_one<128, false, 4>()));
    CU_TRY((rows_prepare_one<128, true, 4>()));
    CU_TRY((rows_prepare_one<64, false, 2>()));
    CU_TRY((rows_prepare_one<64, true, 2>()));
    CU_TRY((rows_prepare_one<128, false, 2>()));
    CU_TRY((rows_prepare_one<128, true, 2>()));
    return LODE_OK;
}

/* Warps of a krn_cuda_attn_decode_rows block: 2 (32-key tiles, five blocks a multiprocessor
 * for head_dim 128), or 4 with LODE_CUDA_ATTN_ROWS_WARPS=4 (64-key tiles, three blocks); read
 * once. On an H200, 256 sequences of 128 + 128 tokens of llama3-8b: 14921 output tok/s with 2,
 * 14812 with 4 (inter-token p50 10.44 / 10.69 ms; 64 sequences 8455 / 8252). */
static int rows_warps(void)
{
    static int nw = 0;
    if (!nw) {
        const char *e = getenv("LODE_CUDA_ATTN_ROWS_WARPS");
        nw = e && atoi(e) == 4 ? 4 : 2;
    }
    return nw;
}

template <int HD, bool F16, int NW>
static void rows_launch(dim3 grid, cudaStream_t st, const krn_cuda_attn_cfg &c, const __half *q,
                        const int32_t *seq_len, void *out)
{
    attn_rows_kernel<HD, F16, NW><<<grid, 32 * NW, rows_smem<HD, NW>(), st>>>(c, q, seq_len, out);
}

template <int HD, bool F16>
static void rows_launch_nw(dim3 grid, cudaStream_t st, const krn_cuda_attn_cfg &c, const __half *q,
                           const int32_t *seq_len, void *out)
{
    if (rows_warps() == 2)
        rows_launch<HD, F16, 2>(grid, st, c, q, seq_len, out);
    else
        rows_launch<HD, F16, 4>(grid, st, c, q, seq_len, out);
}

extern "C" lode_status krn_cuda_attn_decode_rows(const krn_cuda_attn_cfg *c, const void *q,
                                                 int batch, const int32_t *seq_len, void *out,
                                                 int out_f16, void *stream)
{
    if (c->n_kv_head <= 0 || c->n_head % c->n_kv_head || c->n_head / c->n_kv_head > MAXG ||
        batch <= 0)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "attn_decode_rows: bad heads or batch");
    lode_status pst = krn_cuda_prepare_once();
    if (pst) return pst;
    dim3 grid((unsigned)c->n_kv_head, (unsigned)batch);
    cudaStream_t st = STREAM(stream);
    const __half *qh = (const __half *)q;
    if (c->head_dim == 64) {
        if (out_f16)
            rows_launch_nw<64, true>(grid, st, *c, qh, seq_len, out);
        else
            rows_launch_nw<64, false>(grid, st, *c, qh, seq_len, out);
    } else if (c->head_dim == 128) {
        if (out_f16)
            rows_launch_nw<128, true>(grid, st, *c, qh, seq_len, out);
        else
            rows_launch_nw<128, false>(grid, st, *c, qh, seq_len, out);
    } else {
        return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED,
                                 "attn_decode_rows: head_dim must be 64 or 128");
    }
    CU_LAUNCHED("attn_decode_rows");
    return LODE_OK;
}
