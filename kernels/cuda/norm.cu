/*
 * norm.cu: the elementwise ops of a llama layer for prefill (decode fuses them into the
 * GEMV): RMSNorm, SwiGLU, RoPE with the KV cache write, and type conversion. Each writes the
 * activation type the next GEMM reads (bf16 or f16), so no separate cast pass is needed.
 */
#include "kernels/cuda/common.cuh"

__global__ void rmsnorm_kernel(const float *x, const float *w, float eps, int dim, void *out,
                               int out_type)
{
    __shared__ float red[32];
    int64_t r = blockIdx.x;
    const float *xr = x + r * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    float s = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        store_as(out, out_type, r * dim + i, xr[i] * s * w[i]);
}

/* The same for dim = 1024 NV: the row stays in registers (NV float4 a thread, one pass over
 * memory) and the output is stored 4 elements at a time. On an H200 the scalar kernel took
 * about 14 us for 256 rows of 4096 (6 MB moved) in a decode step. */
template <int NV>
__global__ void __launch_bounds__(256)
    rmsnorm_vec_kernel(const float *x, const float *w, float eps, int dim, void *out, int out_type)
{
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    const float4 *xr = (const float4 *)(x + r * dim), *w4 = (const float4 *)w;
    float4 v[NV];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        v[k] = xr[threadIdx.x + k * 256];
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    ss = block_sum(ss, red);
    const float s = rsqrtf(ss / (float)dim + eps);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int i = threadIdx.x + k * 256;
        const float4 g = w4[i];
        const float y0 = v[k].x * s * g.x, y1 = v[k].y * s * g.y, y2 = v[k].z * s * g.z,
                    y3 = v[k].w * s * g.w;
        const int64_t o = r * dim + 4 * (int64_t)i;
        if (out_type == LODE_F32) {
            *(float4 *)((float *)out + o) = make_float4(y0, y1, y2, y3);
        } else if (out_type == LODE_BF16) {
            __nv_bfloat162 a = __floats2bfloat162_rn(y0, y1), b = __floats2bfloat162_rn(y2, y3);
            *(uint2 *)((__nv_bfloat16 *)out + o) = make_uint2(*(uint32_t *)&a, *(uint32_t *)&b);
        } else {
            __half2 a = __floats2half2_rn(y0, y1), b = __floats2half2_rn(y2, y3);
            *(uint2 *)((__half *)out + o) = make_uint2(*(uint32_t *)&a, *(uint32_t *)&b);
        }
    }
}

extern "C" lode_status krn_cuda_rmsnorm(const float *x, const float *w, float eps, int64_t rows,
                                        int dim, void *out, int out_type, void *stream)
{
    if (rows <= 0) return LODE_OK;
    cudaStream_t st = STREAM(stream);
    const int aligned = !(((uintptr_t)x | (uintptr_t)w | (uintptr_t)out) & 15);
    const int nv = aligned && dim % 1024 == 0 ? dim / 1024 : 0;
    if (nv == 1)
        rmsnorm_vec_kernel<1><<<(unsigned)rows, 256, 0, st>>>(x, w, eps, dim, out, out_type);
    else if (nv == 2)
        rmsnorm_vec_kernel<2><<<(unsigned)rows, 256, 0, st>>>(x, w, eps, dim, out, out_type);
    else if (nv == 4)
        rmsnorm_vec_kernel<4><<<(unsigned)rows, 256, 0, st>>>(x, w, eps, dim, out, out_type);
    else if (nv == 8)
        rmsnorm_vec_kernel<8><<<(unsigned)rows, 256, 0, st>>>(x, w, eps, dim, out, out_type);
    else
        rmsnorm_kernel<<<(unsigned)rows, 256, 0, st>>>(x, w, eps, dim, out, out_type);
    CU_LAUNCHED("rmsnorm");
    return LODE_OK;
}

/* 16-bit gate/up rows (T = __nv_bfloat16 or __half): 8 outputs a thread, 16-byte loads (ff a
 * multiple of 8), or one a thread otherwise */
template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
template <> __device__ __forceinline__ float to_f(__half v)
{
    return __half2float(v);
}

template <typename T>
__global__ void swiglu16_kernel(const T *gu, int64_t rows, int ff, void *out, int out_type)
{
    const int64_t n = rows * ff;
    if (ff % 8 == 0) {
        const int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * 8;
        if (i >= n) return;
        const int64_t r = i / ff, j = i % ff;
        uint4 g4 = *(const uint4 *)(gu + r * 2 * ff + j);
        uint4 u4 = *(const uint4 *)(gu + r * 2 * ff + ff + j);
        const T *g = (const T *)&g4, *u = (const T *)&u4;
        float y[8];
#pragma unroll
        for (int e = 0; e < 8; e++) y[e] = silu(to_f(g[e])) * to_f(u[e]);
        if (out_type == LODE_BF16 || out_type == LODE_F16) {
            uint4 o4;
            uint32_t *o = (uint32_t *)&o4;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (out_type == LODE_BF16) {
                    __nv_bfloat162 h = __floats2bfloat162_rn(y[2 * e], y[2 * e + 1]);
                    o[e] = *(uint32_t *)&h;
                } else {
                    __half2 h = __floats2half2_rn(y[2 * e], y[2 * e + 1]);
                    o[e] = *(uint32_t *)&h;
                }
            }
            *(uint4 *)((uint16_t *)out + i) = o4;
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) store_as(out, out_type, i + e, y[e]);
        }
        return;
    }
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int64_t r = i / ff, j = i % ff;
    store_as(out, out_type, i, silu(to_f(gu[r * 2 * ff + j])) * to_f(gu[r * 2 * ff + ff + j]));
}

extern "C" lode_status krn_cuda_swiglu16(const void *gu, int gu_type, int64_t rows, int ff,
                                         void *out, int out_type, void *stream)
{
    if (rows <= 0) return LODE_OK;
    if (gu_type != LODE_BF16 && gu_type != LODE_F16)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "swiglu16: gate/up must be bf16 or f16");
    const int64_t n = rows * ff, threads = ff % 8 == 0 ? n / 8 : n;
    cudaStream_t st = STREAM(stream);
    if (gu_type == LODE_BF16)
        swiglu16_kernel<<<cdiv(threads, 256), 256, 0, st>>>((const __nv_bfloat16 *)gu, rows, ff,
                                                            out, out_type);
    else
        swiglu16_kernel<<<cdiv(threads, 256), 256, 0, st>>>((const __half *)gu, rows, ff, out,
                                                            out_type);
    CU_LAUNCHED("swiglu16");
    return LODE_OK;
}

/* one thread per (row, pair) of the [q | k | v] row */
__global__ void rope_kv_kernel(const float *qkv, int64_t n, krn_cuda_rope r, __half *q_out)
{
    int hd = r.head_dim, H = r.n_head, KV = r.n_kv_head;
    int64_t pairs = (int64_t)(H + 2 * KV) * hd / 2;
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n * pairs) return;
    int64_t t = i / pairs, c = (i % pairs) * 2;
    const float *row = qkv + t * (H + 2 * KV) * hd;
    float y0 = row[c], y1 = row[c + 1];
    int64_t qrows = (int64_t)H * hd, kvrows = (int64_t)KV * hd;
    if (c < qrows + kvrows) {
        int d = (int)(c % hd);
        float s, co;
        sincosf((float)r.pos[t] * r.inv_freq[d / 2], &s, &co);
        float a = y0 * co - y1 * s, b = y0 * s + y1 * co;
        y0 = a, y1 = b;
    }
    if (c < qrows) {
        *(__half2 *)(q_out + t * qrows + c) = __floats2half2_rn(y0, y1);
        return;
    }
    int64_t kv = c - qrows;
    __half *cache = (__half *)r.k_cache;
    if (kv >= kvrows) {
        kv -= kvrows;
        cache = (__half *)r.v_cache;
    }
    int kh = (int)(kv / hd), d = (int)(kv % hd);
    int32_t slot = r.slot[t];
    if (slot < 0) return;
    int64_t idx = (((int64_t)(slot / KRN_CUDA_KV_BLOCK) * KV + kh) * KRN_CUDA_KV_BLOCK +
                   slot % KRN_CUDA_KV_BLOCK) *
                      hd +
                  d;
    *(__half2 *)(cache + idx) = __floats2half2_rn(y0, y1);
}

extern "C" lode_status krn_cuda_rope_kv(const float *qkv, int64_t n, const krn_cuda_rope *rope,
                                        void *q_out, void *stream)
{
    if (n <= 0) return LODE_OK;
    if (rope->head_dim % 2) return krn_cuda_fail_msg(LODE_ERR_INVALID, "rope: odd head_dim");
    int64_t pairs = (int64_t)(rope->n_head + 2 * rope->n_kv_head) * rope->head_dim / 2;
    rope_kv_kernel<<<cdiv(n * pairs, 256), 256, 0, STREAM(stream)>>>(qkv, n, *rope,
                                                                     (__half *)q_out);
    CU_LAUNCHED("rope_kv");
    return LODE_OK;
}

__global__ void convert_kernel(const void *src, int st, void *dst, int dt, int64_t n)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v;
    if (st == LODE_F32)
        v = ((const float *)src)[i];
    else if (st == LODE_BF16)
        v = __bfloat162float(((const __nv_bfloat16 *)src)[i]);
    else
        v = __half2float(((const __half *)src)[i]);
    store_as(dst, dt, i, v);
}

extern "C" lode_status krn_cuda_convert(const void *src, int src_type, void *dst, int dst_type,
                                        int64_t n, void *stream)
{
    if (n <= 0) return LODE_OK;
    convert_kernel<<<cdiv(n, 256), 256, 0, STREAM(stream)>>>(src, src_type, dst, dst_type, n);
    CU_LAUNCHED("convert");
    return LODE_OK;
}
