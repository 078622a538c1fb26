/* dtype.c: names of tensor element types, for messages and `lode` output. */
#include "kernels/quant.h"

const char *lode_dtype_name(int t)
{
    switch (t) {
    case LODE_F32:
        return "f32";
    case LODE_F16:
        return "f16";
    case LODE_BF16:
        return "bf16";
    case LODE_Q4_0:
        return "q4_0";
    case LODE_Q4_1:
        return "q4_1";
    case LODE_Q5_0:
        return "q5_0";
    case LODE_Q5_1:
        return "q5_1";
    case LODE_Q8_0:
        return "q8_0";
    case LODE_Q8_1:
        return "q8_1";
    case LODE_Q4_K:
        return "q4_K";
    case LODE_Q5_K:
        return "q5_K";
    case LODE_Q6_K:
        return "q6_K";
    case LODE_Q8_K:
        return "q8_K";
    default:
        return "unknown";
    }
}
