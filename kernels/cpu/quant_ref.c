/*
 * quant_ref.c: the portable reference for every block type: dequantization,
 * quantization (activations and, for tests and writers, weights) and the integer dot
 * products of weight blocks with Q8 activation blocks. Written for clarity; the SIMD
 * variants are tested against these.
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/kernels_int.h"

#define H2F(h) lode_half_to_float(h)
#define F2H(f) lode_float_to_half(f)

static int nearest_int(float x)
{
    return (int)lrintf(x);
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- unpacking a weight block into plain integers ---------------------------------- */
/* q4_0/q4_1: q[j] in 0..15 */
static void unpack_q4(const uint8_t *qs, int *q)
{
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 0xF;
        q[j + 16] = qs[j] >> 4;
    }
}

/* q5_0/q5_1: q[j] in 0..31 */
static void unpack_q5(const uint8_t *qs, const uint8_t *qh4, int *q)
{
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
        q[j + 16] = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
    }
}

/* q4_K / q5_K: q[256] in 0..15 / 0..31; sc[8], mn[8] */
static void unpack_q4k(const block_q4_K *b, int *q, int *sc, int *mn)
{
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        krn_get_scale_min_k4(j, b->scales, &s, &m);
        sc[j] = s;
        mn[j] = m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[c * 64 + l] = b->qs[c * 32 + l] & 0xF;
            q[c * 64 + 32 + l] = b->qs[c * 32 + l] >> 4;
        }
}

static void unpack_q5k(const block_q5_K *b, int *q, int *sc, int *mn)
{
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        krn_get_scale_min_k4(j, b->scales, &s, &m);
        sc[j] = s;
        mn[j] = m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int h0 = (b->qh[l] >> (2 * c)) & 1, h1 = (b->qh[l] >> (2 * c + 1)) & 1;
            q[c * 64 + l] = (b->qs[c * 32 + l] & 0xF) | (h0 << 4);
            q[c * 64 + 32 + l] = (b->qs[c * 32 + l] >> 4) | (h1 << 4);
        }
}

/* q6_K: q[256] in -32..31, sc[16] */
static void unpack_q6k(const block_q6_K *b, int *q, int *sc)
{
    for (int g = 0; g < 16; g++) sc[g] = b->scales[g];
    for (int n = 0; n < 2; n++) {
        const uint8_t *ql = b->ql + n * 64, *qh = b->qh + n * 32;
        int *y = q + n * 128;
        for (int l = 0; l < 32; l++) {
            y[l] = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        }
    }
}

/* ---- dequantization ---------------------------------------------------------------- */
static void deq_f32(const void *x, float *y, size_t n)
{
    memcpy(y, x, n * sizeof(float));
}

static void deq_f16(const void *x, float *y, size_t n)
{
    const lode_half *h = x;
    for (size_t i = 0; i < n; i++) y[i] = H2F(h[i]);
}

static void deq_bf16(const void *x, float *y, size_t n)
{
    const lode_bf16 *h = x;
    for (size_t i = 0; i < n; i++) y[i] = lode_bf16_to_float(h[i]);
}

static void deq_q4_0(const void *x, float *y, size_t n)
{
    const block_q4_0 *b = x;
    int q[32];
    for (size_t i = 0; i < n / 32; i++) {
        float d = H2F(b[i].d);
        unpack_q4(b[i].qs, q);
        for (int j = 0; j < 32; j++) y[i * 32 + j] = (float)(q[j] - 8) * d;
    }
}

static void deq_q4_1(const void *x, float *y, size_t n)
{
    const block_q4_1 *b = x;
    int q[32];
    for (size_t i = 0; i < n / 32; i++) {
        float d = H2F(b[i].d), m = H2F(b[i].m);
        unpack_q4(b[i].qs, q);
        for (int j = 0; j < 32; j++) y[i * 32 + j] = (float)q[j] * d + m;
    }
}

static void deq_q5_0(const void *x, float *y, size_t n)
{
    const block_q5_0 *b = x;
    int q[32];
    for (size_t i = 0; i < n / 32; i++) {
        float d = H2F(b[i].d);
        unpack_q5(b[i].qs, b[i].qh, q);
        for (int j = 0; j < 32; j++) y[i * 32 + j] = (float)(q[j] - 16) * d;
    }
}

static void deq_q5_1(const void *x, float *y, size_t n)
{
    const block_q5_1 *b = x;
    int q[32];
    for (size_t i = 0; i < n / 32; i++) {
        float d = H2F(b[i].d), m = H2F(b[i].m);
        unpack_q5(b[i].qs, b[i].qh, q);
        for (int j = 0; j < 32; j++) y[i * 32 + j] = (float)q[j] * d + m;
    }
}

static void deq_q8_0(const void *x, float *y, size_t n)
{
    const block_q8_0 *b = x;
    for (size_t i = 0; i < n / 32; i++) {
        float d = H2F(b[i].d);
        for (int j = 0; j < 32; j++) y[i * 32 + j] = (float)b[i].qs[j] * d;
    }
}

static void deq_q8_1(const void *x, float *y, size_t n)
{
    const block_q8_1 *b = x;
    for (size_t i = 0; i < n / 32; i++) {
        float d = H2F(b[i].d);
        for (int j = 0; j < 32; j++) y[i * 32 + j] = (float)b[i].qs[j] * d;
    }
}

static void deq_q8_K(const void *x, float *y, size_t n)
{
    const block_q8_K *b = x;
    for (size_t i = 0; i < n / QK_K; i++)
        for (int j = 0; j < QK_K; j++) y[i * QK_K + j] = (float)b[i].qs[j] * b[i].d;
}

static void deq_q4_K(const void *x, float *y, size_t n)
{
    const block_q4_K *b = x;
    int q[QK_K], sc[8], mn[8];
    for (size_t i = 0; i < n / QK_K; i++) {
        float d = H2F(b[i].d), dmin = H2F(b[i].dmin);
        unpack_q4k(&b[i], q, sc, mn);
        for (int j = 0; j < QK_K; j++)
            y[i * QK_K + j] = d * (float)sc[j / 32] * (float)q[j] - dmin * (float)mn[j / 32];
    }
}

static void deq_q5_K(const void *x, float *y, size_t n)
{
    const block_q5_K *b = x;
    int q[QK_K], sc[8], mn[8];
    for (size_t i = 0; i < n / QK_K; i++) {
        float d = H2F(b[i].d), dmin = H2F(b[i].dmin);
        unpack_q5k(&b[i], q, sc, mn);
        for (int j = 0; j < QK_K; j++)
            y[i * QK_K + j] = d * (float)sc[j / 32] * (float)q[j] - dmin * (float)mn[j / 32];
    }
}

static void deq_q6_K(const void *x, float *y, size_t n)
{
    const block_q6_K *b = x;
    int q[QK_K], sc[16];
    for (size_t i = 0; i < n / QK_K; i++) {
        float d = H2F(b[i].d);
        unpack_q6k(&b[i], q, sc);
        for (int j = 0; j < QK_K; j++) y[i * QK_K + j] = d * (float)sc[j / 16] * (float)q[j];
    }
}

/* ---- quantization: activations ----------------------------------------------------- */
static float amax_of(const float *x, int n)
{
    float a = 0;
    for (int j = 0; j < n; j++) a = fmaxf(a, fabsf(x[j]));
    return a;
}

static void q_q8_0(const float *x, void *y, size_t n)
{
    block_q8_0 *b = y;
    for (size_t i = 0; i < n / 32; i++) {
        const float *v = x + i * 32;
        float amax = amax_of(v, 32), d = amax / 127.f, id = amax ? 127.f / amax : 0.f;
        b[i].d = F2H(d);
        for (int j = 0; j < 32; j++) b[i].qs[j] = (int8_t)nearest_int(v[j] * id);
    }
}

static void q_q8_1(const float *x, void *y, size_t n)
{
    block_q8_1 *b = y;
    for (size_t i = 0; i < n / 32; i++) {
        const float *v = x + i * 32;
        float amax = amax_of(v, 32), d = amax / 127.f, id = amax ? 127.f / amax : 0.f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            int q = nearest_int(v[j] * id);
            b[i].qs[j] = (int8_t)q;
            sum += q;
        }
        b[i].d = F2H(d);
        b[i].s = F2H((float)sum * d);
    }
}

static void q_q8_K(const float *x, void *y, size_t n)
{
    block_q8_K *b = y;
    for (size_t i = 0; i < n / QK_K; i++) {
        const float *v = x + i * QK_K;
        float amax = amax_of(v, QK_K), d = amax / 127.f, id = amax ? 127.f / amax : 0.f;
        b[i].d = d;
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) {
                int q = clampi(nearest_int(v[g * 16 + j] * id), -127, 127);
                b[i].qs[g * 16 + j] = (int8_t)q;
                sum += q;
            }
            b[i].bsums[g] = (int16_t)sum;
        }
    }
}

/* ---- quantization: weights (reference quality) ------------------------------------- */
static void q_f32(const float *x, void *y, size_t n)
{
    memcpy(y, x, n * sizeof(float));
}

static void q_f16(const float *x, void *y, size_t n)
{
    lode_half *h = y;
    for (size_t i = 0; i < n; i++) h[i] = F2H(x[i]);
}

static void q_bf16(const float *x, void *y, size_t n)
{
    lode_bf16 *h = y;
    for (size_t i = 0; i < n; i++) h[i] = lode_float_to_bf16(x[i]);
}

/* the value of largest magnitude, with its sign */
static float signed_max(const float *x, int n)
{
    float m = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > fabsf(m)) m = x[j];
    return m;
}

static void pack_q4(const int *q, uint8_t *qs)
{
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
}

static void pack_q5(const int *q, uint8_t *qs, uint8_t *qh4)
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        qh |= (uint32_t)(q[j] >> 4) << j;
        qh |= (uint32_t)(q[j + 16] >> 4) << (j + 16);
    }
    memcpy(qh4, &qh, 4);
}

static void q_q4_0(const float *x, void *y, size_t n)
{
    block_q4_0 *b = y;
    int q[32];
    for (size_t i = 0; i < n / 32; i++) {
        const float *v = x + i * 32;
        float d = signed_max(v, 32) / -8.f, id = d ? 1.f / d : 0.f;
        b[i].d = F2H(d);
        for (int j = 0; j < 32; j++) q[j] = clampi(nearest_int(v[j] * id) + 8, 0, 15);
        pack_q4(q, b[i].qs);
    }
}

static void q_q5_0(const float *x, void *y, size_t n)
{
    block_q5_0 *b = y;
    int q[32];
    for (size_t i = 0; i < n / 32; i++) {
        const float *v = x + i * 32;
        float d = signed_max(v, 32) / -16.f, id = d ? 1.f / d : 0.f;
        b[i].d = F2H(d);
        for (int j = 0; j < 32; j++) q[j] = clampi(nearest_int(v[j] * id) + 16, 0, 31);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

static void minmax(const float *v, int n, float *mn, float *mx)
{
    *mn = v[0];
    *mx = v[0];
    for (int j = 1; j < n; j++) {
        if (v[j] < *mn) *mn = v[j];
        if (v[j] > *mx) *mx = v[j];
    }
}

static void q_q4_1(const float *x, void *y, size_t n)
{
    block_q4_1 *b = y;
    int q[32];
    for (size_t i = 0; i < n / 32; i++) {
        const float *v = x + i * 32;
        float mn, mx;
        minmax(v, 32, &mn, &mx);
        float d = (mx - mn) / 15.f, id = d ? 1.f / d : 0.f;
        b[i].d = F2H(d);
        b[i].m = F2H(mn);
        float m = H2F(b[i].m);
        for (int j = 0; j < 32; j++) q[j] = clampi(nearest_int((v[j] - m) * id), 0, 15);
        pack_q4(q, b[i].qs);
    }
}

static void q_q5_1(const float *x, void *y, size_t n)
{
    block_q5_1 *b = y;
    int q[32];
    for (size_t i = 0; i < n / 32; i++) {
        const float *v = x + i * 32;
        float mn, mx;
        minmax(v, 32, &mn, &mx);
        float d = (mx - mn) / 31.f, id = d ? 1.f / d : 0.f;
        b[i].d = F2H(d);
        b[i].m = F2H(mn);
        float m = H2F(b[i].m);
        for (int j = 0; j < 32; j++) q[j] = clampi(nearest_int((v[j] - m) * id), 0, 31);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

static void q_q8_0w(const float *x, void *y, size_t n)
{
    q_q8_0(x, y, n);
}

/* Scale and min (x ~ s*q - m, q in 0..nmax) of a 32-value sub-block: start from the
 * range, then alternate rounding q and a least-squares fit of s and m. */
static void fit_scale_min(const float *v, int nmax, float *s_out, float *m_out)
{
    float mn, mx;
    minmax(v, 32, &mn, &mx);
    if (mn > 0) mn = 0;
    float s = (mx - mn) / (float)nmax, m = -mn;
    for (int it = 0; it < 4 && s > 0; it++) {
        double sq = 0, sqq = 0, sx = 0, sqx = 0;
        for (int j = 0; j < 32; j++) {
            int q = clampi(nearest_int((v[j] + m) / s), 0, nmax);
            sq += q;
            sqq += (double)q * q;
            sx += v[j];
            sqx += (double)q * v[j];
        }
        double det = 32 * sqq - sq * sq;
        if (det <= 0) break;
        double ns = (32 * sqx - sq * sx) / det;
        double nm = (ns * sq - sx) / 32; /* x = s q - m */
        if (ns <= 0 || nm < 0) break;
        s = (float)ns;
        m = (float)nm;
    }
    *s_out = s;
    *m_out = m;
}

static void pack_scales_k4(const int *sc, const int *mn, uint8_t *q)
{
    memset(q, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            q[j] |= (uint8_t)(sc[j] & 63);
            q[j + 4] |= (uint8_t)(mn[j] & 63);
        } else {
            q[j + 4] = (uint8_t)((sc[j] & 0xF) | ((mn[j] & 0xF) << 4));
            q[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            q[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): fills d, dmin, scales and q[256]. */
static void quant_k_super(const float *v, int nmax, lode_half *dh, lode_half *dminh,
                          uint8_t *scales, int *q)
{
    float s[8], m[8], smax = 0, mmax = 0;
    for (int j = 0; j < 8; j++) {
        fit_scale_min(v + j * 32, nmax, &s[j], &m[j]);
        smax = fmaxf(smax, s[j]);
        mmax = fmaxf(mmax, m[j]);
    }
    float d = smax / 63.f, dmin = mmax / 63.f;
    *dh = F2H(d);
    *dminh = F2H(dmin);
    d = H2F(*dh);
    dmin = H2F(*dminh);
    int sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = d ? clampi(nearest_int(s[j] / d), 0, 63) : 0;
        mn[j] = dmin ? clampi(nearest_int(m[j] / dmin), 0, 63) : 0;
        float ds = d * (float)sc[j], dm = dmin * (float)mn[j];
        for (int l = 0; l < 32; l++)
            q[j * 32 + l] = ds ? clampi(nearest_int((v[j * 32 + l] + dm) / ds), 0, nmax) : 0;
    }
    pack_scales_k4(sc, mn, scales);
}

static void q_q4_K(const float *x, void *y, size_t n)
{
    block_q4_K *b = y;
    int q[QK_K];
    for (size_t i = 0; i < n / QK_K; i++) {
        quant_k_super(x + i * QK_K, 15, &b[i].d, &b[i].dmin, b[i].scales, q);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[c * 32 + l] = (uint8_t)(q[c * 64 + l] | (q[c * 64 + 32 + l] << 4));
    }
}

static void q_q5_K(const float *x, void *y, size_t n)
{
    block_q5_K *b = y;
    int q[QK_K];
    for (size_t i = 0; i < n / QK_K; i++) {
        quant_k_super(x + i * QK_K, 31, &b[i].d, &b[i].dmin, b[i].scales, q);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int lo = q[c * 64 + l], hi = q[c * 64 + 32 + l];
                b[i].qs[c * 32 + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
                b[i].qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            }
    }
}

static void q_q6_K(const float *x, void *y, size_t n)
{
    block_q6_K *b = y;
    for (size_t i = 0; i < n / QK_K; i++) {
        const float *v = x + i * QK_K;
        float gs[16], smax = 0;
        for (int g = 0; g < 16; g++) {
            gs[g] = signed_max(v + g * 16, 16) / -32.f;
            if (fabsf(gs[g]) > fabsf(smax)) smax = gs[g];
        }
        float d = smax / -128.f;
        b[i].d = F2H(d);
        d = H2F(b[i].d);
        int L[QK_K];
        for (int g = 0; g < 16; g++) {
            int sc = d ? clampi(nearest_int(gs[g] / d), -128, 127) : 0;
            b[i].scales[g] = (int8_t)sc;
            float ds = d * (float)sc;
            for (int l = 0; l < 16; l++)
                L[g * 16 + l] = ds ? clampi(nearest_int(v[g * 16 + l] / ds), -32, 31) + 32 : 32;
        }
        for (int h = 0; h < 2; h++) {
            uint8_t *ql = b[i].ql + h * 64, *qh = b[i].qh + h * 32;
            const int *Lh = L + h * 128;
            for (int l = 0; l < 32; l++) {
                int q1 = Lh[l], q2 = Lh[l + 32], q3 = Lh[l + 64], q4 = Lh[l + 96];
                ql[l] = (uint8_t)((q1 & 0xF) | ((q3 & 0xF) << 4));
                ql[l + 32] = (uint8_t)((q2 & 0xF) | ((q4 & 0xF) << 4));
                qh[l] =
                    (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}

/* ---- dot products ------------------------------------------------------------------ */
static float dot_f32(size_t n, const void *w, const void *x)
{
    const float *a = w, *b = x;
    float s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static float dot_f16(size_t n, const void *w, const void *x)
{
    const lode_half *a = w;
    const float *b = x;
    float s = 0;
    for (size_t i = 0; i < n; i++) s += H2F(a[i]) * b[i];
    return s;
}

static float dot_bf16(size_t n, const void *w, const void *x)
{
    const lode_bf16 *a = w;
    const float *b = x;
    float s = 0;
    for (size_t i = 0; i < n; i++) s += lode_bf16_to_float(a[i]) * b[i];
    return s;
}

static int idot32(const int *q, const int8_t *x)
{
    int s = 0;
    for (int j = 0; j < 32; j++) s += q[j] * x[j];
    return s;
}

/* The float side of GGML's x86 dot products of 32-element blocks, which every ISA here
 * follows so that results round as llama.cpp's do: per block, 8 lanes each get
 * fma(d_w * d_x, integer sum of 4 consecutive products, lane); at the end the lanes are
 * added in hsum_float_8's order. */
static void lanes_block(float lane[8], float d, const int *q, const int8_t *x)
{
    for (int k = 0; k < 8; k++) {
        int s = 0;
        for (int j = 4 * k; j < 4 * k + 4; j++) s += q[j] * x[j];
        lane[k] = fmaf(d, (float)s, lane[k]);
    }
}

static float lanes_sum(const float lane[8])
{
    float r[4];
    for (int i = 0; i < 4; i++) r[i] = lane[i + 4] + lane[i];
    return (r[0] + r[2]) + (r[1] + r[3]);
}

static float dot_q4_0(size_t n, const void *w, const void *x)
{
    const block_q4_0 *a = w;
    const block_q8_0 *b = x;
    int q[32];
    float lane[8] = {0};
    for (size_t i = 0; i < n / 32; i++) {
        unpack_q4(a[i].qs, q);
        for (int j = 0; j < 32; j++) q[j] -= 8;
        lanes_block(lane, H2F(a[i].d) * H2F(b[i].d), q, b[i].qs);
    }
    return lanes_sum(lane);
}

static float dot_q4_1(size_t n, const void *w, const void *x)
{
    const block_q4_1 *a = w;
    const block_q8_1 *b = x;
    int q[32];
    float lane[8] = {0}, mins = 0;
    for (size_t i = 0; i < n / 32; i++) {
        unpack_q4(a[i].qs, q);
        mins = fmaf(H2F(a[i].m), H2F(b[i].s), mins);
        lanes_block(lane, H2F(a[i].d) * H2F(b[i].d), q, b[i].qs);
    }
    return lanes_sum(lane) + mins;
}

static float dot_q5_0(size_t n, const void *w, const void *x)
{
    const block_q5_0 *a = w;
    const block_q8_0 *b = x;
    int q[32];
    float lane[8] = {0};
    for (size_t i = 0; i < n / 32; i++) {
        unpack_q5(a[i].qs, a[i].qh, q);
        for (int j = 0; j < 32; j++) q[j] -= 16;
        lanes_block(lane, H2F(a[i].d) * H2F(b[i].d), q, b[i].qs);
    }
    return lanes_sum(lane);
}

static float dot_q5_1(size_t n, const void *w, const void *x)
{
    const block_q5_1 *a = w;
    const block_q8_1 *b = x;
    int q[32];
    float lane[8] = {0}, mins = 0;
    for (size_t i = 0; i < n / 32; i++) {
        unpack_q5(a[i].qs, a[i].qh, q);
        mins = fmaf(H2F(a[i].m), H2F(b[i].s), mins);
        lanes_block(lane, H2F(a[i].d) * H2F(b[i].d), q, b[i].qs);
    }
    return lanes_sum(lane) + mins;
}

static float dot_q8_0(size_t n, const void *w, const void *x)
{
    const block_q8_0 *a = w;
    const block_q8_0 *b = x;
    int q[32];
    float lane[8] = {0};
    for (size_t i = 0; i < n / 32; i++) {
        for (int j = 0; j < 32; j++) q[j] = a[i].qs[j];
        lanes_block(lane, H2F(a[i].d) * H2F(b[i].d), q, b[i].qs);
    }
    return lanes_sum(lane);
}

static float dot_q4_K(size_t n, const void *w, const void *x)
{
    const block_q4_K *a = w;
    const block_q8_K *b = x;
    int q[QK_K], sc[8], mn[8];
    float s = 0;
    for (size_t i = 0; i < n / QK_K; i++) {
        unpack_q4k(&a[i], q, sc, mn);
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            sumi += sc[j] * idot32(q + j * 32, b[i].qs + j * 32);
            summ += mn[j] * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        }
        s += b[i].d * (H2F(a[i].d) * (float)sumi - H2F(a[i].dmin) * (float)summ);
    }
    return s;
}

static float dot_q5_K(size_t n, const void *w, const void *x)
{
    const block_q5_K *a = w;
    const block_q8_K *b = x;
    int q[QK_K], sc[8], mn[8];
    float s = 0;
    for (size_t i = 0; i < n / QK_K; i++) {
        unpack_q5k(&a[i], q, sc, mn);
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            sumi += sc[j] * idot32(q + j * 32, b[i].qs + j * 32);
            summ += mn[j] * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        }
        s += b[i].d * (H2F(a[i].d) * (float)sumi - H2F(a[i].dmin) * (float)summ);
    }
    return s;
}

static float dot_q6_K(size_t n, const void *w, const void *x)
{
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    int q[QK_K], sc[16];
    float s = 0;
    for (size_t i = 0; i < n / QK_K; i++) {
        unpack_q6k(&a[i], q, sc);
        int sumi = 0;
        for (int g = 0; g < 16; g++) {
            int t = 0;
            for (int l = 0; l < 16; l++) t += q[g * 16 + l] * b[i].qs[g * 16 + l];
            sumi += sc[g] * t;
        }
        s += H2F(a[i].d) * b[i].d * (float)sumi;
    }
    return s;
}

void krn_tile_from_dot(krn_dot_fn dot, size_t n, const void *w, size_t wstride, size_t nr,
                       const void *x, size_t xstride, size_t nt, float *y, size_t ldy)
{
    for (size_t t = 0; t < nt; t++)
        for (size_t r = 0; r < nr; r++)
            y[t * ldy + r] = dot(n, (const char *)w + r * wstride, (const char *)x + t * xstride);
}

void krn_quant_ref_init(krn_ops *o);
void krn_quant_ref_init(krn_ops *o)
{
    o->dequant[LODE_F32] = deq_f32;
    o->dequant[LODE_F16] = deq_f16;
    o->dequant[LODE_BF16] = deq_bf16;
    o->dequant[LODE_Q4_0] = deq_q4_0;
    o->dequant[LODE_Q4_1] = deq_q4_1;
    o->dequant[LODE_Q5_0] = deq_q5_0;
    o->dequant[LODE_Q5_1] = deq_q5_1;
    o->dequant[LODE_Q8_0] = deq_q8_0;
    o->dequant[LODE_Q8_1] = deq_q8_1;
    o->dequant[LODE_Q4_K] = deq_q4_K;
    o->dequant[LODE_Q5_K] = deq_q5_K;
    o->dequant[LODE_Q6_K] = deq_q6_K;
    o->dequant[LODE_Q8_K] = deq_q8_K;

    o->quant[LODE_F32] = q_f32;
    o->quant[LODE_F16] = q_f16;
    o->quant[LODE_BF16] = q_bf16;
    o->quant[LODE_Q4_0] = q_q4_0;
    o->quant[LODE_Q4_1] = q_q4_1;
    o->quant[LODE_Q5_0] = q_q5_0;
    o->quant[LODE_Q5_1] = q_q5_1;
    o->quant[LODE_Q8_0] = q_q8_0w;
    o->quant[LODE_Q8_1] = q_q8_1;
    o->quant[LODE_Q4_K] = q_q4_K;
    o->quant[LODE_Q5_K] = q_q5_K;
    o->quant[LODE_Q6_K] = q_q6_K;
    o->quant[LODE_Q8_K] = q_q8_K;

    o->dot[LODE_F32] = dot_f32;
    o->dot[LODE_F16] = dot_f16;
    o->dot[LODE_BF16] = dot_bf16;
    o->dot[LODE_Q4_0] = dot_q4_0;
    o->dot[LODE_Q4_1] = dot_q4_1;
    o->dot[LODE_Q5_0] = dot_q5_0;
    o->dot[LODE_Q5_1] = dot_q5_1;
    o->dot[LODE_Q8_0] = dot_q8_0;
    o->dot[LODE_Q4_K] = dot_q4_K;
    o->dot[LODE_Q5_K] = dot_q5_K;
    o->dot[LODE_Q6_K] = dot_q6_K;
    for (int t = 0; t < LODE_DTYPE_MAX; t++) o->tile[t] = o->panel[t] = NULL;
}
