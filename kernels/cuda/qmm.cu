/*
 * qmm.cu: Y (+)= X W^T for quantized W (Q4_0, Q4_1, Q4_K, Q8_0, Q6_K layouts) on tensor cores,
 * the weights decoded on the fly, for the steps of a few to a few hundred tokens that the
 * batch-1 GEMV does not take: serving steps of many streams and short prefills.
 *
 * The alternative, dequantizing the matrix into a 16-bit buffer for cuBLAS, writes and reads
 * four (Q4) or two (Q8) times the bytes of the weights; on llama3-8b Q4_0 that cost 47 ms a
 * serving step on an H200 against about 1 ms for reading the weights once.
 *
 * X is quantized first, as the GEMV does it (8 bits per 32 values, one scale each, and the sums
 * of each half's integers), so every unit of 32 is one integer product on tensor cores:
 * mma.m16n8k32 s8 x s8 -> s32 (Q6_K: two m16n8k16, one a 16-value scale), with W's integers
 * (nibbles 0..15, 6-bit 0..63, or int8) as the A operand and X's as B. The integer sums are
 * then scaled: y += dW (dX s - OFF dX sum(qX)) (+ mW dX sum(qX) for Q4_1/Q4_K).
 *
 * A block has 8 warps and 128 rows of W (16 a warp: one A fragment of m16) and all the tokens
 * of its chunk of X (8 MT of them: MT n8 tiles); it walks K in stages of KC units that
 * cp.async brings into shared memory several stages ahead (W's packed units, their scales,
 * X's int8 rows and scales). The A fragments come straight out of the packed units with
 * ldmatrix (the 4 bytes of lane (g, t) are word t of row g's unit: elements 4t.. in the low
 * nibbles, 16 + 4t.. in the high ones, exactly m16n8k32's A layout), so W needs no repacking.
 * Where rows alone do not fill the GPU, K is split over blocks (S of them) whose f32 partial
 * sums are added in a fixed order by a second kernel (no atomics, the same result every run).
 */
#include "kernels/cuda/unit.cuh"

#include <stdlib.h>
#include <string.h>

namespace
{

constexpr int QT = 256; /* threads a block */
constexpr int BN = 128; /* rows of W a block: 16 a warp */
constexpr int SMEM_MAX = 225 * 1024;

template <int FMT> struct Qf {
    static constexpr int QW = FMT == FMT_Q8 ? 2 : 1; /* 16-byte slots of a unit's integers */
    static constexpr int KC = 16 / QW;               /* units a stage */
    static constexpr int SB = FMT == FMT_Q4M || FMT == FMT_Q6 ? 4 : 2; /* scale bytes a unit */
    static constexpr bool QH = FMT == FMT_Q6;
    /* row strides in shared memory (bytes), padded by 16 so that 8 rows fall in distinct
     * banks; scales and Q6 highs are copied in 16-byte aligned windows (a row's units need not
     * start on a 16-byte boundary there), hence their extra 16 */
    static constexpr int WST = KC * QW * 16 + 16;
    static constexpr int SST = KC * SB + 16;
    static constexpr int HST = KC * 8 + 16;
    static constexpr int XST = KC * 32 + 16;
    template <int MT> __host__ __device__ static constexpr int stage_bytes()
    {
        return BN * WST + BN * SST + (QH ? BN * HST : 0) + 8 * MT * XST + 3 * KC * 8 * MT * 4;
    }
    template <int MT> __host__ __device__ static constexpr int stages()
    {
        return SMEM_MAX / stage_bytes<MT>() > 4 ? 4 : SMEM_MAX / stage_bytes<MT>();
    }
};

struct QmmP {
    krn_cuda_mat w;
    const int8_t *xq;  /* [Mp][Up * 32] */
    const float *xs;   /* [3][Up][Mp]: dX, dX * sum(q) of the low half, of the high half */
    int64_t U, Up, Mp; /* units a row of W (and padded to a stage), tokens padded */
    int64_t M, N;
    int cpb;      /* stages a block */
    float *part;  /* [S][Mp][N] when S > 1 */
    void *y;      /* when S == 1 */
    int y_type, accumulate;
    int64_t ldy;
};

/* Four 8x8 b16 matrices from shared memory: lane l gives the row address of matrix l / 8;
 * register i receives word (lane % 4) of row lane / 4 of matrix i. */
__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p)
{
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void mma_s8_k32(int *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
                 : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
}

__device__ __forceinline__ void mma_s8_k16(int *c, uint32_t a0, uint32_t a1, uint32_t b)
{
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, "
                 "{%4,%5}, {%6}, {%7,%7,%7,%7};\n"
                 : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
                 : "r"(a0), "r"(a1), "r"(b), "r"(0));
}

/* X (16-bit, [M][K]) to int8 per 32 values: four threads a unit, 8 values each. Rows past M
 * and units past U (up to Up) are zeros, so the GEMM reads whole stages without bounds. */
__global__ void qmm_quant_x(const uint16_t *x, int x_f16, int64_t M, int64_t K, int64_t U,
                            int64_t Up, int64_t Mp, int8_t *xq, float *xs)
{
    const int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int j = (int)(g & 3);
    const int64_t p = g >> 2, tok = p / Up, u = p % Up;
    const bool in = tok < Mp, val = in && tok < M && u < U;
    float v[8];
    if (val) {
        const uint4 r = *(const uint4 *)(x + tok * K + u * 32 + 8 * j);
        const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f;
            if (x_f16)
                f = __half22float2(*(const __half2 *)&w[i]);
            else
                f = make_float2(__uint_as_float(w[i] << 16), __uint_as_float(w[i] & 0xFFFF0000u));
            v[2 * i] = f.x, v[2 * i + 1] = f.y;
        }
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = 0.f;
    }
    float am = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) am = fmaxf(am, fabsf(v[i]));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 1));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 2));
    const float id = am > 0.f ? 127.f / am : 0.f;
    int q[8], s = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) q[i] = __float2int_rn(v[i] * id), s += q[i];
    s += __shfl_xor_sync(0xffffffffu, s, 1); /* j 0, 1: the low half; 2, 3: the high half */
    if (!in) return;
    uint2 o;
    o.x = (q[0] & 0xff) | ((q[1] & 0xff) << 8) | ((q[2] & 0xff) << 16) | ((uint32_t)q[3] << 24);
    o.y = (q[4] & 0xff) | ((q[5] & 0xff) << 8) | ((q[6] & 0xff) << 16) | ((uint32_t)q[7] << 24);
    *(uint2 *)(xq + tok * Up * 32 + u * 32 + 8 * j) = o;
    const float dx = am / 127.f;
    if (j == 0) xs[u * Mp + tok] = dx;
    if (j == 0) xs[(Up + u) * Mp + tok] = dx * (float)s;
    if (j == 2) xs[(2 * Up + u) * Mp + tok] = dx * (float)s;
}

template <int FMT, int MT> __global__ void __launch_bounds__(QT, 1) qmm_kernel(const QmmP p)
{
    typedef Qf<FMT> F;
    constexpr int KC = F::KC, QW = F::QW, SB = F::SB, MC = 8 * MT;
    constexpr int STAGES = F::template stages<MT>(), SBYTES = F::template stage_bytes<MT>();
    /* W's integers are q + OF for the value q (Q4_0: nibbles 0..15 for -8..7; Q6_K: 0..63) */
    constexpr float OF = FMT == FMT_Q4 ? 8.f : FMT == FMT_Q6 ? 32.f : 0.f;
    extern __shared__ float4 smem4[];
    char *const sm = (char *)smem4;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gq = lane >> 2, tq = lane & 3;
    const int64_t m0 = (int64_t)blockIdx.x * MC, r0 = (int64_t)blockIdx.y * BN;
    const int64_t U = p.U, Up = p.Up, Mp = p.Mp, N = p.N;
    const int nst = (int)(Up / KC);
    const int c0 = (int)blockIdx.z * p.cpb, c1 = min(nst, c0 + p.cpb);
    const char *wq = (const char *)p.w.q, *ws = (const char *)p.w.s, *wh = (const char *)p.w.qh;
    /* ends of the scale and Q6 high arrays: the windows stop there */
    const uintptr_t send = (uintptr_t)(ws + N * U * SB), hend = (uintptr_t)(wh + N * U * 8);

    /* offsets inside a stage */
    constexpr int OW = 0, OS = OW + BN * F::WST, OH = OS + BN * F::SST,
                  OX = OH + (F::QH ? BN * F::HST : 0), OXS = OX + MC * F::XST;

    auto issue = [&](int c) {
        char *st = sm + (size_t)(c % STAGES) * SBYTES;
        const int64_t u0 = (int64_t)c * KC;
        /* W's integers: BN rows x KC * QW slots */
        for (int i = tid; i < BN * KC * QW; i += QT) {
            const int r = i / (KC * QW), k = i % (KC * QW);
            const int64_t row = r0 + r, u = u0 + k / QW;
            const bool ok = row < N && u < U;
            const char *src = wq + ((ok ? row * U + u : 0) * QW + k % QW) * 16;
            cp_async16(st + OW + r * F::WST + k * 16, src, ok ? 16 : 0);
        }
        /* scales (and Q6's highs): the 16-byte aligned window around each row's KC units */
        constexpr int SW = F::SST / 16;
        for (int i = tid; i < BN * SW; i += QT) {
            const int r = i / SW, k = i % SW;
            const int64_t row = min(r0 + r, N - 1);
            const uintptr_t a = ((uintptr_t)(ws + (row * U + u0) * SB) & ~(uintptr_t)15) + 16 * k;
            const int64_t n = (int64_t)(send - a);
            cp_async16(st + OS + r * F::SST + 16 * k, n > 0 ? (const void *)a : (const void *)ws,
                       n >= 16 ? 16 : n > 0 ? (int)n : 0);
        }
        if constexpr (F::QH) {
            constexpr int HW = F::HST / 16;
            for (int i = tid; i < BN * HW; i += QT) {
                const int r = i / HW, k = i % HW;
                const int64_t row = min(r0 + r, N - 1);
                const uintptr_t a = ((uintptr_t)(wh + (row * U + u0) * 8) & ~(uintptr_t)15) + 16 * k;
                const int64_t n = (int64_t)(hend - a);
                cp_async16(st + OH + r * F::HST + 16 * k, n > 0 ? (const void *)a : (const void *)wh,
                           n >= 16 ? 16 : n > 0 ? (int)n : 0);
            }
        }
        /* X's int8 rows (padded: always whole) and its scales [3][KC][MC] */
        for (int i = tid; i < MC * KC * 2; i += QT) {
            const int t = i / (KC * 2), k = i % (KC * 2);
            cp_async16(st + OX + t * F::XST + k * 16, p.xq + (m0 + t) * Up * 32 + u0 * 32 + k * 16);
        }
        for (int i = tid; i < 3 * KC * MC / 4; i += QT) {
            const int a = i / (KC * MC / 4), rem = i % (KC * MC / 4);
            const int k = rem / (MC / 4), t4 = rem % (MC / 4);
            cp_async16(st + OXS + ((a * KC + k) * MC + 4 * t4) * 4,
                       p.xs + (a * Up + u0 + k) * Mp + m0 + 4 * t4);
        }
    };

    float acc[MT][4];
#pragma unroll
    for (int n = 0; n < MT; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    /* each row's scale window starts this many bytes before its first unit */
    int soff[2], hoff[2];
#pragma unroll
    for (int h = 0; h < 2; h++) soff[h] = hoff[h] = 0;

#pragma unroll 1
    for (int s = 0; s < STAGES - 1; s++) {
        if (c0 + s < c1) issue(c0 + s);
        cp_async_commit();
    }
#pragma unroll 1
    for (int c = c0; c < c1; c++) {
        if (c + STAGES - 1 < c1) issue(c + STAGES - 1);
        cp_async_commit();
        cp_async_wait<STAGES - 1>();
        __syncthreads();
        const char *st = sm + (size_t)(c % STAGES) * SBYTES;
        const int64_t u0 = (int64_t)c * KC;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t row = min(r0 + warp * 16 + gq + 8 * h, N - 1);
            soff[h] = (int)((uintptr_t)(ws + (row * U + u0) * SB) & 15);
            hoff[h] = (int)((uintptr_t)(wh + (row * U + u0) * 8) & 15);
        }
        const char *wrow = st + OW + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * F::WST;
        const char *srow0 = st + OS + (warp * 16 + gq) * F::SST + soff[0];
        const char *srow1 = st + OS + (warp * 16 + gq + 8) * F::SST + soff[1];
        const float *xsd = (const float *)(st + OXS), *xsl = xsd + KC * MC, *xsh = xsl + KC * MC;
        /* B fragments: lane l gives token (l & 7) + 8 (l >> 4) of an n-tile pair, half (l >> 3) & 1 */
        const char *xrow = st + OX + ((lane & 7) + 8 * (lane >> 4)) * F::XST + ((lane >> 3) & 1) * 16;
        /* A fragments come two units at a time for 16-byte units (matrices 2, 3 of the load
         * are the second unit), one a unit for Q8's 32 bytes (matrices 2, 3: its high half) */
#pragma unroll 2
        for (int kp = 0; kp < KC; kp += 3 - QW) {
            uint32_t r[4];
            ldsm_x4(r, wrow + kp * QW * 16 + (lane >> 4) * 16);
#pragma unroll
        for (int kk = 0; kk < 3 - QW; kk++) {
            const int k = kp + kk;
            /* A: word tq of rows gq and gq + 8, the unit's low and high 16 values */
            uint32_t a[4];
            if constexpr (QW == 2) {
                a[0] = r[0], a[1] = r[1], a[2] = r[2], a[3] = r[3];
            } else {
                const uint32_t w0 = kk ? r[2] : r[0], w1 = kk ? r[3] : r[1];
                a[0] = w0 & 0x0F0F0F0Fu, a[1] = w1 & 0x0F0F0F0Fu;
                a[2] = (w0 >> 4) & 0x0F0F0F0Fu, a[3] = (w1 >> 4) & 0x0F0F0F0Fu;
                if constexpr (F::QH) {
                    const char *hr0 = st + OH + (warp * 16 + gq) * F::HST + hoff[0] + k * 8;
                    const char *hr1 = st + OH + (warp * 16 + gq + 8) * F::HST + hoff[1] + k * 8;
                    const uint32_t h0 = *(const uint32_t *)(hr0 + 4 * (tq & 1));
                    const uint32_t h1 = *(const uint32_t *)(hr1 + 4 * (tq & 1));
                    const int sh = 2 * (tq >> 1);
                    a[0] |= ((h0 >> sh) & 0x03030303u) << 4;
                    a[1] |= ((h1 >> sh) & 0x03030303u) << 4;
                    a[2] |= ((h0 >> (4 + sh)) & 0x03030303u) << 4;
                    a[3] |= ((h1 >> (4 + sh)) & 0x03030303u) << 4;
                }
            }
            /* W's scales of rows gq, gq + 8 */
            float d0, d1, e0 = 0.f, e1 = 0.f;
            if constexpr (SB == 2) {
                d0 = __half2float(*(const __half *)(srow0 + k * 2));
                d1 = __half2float(*(const __half *)(srow1 + k * 2));
            } else {
                const float2 f0 = __half22float2(*(const __half2 *)(srow0 + k * 4));
                const float2 f1 = __half22float2(*(const __half2 *)(srow1 + k * 4));
                d0 = f0.x, e0 = f0.y, d1 = f1.x, e1 = f1.y;
            }
#pragma unroll
            for (int n = 0; n < MT; n += 2) {
                uint32_t b[4];
                ldsm_x4(b, xrow + n * 8 * F::XST + k * 32);
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int t = (n + h) * 8 + 2 * tq;
                    const float2 dx = *(const float2 *)(xsd + k * MC + t);
                    const float2 sl = *(const float2 *)(xsl + k * MC + t);
                    const float2 sh = *(const float2 *)(xsh + k * MC + t);
                    float *o = acc[n + h];
                    if constexpr (F::QH) {
                        int cl[4], ch[4];
                        mma_s8_k16(cl, a[0], a[1], b[2 * h]);
                        mma_s8_k16(ch, a[2], a[3], b[2 * h + 1]);
                        /* x = (q - 32) s: s_lo (d) for the low 16 values, s_hi (e) the high */
                        o[0] += d0 * fmaf(dx.x, (float)cl[0], -OF * sl.x) +
                                e0 * fmaf(dx.x, (float)ch[0], -OF * sh.x);
                        o[1] += d0 * fmaf(dx.y, (float)cl[1], -OF * sl.y) +
                                e0 * fmaf(dx.y, (float)ch[1], -OF * sh.y);
                        o[2] += d1 * fmaf(dx.x, (float)cl[2], -OF * sl.x) +
                                e1 * fmaf(dx.x, (float)ch[2], -OF * sh.x);
                        o[3] += d1 * fmaf(dx.y, (float)cl[3], -OF * sl.y) +
                                e1 * fmaf(dx.y, (float)ch[3], -OF * sh.y);
                    } else {
                        int cc[4];
                        mma_s8_k32(cc, a, b[2 * h], b[2 * h + 1]);
                        const float s0 = sl.x + sh.x, s1 = sl.y + sh.y;
                        if constexpr (FMT == FMT_Q4M) {
                            /* x = q d + m */
                            o[0] += d0 * dx.x * (float)cc[0] + e0 * s0;
                            o[1] += d0 * dx.y * (float)cc[1] + e0 * s1;
                            o[2] += d1 * dx.x * (float)cc[2] + e1 * s0;
                            o[3] += d1 * dx.y * (float)cc[3] + e1 * s1;
                        } else {
                            o[0] = fmaf(d0, fmaf(dx.x, (float)cc[0], -OF * s0), o[0]);
                            o[1] = fmaf(d0, fmaf(dx.y, (float)cc[1], -OF * s1), o[1]);
                            o[2] = fmaf(d1, fmaf(dx.x, (float)cc[2], -OF * s0), o[2]);
                            o[3] = fmaf(d1, fmaf(dx.y, (float)cc[3], -OF * s1), o[3]);
                        }
                    }
                }
            }
        }
        }
        __syncthreads(); /* the stage is refilled by the next iteration's issue */
    }
    cp_async_wait<0>();

    /* rows gq, gq + 8 of the warp; tokens 2 tq, 2 tq + 1 of each n-tile */
#pragma unroll
    for (int n = 0; n < MT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int64_t row = r0 + warp * 16 + gq + (e >> 1) * 8;
            const int64_t tok = m0 + n * 8 + 2 * tq + (e & 1);
            if (row >= N || tok >= p.M) continue;
            const float v = acc[n][e];
            if (p.part) {
                p.part[((int64_t)blockIdx.z * Mp + tok) * N + row] = v;
            } else {
                const int64_t i = tok * p.ldy + row;
                float o = v;
                if (p.accumulate) {
                    if (p.y_type == LODE_F32)
                        o += ((const float *)p.y)[i];
                    else if (p.y_type == LODE_BF16)
                        o += __bfloat162float(((const __nv_bfloat16 *)p.y)[i]);
                    else
                        o += __half2float(((const __half *)p.y)[i]);
                }
                store_as(p.y, p.y_type, i, o);
            }
        }
}

/* Y = sum over the S splits of the partial sums, in split order (+ Y when accumulating). */
__global__ void qmm_reduce(const float *part, int S, int64_t M, int64_t Mp, int64_t N, void *y,
                           int y_type, int64_t ldy, int accumulate)
{
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= M * N) return;
    const int64_t tok = i / N, row = i % N;
    float v = 0.f;
    for (int s = 0; s < S; s++) v += part[((int64_t)s * Mp + tok) * N + row];
    const int64_t o = tok * ldy + row;
    if (accumulate) {
        if (y_type == LODE_F32)
            v += ((const float *)y)[o];
        else if (y_type == LODE_BF16)
            v += __bfloat162float(((const __nv_bfloat16 *)y)[o]);
        else
            v += __half2float(((const __half *)y)[o]);
    }
    store_as(y, y_type, o, v);
}

template <int FMT, int MT> lode_status set_smem()
{
    constexpr int bytes = Qf<FMT>::template stages<MT>() * Qf<FMT>::template stage_bytes<MT>();
    static_assert(Qf<FMT>::template stages<MT>() >= 2, "qmm: two stages must fit");
    CU_TRY(cudaFuncSetAttribute(qmm_kernel<FMT, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                bytes));
    return LODE_OK;
}

template <int FMT> lode_status set_smem_fmt()
{
    lode_status st;
    if ((st = set_smem<FMT, 2>()) || (st = set_smem<FMT, 4>()) || (st = set_smem<FMT, 8>()))
        return st;
    return LODE_OK;
}

lode_status prepare_once()
{
    static thread_local int prepared = -1;
    int dev = 0;
    CU_TRY(cudaGetDevice(&dev));
    if (prepared == dev) return LODE_OK;
    lode_status st;
    if ((st = set_smem_fmt<FMT_Q4>()) || (st = set_smem_fmt<FMT_Q4M>()) ||
        (st = set_smem_fmt<FMT_Q8>()) || (st = set_smem_fmt<FMT_Q6>()))
        return st;
    prepared = dev;
    return LODE_OK;
}

int sm_count()
{
    static thread_local int n = 0;
    if (!n) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            n = 132;
    }
    return n;
}

int kc_of(int fmt)
{
    return fmt == FMT_Q8 ? Qf<FMT_Q8>::KC : Qf<FMT_Q4>::KC;
}

/* The launch plan for m tokens: n-tiles a block, padded sizes, splits of K. */
struct Plan {
    int MT, S, cpb;
    int64_t U, Up, Mp, xq_bytes, xs_bytes, part_bytes;
};

Plan plan(const krn_cuda_mat *w, int64_t m, size_t scratch_bytes)
{
    Plan p;
    p.MT = m <= 16 ? 2 : m <= 32 ? 4 : 8;
    const int64_t MC = 8 * p.MT;
    const int kc = kc_of(w->fmt);
    p.U = w->cols / 32;
    const int64_t nst = (p.U + kc - 1) / kc;
    p.Up = nst * kc;
    p.Mp = (m + MC - 1) / MC * MC;
    p.xq_bytes = p.Mp * p.Up * 32;
    p.xs_bytes = 3 * p.Up * p.Mp * 4;
    /* splits of K: the fewest that fill the SMs (a block an SM), by waves times stages a block */
    const int64_t base = (w->rows + BN - 1) / BN * (p.Mp / MC);
    const int sms = sm_count();
    int best = 1;
    double best_cost = 0;
    for (int s = 1; s <= nst && s <= 16; s++) {
        const int64_t cpb = (nst + s - 1) / s;
        const int64_t ss = (nst + cpb - 1) / cpb;
        if (ss != s) continue;
        const int64_t waves = (base * s + sms - 1) / sms;
        /* a split's partial sums cost a write and a read: count them as a tenth of a stage */
        const double cost = (double)(waves * cpb) * (1.0 + 0.1 * (s > 1));
        if (s == 1 || cost < best_cost * 0.95) best = s, best_cost = cost;
    }
    p.S = best;
    p.cpb = (int)((nst + p.S - 1) / p.S);
    p.part_bytes = p.S > 1 ? (int64_t)p.S * p.Mp * w->rows * 4 : 0;
    while (p.S > 1 && (size_t)(p.xq_bytes + p.xs_bytes + p.part_bytes) > scratch_bytes) {
        p.S--;
        p.cpb = (int)((nst + p.S - 1) / p.S);
        p.S = (int)((nst + p.cpb - 1) / p.cpb);
        p.part_bytes = p.S > 1 ? (int64_t)p.S * p.Mp * w->rows * 4 : 0;
    }
    return p;
}

template <int FMT, int MT>
cudaError_t launch(const QmmP &q, const Plan &pl, cudaStream_t st)
{
    constexpr int bytes = Qf<FMT>::template stages<MT>() * Qf<FMT>::template stage_bytes<MT>();
    dim3 grid((unsigned)(pl.Mp / (8 * MT)), cdiv(q.N, BN), (unsigned)pl.S);
    qmm_kernel<FMT, MT><<<grid, QT, bytes, st>>>(q);
    return cudaGetLastError();
}

template <int FMT> cudaError_t launch_fmt(const QmmP &q, const Plan &pl, cudaStream_t st)
{
    return pl.MT == 2 ? launch<FMT, 2>(q, pl, st)
           : pl.MT == 4 ? launch<FMT, 4>(q, pl, st)
                        : launch<FMT, 8>(q, pl, st);
}

} // namespace

extern "C" int krn_cuda_qmm_fits(const krn_cuda_mat *w, int64_t m, size_t scratch_bytes)
{
    if (!w || m < 1 || w->cols % 32 || w->rows < 1 || m > INT32_MAX ||
        (w->fmt != FMT_Q4 && w->fmt != FMT_Q4M && w->fmt != FMT_Q8 && w->fmt != FMT_Q6))
        return 0;
    const Plan p = plan(w, m, scratch_bytes);
    return (size_t)(p.xq_bytes + p.xs_bytes + p.part_bytes) <= scratch_bytes &&
           p.Mp / (8 * p.MT) <= INT32_MAX;
}

extern "C" lode_status krn_cuda_qmm(const krn_cuda_mat *w, const void *x, int x_f16, int64_t m,
                                    void *y, int y_type, int64_t ldy, int accumulate,
                                    void *scratch, size_t scratch_bytes, void *stream)
{
    if (!krn_cuda_qmm_fits(w, m, scratch_bytes) || !x || !y || ((uintptr_t)x & 15) ||
        ((uintptr_t)scratch & 15) || ldy < w->rows ||
        (y_type != LODE_F32 && y_type != LODE_F16 && y_type != LODE_BF16))
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "qmm: bad arguments");
    lode_status pst = prepare_once();
    if (pst) return pst;
    const Plan pl = plan(w, m, scratch_bytes);
    cudaStream_t st = STREAM(stream);
    int8_t *xq = (int8_t *)scratch;
    float *xs = (float *)((char *)scratch + pl.xq_bytes);
    float *part = pl.S > 1 ? (float *)((char *)xs + pl.xs_bytes) : NULL;
    const int64_t nq = pl.Mp * pl.Up * 4;
    qmm_quant_x<<<cdiv(nq, 256), 256, 0, st>>>((const uint16_t *)x, x_f16, m, w->cols, pl.U, pl.Up,
                                                pl.Mp, xq, xs);
    CU_LAUNCHED("qmm_quant_x");
    QmmP q;
    memset(&q, 0, sizeof q);
    q.w = *w;
    q.xq = xq;
    q.xs = xs;
    q.U = pl.U, q.Up = pl.Up, q.Mp = pl.Mp, q.M = m, q.N = w->rows;
    q.cpb = pl.cpb;
    q.part = part;
    q.y = y, q.y_type = y_type, q.accumulate = accumulate, q.ldy = ldy;
    cudaError_t e = cudaSuccess;
#define GO(F) e = launch_fmt<F>(q, pl, st)
    switch (w->fmt) {
    case FMT_Q4:
        GO(FMT_Q4);
        break;
    case FMT_Q4M:
        GO(FMT_Q4M);
        break;
    case FMT_Q8:
        GO(FMT_Q8);
        break;
    default:
        GO(FMT_Q6);
        break;
    }
#undef GO
    if (e != cudaSuccess) return krn_cuda_fail(e, "qmm_kernel", __FILE__, __LINE__);
    if (part) {
        qmm_reduce<<<cdiv(m * w->rows, 256), 256, 0, st>>>(part, pl.S, m, pl.Mp, w->rows, y,
                                                           y_type, ldy, accumulate);
        CU_LAUNCHED("qmm_reduce");
    }
    return LODE_OK;
}
