/*
 * encoder.c: the BERT encoder's row kernels (see encoder.h). LayerNorm takes the variance
 * around the mean (two passes) and softmax subtracts the row maximum, so neither loses
 * accuracy on large values. Attention computes its two products with the packed GEMM:
 * written as per-query dot products it ran at a tenth of the speed (a float reduction
 * the compiler does not vectorize) and took two thirds of the embedding time.
 */
#include "kernels/cpu/encoder.h"

#include <math.h>

#include "kernels/cpu/gemm.h"

void krn_layernorm(float *y, const float *x, const float *w, const float *b, size_t n, float eps)
{
    if (krn_gemm_isa() == 2) {
        krn_layernorm_avx512(y, x, w, b, n, eps);
        return;
    }
    float mean = 0, var = 0;
    for (size_t i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
    for (size_t i = 0; i < n; i++) {
        float d = x[i] - mean;
        var += d * d;
    }
    var /= (float)n;
    float inv = 1.0f / sqrtf(var + eps);
    for (size_t i = 0; i < n; i++) y[i] = (x[i] - mean) * inv * w[i] + b[i];
}

void krn_add_bias_layernorm(float *x, const float *r, const float *bias, const float *w,
                            const float *b, size_t n, float eps)
{
    if (krn_gemm_isa() == 2) {
        krn_add_bias_layernorm_avx512(x, r, bias, w, b, n, eps);
        return;
    }
    if (bias)
        for (size_t i = 0; i < n; i++) x[i] += r[i] + bias[i];
    else
        for (size_t i = 0; i < n; i++) x[i] += r[i];
    krn_layernorm(x, x, w, b, n, eps);
}

void krn_bias_gelu(float *x, const float *bias, size_t n)
{
    if (krn_gemm_isa() == 2) {
        if (bias)
            for (size_t i = 0; i < n; i++) x[i] += bias[i];
        krn_gelu_avx512(x, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float u = x[i] + (bias ? bias[i] : 0.0f);
        x[i] = 0.5f * u * (1.0f + erff(u * 0.70710678118654752f));
    }
}

void krn_add_bias(float *x, const float *bias, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] += bias[i];
}

static size_t round16(size_t n)
{
    return (n + 15) / 16 * 16;
}

size_t krn_attention_scratch(size_t n_tok, size_t head_dim)
{
    int isa = krn_gemm_isa();
    return round16(krn_pack_size(n_tok, head_dim, isa)) +
           round16(krn_pack_size(head_dim, n_tok, isa)) + round16(n_tok * n_tok) + round16(n_tok);
}

void krn_attention_full(const float *q, const float *k, const float *v, size_t stride, size_t n_tok,
                        size_t head_dim, float scale, float *out, size_t out_stride, float *scratch)
{
    int isa = krn_gemm_isa();
    float *kp = scratch;
    float *vp = kp + round16(krn_pack_size(n_tok, head_dim, isa));
    float *s = vp + round16(krn_pack_size(head_dim, n_tok, isa));
    float *inv = s + round16(n_tok * n_tok); /* (n_tok) 1 / the softmax rows' sums */
    krn_packed K, V;
    /* scores S = Q K^T: K's rows are the "weights" */
    krn_pack_into(k, stride, 1, n_tok, head_dim, isa, kp, &K);
    krn_gemm_packed(NULL, &K, q, stride, n_tok, s, n_tok, NULL);
    /* P = exp(scale * (S - row max)), left unnormalized: the rows of P V are divided by
     * the sums instead (head_dim values a row, not n_tok) */
    for (size_t i = 0; i < n_tok; i++) {
        float *r = s + i * n_tok;
        if (isa == 2) {
            inv[i] = 1.0f / krn_exp_sum_avx512(r, n_tok, krn_max_avx512(r, n_tok), scale);
            continue;
        }
        float mx = -INFINITY, sum = 0;
        for (size_t j = 0; j < n_tok; j++) mx = r[j] > mx ? r[j] : mx;
        for (size_t j = 0; j < n_tok; j++) {
            r[j] = expf((r[j] - mx) * scale);
            sum += r[j];
        }
        inv[i] = 1.0f / sum;
    }
    /* out = P V: V^T is the weight matrix (head_dim outputs over n_tok inputs) */
    krn_pack_into(v, 1, stride, head_dim, n_tok, isa, vp, &V);
    krn_gemm_packed(NULL, &V, s, n_tok, n_tok, out, out_stride, NULL);
    for (size_t i = 0; i < n_tok; i++) {
        float *o = out + i * out_stride;
        const float iv = inv[i];
        if (isa == 2) {
            krn_scale_avx512(o, head_dim, iv);
            continue;
        }
        for (size_t j = 0; j < head_dim; j++) o[j] *= iv;
    }
}
