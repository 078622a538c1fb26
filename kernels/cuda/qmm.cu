/*
 * qmm.cu: Y (+)= X W^T for quantized W (Q4_0, Q4_1, Q4_K, Q8_0, Q6_K layouts) on tensor cores,
 * the weights decoded on the fly, for the steps of a few to a few dozen tokens that the
 * batch-1 GEMV does not take: serving steps of many streams and short prefills.
 *
 * The alternative, dequantizing the matrix into a 16-bit buffer for cuBLAS, writes and reads
 * four (Q4) or two (Q8) times the bytes of the weights; on llama3-8b Q4_0 that cost 47 ms a
 * serving step on an H200 against about 1 ms for reading the weights once.
 *
 * X (bf16, the activations of quantized models) is used as it is; each warp decodes its own
 * A fragments of W to bf16 in registers, scale applied ((q - OFF) d, or q d + m), and
 * multiplies them with mma.m16n8k16 into f32 accumulators that run over all of K, so nothing
 * is done per unit of 32 beyond the decoding. A fragment's k positions are a permutation of
 * the unit's elements that keeps each lane's values in the packed word ldmatrix gives it:
 * lane (g, t) holds word t of row g's unit, whose low nibbles are elements 4t..4t+3 (the first
 * k16 step: positions 2t, 2t+1 get elements 4t, 4t+1 and positions 2t+8, 2t+9 get 4t+2, 4t+3)
 * and whose high nibbles are elements 16+4t.. (the second step, the same way). The B fragments
 * of X follow the same map: lane (g, t) reads elements 4t..4t+3 (and 16+4t..) of token g, 8
 * contiguous bytes. So W keeps its one packed layout and X needs no copy.
 *
 * A block has 8 warps and 128 rows of W (16 a warp) and 8 MT tokens (MT n8 tiles); it walks K
 * in stages of KC units that cp.async brings into shared memory several stages ahead (W's
 * packed units, their scales, X's rows). Where rows alone do not fill the GPU, K is split over
 * blocks (S of them) whose f32 partial sums a second kernel adds in a fixed order (no atomics:
 * the same result every run).
 */
#include "kernels/cuda/unit.cuh"

#include <stdlib.h>
#include <string.h>

namespace
{

constexpr int QT = 256;                    /* threads a block */
constexpr int BN = 128;                    /* rows of W a block: 16 a warp */
constexpr int SMEM_MAX = 227 * 1024;       /* a block's shared memory on sm_90 */
constexpr uint32_t BF_MAGIC = 0x43004300u; /* bf16 pair 128 + q for q < 128 in the mantissa */

template <int FMT, int MT, int OCC> struct Qf {
    static constexpr int QW = FMT == FMT_Q8 ? 2 : 1; /* 16-byte slots of a unit's integers */
    /* units a stage: at least 8, so that a stage moves the scale windows by a multiple of 16 */
    static constexpr int KC0 = (MT == 8 || OCC > 1 ? 8 : 16) / QW, KC = KC0 < 8 ? 8 : KC0;
    static constexpr int SB = FMT == FMT_Q4M || FMT == FMT_Q6 ? 4 : 2; /* scale bytes a unit */
    static constexpr bool QH = FMT == FMT_Q6;
    static constexpr int MC = 8 * MT;
    /* row strides in shared memory (bytes): W's rows padded by 16 so that the 8 rows of an
     * ldmatrix fall in distinct banks; scales and Q6 highs are copied in 16-byte aligned
     * windows (a row's units need not start on a 16-byte boundary there), hence one chunk
     * more; X's rows padded by 32 so that the 8-byte reads of 4 tokens x 4 lanes cover the 32
     * banks once */
    static constexpr int WST = KC * QW * 16 + 16;
    static constexpr int SST = (KC * SB + 15) / 16 * 16 + 16;
    static constexpr int HST = KC * 8 + 16;
    static constexpr int XST = KC * 64 + 32;
    static constexpr int OS = BN * WST, OH = OS + BN * SST, OX = OH + (QH ? BN * HST : 0);
    static constexpr int SBYTES = OX + MC * XST;
    static constexpr int SMEM = SMEM_MAX / OCC - 1024; /* a block's share */
    static constexpr int STAGES = SMEM / SBYTES > 6 ? 6 : SMEM / SBYTES;
    static_assert(KC * SB % 16 == 0 && KC % 2 == 0, "qmm: a stage's windows stay 16-byte aligned");
};

struct QmmP {
    krn_cuda_mat w;
    const __nv_bfloat16 *x; /* [M][K] */
    int64_t M, N, K, U;     /* tokens, rows, columns, units a row */
    int nst, cpb;           /* stages of K, stages a block */
    float *part;            /* [S][M][N] when S > 1 */
    void *y;                /* when S == 1 */
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

/* c += a b: mma.m16n8k16, bf16 in, f32 accumulate. */
__device__ __forceinline__ void mma_bf16(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ __nv_bfloat162 as_bf2(uint32_t v)
{
    return *(const __nv_bfloat162 *)&v;
}
__device__ __forceinline__ uint32_t as_u32(__nv_bfloat162 v)
{
    return *(const uint32_t *)&v;
}

/* bf16 pairs from 4 bytes b0..b3 of values below 128 (already shifted into bits 0-6):
 * lo = (b0, b1), hi = (b2, b3), each 128 + value. */
__device__ __forceinline__ void bytes_bf(uint32_t v, uint32_t &lo, uint32_t &hi)
{
    const uint32_t r = __byte_perm(v, 0, 0x3120); /* b0 b2 b1 b3 */
    lo = (r & 0x00FF00FFu) | BF_MAGIC;
    hi = ((r >> 8) & 0x00FF00FFu) | BF_MAGIC;
}

/* The A fragments of one unit for rows g (w0) and g + 8 (w1) of the warp's 16: a0[4] for the
 * first k16 step (elements 4t..4t+3), a1[4] for the second (16+4t..), in mma order (row g
 * positions 2t/2t+1, row g+8 the same, row g positions 2t+8/2t+9, row g+8 the same). The
 * scales are this lane's two rows' (sc0, sc1: d or (d, m) or (s_lo, s_hi) as half or half2). */
template <int FMT, bool POST>
__device__ __forceinline__ void decode_a(const uint32_t *w, uint32_t h0, uint32_t h1, int tq,
                                         const void *sc0, const void *sc1, uint32_t *a0,
                                         uint32_t *a1)
{
    if constexpr (FMT == FMT_Q8) {
        /* w: row g low 16, row g+8 low, row g high, row g+8 high: int8 values; exact floats by
         * the 2^23 trick, times d in f32, then bf16 */
        const float d[2] = {POST ? 1.f : __half2float(*(const __half *)sc0),
                            POST ? 1.f : __half2float(*(const __half *)sc1)};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t u = w[i] ^ 0x80808080u; /* q + 128 */
            const float dd = d[i & 1];
            float f[4];
#pragma unroll
            for (int j = 0; j < 4; j++)
                f[j] =
                    POST ? __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440 | j)) - 8388736.f
                         : (__uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440 | j)) - 8388736.f) *
                               dd;
            uint32_t *dst = i < 2 ? a0 : a1;
            dst[i & 1] = as_u32(__floats2bfloat162_rn(f[0], f[1]));
            dst[2 + (i & 1)] = as_u32(__floats2bfloat162_rn(f[2], f[3]));
        }
    } else if constexpr (FMT == FMT_Q4 || FMT == FMT_Q4M) {
        /* the nibbles straight into bf16 pairs: after bytes b0 b2 b1 b3, the pair masks
         * 0x000F000F at shifts 0, 4, 8, 12 give (b0, b1) low, high and (b2, b3) low, high */
        constexpr float OFF = FMT == FMT_Q4 ? 136.f : 128.f;
        const __nv_bfloat162 off = __float2bfloat162_rn(OFF);
        const void *scs[2] = {sc0, sc1};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            __nv_bfloat162 mul, add;
            if constexpr (FMT == FMT_Q4) {
                mul = POST ? __float2bfloat162_rn(1.f)
                           : __float2bfloat162_rn(__half2float(*(const __half *)scs[r]));
                add = mul;
            } else {
                const float2 f = __half22float2(*(const __half2 *)scs[r]);
                mul = __float2bfloat162_rn(f.x);
                add = __float2bfloat162_rn(f.y);
            }
            const uint32_t p = __byte_perm(w[r], 0, 0x3120);
            const uint32_t v[4] = {
                (p & 0x000F000Fu) | BF_MAGIC, ((p >> 8) & 0x000F000Fu) | BF_MAGIC,
                ((p >> 4) & 0x000F000Fu) | BF_MAGIC, ((p >> 12) & 0x000F000Fu) | BF_MAGIC};
            uint32_t o[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                __nv_bfloat162 t = __hsub2(as_bf2(v[i]), off); /* exact */
                if constexpr (FMT == FMT_Q4M)
                    t = __hfma2(t, mul, add);
                else if constexpr (!POST)
                    t = __hmul2(t, mul);
                o[i] = as_u32(t);
            }
            a0[r] = o[0], a0[2 + r] = o[1], a1[r] = o[2], a1[2 + r] = o[3];
        }
    } else {
        uint32_t q[2][2]; /* [row][step]: 4 bytes of values 0..63 */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            q[r][0] = w[r] & 0x0F0F0F0Fu;
            q[r][1] = (w[r] >> 4) & 0x0F0F0F0Fu;
        }
        if constexpr (FMT == FMT_Q6) {
            const int sh = 2 * (tq >> 1);
            q[0][0] |= ((h0 >> sh) & 0x03030303u) << 4;
            q[0][1] |= ((h0 >> (4 + sh)) & 0x03030303u) << 4;
            q[1][0] |= ((h1 >> sh) & 0x03030303u) << 4;
            q[1][1] |= ((h1 >> (4 + sh)) & 0x03030303u) << 4;
        }
        /* scale pairs a row: mul[r][step], add[r] (Q4M's m) */
        __nv_bfloat162 mul[2][2], add[2];
        constexpr float OFF = FMT == FMT_Q4 ? 136.f : FMT == FMT_Q6 ? 160.f : 128.f;
        const __nv_bfloat162 off = __float2bfloat162_rn(OFF);
        const void *scs[2] = {sc0, sc1};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            if constexpr (FMT == FMT_Q4) {
                mul[r][0] = mul[r][1] = __float2bfloat162_rn(__half2float(*(const __half *)scs[r]));
            } else {
                const float2 f = __half22float2(*(const __half2 *)scs[r]);
                if constexpr (FMT == FMT_Q4M) {
                    mul[r][0] = mul[r][1] = __float2bfloat162_rn(f.x);
                    add[r] = __float2bfloat162_rn(f.y);
                } else {
                    mul[r][0] = __float2bfloat162_rn(f.x);
                    mul[r][1] = __float2bfloat162_rn(f.y);
                }
            }
        }
#pragma unroll
        for (int st = 0; st < 2; st++) {
            uint32_t *dst = st ? a1 : a0;
#pragma unroll
            for (int r = 0; r < 2; r++) {
                uint32_t lo, hi;
                bytes_bf(q[r][st], lo, hi);
                /* 128 + q - OFF is exact; one rounding for the product */
                __nv_bfloat162 vl = __hsub2(as_bf2(lo), off), vh = __hsub2(as_bf2(hi), off);
                if constexpr (FMT == FMT_Q4M) {
                    vl = __hfma2(vl, mul[r][st], add[r]);
                    vh = __hfma2(vh, mul[r][st], add[r]);
                } else {
                    vl = __hmul2(vl, mul[r][st]);
                    vh = __hmul2(vh, mul[r][st]);
                }
                dst[r] = as_u32(vl);
                dst[2 + r] = as_u32(vh);
            }
        }
    }
}

template <int FMT, int MT, int OCC>
__global__ void __launch_bounds__(QT, OCC) qmm_kernel(const QmmP p)
{
    typedef Qf<FMT, MT, OCC> F;
    constexpr int KC = F::KC, QW = F::QW, SB = F::SB, MC = F::MC;
    constexpr int STAGES = F::STAGES, SBYTES = F::SBYTES;
    extern __shared__ float4 smem4[];
    char *const sm = (char *)smem4;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gq = lane >> 2, tq = lane & 3;
    const int64_t m0 = (int64_t)blockIdx.x * MC, r0 = (int64_t)blockIdx.y * BN;
    const int64_t U = p.U, N = p.N, K = p.K, M = p.M;
    const int c0 = (int)blockIdx.z * p.cpb, c1 = min(p.nst, c0 + p.cpb);
    const char *wq = (const char *)p.w.q, *ws = (const char *)p.w.s, *wh = (const char *)p.w.qh;
    /* ends of the scale and Q6 high arrays: the windows stop there */
    const uintptr_t send = (uintptr_t)(ws + N * U * SB), hend = (uintptr_t)(wh + N * U * 8);

    /* This thread's copies of a stage, worked out once: which rows, units and tokens its 16-byte
     * chunks are, as offsets that a stage only shifts. Rows past N and tokens past M read row
     * N - 1 and token M - 1 (their results are not stored); units past U, in the last stage
     * only, are zeros. W: NWC chunks, slot wk of rows rw + j QT / WCH. */
    constexpr int WCH = KC * QW, NWC = BN * WCH / QT;
    static_assert(BN * WCH % QT == 0, "qmm: W chunks a thread");
    const int wk = tid % WCH, rw = tid / WCH;
    const char *const wbase = wq + r0 * U * QW * 16;
    uint32_t woff[NWC];
#pragma unroll
    for (int j = 0; j < NWC; j++) {
        const int64_t r = min(r0 + rw + j * (QT / WCH), N - 1) - r0;
        woff[j] = (uint32_t)((r * U * QW + wk) * 16);
    }
    /* scales (and Q6's highs): the 16-byte aligned window around each row's KC units, which
     * moves by KC * SB (a multiple of 16) a stage */
    constexpr int SW = F::SST / 16, NSC = (BN * SW + QT - 1) / QT;
    const char *sbase[NSC];
#pragma unroll
    for (int j = 0; j < NSC; j++) {
        const int i = tid + j * QT;
        sbase[j] =
            (const char *)(((uintptr_t)(ws + min(r0 + i / SW, N - 1) * U * SB) & ~(uintptr_t)15) +
                           16 * (i % SW));
    }
    constexpr int HW = F::HST / 16, NHC = F::QH ? (BN * HW + QT - 1) / QT : 1;
    const char *hbase[NHC];
#pragma unroll
    for (int j = 0; j < NHC; j++) {
        const int i = tid + j * QT;
        hbase[j] =
            (const char *)(((uintptr_t)(wh + min(r0 + i / HW, N - 1) * U * 8) & ~(uintptr_t)15) +
                           16 * (i % HW));
    }
    /* X: NXC chunks, 16 bytes xk % 4 of unit xk / 4 of tokens tx + j QT / (4 KC) */
    constexpr int XCH = KC * 4, NXC = (MC * XCH + QT - 1) / QT;
    static_assert(MC * XCH % QT == 0 || MC * XCH < QT, "qmm: X chunks a thread");
    const int xk = tid % XCH, tx = tid / XCH;
    const __nv_bfloat16 *const xbase = p.x + (xk / 4) * 32 + (xk % 4) * 8;
    uint32_t xoff[NXC];
#pragma unroll
    for (int j = 0; j < NXC; j++) {
        const int64_t t = min(m0 + tx + j * (QT / XCH), M - 1);
        xoff[j] = (uint32_t)(t * K);
    }

    auto issue = [&](int c) {
        char *st = sm + (size_t)(c % STAGES) * SBYTES;
        const int64_t u0 = (int64_t)c * KC;
        const bool last = c == p.nst - 1;
        /* a window reaches up to 31 bytes past its stage's units: past the end of the array
         * for the last row in the last two stages */
        const bool near_end = c >= p.nst - 2;
        const bool wu_ok = !last || u0 + wk / QW < U;
        const char *const wst = wbase + u0 * QW * 16;
#pragma unroll
        for (int j = 0; j < NWC; j++)
            cp_async16(st + (rw + j * (QT / WCH)) * F::WST + wk * 16, wu_ok ? wst + woff[j] : wq,
                       wu_ok ? 16 : 0);
#pragma unroll
        for (int j = 0; j < NSC; j++) {
            const int i = tid + j * QT;
            if (NSC * QT > BN * SW && i >= BN * SW) break;
            const char *a = sbase[j] + u0 * SB;
            int n = 16;
            if (near_end) {
                const int64_t left = (int64_t)(send - (uintptr_t)a);
                n = left >= 16 ? 16 : left > 0 ? (int)left : 0;
                if (n == 0) a = ws;
            }
            cp_async16(st + F::OS + (i / SW) * F::SST + 16 * (i % SW), a, n);
        }
        if constexpr (F::QH) {
#pragma unroll
            for (int j = 0; j < NHC; j++) {
                const int i = tid + j * QT;
                if (NHC * QT > BN * HW && i >= BN * HW) break;
                const char *a = hbase[j] + u0 * 8;
                int n = 16;
                if (near_end) {
                    const int64_t left = (int64_t)(hend - (uintptr_t)a);
                    n = left >= 16 ? 16 : left > 0 ? (int)left : 0;
                    if (n == 0) a = wh;
                }
                cp_async16(st + F::OH + (i / HW) * F::HST + 16 * (i % HW), a, n);
            }
        }
        /* X's rows: KC units of 32 bf16 a token */
        const bool xu_ok = !last || u0 + xk / 4 < U;
        const __nv_bfloat16 *const xst = xbase + u0 * 32;
#pragma unroll
        for (int j = 0; j < NXC; j++) {
            if (MC * XCH < QT && tid >= MC * XCH) break;
            cp_async16(st + F::OX + (tx + j * (QT / XCH)) * F::XST + xk * 16,
                       xu_ok ? (const void *)(xst + xoff[j]) : (const void *)p.x, xu_ok ? 16 : 0);
        }
    };

    /* few n-tiles give a warp few independent mma chains: then the two k16 steps (and, for
     * 16-byte units, even and odd units) accumulate apart, added at the end */
    /* Q4_0 and Q8_0 with few n-tiles take their one scale after the product: a unit's two mma
     * steps go into fresh sums, scaled in f32 into acc (fewer instructions than scaling the
     * fragments, and only X's rounding) */
    constexpr bool POST = (FMT == FMT_Q4 || FMT == FMT_Q8) && MT <= 2;
    constexpr int NACC = POST || MT >= 4 ? 1 : MT == 2 || QW == 2 ? 2 : 4;
    float acc[NACC][MT][4];
#pragma unroll
    for (int j = 0; j < NACC; j++)
#pragma unroll
        for (int n = 0; n < MT; n++)
            acc[j][n][0] = acc[j][n][1] = acc[j][n][2] = acc[j][n][3] = 0.f;

    /* low bits of this lane's two rows' scale (and Q6 high) addresses */
    uint32_t srow_a[2], hrow_a[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t row = min(r0 + warp * 16 + gq + 8 * h, N - 1);
        srow_a[h] = (uint32_t)(uintptr_t)(ws + row * U * SB);
        hrow_a[h] = (uint32_t)(uintptr_t)(wh + row * U * 8);
    }
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
        /* each row's scale window starts this many bytes before its first unit */
        int soff[2], hoff[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            soff[h] = (int)((srow_a[h] + (uint32_t)u0 * SB) & 15);
            hoff[h] = (int)((hrow_a[h] + (uint32_t)u0 * 8) & 15);
        }
        const char *wrow = st + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * F::WST;
        const char *srow0 = st + F::OS + (warp * 16 + gq) * F::SST + soff[0];
        const char *srow1 = st + F::OS + (warp * 16 + gq + 8) * F::SST + soff[1];
        const char *hrow0 = st + F::OH + (warp * 16 + gq) * F::HST + hoff[0] + 4 * (tq & 1);
        const char *hrow1 = st + F::OH + (warp * 16 + gq + 8) * F::HST + hoff[1] + 4 * (tq & 1);
        /* B: token g of each n-tile, elements 4t.. (first step) and 16+4t.. (second) */
        const char *xrow = st + F::OX + gq * F::XST + 8 * tq;
        /* A words come two units at a time for 16-byte units (matrices 2, 3 of the load are
         * the second unit), one a unit for Q8's 32 bytes (matrices 2, 3: its high half) */
#pragma unroll
        for (int kp = 0; kp < KC; kp += 3 - QW) {
            uint32_t r[4];
            ldsm_x4(r, wrow + kp * QW * 16 + (lane >> 4) * 16);
#pragma unroll
            for (int kk = 0; kk < 3 - QW; kk++) {
                const int k = kp + kk;
                uint32_t w[4];
                if constexpr (QW == 2) {
                    w[0] = r[0], w[1] = r[1], w[2] = r[2], w[3] = r[3];
                } else {
                    w[0] = kk ? r[2] : r[0], w[1] = kk ? r[3] : r[1];
                }
                uint32_t h0 = 0, h1 = 0;
                if constexpr (F::QH) {
                    h0 = *(const uint32_t *)(hrow0 + k * 8);
                    h1 = *(const uint32_t *)(hrow1 + k * 8);
                }
                uint32_t a0[4], a1[4];
                decode_a<FMT, POST>(w, h0, h1, tq, srow0 + k * SB, srow1 + k * SB, a0, a1);
                float d0 = 0.f, d1 = 0.f;
                if constexpr (POST) {
                    d0 = __half2float(*(const __half *)(srow0 + k * SB));
                    d1 = __half2float(*(const __half *)(srow1 + k * SB));
                }
#pragma unroll
                for (int n = 0; n < MT; n++) {
                    const uint2 b0 = *(const uint2 *)(xrow + n * 8 * F::XST + k * 64);
                    const uint2 b1 = *(const uint2 *)(xrow + n * 8 * F::XST + k * 64 + 32);
                    if constexpr (POST) {
                        float c4[4] = {0.f, 0.f, 0.f, 0.f};
                        mma_bf16(c4, a0, b0.x, b0.y);
                        mma_bf16(c4, a1, b1.x, b1.y);
                        acc[0][n][0] = fmaf(d0, c4[0], acc[0][n][0]);
                        acc[0][n][1] = fmaf(d0, c4[1], acc[0][n][1]);
                        acc[0][n][2] = fmaf(d1, c4[2], acc[0][n][2]);
                        acc[0][n][3] = fmaf(d1, c4[3], acc[0][n][3]);
                    } else {
                        const int ja = NACC == 4 ? 2 * kk : 0, jb = NACC > 1 ? ja + 1 : 0;
                        mma_bf16(acc[ja][n], a0, b0.x, b0.y);
                        mma_bf16(acc[jb][n], a1, b1.x, b1.y);
                    }
                }
            }
        }
        __syncthreads(); /* the stage is refilled by the next iteration's issue */
    }
    cp_async_wait<0>();

    /* rows g, g + 8 of the warp; tokens 2t, 2t + 1 of each n-tile */
#pragma unroll
    for (int n = 0; n < MT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int64_t row = r0 + warp * 16 + gq + (e >> 1) * 8;
            const int64_t tok = m0 + n * 8 + 2 * tq + (e & 1);
            if (row >= N || tok >= M) continue;
            float v = acc[0][n][e];
#pragma unroll
            for (int j = 1; j < NACC; j++) v += acc[j][n][e];
            if (p.part) {
                p.part[((int64_t)blockIdx.z * M + tok) * N + row] = v;
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
__global__ void qmm_reduce(const float *part, int S, int64_t M, int64_t N, void *y, int y_type,
                           int64_t ldy, int accumulate)
{
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= M * N) return;
    const int64_t tok = i / N, row = i % N;
    float v = 0.f;
    for (int s = 0; s < S; s++) v += part[((int64_t)s * M + tok) * N + row];
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

template <int FMT, int MT, int OCC> lode_status set_smem()
{
    typedef Qf<FMT, MT, OCC> F;
    static_assert(F::STAGES >= 2, "qmm: two stages must fit");
    CU_TRY(cudaFuncSetAttribute(qmm_kernel<FMT, MT, OCC>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                F::STAGES * F::SBYTES));
    return LODE_OK;
}

template <int FMT> lode_status set_smem_fmt()
{
    lode_status st;
    if ((st = set_smem<FMT, 1, 1>()) || (st = set_smem<FMT, 2, 1>()) ||
        (st = set_smem<FMT, 4, 1>()) || (st = set_smem<FMT, 8, 1>()) ||
        (st = set_smem<FMT, 1, 2>()) || (st = set_smem<FMT, 2, 2>()) ||
        (st = set_smem<FMT, 4, 2>()))
        return st;
    return LODE_OK;
}

/* Blocks an SM for up to 32 tokens: 2 unless LODE_CUDA_QMM_OCC=1 (read once). */
int occ()
{
    static int v = 0;
    if (!v) {
        const char *e = getenv("LODE_CUDA_QMM_OCC");
        v = e && !strcmp(e, "1") ? 1 : 2;
    }
    return v;
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

/* The launch plan for m tokens: n-tiles a block, splits of K. */
struct Plan {
    int MT, OCC, S, cpb, nst;
    int64_t part_bytes;
};

Plan plan(const krn_cuda_mat *w, int64_t m, size_t scratch_bytes)
{
    Plan p;
    p.MT = m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8;
    p.OCC = p.MT == 8 ? 1 : occ();
    const int kc = LODE_MAX(8, (p.MT == 8 || p.OCC > 1 ? 8 : 16) / (w->fmt == FMT_Q8 ? 2 : 1));
    const int64_t U = w->cols / 32, MC = 8 * p.MT;
    p.nst = (int)((U + kc - 1) / kc);
    /* splits of K: the fewest that fill the SMs (a block an SM), by waves times stages a block */
    const int64_t base = (w->rows + BN - 1) / BN * ((m + MC - 1) / MC);
    const int sms = LODE_MAX(1, krn_cuda_sm_count()) * p.OCC;
    int best = 1;
    double best_cost = 0;
    for (int s = 1; s <= p.nst && s <= 16; s++) {
        const int64_t cpb = (p.nst + s - 1) / s;
        if ((p.nst + cpb - 1) / cpb != s) continue;
        const int64_t waves = (base * s + sms - 1) / sms;
        /* a split's partial sums cost a write and a read: count them as a tenth of a stage */
        const double cost = (double)(waves * cpb) * (1.0 + 0.1 * (s > 1));
        if (s == 1 || cost < best_cost * 0.95) best = s, best_cost = cost;
    }
    p.S = best;
    for (;;) {
        p.cpb = (p.nst + p.S - 1) / p.S;
        p.S = (p.nst + p.cpb - 1) / p.cpb;
        p.part_bytes = p.S > 1 ? (int64_t)p.S * m * w->rows * 4 : 0;
        if (p.S == 1 || (size_t)p.part_bytes <= scratch_bytes) break;
        p.S--;
    }
    return p;
}

template <int FMT, int MT, int OCC>
cudaError_t launch(const QmmP &q, const Plan &pl, cudaStream_t st)
{
    typedef Qf<FMT, MT, OCC> F;
    dim3 grid(cdiv(q.M, F::MC), cdiv(q.N, BN), (unsigned)pl.S);
    qmm_kernel<FMT, MT, OCC><<<grid, QT, F::STAGES * F::SBYTES, st>>>(q);
    return cudaGetLastError();
}

template <int FMT> cudaError_t launch_fmt(const QmmP &q, const Plan &pl, cudaStream_t st)
{
    if (pl.MT == 8) return launch<FMT, 8, 1>(q, pl, st);
    if (pl.OCC == 1)
        return pl.MT == 1   ? launch<FMT, 1, 1>(q, pl, st)
               : pl.MT == 2 ? launch<FMT, 2, 1>(q, pl, st)
                            : launch<FMT, 4, 1>(q, pl, st);
    return pl.MT == 1   ? launch<FMT, 1, 2>(q, pl, st)
           : pl.MT == 2 ? launch<FMT, 2, 2>(q, pl, st)
                        : launch<FMT, 4, 2>(q, pl, st);
}

} // namespace

/* Whether qmm takes W for m rows of X within scratch_bytes; *pl gets the plan when it does. */
static bool fits(const krn_cuda_mat *w, int x_f16, int64_t m, size_t scratch_bytes, Plan *pl)
{
    if (!w || x_f16 || m < 1 || w->cols % 32 || w->rows < 1 || m > 65535 * 64 ||
        w->rows > 65535 * (int64_t)BN ||
        (w->fmt != FMT_Q4 && w->fmt != FMT_Q4M && w->fmt != FMT_Q8 && w->fmt != FMT_Q6))
        return false;
    *pl = plan(w, m, scratch_bytes);
    return (size_t)pl->part_bytes <= scratch_bytes;
}

extern "C" int krn_cuda_qmm_fits(const krn_cuda_mat *w, int x_f16, int64_t m, size_t scratch_bytes)
{
    Plan pl;
    return fits(w, x_f16, m, scratch_bytes, &pl);
}

extern "C" lode_status krn_cuda_qmm(const krn_cuda_mat *w, const void *x, int x_f16, int64_t m,
                                    void *y, int y_type, int64_t ldy, int accumulate, void *scratch,
                                    size_t scratch_bytes, void *stream)
{
    Plan pl;
    if (!fits(w, x_f16, m, scratch_bytes, &pl) || !x || !y || ((uintptr_t)x & 15) ||
        ((uintptr_t)scratch & 15) || ldy < w->rows ||
        (y_type != LODE_F32 && y_type != LODE_F16 && y_type != LODE_BF16))
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "qmm: bad arguments");
    lode_status pst = prepare_once();
    if (pst) return pst;
    cudaStream_t st = STREAM(stream);
    QmmP q;
    memset(&q, 0, sizeof q);
    q.w = *w;
    q.x = (const __nv_bfloat16 *)x;
    q.M = m, q.N = w->rows, q.K = w->cols, q.U = w->cols / 32;
    q.nst = pl.nst, q.cpb = pl.cpb;
    q.part = pl.S > 1 ? (float *)scratch : NULL;
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
    if (q.part) {
        qmm_reduce<<<cdiv(m * w->rows, 256), 256, 0, st>>>(q.part, pl.S, m, w->rows, y, y_type, ldy,
                                                           accumulate);
        CU_LAUNCHED("qmm_reduce");
    }
    return LODE_OK;
}
