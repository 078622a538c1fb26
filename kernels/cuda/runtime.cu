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

int krn_cuda_pdl_enabled(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LODE_CUDA_PDL");
        on = !(e && !strcmp(e, "0"));
    }
    return on;
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
