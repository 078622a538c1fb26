/*
 * weights.cu: weight matrices on the device. Uploads GGML-layout rows and repacks them into
 * lode's unit layouts (unit.cuh), fills matrices with reproducible random weights (for
 * benchmarks that need real shapes but no file), dequantizes to bf16/f16 for the prefill
 * GEMM, and looks up embedding rows.
 */
#include "kernels/cuda/unit.cuh"

static int fmt_of(int dtype)
{
    switch (dtype) {
    case LODE_F32:
        return FMT_F32;
    case LODE_F16:
        return FMT_F16;
    case LODE_BF16:
        return FMT_BF16;
    case LODE_Q4_0:
        return FMT_Q4;
    case LODE_Q4_1:
    case LODE_Q4_K:
        return FMT_Q4M;
    case LODE_Q8_0:
        return FMT_Q8;
    case LODE_Q6_K:
        return FMT_Q6;
    default:
        return 0;
    }
}

extern "C" int krn_cuda_dtype_supported(int dtype)
{
    return fmt_of(dtype) != 0;
}

static size_t q_bytes_per_unit(int fmt)
{
    return fmt == FMT_Q8 ? 32 : 16;
}

static size_t s_bytes_per_unit(int fmt)
{
    switch (fmt) {
    case FMT_Q4:
    case FMT_Q8:
        return 2;
    case FMT_Q4M:
    case FMT_Q6:
        return 4;
    default:
        return 0;
    }
}

extern "C" size_t krn_cuda_ggml_bytes(int dtype, int64_t rows, int64_t cols)
{
    return (size_t)rows * lode_dtype_row_bytes(dtype, (size_t)cols);
}

extern "C" lode_status krn_cuda_mat_alloc(krn_cuda_mat *m, int dtype, int64_t rows, int64_t cols)
{
    memset(m, 0, sizeof *m);
    int fmt = fmt_of(dtype);
    if (!fmt) return krn_cuda_fail_msg(LODE_ERR_UNSUPPORTED, "CUDA: weight type not supported");
    int ue = unit_elems(fmt);
    size_t be = lode_dtype_block_elems(dtype);
    if (rows <= 0 || cols <= 0 || cols % ue || cols % (int64_t)be)
        return krn_cuda_fail_msg(LODE_ERR_INVALID,
                                 "CUDA: matrix columns not a multiple of the block");
    m->dtype = dtype;
    m->fmt = fmt;
    m->rows = rows;
    m->cols = cols;
    size_t units = (size_t)rows * (size_t)(cols / ue);
    lode_status st;
    if (fmt <= FMT_BF16) {
        size_t es = fmt == FMT_F32 ? 4 : 2;
        if ((st = krn_cuda_malloc(&m->q, (size_t)rows * cols * es)) != LODE_OK) goto fail;
        return LODE_OK;
    }
    if ((st = krn_cuda_malloc(&m->q, units * q_bytes_per_unit(fmt))) != LODE_OK) goto fail;
    /* 16 bytes past the scales: the persistent layers kernel copies rows' scales from a
     * 16-byte aligned start to a 16-byte aligned end */
    if ((st = krn_cuda_malloc(&m->s, units * s_bytes_per_unit(fmt) + 16)) != LODE_OK) goto fail;
    if (fmt == FMT_Q6 && (st = krn_cuda_malloc(&m->qh, units * 8)) != LODE_OK) goto fail;
    return LODE_OK;
fail:
    krn_cuda_mat_free(m);
    return st;
}

extern "C" void krn_cuda_mat_free(krn_cuda_mat *m)
{
    if (!m) return;
    krn_cuda_free(m->q);
    krn_cuda_free(m->qh);
    krn_cuda_free(m->s);
    memset(m, 0, sizeof *m);
}

extern "C" size_t krn_cuda_mat_bytes(const krn_cuda_mat *m)
{
    if (!m->fmt) return 0;
    if (m->fmt <= FMT_BF16) return (size_t)m->rows * m->cols * (m->fmt == FMT_F32 ? 4 : 2);
    size_t units = (size_t)m->rows * (size_t)(m->cols / 32);
    return units *
           (q_bytes_per_unit(m->fmt) + s_bytes_per_unit(m->fmt) + (m->fmt == FMT_Q6 ? 8 : 0));
}

/* ---- repacking from GGML blocks --------------------------------------------------------- */

__device__ __forceinline__ __half ld_half(const uint8_t *p)
{
    __half_raw r;
    r.x = (unsigned short)(p[0] | (p[1] << 8));
    return __half(r);
}

__device__ __forceinline__ void q4k_scale_min(int j, const uint8_t *q, int *sc, int *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* 6-bit value (0..63) of element e of a Q6_K block */
__device__ __forceinline__ int q6k_q(const block_q6_K *b, int e)
{
    int n = e / 128, r = e % 128, part = r / 32, l = r % 32;
    const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
    int lo = (part & 1) ? ql[l + 32] : ql[l];
    lo = (part & 2) ? lo >> 4 : lo & 0xF;
    int hi = (qh[l] >> (2 * part)) & 3;
    return lo | (hi << 4);
}

/* One thread per unit u (of 32 elements) of the rows being uploaded. */
__global__ void repack_kernel(krn_cuda_mat m, int64_t u0, int64_t nunits, const uint8_t *src)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= nunits) return;
    int64_t u = u0 + i;
    uint8_t out[16];
    switch (m.dtype) {
    case LODE_Q4_0: {
        const uint8_t *b = src + i * sizeof(block_q4_0);
        for (int j = 0; j < 16; j++) out[j] = b[2 + j];
        ((__half *)m.s)[u] = ld_half(b);
        break;
    }
    case LODE_Q4_1: {
        const uint8_t *b = src + i * sizeof(block_q4_1);
        for (int j = 0; j < 16; j++) out[j] = b[4 + j];
        ((__half2 *)m.s)[u] = __halves2half2(ld_half(b), ld_half(b + 2));
        break;
    }
    case LODE_Q8_0: {
        const uint8_t *b = src + i * sizeof(block_q8_0);
        uint8_t o2[32];
        for (int j = 0; j < 32; j++) o2[j] = b[2 + j];
        uint4 *dst = (uint4 *)m.q + 2 * u;
        dst[0] = *(const uint4 *)o2;
        dst[1] = *(const uint4 *)(o2 + 16);
        ((__half *)m.s)[u] = ld_half(b);
        return;
    }
    case LODE_Q4_K: {
        const block_q4_K *b = (const block_q4_K *)(src + (i / 8) * sizeof(block_q4_K));
        int j = (int)(i % 8), c = j / 2;
        const uint8_t *qs = b->qs + 32 * c;
        for (int k = 0; k < 16; k++) {
            int v0 = (j & 1) ? qs[k] >> 4 : qs[k] & 0xF;
            int v1 = (j & 1) ? qs[k + 16] >> 4 : qs[k + 16] & 0xF;
            out[k] = (uint8_t)(v0 | (v1 << 4));
        }
        int sc, mn;
        q4k_scale_min(j, b->scales, &sc, &mn);
        float d = __half2float(ld_half((const uint8_t *)&b->d));
        float dmin = __half2float(ld_half((const uint8_t *)&b->dmin));
        ((__half2 *)m.s)[u] = __floats2half2_rn(d * sc, -dmin * mn);
        break;
    }
    case LODE_Q6_K: {
        const block_q6_K *b = (const block_q6_K *)(src + (i / 8) * sizeof(block_q6_K));
        int j = (int)(i % 8);
        int q[32];
        for (int k = 0; k < 32; k++) q[k] = q6k_q(b, 32 * j + k);
        for (int k = 0; k < 16; k++) out[k] = (uint8_t)((q[k] & 15) | ((q[k + 16] & 15) << 4));
        uint8_t h[8];
        for (int k = 0; k < 8; k++)
            h[k] = (uint8_t)((q[k] >> 4) | ((q[k + 8] >> 4) << 2) | ((q[k + 16] >> 4) << 4) |
                             ((q[k + 24] >> 4) << 6));
        ((uint2 *)m.qh)[u] = *(const uint2 *)h;
        float d = __half2float(ld_half((const uint8_t *)&b->d));
        ((__half2 *)m.s)[u] = __floats2half2_rn(d * b->scales[2 * j], d * b->scales[2 * j + 1]);
        break;
    }
    default:
        return;
    }
    ((uint4 *)m.q)[u] = *(const uint4 *)out;
}

extern "C" lode_status krn_cuda_mat_upload(krn_cuda_mat *m, int64_t row0, int64_t nrows,
                                           const void *src, void *tmp, void *stream)
{
    if (!m->fmt || row0 < 0 || nrows < 0 || row0 + nrows > m->rows)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "CUDA: upload rows out of range");
    if (nrows == 0) return LODE_OK;
    size_t bytes = krn_cuda_ggml_bytes(m->dtype, nrows, m->cols);
    if (m->fmt <= FMT_BF16) {
        size_t es = m->fmt == FMT_F32 ? 4 : 2;
        return krn_cuda_h2d((char *)m->q + (size_t)row0 * m->cols * es, src, bytes, stream);
    }
    lode_status st = krn_cuda_h2d(tmp, src, bytes, stream);
    if (st) return st;
    int64_t nu = nrows * (m->cols / 32), u0 = row0 * (m->cols / 32);
    repack_kernel<<<cdiv(nu, 256), 256, 0, STREAM(stream)>>>(*m, u0, nu, (const uint8_t *)tmp);
    CU_LAUNCHED("repack");
    return LODE_OK;
}

/* ---- random weights ------------------------------------------------------------------------ */

__device__ __forceinline__ uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ float unif(uint64_t h) /* [0, 1) */
{
    return (float)(h >> 40) * (1.f / 16777216.f);
}

/* roughly normal: sum of four uniforms, unit variance */
__device__ __forceinline__ float gauss(uint64_t h)
{
    float s = unif(h) + unif(mix64(h ^ 1)) + unif(mix64(h ^ 2)) + unif(mix64(h ^ 3));
    return (s - 2.f) * 1.7320508f;
}

__global__ void random_kernel(krn_cuda_mat m, uint64_t seed, float scale, int64_t n)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint64_t h = mix64(seed ^ mix64((uint64_t)i));
    switch (m.fmt) {
    case FMT_F32:
        ((float *)m.q)[i] = scale * gauss(h);
        return;
    case FMT_F16:
        ((__half *)m.q)[i] = __float2half(scale * gauss(h));
        return;
    case FMT_BF16:
        ((__nv_bfloat16 *)m.q)[i] = __float2bfloat16(scale * gauss(h));
        return;
    default:
        break;
    }
    /* one unit of 32 */
    uint4 q;
    q.x = (uint32_t)mix64(h ^ 11);
    q.y = (uint32_t)mix64(h ^ 12);
    q.z = (uint32_t)mix64(h ^ 13);
    q.w = (uint32_t)mix64(h ^ 14);
    float f = 0.5f + unif(mix64(h ^ 15));
    switch (m.fmt) {
    case FMT_Q4:
        ((uint4 *)m.q)[i] = q;
        ((__half *)m.s)[i] = __float2half(f * scale / 4.6f);
        break;
    case FMT_Q4M: {
        float d = f * scale / 4.6f;
        ((uint4 *)m.q)[i] = q;
        ((__half2 *)m.s)[i] = __floats2half2_rn(d, -7.5f * d);
        break;
    }
    case FMT_Q8: {
        uint4 q2;
        q2.x = (uint32_t)mix64(h ^ 21);
        q2.y = (uint32_t)mix64(h ^ 22);
        q2.z = (uint32_t)mix64(h ^ 23);
        q2.w = (uint32_t)mix64(h ^ 24);
        ((uint4 *)m.q)[2 * i] = q;
        ((uint4 *)m.q)[2 * i + 1] = q2;
        ((__half *)m.s)[i] = __float2half(f * scale / 74.f);
        break;
    }
    case FMT_Q6: {
        uint2 hh;
        hh.x = (uint32_t)mix64(h ^ 31);
        hh.y = (uint32_t)mix64(h ^ 32);
        ((uint4 *)m.q)[i] = q;
        ((uint2 *)m.qh)[i] = hh;
        float g = 0.5f + unif(mix64(h ^ 33));
        ((__half2 *)m.s)[i] = __floats2half2_rn(f * scale / 18.5f, g * scale / 18.5f);
        break;
    }
    }
}

extern "C" lode_status krn_cuda_mat_random(krn_cuda_mat *m, uint64_t seed, float scale,
                                           void *stream)
{
    if (!m->fmt) return krn_cuda_fail_msg(LODE_ERR_INVALID, "CUDA: matrix not allocated");
    int64_t n = m->fmt <= FMT_BF16 ? m->rows * m->cols : m->rows * (m->cols / 32);
    random_kernel<<<cdiv(n, 256), 256, 0, STREAM(stream)>>>(*m, seed, scale, n);
    CU_LAUNCHED("random weights");
    return LODE_OK;
}

/* ---- dequantization and embedding lookup ------------------------------------------------ */

/* A unit's values, 8 a thread (one 16-byte store; consecutive threads store consecutive
 * bytes): N / 8 threads a unit, each decoding the unit and keeping its eighth. F32's 4-value
 * units take one thread and two 8-byte stores. */
template <int FMT>
__global__ void dequant_kernel(krn_cuda_mat m, int64_t u0, int64_t nunits, void *out, int out_type)
{
    constexpr int N = Unit<FMT>::N, P = N >= 8 ? N / 8 : 1, E = N >= 8 ? 8 : N;
    const int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, i = g / P;
    const int j = (int)(g % P);
    if (i >= nunits) return;
    float v[N];
    unit_values<FMT>(m, u0 + i, v);
    float o[E];
#pragma unroll
    for (int jj = 0; jj < P; jj++)
        if (jj == j)
#pragma unroll
            for (int e = 0; e < E; e++) o[e] = v[E * jj + e];
    uint32_t w[E / 2];
#pragma unroll
    for (int e = 0; e < E; e += 2) {
        if (out_type == LODE_BF16) {
            const __nv_bfloat162 h = __floats2bfloat162_rn(o[e], o[e + 1]);
            w[e / 2] = *(const uint32_t *)&h;
        } else {
            const __half2 h = __floats2half2_rn(o[e], o[e + 1]);
            w[e / 2] = *(const uint32_t *)&h;
        }
    }
    char *dst = (char *)out + (i * N + (int64_t)E * j) * 2;
    if constexpr (E == 8)
        *(uint4 *)dst = make_uint4(w[0], w[1], w[2], w[3]);
    else
        *(uint2 *)dst = make_uint2(w[0], w[1]);
}

extern "C" lode_status krn_cuda_mat_dequant(const krn_cuda_mat *m, int64_t row0, int64_t nrows,
                                            void *out, int f16, void *stream)
{
    if (!m->fmt || row0 < 0 || row0 + nrows > m->rows)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "CUDA: dequant rows out of range");
    int ue = unit_elems(m->fmt);
    int64_t upr = m->cols / ue, u0 = row0 * upr, nu = nrows * upr;
    int ot = f16 ? LODE_F16 : LODE_BF16;
    if ((uintptr_t)out & 15)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "CUDA: dequant output alignment");
    const int per = ue >= 8 ? ue / 8 : 1; /* threads a unit */
#define DQ(F) dequant_kernel<F><<<cdiv(nu *per, 256), 256, 0, STREAM(stream)>>>(*m, u0, nu, out, ot)
    FMT_DISPATCH(m->fmt, DQ)
#undef DQ
    CU_LAUNCHED("dequant");
    return LODE_OK;
}

template <int FMT> __global__ void embed_kernel(krn_cuda_mat m, const int32_t *tokens, float *out)
{
    constexpr int N = Unit<FMT>::N;
    pdl_wait();
    pdl_trigger();
    int64_t t = blockIdx.x;
    int32_t tok = tokens[t];
    int64_t upr = m.cols / N;
    float *o = out + t * m.cols;
    for (int64_t j = threadIdx.x; j < upr; j += blockDim.x) {
        float v[N];
        if (tok >= 0 && tok < m.rows) {
            unit_values<FMT>(m, tok * upr + j, v);
        } else {
#pragma unroll
            for (int k = 0; k < N; k++) v[k] = 0.f;
        }
#pragma unroll
        for (int k = 0; k < N; k++) o[j * N + k] = v[k];
    }
}

extern "C" lode_status krn_cuda_embed(const krn_cuda_mat *emb, const int32_t *tokens, int64_t n,
                                      float *out, void *stream)
{
    if (!emb->fmt) return krn_cuda_fail_msg(LODE_ERR_INVALID, "CUDA: embedding not allocated");
    if (n <= 0) return LODE_OK;
#define EM(F)                                                                                      \
    CU_TRY(launch_k(embed_kernel<F>, dim3((unsigned)n), dim3(128), 0, STREAM(stream), *emb,        \
                    tokens, out))
    FMT_DISPATCH(emb->fmt, EM)
#undef EM
    CU_LAUNCHED("embed");
    return LODE_OK;
}
