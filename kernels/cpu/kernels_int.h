/*
 * kernels_int.h: the table of per-ISA kernel functions behind kernels.h. The portable C
 * variant fills every entry (quant_ref.c, ops_ref.c); the AVX2 and AVX-512 files
 * overwrite the entries they speed up, so a variant is always complete.
 */
#ifndef LODE_KERNELS_CPU_KERNELS_INT_H
#define LODE_KERNELS_CPU_KERNELS_INT_H

#include "kernels/cpu/kernels.h"

typedef void (*krn_dequant_fn)(const void *x, float *y, size_t n);
typedef void (*krn_quant_fn)(const float *x, void *y, size_t n);
typedef float (*krn_dot_fn)(size_t n, const void *w, const void *x);
/* y[t * ldy + r] = dot(row r of w, row t of x) for r < nr, t < nt (nr, nt <= 4).
 * w rows are wstride bytes apart, x rows xstride bytes apart. */
typedef void (*krn_tile_fn)(size_t n, const void *w, size_t wstride, size_t nr, const void *x,
                            size_t xstride, size_t nt, float *y, size_t ldy);

#define KRN_TILE    4  /* max rows and tokens of a tile call */
#define KRN_PANEL_T 16 /* max tokens of a panel call */

typedef struct krn_ops {
    krn_dequant_fn dequant[LODE_DTYPE_MAX];
    krn_quant_fn quant[LODE_DTYPE_MAX];
    krn_dot_fn dot[LODE_DTYPE_MAX]; /* weight type x krn_vec_dot_type */
    krn_tile_fn tile[LODE_DTYPE_MAX];
    /* optional: like tile but any number of rows and nt <= KRN_PANEL_T tokens, the same
     * bits as tile; used for steps of two or more tokens */
    krn_tile_fn panel[LODE_DTYPE_MAX];
    float (*dot_f16_f32)(const lode_half *x, const float *y, size_t n);
    /* sum of x[i] * y[i] for y holding values of halves (so every product is exact) in
     * the order of GGML's AVX-512 build: several = 1: tinyBLAS (n % 16 == 0; 16 partial
     * sums, then _mm512_reduce_add_ps's tree); 0: ggml_vec_dot_f16 (4 x 16 partial sums
     * over n & ~63 terms, folded and reduced the same way, the rest added in double) */
    float (*dot_f16_ordered)(const lode_half *x, const float *y, size_t n, int several);
    /* ns <= 16 consecutive rows of a KV block: out[s] = dot_f16_ordered(k + s*hd, q, hd,
     * several) (kq_block); part[s*hd + d] += p[s] * v[s*hd + d] (pv_block). NULL: kernels.c
     * loops over the row primitives. */
    void (*kq_block)(const lode_half *k, const float *q, size_t hd, int ns, int several,
                     float *out);
    void (*pv_block)(float *part, const float *p, const lode_half *v, size_t hd, int ns);
    /* optional, for hd % 16 == 0: the whole probability x V product of one head in
     * GGML's order, in registers: out[d] = over the n rows j (row j at
     * vblk[j / KRN_KV_BLOCK] + (j % KRN_KV_BLOCK) * hd), the first m of them summed by
     * class j % ncls (each class from +0, fma in order of j), the classes folded as
     * attn_one does for ncls = 64 (then 16) and reduced by the tree of
     * _mm512_reduce_add_ps, the rest (j >= m) added in double in order of j. ncls is 16
     * (m = n) or 64. */
    void (*pv_ordered)(float *out, const float *p, const lode_half *const *vblk, size_t n, size_t m,
                       size_t ncls, size_t hd);
    void (*axpy_f16)(float *acc, float a, const lode_half *v, size_t n); /* acc += a*v */
    float (*dot_f32)(const float *x, const float *y, size_t n);
    /* sum of x[i]*x[i], each square rounded to float and summed in double (as GGML) */
    double (*sumsq)(const float *x, size_t n);
    void (*mul_scale)(float *y, const float *x, const float *w, float s, size_t n); /* (x*s)*w */
    /* y = silu(g) * u, silu(x) = x / (1 + exp(-x)) with the same exp approximation and
     * lane width as GGML's build for this ISA */
    void (*silu_mul)(float *y, const float *g, const float *u, size_t n);
    /* y = exp(x - max), returns the sum in double accumulated per vector as GGML's
     * softmax does (the lane width of the ISA, scalar expf for the tail) */
    double (*exp_sum)(float *y, const float *x, float max, size_t n);
    /* rotates n_head heads by the angles (cs, sn) of their half pairs: pair i is (2i, 2i+1),
     * or (i, i + half) with neox; v[a] = fma(v[a], c, -(v[b] * s)), v[b] = fma(v[a], s,
     * v[b] * c) with the old v[a], v[b] */
    void (*rope)(float *x, size_t n_head, size_t head_dim, size_t half, int neox, const float *cs,
                 const float *sn);
    void (*add)(float *y, const float *a, const float *b, size_t n);
    void (*scale)(float *x, float s, size_t n);
    void (*f16_to_f32)(const lode_half *x, float *y, size_t n);
    void (*f32_to_f16)(const float *x, lode_half *y, size_t n);
} krn_ops;

/* The active table (never NULL after krn_ops_get). */
const krn_ops *krn_ops_get(void);

void krn_ops_init_scalar(krn_ops *o);
void krn_ops_init_avx2(krn_ops *o);   /* call after scalar */
void krn_ops_init_avx512(krn_ops *o); /* call after avx2 */

/* Generic tile from a dot function (no reuse across tokens). */
void krn_tile_from_dot(krn_dot_fn dot, size_t n, const void *w, size_t wstride, size_t nr,
                       const void *x, size_t xstride, size_t nt, float *y, size_t ldy);

/* Scale and min of a Q4_K/Q5_K sub-block j (0..7) from the 12 packed scale bytes. */
static inline void krn_get_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#endif
