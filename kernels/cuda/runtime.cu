/*
 * runtime.cu: the CUDA runtime behind cuda_kernels.h's device, memory, stream, event and
 * graph entry points, and the per-thread error text. Every call converts cudaError_t to
 * lode_status here so that no caller sees a CUDA type.
 */
#include "kernels/cuda/common.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static thread_local char errbuf[256];

lode_status krn_cuda_fail(cudaError_t e, const char *what, const char *file, int line)
{
    if (e == cudaSuccess) return LODE_OK;
    snprintf(errbuf, sizeof errbuf, "%s: %s (%s:%d)", what, cudaGetErrorString(e), file, line);
    cudaGetLastError(); /* clear a non-sticky error */
    return LODE_ERR_CUDA;
}

lode_status krn_cuda_fail_msg(lode_status st, const char *msg)
{
    snprintf(errbuf, sizeof errbuf, "%s", msg);
    return st;
}

int krn_cuda_layers_trace_on(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LODE_CUDA_LAYERS_TRACE");
        on = e && *e && strcmp(e, "0") != 0;
    }
    return on;
}

lode_status krn_cuda_layers_trace_buf(cudaStream_t st, size_t bytes, unsigned long long **buf)
{
    static thread_local unsigned long long *tbuf = nullptr;
    static thread_local size_t tbytes = 0;
    *buf = nullptr;
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (!krn_cuda_layers_trace_on() || cudaStreamIsCapturing(st, &cs) != cudaSuccess ||
        cs != cudaStreamCaptureStatusNone)
        return LODE_OK;
    if (bytes > tbytes) {
        cudaFree(tbuf);
        tbuf = nullptr;
        tbytes = 0;
        CU_TRY(cudaMalloc(&tbuf, bytes));
        tbytes = bytes;
    }
    *buf = tbuf;
    return LODE_OK;
}

#ifdef LODE_KTRACE
namespace
{
struct KtRec {
    const char *name;
    size_t off;
    unsigned nb;
    size_t bytes;
};
constexpr size_t KT_WORDS = (size_t)8 << 20; /* 64 MB of timestamps */
constexpr int KT_RECS = 4096;
unsigned long long *kt_buf = nullptr;
size_t kt_used = 0;
KtRec kt_rec[KT_RECS];
int kt_n = 0;

int kt_on(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LODE_CUDA_KTRACE");
        on = e && !strcmp(e, "1");
    }
    return on;
}

int cmp_u64(const void *a, const void *b)
{
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}

/* At exit: per launch and event, the earliest, median and latest block, in ns from the first
 * launch's first block (0 = never written, e.g. an attention split with no tokens). */
void kt_dump(void)
{
    if (!kt_buf || !kt_n) return;
    unsigned long long *h = (unsigned long long *)malloc(kt_used * 8);
    unsigned long long *v = (unsigned long long *)malloc(65536 * 8);
    if (!h || !v || cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpy(h, kt_buf, kt_used * 8, cudaMemcpyDeviceToHost) != cudaSuccess) {
        fprintf(stderr, "ktrace: could not read the trace back\n");
        free(h);
        free(v);
        return;
    }
    unsigned long long t0 = ~0ull;
    for (size_t i = 0; i < kt_rec[0].nb; i++)
        if (h[kt_rec[0].off + 4 * i] && h[kt_rec[0].off + 4 * i] < t0)
            t0 = h[kt_rec[0].off + 4 * i];
    fprintf(stderr,
            "KT idx name blocks bytes | per event (entry, after wait, staged, end): min med "
            "max ns from the first launch's first block\n");
    for (int r = 0; r < kt_n; r++) {
        fprintf(stderr, "KT %d %s %u %zu", r, kt_rec[r].name, kt_rec[r].nb, kt_rec[r].bytes);
        for (int e = 0; e < 4; e++) {
            size_t n = 0;
            for (size_t i = 0; i < kt_rec[r].nb && n < 65536; i++) {
                unsigned long long x = h[kt_rec[r].off + 4 * i + e];
                if (x) v[n++] = x - t0;
            }
            if (!n) {
                fprintf(stderr, " | - - -");
                continue;
            }
            qsort(v, n, 8, cmp_u64);
            fprintf(stderr, " | %llu %llu %llu", v[0], v[n / 2], v[n - 1]);
        }
        fprintf(stderr, "\n");
    }
    free(v);
    free(h);
}
} // namespace
#endif

extern "C" int krn_cuda_env_on(const char *name, int *cache)
{
    if (*cache < 0) {
        const char *e = getenv(name);
        *cache = !(e && !strcmp(e, "0"));
    }
    return *cache;
}

void krn_ktrace_init(void)
{
#ifdef LODE_KTRACE
    if (!kt_on() || kt_buf) return;
    if (cudaMalloc(&kt_buf, KT_WORDS * 8) != cudaSuccess ||
        cudaMemset(kt_buf, 0, KT_WORDS * 8) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess) {
        fprintf(stderr, "ktrace: no device memory for the trace; tracing off\n");
        cudaFree(kt_buf);
        kt_buf = nullptr;
        cudaGetLastError();
        return;
    }
    atexit(kt_dump);
#endif
}

unsigned long long *krn_ktrace_slot(const char *name, unsigned nblocks, size_t bytes,
                                    cudaStream_t st)
{
#ifdef LODE_KTRACE
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    unsigned long long id = 0;
    if (!kt_on() || !kt_buf || cudaStreamGetCaptureInfo(st, &cs, &id) != cudaSuccess ||
        cs != cudaStreamCaptureStatusActive)
        return nullptr;
    /* only the first captured graph is traced */
    static unsigned long long first_id = 0;
    if (!first_id) first_id = id;
    if (id != first_id || kt_used + (size_t)nblocks * 4 > KT_WORDS || kt_n >= KT_RECS)
        return nullptr;
    kt_rec[kt_n++] = KtRec{name, kt_used, nblocks, bytes};
    unsigned long long *p = kt_buf + kt_used;
    kt_used += (size_t)nblocks * 4;
    return p;
#else
    (void)name, (void)nblocks, (void)bytes, (void)st;
    return nullptr;
#endif
}

int krn_cuda_pdl_enabled(void)
{
    static int on = -1;
    return krn_cuda_env_on("LODE_CUDA_PDL", &on);
}

int krn_cuda_sm_count(void)
{
    static thread_local int dev_c = -1, sms = 0;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    if (dev != dev_c) {
        dev_c = dev;
        if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            sms = 0;
    }
    return sms;
}

extern "C" const char *krn_cuda_errmsg(void)
{
    return errbuf;
}

extern "C" int krn_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" lode_status krn_cuda_device_info(int dev, krn_cuda_devinfo *out)
{
    memset(out, 0, sizeof *out);
    CU_TRY(cudaSetDevice(dev));
    cudaDeviceProp p;
    CU_TRY(cudaGetDeviceProperties(&p, dev));
    snprintf(out->name, sizeof out->name, "%.120s", p.name);
    out->sm_count = p.multiProcessorCount;
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    out->l2_bytes = (size_t)p.l2CacheSize;
    CU_TRY(cudaMemGetInfo(&out->mem_free, &out->mem_total));
    return LODE_OK;
}

extern "C" lode_status krn_cuda_malloc(void **p, size_t n)
{
    *p = NULL;
    if (n == 0) n = 16;
    cudaError_t e = cudaMalloc(p, n);
    if (e != cudaSuccess) {
        *p = NULL;
        krn_cuda_fail(e, "cudaMalloc", __FILE__, __LINE__);
        return e == cudaErrorMemoryAllocation ? LODE_ERR_NOMEM : LODE_ERR_CUDA;
    }
    return LODE_OK;
}

extern "C" void krn_cuda_free(void *p)
{
    if (p) cudaFree(p);
}

extern "C" lode_status krn_cuda_h2d(void *dst, const void *src, size_t n, void *stream)
{
    CU_TRY(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, STREAM(stream)));
    return LODE_OK;
}

extern "C" lode_status krn_cuda_d2h(void *dst, const void *src, size_t n, void *stream)
{
    CU_TRY(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, STREAM(stream)));
    return LODE_OK;
}

extern "C" lode_status krn_cuda_d2d(void *dst, const void *src, size_t n, void *stream)
{
    CU_TRY(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, STREAM(stream)));
    return LODE_OK;
}

extern "C" lode_status krn_cuda_memset(void *dst, int byte, size_t n, void *stream)
{
    CU_TRY(cudaMemsetAsync(dst, byte, n, STREAM(stream)));
    return LODE_OK;
}

extern "C" lode_status krn_cuda_host_alloc(void **p, size_t n)
{
    *p = NULL;
    CU_TRY(cudaMallocHost(p, n ? n : 16));
    return LODE_OK;
}

extern "C" void krn_cuda_host_free(void *p)
{
    if (p) cudaFreeHost(p);
}

extern "C" lode_status krn_cuda_stream_create(void **s)
{
    cudaStream_t st = NULL;
    CU_TRY(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    *s = st;
    return LODE_OK;
}

extern "C" void krn_cuda_stream_destroy(void *s)
{
    if (s) cudaStreamDestroy(STREAM(s));
}

extern "C" lode_status krn_cuda_stream_sync(void *s)
{
    CU_TRY(cudaStreamSynchronize(STREAM(s)));
    return LODE_OK;
}

extern "C" lode_status krn_cuda_event_create(void **e)
{
    cudaEvent_t ev = NULL;
    CU_TRY(cudaEventCreate(&ev));
    *e = ev;
    return LODE_OK;
}

extern "C" void krn_cuda_event_destroy(void *e)
{
    if (e) cudaEventDestroy((cudaEvent_t)e);
}

extern "C" lode_status krn_cuda_event_record(void *e, void *stream)
{
    CU_TRY(cudaEventRecord((cudaEvent_t)e, STREAM(stream)));
    return LODE_OK;
}

extern "C" lode_status krn_cuda_event_ms(void *start, void *end, float *ms)
{
    CU_TRY(cudaEventSynchronize((cudaEvent_t)end));
    CU_TRY(cudaEventElapsedTime(ms, (cudaEvent_t)start, (cudaEvent_t)end));
    return LODE_OK;
}

extern "C" lode_status krn_cuda_graph_begin(void *stream)
{
    CU_TRY(cudaStreamBeginCapture(STREAM(stream), cudaStreamCaptureModeThreadLocal));
    return LODE_OK;
}

extern "C" lode_status krn_cuda_graph_end(void *stream, void **exec)
{
    cudaGraph_t g = NULL;
    cudaGraphExec_t x = NULL;
    *exec = NULL;
    CU_TRY(cudaStreamEndCapture(STREAM(stream), &g));
    cudaError_t e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return krn_cuda_fail(e, "cudaGraphInstantiate", __FILE__, __LINE__);
    *exec = x;
    return LODE_OK;
}

extern "C" lode_status krn_cuda_graph_launch(void *exec, void *stream)
{
    CU_TRY(cudaGraphLaunch((cudaGraphExec_t)exec, STREAM(stream)));
    return LODE_OK;
}

extern "C" void krn_cuda_graph_destroy(void *exec)
{
    if (exec) cudaGraphExecDestroy((cudaGraphExec_t)exec);
}
