/*
 * ops_ref.c: the portable C variant of the f32 row primitives (dot, norms, SwiGLU,
 * half conversion) and the constructor of the scalar kernel table.
 */
#include <math.h>

#include "kernels/cpu/kernels_int.h"

static float r_dot_f16_f32(const lode_half *x, const float *y, size_t n)
{
    float s = 0;
    for (size_t i = 0; i < n; i++) s += lode_half_to_float(x[i]) * y[i];
    return s;
}

/* the tree of _mm512_reduce_add_ps over p[0..16) */
static float tree16(const float *p)
{
    float t3[8], t6[4];
    for (int i = 0; i < 8; i++) t3[i] = p[i + 8] + p[i];
    for (int i = 0; i < 4; i++) t6[i] = t3[i + 4] + t3[i];
    return (t6[0] + t6[2]) + (t6[1] + t6[3]);
}

static float r_dot_f16_ordered(const lode_half *x, const float *y, size_t n, int several)
{
    float part[64] = {0};
    if (several) {
        for (size_t i = 0; i < n; i++) part[i % 16] += lode_half_to_float(x[i]) * y[i];
        return tree16(part);
    }
    size_t np = n & ~(size_t)63;
    for (size_t i = 0; i < np; i++) part[i % 64] += lode_half_to_float(x[i]) * y[i];
    float f[16];
    for (int i = 0; i < 16; i++) f[i] = (part[i] + part[32 + i]) + (part[16 + i] + part[48 + i]);
    double s = tree16(f);
    for (size_t i = np; i < n; i++) s += (double)(lode_half_to_float(x[i]) * y[i]);
    return (float)s;
}

static void r_axpy_f16(float *acc, float a, const lode_half *v, size_t n)
{
    for (size_t i = 0; i < n; i++) acc[i] += a * lode_half_to_float(v[i]);
}

static void r_rope(float *x, size_t n_head, size_t head_dim, size_t half, int neox, const float *cs,
                   const float *sn)
{
    for (size_t h = 0; h < n_head; h++) {
        float *v = x + h * head_dim;
        for (size_t i = 0; i < half; i++) {
            size_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = fmaf(x0, cs[i], -(x1 * sn[i]));
            v[b] = fmaf(x0, sn[i], x1 * cs[i]);
        }
    }
}

static float r_dot_f32(const float *x, const float *y, size_t n)
{
    float s = 0;
    for (size_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

static double r_sumsq(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)(x[i] * x[i]);
    return s;
}

static void r_mul_scale(float *y, const float *x, const float *w, float s, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

static void r_silu_mul(float *y, const float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = g[i];
        y[i] = v / (1.f + expf(-v)) * u[i];
    }
}

static double r_exp_sum(float *y, const float *x, float max, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        y[i] = expf(x[i] - max);
        s += (double)y[i];
    }
    return s;
}

static void r_add(float *y, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void r_scale(float *x, float s, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

static void r_f16_to_f32(const lode_half *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = lode_half_to_float(x[i]);
}

static void r_f32_to_f16(const float *x, lode_half *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = lode_float_to_half(x[i]);
}

void krn_quant_ref_init(krn_ops *o);

void krn_ops_init_scalar(krn_ops *o)
{
    krn_quant_ref_init(o);
    o->dot_f16_f32 = r_dot_f16_f32;
    o->dot_f16_ordered = r_dot_f16_ordered;
    o->kq_block = NULL;
    o->pv_block = NULL;
    o->pv_ordered = NULL;
    o->axpy_f16 = r_axpy_f16;
    o->dot_f32 = r_dot_f32;
    o->sumsq = r_sumsq;
    o->mul_scale = r_mul_scale;
    o->silu_mul = r_silu_mul;
    o->exp_sum = r_exp_sum;
    o->rope = r_rope;
    o->add = r_add;
    o->scale = r_scale;
    o->f16_to_f32 = r_f16_to_f32;
    o->f32_to_f16 = r_f32_to_f16;
}
