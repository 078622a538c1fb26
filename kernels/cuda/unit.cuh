/*
 * unit.cuh: lode's packed weight layouts on the device and the decoding of one "unit" (the
 * elements one thread reads with one or two 16-byte loads): 4 floats, 8 halves/bf16, or 32
 * quantized values with their scales. The GEMV, the dequantizer and the embedding lookup
 * all decode through here, so a layout is defined in one place.
 */
#ifndef LODE_KERNELS_CUDA_UNIT_CUH
#define LODE_KERNELS_CUDA_UNIT_CUH

#include "kernels/cuda/common.cuh"

template <int FMT> struct Unit;

/* Integer-valued float from byte k of w, minus `off`: the exponent trick 2^23 + q. */
template <int K> __device__ __forceinline__ float byte_f(uint32_t w, float off)
{
    return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440 | K)) - (8388608.f + off);
}

/* The 32 values of a 4-bit unit in element order: word i low nibbles are elements 4i..4i+3,
 * high nibbles 16+4i..16+4i+3. */
__device__ __forceinline__ void decode_nib(const uint4 q, float off, float *v)
{
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t lo = w[i] & 0x0F0F0F0Fu, hi = (w[i] >> 4) & 0x0F0F0F0Fu;
        v[4 * i + 0] = byte_f<0>(lo, off);
        v[4 * i + 1] = byte_f<1>(lo, off);
        v[4 * i + 2] = byte_f<2>(lo, off);
        v[4 * i + 3] = byte_f<3>(lo, off);
        v[16 + 4 * i + 0] = byte_f<0>(hi, off);
        v[16 + 4 * i + 1] = byte_f<1>(hi, off);
        v[16 + 4 * i + 2] = byte_f<2>(hi, off);
        v[16 + 4 * i + 3] = byte_f<3>(hi, off);
    }
}

/* The nibbles of a 4-bit unit as bytes: lo[i] holds elements 4i..4i+3, hi[i] 16+4i.. */
__device__ __forceinline__ void nib_i8(const uint4 q, int *lo, int *hi)
{
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        lo[i] = (int)(w[i] & 0x0F0F0F0Fu);
        hi[i] = (int)((w[i] >> 4) & 0x0F0F0F0Fu);
    }
}

template <> struct Unit<FMT_F32> {
    static constexpr int N = 4;
    struct Raw {
        float4 a;
    };
    __device__ static Raw load(const krn_cuda_mat &m, int64_t u)
    {
        return Raw{__ldg((const float4 *)m.q + u)};
    }
    /* v = values; slo/shi = scales of elements [0, N/2) and [N/2, N); moff = offset */
    __device__ static void decode(const Raw &r, float *v)
    {
        v[0] = r.a.x, v[1] = r.a.y, v[2] = r.a.z, v[3] = r.a.w;
    }
};

template <> struct Unit<FMT_F16> {
    static constexpr int N = 8;
    struct Raw {
        uint4 a;
    };
    __device__ static Raw load(const krn_cuda_mat &m, int64_t u)
    {
        return Raw{__ldg((const uint4 *)m.q + u)};
    }
    __device__ static void decode(const Raw &r, float *v)
    {
        const uint32_t w[4] = {r.a.x, r.a.y, r.a.z, r.a.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __half22float2(*(const __half2 *)&w[i]);
            v[2 * i] = f.x, v[2 * i + 1] = f.y;
        }
    }
};

template <> struct Unit<FMT_BF16> {
    static constexpr int N = 8;
    struct Raw {
        uint4 a;
    };
    __device__ static Raw load(const krn_cuda_mat &m, int64_t u)
    {
        return Raw{__ldg((const uint4 *)m.q + u)};
    }
    __device__ static void decode(const Raw &r, float *v)
    {
        const uint32_t w[4] = {r.a.x, r.a.y, r.a.z, r.a.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[2 * i] = __uint_as_float(w[i] << 16);
            v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
        }
    }
};

/* Quantized units: decode gives the integer part; scale(lo), scale(hi) and offset m give
 * x = q * s + m (m == 0 except FMT_Q4M). */
template <> struct Unit<FMT_Q4> {
    static constexpr int N = 32;
    struct Raw {
        uint4 a;
        __half d;
    };
    __device__ static Raw load(const krn_cuda_mat &m, int64_t u)
    {
        Raw r;
        r.a = __ldg((const uint4 *)m.q + u);
        r.d = ((const __half *)m.s)[u];
        return r;
    }
    __device__ static void decode(const Raw &r, float *v)
    {
        decode_nib(r.a, 8.f, v);
    }
    static constexpr int OFF = 8;
    __device__ static void decode_i8(const Raw &r, int *lo, int *hi)
    {
        nib_i8(r.a, lo, hi);
    }
    __device__ static float2 scales(const Raw &r)
    {
        float d = __half2float(r.d);
        return make_float2(d, d);
    }
    __device__ static float moff(const Raw &r)
    {
        return 0.f;
    }
};

template <> struct Unit<FMT_Q4M> {
    static constexpr int N = 32;
    struct Raw {
        uint4 a;
        __half2 dm;
    };
    __device__ static Raw load(const krn_cuda_mat &m, int64_t u)
    {
        Raw r;
        r.a = __ldg((const uint4 *)m.q + u);
        r.dm = ((const __half2 *)m.s)[u];
        return r;
    }
    __device__ static void decode(const Raw &r, float *v)
    {
        decode_nib(r.a, 0.f, v);
    }
    static constexpr int OFF = 0;
    __device__ static void decode_i8(const Raw &r, int *lo, int *hi)
    {
        nib_i8(r.a, lo, hi);
    }
    __device__ static float2 scales(const Raw &r)
    {
        float d = __low2float(r.dm);
        return make_float2(d, d);
    }
    __device__ static float moff(const Raw &r)
    {
        return __high2float(r.dm);
    }
};

template <> struct Unit<FMT_Q8> {
    static constexpr int N = 32;
    struct Raw {
        uint4 a, b;
        __half d;
    };
    __device__ static Raw load(const krn_cuda_mat &m, int64_t u)
    {
        Raw r;
        r.a = __ldg((const uint4 *)m.q + 2 * u);
        r.b = __ldg((const uint4 *)m.q + 2 * u + 1);
        r.d = ((const __half *)m.s)[u];
        return r;
    }
    __device__ static void decode(const Raw &r, float *v)
    {
        const uint32_t w[8] = {r.a.x, r.a.y, r.a.z, r.a.w, r.b.x, r.b.y, r.b.z, r.b.w};
#pragma unroll
        for (int i = 0; i < 8; i++) {
            uint32_t x = w[i] ^ 0x80808080u; /* int8 -> q + 128 */
            v[4 * i + 0] = byte_f<0>(x, 128.f);
            v[4 * i + 1] = byte_f<1>(x, 128.f);
            v[4 * i + 2] = byte_f<2>(x, 128.f);
            v[4 * i + 3] = byte_f<3>(x, 128.f);
        }
    }
    static constexpr int OFF = 0;
    __device__ static void decode_i8(const Raw &r, int *lo, int *hi)
    {
        lo[0] = (int)r.a.x, lo[1] = (int)r.a.y, lo[2] = (int)r.a.z, lo[3] = (int)r.a.w;
        hi[0] = (int)r.b.x, hi[1] = (int)r.b.y, hi[2] = (int)r.b.z, hi[3] = (int)r.b.w;
    }
    __device__ static float2 scales(const Raw &r)
    {
        float d = __half2float(r.d);
        return make_float2(d, d);
    }
    __device__ static float moff(const Raw &r)
    {
        return 0.f;
    }
};

/* Q6: low nibbles as FMT_Q4; byte j of the 8 high bytes holds the 2-bit highs of elements
 * j, j+8, j+16, j+24 at bits 0, 2, 4, 6. x = (q - 32) * s, one scale per 16 elements. */
template <> struct Unit<FMT_Q6> {
    static constexpr int N = 32;
    struct Raw {
        uint4 a;
        uint2 h;
        __half2 s;
    };
    __device__ static Raw load(const krn_cuda_mat &m, int64_t u)
    {
        Raw r;
        r.a = __ldg((const uint4 *)m.q + u);
        r.h = __ldg((const uint2 *)m.qh + u);
        r.s = ((const __half2 *)m.s)[u];
        return r;
    }
    __device__ static void decode(const Raw &r, float *v)
    {
        const uint32_t w[4] = {r.a.x, r.a.y, r.a.z, r.a.w};
        const uint32_t hw[2] = {r.h.x, r.h.y};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t lo =
                (w[i] & 0x0F0F0F0Fu) | (((hw[i & 1] >> (2 * (i >> 1))) & 0x03030303u) << 4);
            uint32_t hi = ((w[i] >> 4) & 0x0F0F0F0Fu) |
                          (((hw[i & 1] >> (4 + 2 * (i >> 1))) & 0x03030303u) << 4);
            v[4 * i + 0] = byte_f<0>(lo, 32.f);
            v[4 * i + 1] = byte_f<1>(lo, 32.f);
            v[4 * i + 2] = byte_f<2>(lo, 32.f);
            v[4 * i + 3] = byte_f<3>(lo, 32.f);
            v[16 + 4 * i + 0] = byte_f<0>(hi, 32.f);
            v[16 + 4 * i + 1] = byte_f<1>(hi, 32.f);
            v[16 + 4 * i + 2] = byte_f<2>(hi, 32.f);
            v[16 + 4 * i + 3] = byte_f<3>(hi, 32.f);
        }
    }
    __device__ static float2 scales(const Raw &r)
    {
        return __half22float2(r.s);
    }
    static constexpr int OFF = 32;
    __device__ static void decode_i8(const Raw &r, int *lo, int *hi)
    {
        const uint32_t w[4] = {r.a.x, r.a.y, r.a.z, r.a.w};
        const uint32_t hw[2] = {r.h.x, r.h.y};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            lo[i] =
                (int)((w[i] & 0x0F0F0F0Fu) | (((hw[i & 1] >> (2 * (i >> 1))) & 0x03030303u) << 4));
            hi[i] = (int)(((w[i] >> 4) & 0x0F0F0F0Fu) |
                          (((hw[i & 1] >> (4 + 2 * (i >> 1))) & 0x03030303u) << 4));
        }
    }
    __device__ static float moff(const Raw &r)
    {
        return 0.f;
    }
};

/* Swizzle of the float4 chunks of a unit of x staged in shared memory (chunk c of unit u at
 * c ^ swz(u)), so that the lanes' 16-byte reads of consecutive units hit different banks. */
template <int NC> __device__ __forceinline__ int swz(int u)
{
    if constexpr (NC == 8) return u & 7;
    if constexpr (NC == 2) return (u >> 2) & 1;
    return 0;
}

/* One lane's share of x quantized to int8 per 32 values, as the GEMV and the fused decode
 * kernels stage it: 8 adjacent lanes (aligned on 8) hold a unit's 32 values, 4 each. Gives
 * this lane's 4 integers packed in a word, the sum of the integers of its half of the unit
 * (the 4 lanes c..c+3, c a multiple of 4; every lane of the half gets it) and the unit's
 * scale max|x| / 127. Every lane of the warp must call it (inactive lanes with zeros). */
struct Q8Lane {
    int word, half_sum;
    float scale;
};
__device__ __forceinline__ Q8Lane q8_lane(const float4 v)
{
    float am = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 1));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 2));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 4));
    const float id = am > 0.f ? 127.f / am : 0.f;
    const int q0 = __float2int_rn(v.x * id), q1 = __float2int_rn(v.y * id);
    const int q2 = __float2int_rn(v.z * id), q3 = __float2int_rn(v.w * id);
    int qs = q0 + q1 + q2 + q3;
    qs += __shfl_xor_sync(0xffffffffu, qs, 1);
    qs += __shfl_xor_sync(0xffffffffu, qs, 2);
    Q8Lane r;
    r.word = (q0 & 0xff) | ((q1 & 0xff) << 8) | ((q2 & 0xff) << 16) | ((uint32_t)q3 << 24);
    r.half_sum = qs;
    r.scale = am / 127.f;
    return r;
}

template <int FMT> struct IsQuant {
    static constexpr bool v = FMT >= FMT_Q4;
};

/* Fully dequantized values of unit u (global unit index) into v[Unit<FMT>::N]. */
template <int FMT>
__device__ __forceinline__ void unit_values(const krn_cuda_mat &m, int64_t u, float *v)
{
    typedef Unit<FMT> U;
    typename U::Raw r = U::load(m, u);
    U::decode(r, v);
    if constexpr (IsQuant<FMT>::v) {
        float2 s = U::scales(r);
        float mo = U::moff(r);
#pragma unroll
        for (int i = 0; i < U::N; i++) v[i] = v[i] * (i < U::N / 2 ? s.x : s.y) + mo;
    }
}

/* Calls f.template operator()<FMT>() for the layout of m (device-side dispatch helper). */
#define FMT_DISPATCH(fmt, CALL)                                                                    \
    switch (fmt) {                                                                                 \
    case FMT_F32:                                                                                  \
        CALL(FMT_F32);                                                                             \
        break;                                                                                     \
    case FMT_F16:                                                                                  \
        CALL(FMT_F16);                                                                             \
        break;                                                                                     \
    case FMT_BF16:                                                                                 \
        CALL(FMT_BF16);                                                                            \
        break;                                                                                     \
    case FMT_Q4:                                                                                   \
        CALL(FMT_Q4);                                                                              \
        break;                                                                                     \
    case FMT_Q4M:                                                                                  \
        CALL(FMT_Q4M);                                                                             \
        break;                                                                                     \
    case FMT_Q8:                                                                                   \
        CALL(FMT_Q8);                                                                              \
        break;                                                                                     \
    case FMT_Q6:                                                                                   \
        CALL(FMT_Q6);                                                                              \
        break;                                                                                     \
    default:                                                                                       \
        break;                                                                                     \
    }

static inline int unit_elems(int fmt)
{
    return fmt == FMT_F32 ? 4 : (fmt == FMT_F16 || fmt == FMT_BF16) ? 8 : 32;
}

#endif
