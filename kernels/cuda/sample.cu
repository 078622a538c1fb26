/*
 * sample.cu: token choice on the device, so that a decode step sends 4 bytes a sequence to
 * the host instead of the logits. Greedy is an argmax; temperature / top-k / top-p sampling
 * finds the cut-off logit by bisection (a few block reductions over the vocabulary) instead
 * of sorting it, then draws with one block-wide prefix sum. One block a row.
 */
#include "kernels/cuda/common.cuh"

#define ST 1024 /* threads a row */

__device__ __forceinline__ void argmax_pair(float &v, int &i, float v2, int i2)
{
    if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

/* block argmax (lowest index on ties); every thread gets the result */
__device__ void block_argmax(float &v, int &idx, float *rv, int *ri)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
        argmax_pair(v, idx, v2, i2);
    }
    __syncthreads();
    if (lane == 0) rv[w] = v, ri[w] = idx;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? rv[lane] : -INFINITY;
    idx = lane < (int)(blockDim.x >> 5) ? ri[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
        argmax_pair(v, idx, v2, i2);
    }
}

__device__ __forceinline__ uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__global__ void __launch_bounds__(ST)
    sample_kernel(const float *logits, int vocab, krn_cuda_sample_cfg c, int32_t *tok, float *lp)
{
    __shared__ float red[32];
    __shared__ float rv[32];
    __shared__ int ri[32];
    __shared__ float scan[ST];
    pdl_wait();
    pdl_trigger();
    const int b = blockIdx.x, tid = threadIdx.x;
    const float *l = logits + (int64_t)b * vocab;

    float mv = -INFINITY;
    int mi = 0x7fffffff;
    for (int i = tid; i < vocab; i += ST) argmax_pair(mv, mi, l[i], i);
    block_argmax(mv, mi, rv, ri);
    const float lmax = mv;
    int chosen = mi;

    if (c.temperature > 0.f) {
        const float it = 1.f / c.temperature;
        /* logit cut-offs: keep logits >= thr */
        float thr = -INFINITY;
        float lmin = INFINITY;
        for (int i = tid; i < vocab; i += ST) lmin = fminf(lmin, l[i]);
        lmin = -block_max(-lmin, red);
        if (c.top_k > 0 && c.top_k < vocab) {
            float lo = lmin, hi = lmax; /* count(l >= lo) >= k always */
            for (int it2 = 0; it2 < 40 && hi > lo; it2++) {
                float mid = 0.5f * (lo + hi);
                float cnt = 0.f;
                for (int i = tid; i < vocab; i += ST) cnt += l[i] >= mid ? 1.f : 0.f;
                cnt = block_sum(cnt, red);
                if (cnt >= (float)c.top_k)
                    lo = mid;
                else
                    hi = mid;
                if (mid == lo && mid == hi) break;
            }
            thr = lo;
        }
        float z = 0.f;
        for (int i = tid; i < vocab; i += ST)
            if (l[i] >= thr) z += __expf((l[i] - lmax) * it);
        z = block_sum(z, red);
        if (c.top_p < 1.f && c.top_p > 0.f) {
            float lo = fmaxf(thr, lmin), hi = lmax; /* mass(l >= lo) >= p * z */
            for (int it2 = 0; it2 < 40 && hi > lo; it2++) {
                float mid = 0.5f * (lo + hi);
                float m = 0.f;
                for (int i = tid; i < vocab; i += ST)
                    if (l[i] >= mid) m += __expf((l[i] - lmax) * it);
                m = block_sum(m, red);
                if (m >= c.top_p * z)
                    lo = mid;
                else
                    hi = mid;
            }
            thr = fmaxf(thr, lo);
            z = 0.f;
            for (int i = tid; i < vocab; i += ST)
                if (l[i] >= thr) z += __expf((l[i] - lmax) * it);
            z = block_sum(z, red);
        }
        uint64_t step = c.step ? *c.step : 0;
        float u = (float)(mix(c.seed ^ mix(step * 0x100000001B3ull + (uint64_t)b)) >> 40) *
                  (1.f / 16777216.f);
        float target = u * z;
        /* each thread owns a contiguous range; prefix over threads, then a scan in the range */
        int per = (vocab + ST - 1) / ST, i0 = tid * per, i1 = min(vocab, i0 + per);
        float part = 0.f;
        for (int i = i0; i < i1; i++)
            if (l[i] >= thr) part += __expf((l[i] - lmax) * it);
        scan[tid] = part;
        __syncthreads();
        for (int off = 1; off < ST; off <<= 1) {
            float add = tid >= off ? scan[tid - off] : 0.f;
            __syncthreads();
            scan[tid] += add;
            __syncthreads();
        }
        float before = scan[tid] - part;
        int pick = 0x7fffffff;
        if (target >= before && target < scan[tid]) {
            float run = before;
            for (int i = i0; i < i1; i++) {
                if (l[i] < thr) continue;
                run += __expf((l[i] - lmax) * it);
                if (run > target) {
                    pick = i;
                    break;
                }
            }
        }
        float pv = pick != 0x7fffffff ? 1.f : -INFINITY;
        block_argmax(pv, pick, rv, ri);
        if (pick != 0x7fffffff && pv > 0.f) chosen = pick; /* else rounding: keep the argmax */
    }
    if (lp) {
        float s = 0.f;
        for (int i = tid; i < vocab; i += ST) s += __expf(l[i] - lmax);
        s = block_sum(s, red);
        if (tid == 0) lp[b] = l[chosen] - lmax - logf(s);
    }
    if (tid == 0) tok[b] = chosen;
}

extern "C" lode_status krn_cuda_sample(const float *logits, int batch, int vocab,
                                       const krn_cuda_sample_cfg *c, int32_t *tok, float *logprob,
                                       void *stream)
{
    if (batch <= 0 || vocab <= 0) return krn_cuda_fail_msg(LODE_ERR_INVALID, "sample: bad shape");
    CU_TRY(launch_k(sample_kernel, dim3((unsigned)batch), dim3(ST), 0, STREAM(stream), logits,
                    vocab, *c, tok, logprob));
    CU_LAUNCHED("sample");
    return LODE_OK;
}

extern "C" lode_status krn_cuda_argmax(const float *logits, int batch, int vocab, int32_t *tok,
                                       void *stream)
{
    krn_cuda_sample_cfg c;
    memset(&c, 0, sizeof c);
    return krn_cuda_sample(logits, batch, vocab, &c, tok, NULL, stream);
}

__global__ void __launch_bounds__(ST)
    logprob_kernel(const float *logits, int vocab, const int32_t *tok, float *lp)
{
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    const float *l = logits + r * vocab;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += ST) m = fmaxf(m, l[i]);
    m = block_max(m, red);
    float s = 0.f;
    for (int i = threadIdx.x; i < vocab; i += ST) s += __expf(l[i] - m);
    s = block_sum(s, red);
    if (threadIdx.x == 0) {
        int32_t t = tok[r];
        lp[r] = (t >= 0 && t < vocab) ? l[t] - m - logf(s) : -INFINITY;
    }
}

extern "C" lode_status krn_cuda_logprobs(const float *logits, int64_t n, int vocab,
                                         const int32_t *tok, float *lp, void *stream)
{
    if (n <= 0) return LODE_OK;
    logprob_kernel<<<(unsigned)n, ST, 0, STREAM(stream)>>>(logits, vocab, tok, lp);
    CU_LAUNCHED("logprobs");
    return LODE_OK;
}

__global__ void advance_kernel(int batch, const int32_t *chosen, int32_t *tokens, int32_t *pos,
                               int32_t *seq_len, int32_t *slot, const int32_t *bt, int max_blocks,
                               int32_t *history, int hist_rows, int hist_stride, uint32_t *step)
{
    pdl_wait();
    pdl_trigger();
    int b = threadIdx.x;
    uint32_t s = *step;
    if (b < batch) {
        int32_t t = chosen[b];
        tokens[b] = t;
        if (history) history[(int64_t)(s % (uint32_t)hist_rows) * hist_stride + b] = t;
        int32_t p = pos[b] + 1;
        pos[b] = p;
        seq_len[b] = p + 1;
        int blk = p / KRN_CUDA_KV_BLOCK;
        /* past the table: no slot, the KV write is skipped */
        slot[b] = blk < max_blocks ? bt[(int64_t)b * max_blocks + blk] * KRN_CUDA_KV_BLOCK +
                                         p % KRN_CUDA_KV_BLOCK
                                   : -1;
    }
    __syncthreads();
    if (b == 0) *step = s + 1;
}

extern "C" lode_status krn_cuda_decode_advance(int batch, const int32_t *chosen, int32_t *tokens,
                                               int32_t *pos, int32_t *seq_len, int32_t *slot,
                                               const int32_t *block_table, int max_blocks,
                                               int32_t *history, int hist_rows, int hist_stride,
                                               uint32_t *step, void *stream)
{
    if (batch <= 0 || batch > 1024 || (history && hist_rows <= 0))
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "advance: bad batch or history");
    CU_TRY(launch_k(advance_kernel, dim3(1), dim3(32 * cdiv(batch, 32)), 0, STREAM(stream), batch,
                    chosen, tokens, pos, seq_len, slot, block_table, max_blocks, history, hist_rows,
                    hist_stride, step));
    CU_LAUNCHED("decode_advance");
    return LODE_OK;
}
