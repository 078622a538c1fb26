/*
 * ops.cu: the elementwise ops of the engine's generic backend interface (engine/backend.h)
 * that the fused decoder does not need: residual add + RMSNorm, in-place RoPE on f32 rows
 * (adjacent pairs or NeoX halves, partial rotation, frequency scaling and factors), the KV
 * cache write from f32 rows, SwiGLU of separate rows, adds, bias rows and row gathers.
 */
#include "kernels/cuda/common.cuh"

__global__ void add_rmsnorm_kernel(float *y, float *x, const float *r, const float *w, int dim,
                                   float eps)
{
    __shared__ float red[32];
    int64_t row = blockIdx.x;
    float *xr = x + row * dim;
    const float *rr = r + row * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i] + rr[i];
        xr[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, red);
    float s = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) y[row * dim + i] = xr[i] * s * w[i];
}

extern "C" lode_status krn_cuda_add_rmsnorm(float *y, float *x, const float *r, const float *w,
                                            int64_t rows, int dim, float eps, void *stream)
{
    if (rows <= 0) return LODE_OK;
    add_rmsnorm_kernel<<<(unsigned)rows, 256, 0, STREAM(stream)>>>(y, x, r, w, dim, eps);
    CU_LAUNCHED("add_rmsnorm");
    return LODE_OK;
}

__global__ void rope_f32_kernel(float *x, int64_t n_tok, int n_head, int hd, const int32_t *pos,
                                float base, float fscale, const float *ff, int n_rot, int neox)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int half = n_rot / 2;
    if (i >= n_tok * n_head * half) return;
    int64_t t = i / (n_head * half);
    int h = (int)(i / half % n_head), k = (int)(i % half);
    float inv = powf(base, -2.f * k / (float)n_rot) * fscale;
    if (ff) inv /= ff[k];
    float s, c;
    sincosf((float)pos[t] * inv, &s, &c);
    float *row = x + (t * n_head + h) * hd;
    int a = neox ? k : 2 * k, b = neox ? k + half : 2 * k + 1;
    float x0 = row[a], x1 = row[b];
    row[a] = x0 * c - x1 * s;
    row[b] = x0 * s + x1 * c;
}

extern "C" lode_status krn_cuda_rope_f32(float *x, int64_t n_tok, int n_head, int head_dim,
                                         const int32_t *pos, float base, float freq_scale,
                                         const float *freq_factors, int n_rot, int neox,
                                         void *stream)
{
    if (n_tok <= 0) return LODE_OK;
    if (n_rot <= 0 || n_rot > head_dim || n_rot % 2)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "rope: bad n_rot");
    int64_t n = n_tok * n_head * (n_rot / 2);
    rope_f32_kernel<<<cdiv(n, 256), 256, 0, STREAM(stream)>>>(
        x, n_tok, n_head, head_dim, pos, base, freq_scale, freq_factors, n_rot, neox);
    CU_LAUNCHED("rope_f32");
    return LODE_OK;
}

__global__ void kv_store_kernel(__half *kc, __half *vc, const float *k, const float *v,
                                int64_t n_tok, int KV, int hd, const int32_t *slot)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t w = (int64_t)KV * hd;
    if (i >= n_tok * w) return;
    int64_t t = i / w, j = i % w;
    int32_t s = slot[t];
    if (s < 0) return;
    int h = (int)(j / hd), d = (int)(j % hd);
    int64_t idx =
        (((int64_t)(s / KRN_CUDA_KV_BLOCK) * KV + h) * KRN_CUDA_KV_BLOCK + s % KRN_CUDA_KV_BLOCK) *
            hd +
        d;
    kc[idx] = __float2half(k[i]);
    vc[idx] = __float2half(v[i]);
}

extern "C" lode_status krn_cuda_kv_store(void *k_cache, void *v_cache, const float *k,
                                         const float *v, int64_t n_tok, int n_kv_head, int head_dim,
                                         const int32_t *slot, void *stream)
{
    if (n_tok <= 0) return LODE_OK;
    int64_t n = n_tok * n_kv_head * head_dim;
    kv_store_kernel<<<cdiv(n, 256), 256, 0, STREAM(stream)>>>(
        (__half *)k_cache, (__half *)v_cache, k, v, n_tok, n_kv_head, head_dim, slot);
    CU_LAUNCHED("kv_store");
    return LODE_OK;
}

__global__ void binary_kernel(float *y, const float *a, const float *b, int64_t n, int op)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = op ? silu(a[i]) * b[i] : a[i] + b[i];
}

extern "C" lode_status krn_cuda_add(float *y, const float *a, const float *b, int64_t n,
                                    void *stream)
{
    if (n <= 0) return LODE_OK;
    binary_kernel<<<cdiv(n, 256), 256, 0, STREAM(stream)>>>(y, a, b, n, 0);
    CU_LAUNCHED("add");
    return LODE_OK;
}

extern "C" lode_status krn_cuda_swiglu2(float *y, const float *g, const float *u, int64_t n,
                                        void *stream)
{
    if (n <= 0) return LODE_OK;
    binary_kernel<<<cdiv(n, 256), 256, 0, STREAM(stream)>>>(y, g, u, n, 1);
    CU_LAUNCHED("swiglu2");
    return LODE_OK;
}

__global__ void bias_kernel(float *y, const float *bias, int64_t rows, int64_t cols)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < rows * cols) y[i] += bias[i % cols];
}

extern "C" lode_status krn_cuda_add_bias(float *y, const float *bias, int64_t rows, int64_t cols,
                                         void *stream)
{
    if (rows * cols <= 0) return LODE_OK;
    bias_kernel<<<cdiv(rows * cols, 256), 256, 0, STREAM(stream)>>>(y, bias, rows, cols);
    CU_LAUNCHED("add_bias");
    return LODE_OK;
}

__global__ void gather_kernel(float *dst, const float *src, const int32_t *rows, int64_t n,
                              int64_t cols)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n * cols) dst[i] = src[(int64_t)rows[i / cols] * cols + i % cols];
}

extern "C" lode_status krn_cuda_gather_rows(float *dst, const float *src, const int32_t *rows,
                                            int64_t n, int64_t cols, void *stream)
{
    if (n <= 0) return LODE_OK;
    gather_kernel<<<cdiv(n * cols, 256), 256, 0, STREAM(stream)>>>(dst, src, rows, n, cols);
    CU_LAUNCHED("gather_rows");
    return LODE_OK;
}
