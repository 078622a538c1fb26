/*
 * common.cuh: what every lode .cu file shares: error conversion to lode_status (with the
 * message kept per thread for krn_cuda_errmsg), launch checks, and small device helpers
 * (warp/block reductions, half/bf16 loads). Internal to kernels/cuda/.
 */
#ifndef LODE_KERNELS_CUDA_COMMON_CUH
#define LODE_KERNELS_CUDA_COMMON_CUH

#include "kernels/cuda/cuda_kernels.h"
/* quant.h is C11; its _Static_asserts are static_asserts in C++ */
#ifndef _Static_assert
#define _Static_assert static_assert
#endif
#include "kernels/quant.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* Records `e` with where it happened; returns LODE_ERR_CUDA (LODE_OK when e is success). */
lode_status krn_cuda_fail(cudaError_t e, const char *what, const char *file, int line);
/* Records a non-CUDA message (bad arguments) and returns st. */
lode_status krn_cuda_fail_msg(lode_status st, const char *msg);

#define CU_TRY(call)                                                                               \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return krn_cuda_fail(e_, #call, __FILE__, __LINE__);                \
    } while (0)

/* After a launch: the launch's own error (bad configuration); execution errors surface at
 * the next synchronizing call. */
#define CU_LAUNCHED(name)                                                                          \
    do {                                                                                           \
        cudaError_t e_ = cudaGetLastError();                                                       \
        if (e_ != cudaSuccess) return krn_cuda_fail(e_, name, __FILE__, __LINE__);                 \
    } while (0)

#define STREAM(s) ((cudaStream_t)(s))

/* Kernel timeline trace, a measurement build only (make CUDA=1 KTRACE=1 defines LODE_KTRACE;
 * elsewhere ktrace is empty and krn_ktrace_slot returns NULL). With LODE_CUDA_KTRACE=1, each
 * GEMV and decode-attention launch captured into the first graph gets a slot of nblocks x 4
 * timestamps (%globaltimer), which thread 0 of each block fills at entry (0), after the wait
 * for the previous kernel (1), after its input is staged or its tiles are done (2) and at its
 * end (3); at exit the last replay's slots are summarized on stderr, a line a launch, with the
 * weight bytes the launch reads (0 where they depend on the replay, as a KV cache's do). */
unsigned long long *krn_ktrace_slot(const char *name, unsigned nblocks, size_t bytes,
                                    cudaStream_t st);
/* Allocates the trace buffer (outside any capture); a no-op unless tracing is on. */
void krn_ktrace_init(void);
__device__ __forceinline__ void ktrace(unsigned long long *tr, int ev)
{
#ifdef LODE_KTRACE
    if (tr && threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)::"memory");
        tr[(((size_t)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x) * 4 + ev] = t;
    }
#else
    (void)tr, (void)ev;
#endif
}

/* internal packed layouts of krn_cuda_mat */
enum {
    FMT_F32 = 1, /* unit 4 floats */
    FMT_F16,     /* unit 8 halves */
    FMT_BF16,    /* unit 8 bf16 */
    FMT_Q4,      /* unit 32: 16 B nibbles (byte j: lo = elem j, hi = elem j+16), half d */
    FMT_Q4M,     /* unit 32: 16 B nibbles, half2 (d, m): x = q d + m (Q4_1, Q4_K) */
    FMT_Q8,      /* unit 32: 32 B int8, half d */
    FMT_Q6       /* unit 32: 16 B low nibbles, 8 B high 2-bit pairs, half2 scales of 16 */
};

/* Programmatic dependent launch (Hopper): a kernel of the decode chain is launched while its
 * predecessor still runs, issues the loads that depend on nothing earlier (weights), and
 * waits for the predecessor's results in pdl_wait. Every kernel launched through launch_k
 * calls pdl_wait before it reads anything an earlier kernel wrote; without the launch
 * attribute both instructions are no-ops. */
__device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

/* 1 unless LODE_CUDA_PDL=0 (read once): whether launch_k asks for programmatic launch. */
int krn_cuda_pdl_enabled(void);
/* SMs of the current device (kept a thread and device); 0 when it cannot be read. */
int krn_cuda_sm_count(void);
/* 1 with LODE_CUDA_LAYERS_TRACE set and not 0 (read once): the layer kernels (layers.cu,
 * cluster.cu) record and print per-stage times of eager steps. */
int krn_cuda_layers_trace_on(void);
/* The layer kernels' trace buffer: when tracing is on and st is not being captured (an eager
 * step), *buf gets a device buffer of at least `bytes` (one a thread, grown as needed, shared by
 * both layer kernels); else *buf = NULL. */
lode_status krn_cuda_layers_trace_buf(cudaStream_t st, size_t bytes, unsigned long long **buf);
/* krn_cuda_prepare once a thread and device (the launchers that need its attributes call it). */
lode_status krn_cuda_prepare_once(void);

/* Launches kern<<<grid, block, smem, st>>>(args...) with programmatic stream serialization
 * when enabled; the kernel must call pdl_wait before reading earlier kernels' output. */
template <typename... P, typename... A>
static inline cudaError_t launch_k(void (*kern)(P...), dim3 grid, dim3 block, size_t smem,
                                   cudaStream_t st, A... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    if (krn_cuda_pdl_enabled()) {
        cfg.attrs = at;
        cfg.numAttrs = 1;
    }
    return cudaLaunchKernelEx(&cfg, kern, args...);
}

/* Shared-memory transaction barriers and bulk copies (Hopper): a copy of global memory into
 * shared memory completes on an mbarrier, which counts the bytes it expects. */
__device__ __forceinline__ uint32_t sa(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(bar)), "r"(count) : "memory");
}

/* Makes the initialized barriers visible (before the block's first use of them). */
__device__ __forceinline__ void mbar_init_fence()
{
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

/* Waits until the barrier's phase of the given parity has completed. */
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity)
{
    uint32_t ok = 0;
    while (!ok)
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; "
                     "selp.u32 %0, 1, 0, p; }"
                     : "=r"(ok)
                     : "r"(sa(bar)), "r"(parity)
                     : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t *bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(sa(bar)) : "memory");
}

/* Arrives and adds `bytes` to the transfers the current phase waits for. */
__device__ __forceinline__ void mbar_expect(uint64_t *bar, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sa(bar)), "r"(bytes)
                 : "memory");
}

/* bytes (a multiple of 16, both addresses 16-byte aligned) from global src to shared dst,
 * completing on bar. */
__device__ __forceinline__ void bulk_copy(void *dst, const void *src, uint32_t bytes, uint64_t *bar)
{
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
                 "%2, [%3];" ::"r"(sa(dst)),
                 "l"(src), "r"(bytes), "r"(sa(bar))
                 : "memory");
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
 * `red` is 32 floats of shared memory; the call synchronizes the block. */
__device__ __forceinline__ float block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    return warp_max(v);
}

__device__ __forceinline__ float silu(float g)
{
    return g / (1.f + __expf(-g));
}

/* Stores v as out_type (LODE_F32, LODE_BF16, LODE_F16) at element i of out. */
__device__ __forceinline__ void store_as(void *out, int out_type, int64_t i, float v)
{
    if (out_type == LODE_F32)
        ((float *)out)[i] = v;
    else if (out_type == LODE_BF16)
        ((__nv_bfloat16 *)out)[i] = __float2bfloat16(v);
    else
        ((__half *)out)[i] = __float2half(v);
}

__host__ __device__ static inline unsigned cdiv(int64_t a, int64_t b)
{
    return (unsigned)((a + b - 1) / b);
}

/* Tokens in each decode-attention split of a sequence of seq tokens cut into at most
 * n_split pieces: a multiple of 32, at least 32. */
__host__ __device__ static inline int krn_attn_split_len(int seq, int n_split)
{
    int per = (seq + n_split - 1) / n_split;
    per = (per + 31) / 32 * 32;
    return per < 32 ? 32 : per;
}

/* ---- device helpers shared by the attention kernels ----------------------------------- */

/* Row of position pos of KV head kvh in lode's paged cache ([block][KV head][KV_BLOCK]
 * positions), through the sequence's block table bt. */
__device__ __forceinline__ int64_t cache_row(const krn_cuda_attn_cfg &c, const int32_t *bt,
                                             int64_t pos, int kvh)
{
    int32_t blk = bt[pos / KRN_CUDA_KV_BLOCK];
    return ((int64_t)blk * c.n_kv_head + kvh) * KRN_CUDA_KV_BLOCK + pos % KRN_CUDA_KV_BLOCK;
}

/* c += a b on tensor cores: mma.m16n8k16, f16 in, f32 accumulate. */
__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 f16 matrices from shared memory, transposed: lane l gives the row address of
 * matrix l / 8; register i receives this thread's pair of matrix i. */
__device__ __forceinline__ void ldsm_x4_trans(uint32_t *r, const __half *p)
{
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* Two halves as one word (a fragment register). */
__device__ __forceinline__ uint32_t ld32(const __half *p)
{
    return *(const uint32_t *)p;
}

/* 16 bytes from global to shared memory, asynchronously; bytes past src_bytes are zeroed. */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes = 16)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* Cluster barrier halves: what a block wrote before arriving (shared memory of any block,
 * global memory) is visible to every block after its wait. */
__device__ __forceinline__ void cl_arrive()
{
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}
__device__ __forceinline__ void cl_arrive_relaxed()
{
    asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}
__device__ __forceinline__ void cl_wait()
{
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}

#endif
