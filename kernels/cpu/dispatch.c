/*
 * dispatch.c: picks the kernel variant once per process (CPU features via
 * __builtin_cpu_supports, overridable with LODE_KERNELS=scalar|avx2|avx512) and builds
 * its table: the scalar entries first, then whatever the SIMD files provide on top.
 */
#include <pthread.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/kernels_int.h"

static krn_ops tables[3];
static const krn_ops *active;
static krn_isa active_isa;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
/* clang's __builtin_cpu_supports does not know "f16c": ask CPUID leaf 1 directly. */
static int has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

int krn_isa_supported(krn_isa isa)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    switch (isa) {
    case KRN_ISA_SCALAR:
        return 1;
    case KRN_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case KRN_ISA_AVX512:
        return krn_isa_supported(KRN_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
    }
    return 0;
#else
    return isa == KRN_ISA_SCALAR;
#endif
}

const char *krn_isa_name(krn_isa isa)
{
    switch (isa) {
    case KRN_ISA_SCALAR:
        return "scalar";
    case KRN_ISA_AVX2:
        return "avx2";
    case KRN_ISA_AVX512:
        return "avx512";
    }
    return "unknown";
}

static void build_tables(void)
{
    krn_ops_init_scalar(&tables[KRN_ISA_SCALAR]);
#if defined(__x86_64__)
    if (krn_isa_supported(KRN_ISA_AVX2)) {
        tables[KRN_ISA_AVX2] = tables[KRN_ISA_SCALAR];
        krn_ops_init_avx2(&tables[KRN_ISA_AVX2]);
    }
    if (krn_isa_supported(KRN_ISA_AVX512)) {
        tables[KRN_ISA_AVX512] = tables[KRN_ISA_AVX2];
        krn_ops_init_avx512(&tables[KRN_ISA_AVX512]);
    }
#endif
    krn_isa best = KRN_ISA_SCALAR;
    if (krn_isa_supported(KRN_ISA_AVX2)) best = KRN_ISA_AVX2;
    if (krn_isa_supported(KRN_ISA_AVX512)) best = KRN_ISA_AVX512;
    const char *e = getenv("LODE_KERNELS");
    if (e && *e) {
        krn_isa want = best;
        if (!strcmp(e, "scalar"))
            want = KRN_ISA_SCALAR;
        else if (!strcmp(e, "avx2"))
            want = KRN_ISA_AVX2;
        else if (!strcmp(e, "avx512"))
            want = KRN_ISA_AVX512;
        else
            LODE_WARN("LODE_KERNELS=%s is not scalar, avx2 or avx512; using %s", e,
                      krn_isa_name(best));
        if (!krn_isa_supported(want))
            LODE_WARN("LODE_KERNELS=%s: this CPU lacks it; using %s", e, krn_isa_name(best));
        else
            best = want;
    }
    active_isa = best;
    active = &tables[best];
}

const krn_ops *krn_ops_get(void)
{
    pthread_once(&once, build_tables);
    return active;
}

krn_isa krn_isa_active(void)
{
    pthread_once(&once, build_tables);
    return active_isa;
}

lode_status krn_isa_set(krn_isa isa)
{
    pthread_once(&once, build_tables);
    if ((int)isa < 0 || (int)isa > 2 || !krn_isa_supported(isa)) return LODE_ERR_UNSUPPORTED;
    active_isa = isa;
    active = &tables[isa];
    return LODE_OK;
}
