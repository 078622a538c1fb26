/* backend.c: picks a compute backend by name; the ops themselves live in backend_*.c. */
#include "engine/backend.h"

#include <string.h>

size_t eng_kv_slot_bytes(const eng_kv_desc *d)
{
    return (size_t)d->n_layer * 2 * (size_t)d->n_kv_head * ENG_KV_BLOCK * (size_t)d->head_dim *
           sizeof(lode_half);
}

lode_status eng_backend_create(const char *name, const eng_backend_opts *o, eng_backend **out,
                               char *err, size_t errlen)
{
    *out = NULL;
    eng_backend_opts def = {0, 0};
    if (!o) o = &def;
    if (!name || !*name || !strcmp(name, "auto")) {
#ifdef LODE_CUDA
        if (eng_backend_cuda_available()) return eng_backend_cuda_create(o, out, err, errlen);
#endif
        return eng_backend_cpu_create(o, out, err, errlen);
    }
    if (!strcmp(name, "cpu")) return eng_backend_cpu_create(o, out, err, errlen);
    if (!strcmp(name, "cuda")) {
#ifdef LODE_CUDA
        return eng_backend_cuda_create(o, out, err, errlen);
#else
        return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                           "backend 'cuda' is not built in (build with make CUDA=1)");
#endif
    }
    return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED, "unknown backend '%s' (cpu, cuda, auto)",
                       name);
}

void eng_backend_destroy(eng_backend *be)
{
    if (be) be->ops->destroy(be);
}
