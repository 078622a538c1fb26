/*
 * encoder.h: row kernels of the BERT-family encoder (embedding models) that the decoder's
 * kernels (kernels.h) do not have: LayerNorm with bias, the bias-add fused into the
 * residual LayerNorm and into exact (erf) GELU, and full bidirectional attention of one
 * head over one packed sequence. No function allocates.
 */
#ifndef LODE_KERNELS_CPU_ENCODER_H
#define LODE_KERNELS_CPU_ENCODER_H

#include <stddef.h>

/* y = (x - mean(x)) / sqrt(var(x) + eps) * w + b over n floats; y may equal x. */
void krn_layernorm(float *y /* OUT */, const float *x, const float *w, const float *b, size_t n,
                   float eps);
/* In place: x = layernorm(x + r + bias) (the residual add of a BERT sublayer, whose
 * projection r came without its bias; bias may be NULL). */
void krn_add_bias_layernorm(float *x, const float *r, const float *bias, const float *w,
                            const float *b, size_t n, float eps);
/* In place: x = gelu(x + bias), gelu(u) = u/2 * (1 + erf(u / sqrt 2)); bias may be NULL. */
void krn_bias_gelu(float *x, const float *bias, size_t n);
/* In place: x += bias. */
void krn_add_bias(float *x, const float *bias, size_t n);
/* Floats of scratch krn_attention_full needs for up to n_tok tokens of head_dim. */
size_t krn_attention_scratch(size_t n_tok, size_t head_dim);
/* One head of bidirectional attention over n_tok tokens: out[i] = sum_j softmax_j(scale *
 * q[i].k[j]) v[j]. Rows of q, k and v are `stride` floats apart (head_dim used of each),
 * rows of out out_stride apart. scratch: krn_attention_scratch floats, 64-byte aligned.
 * Both products run as packed GEMMs (gemm.h) on the calling thread. */
void krn_attention_full(const float *q, const float *k, const float *v, size_t stride, size_t n_tok,
                        size_t head_dim, float scale, float *out /* OUT */, size_t out_stride,
                        float *scratch);

/* AVX-512 loops behind the functions above (encoder_avx512.c); call only when
 * krn_gemm_isa() == 2. krn_exp_sum_avx512: x[i] = exp((x[i] - sub) * scale), returning
 * their sum; krn_gelu_avx512: x = gelu(x). */
float krn_exp_sum_avx512(float *x, size_t n, float sub, float scale);
void krn_gelu_avx512(float *x, size_t n);
/* krn_layernorm in AVX-512 (the same two passes, summed in 16 lanes). */
void krn_layernorm_avx512(float *y /* OUT */, const float *x, const float *w, const float *b,
                          size_t n, float eps);
/* In place: x *= s over n floats. */
void krn_scale_avx512(float *x, size_t n, float s);
/* krn_add_bias_layernorm in AVX-512, the sum of the residual add taken in the same pass. */
void krn_add_bias_layernorm_avx512(float *x, const float *r, const float *bias, const float *w,
                                   const float *b, size_t n, float eps);
/* The largest of n floats (-INFINITY for n == 0). */
float krn_max_avx512(const float *x, size_t n);

#endif
