/*
 * chat.c: chat template recognition and rendering (see chat.h). The renderings follow
 * the published templates of each family: ChatML as SmolLM2/Qwen write it, Llama-3 with
 * trimmed contents, Llama-2 with the system prompt folded into the first [INST] block.
 */
#include "engine/chat.h"

#include <stdio.h>
#include <string.h>

eng_chat_format eng_chat_detect(const char *tmpl)
{
    if (!tmpl) return ENG_CHAT_UNKNOWN;
    if (strstr(tmpl, "<|im_start|>")) return ENG_CHAT_CHATML;
    if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "<|end_header_id|>"))
        return ENG_CHAT_LLAMA3;
    if (strstr(tmpl, "[INST]") && strstr(tmpl, "[/INST]")) return ENG_CHAT_LLAMA2;
    return ENG_CHAT_UNKNOWN;
}

const char *eng_chat_format_name(eng_chat_format f)
{
    switch (f) {
    case ENG_CHAT_CHATML:
        return "chatml";
    case ENG_CHAT_LLAMA3:
        return "llama3";
    case ENG_CHAT_LLAMA2:
        return "llama2";
    default:
        return "unknown";
    }
}

eng_chat_format eng_chat_format_from_name(const char *name)
{
    if (!name) return ENG_CHAT_UNKNOWN;
    for (int f = ENG_CHAT_CHATML; f <= ENG_CHAT_LLAMA2; f++)
        if (strcmp(name, eng_chat_format_name((eng_chat_format)f)) == 0) return (eng_chat_format)f;
    return ENG_CHAT_UNKNOWN;
}

/* The literal text of a ChatML system turn written by the template itself (not built
 * from a message), e.g. '<|im_start|>system\nYou are ...<|im_end|>'. */
static void find_default_system(const char *tmpl, char *dst, size_t cap)
{
    static const char open[] = "<|im_start|>system";
    dst[0] = 0;
    for (const char *p = strstr(tmpl, open); p; p = strstr(p + 1, open)) {
        const char *s = p + sizeof open - 1;
        if (s[0] == '\n')
            s += 1;
        else if (s[0] == '\\' && s[1] == 'n')
            s += 2;
        else
            continue;
        const char *e = strstr(s, "<|im_end|>");
        if (!e || e == s) continue;
        /* a literal: nothing of an expression or another string in it */
        if (memchr(s, '\'', (size_t)(e - s)) || memchr(s, '"', (size_t)(e - s)) ||
            memchr(s, '{', (size_t)(e - s)) || memchr(s, '}', (size_t)(e - s)))
            continue;
        size_t o = 0;
        for (const char *q = s; q < e && o + 1 < cap; q++) {
            if (q[0] == '\\' && q + 1 < e && q[1] == 'n') {
                dst[o++] = '\n';
                q++;
            } else {
                dst[o++] = *q;
            }
        }
        dst[o] = 0;
        return;
    }
}

lode_status eng_chat_template_init(eng_chat_template *t, const char *tmpl, bool chatml_fallback,
                                   char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    t->format = eng_chat_detect(tmpl);
    if (t->format == ENG_CHAT_UNKNOWN) {
        if (chatml_fallback) {
            t->format = ENG_CHAT_CHATML;
            return LODE_OK;
        }
        return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                           tmpl ? "chat template not recognized (known: ChatML, Llama-3, "
                                  "Llama-2); ChatML can be forced"
                                : "the model has no chat template; ChatML can be forced");
    }
    if (t->format == ENG_CHAT_CHATML)
        find_default_system(tmpl, t->default_system, sizeof t->default_system);
    return LODE_OK;
}

/* Appends s without leading and trailing ASCII white space (Jinja's trim / strip). */
static lode_status put_trimmed(lode_buf *b, const char *s)
{
    size_t n = strlen(s);
    while (n && strchr(" \t\n\r\f\v", s[0])) s++, n--;
    while (n && strchr(" \t\n\r\f\v", s[n - 1])) n--;
    return lode_buf_append(b, s, n);
}

#define PUT(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x)) != LODE_OK) return st;                                                      \
    } while (0)

static lode_status render_chatml(const eng_chat_template *t, const eng_chat_msg *m, size_t n,
                                 bool gen, lode_buf *b)
{
    lode_status st;
    if (t->default_system[0] && n > 0 && strcmp(m[0].role, "system") != 0)
        PUT(lode_buf_printf(b, "<|im_start|>system\n%s<|im_end|>\n", t->default_system));
    for (size_t i = 0; i < n; i++) {
        PUT(lode_buf_printf(b, "<|im_start|>%s\n", m[i].role));
        PUT(lode_buf_puts(b, m[i].content));
        PUT(lode_buf_puts(b, "<|im_end|>\n"));
    }
    if (gen) PUT(lode_buf_puts(b, "<|im_start|>assistant\n"));
    return LODE_OK;
}

static lode_status render_llama3(const eng_chat_msg *m, size_t n, bool gen, lode_buf *b)
{
    lode_status st;
    for (size_t i = 0; i < n; i++) {
        PUT(lode_buf_printf(b, "<|start_header_id|>%s<|end_header_id|>\n\n", m[i].role));
        PUT(put_trimmed(b, m[i].content));
        PUT(lode_buf_puts(b, "<|eot_id|>"));
    }
    if (gen) PUT(lode_buf_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n"));
    return LODE_OK;
}

static lode_status render_llama2(const eng_chat_msg *m, size_t n, lode_buf *b)
{
    lode_status st;
    const char *sys = NULL;
    size_t i = 0;
    if (n > 0 && strcmp(m[0].role, "system") == 0) sys = m[i++].content;
    bool first = true;
    for (; i < n; i++) {
        if (strcmp(m[i].role, "user") == 0) {
            /* the first BOS is the tokenizer's; later turns carry their own */
            PUT(lode_buf_puts(b, first ? "[INST] " : "<s>[INST] "));
            if (first && sys) {
                /* the system block joins the first user message, stripped as one text */
                lode_buf c = LODE_BUF_INIT;
                st = lode_buf_printf(&c, "<<SYS>>\n%s\n<</SYS>>\n\n%s", sys, m[i].content);
                if (st == LODE_OK) st = put_trimmed(b, c.data);
                lode_buf_free(&c);
                if (st != LODE_OK) return st;
            } else {
                PUT(put_trimmed(b, m[i].content));
            }
            PUT(lode_buf_puts(b, " [/INST]"));
            first = false;
        } else if (strcmp(m[i].role, "assistant") == 0) {
            PUT(lode_buf_putc(b, ' '));
            PUT(put_trimmed(b, m[i].content));
            PUT(lode_buf_puts(b, " </s>"));
        } else {
            return LODE_ERR_INVALID; /* a system message after the first, or another role */
        }
    }
    return LODE_OK;
}

lode_status eng_chat_render(const eng_chat_template *t, const eng_chat_msg *msgs, size_t n,
                            bool add_generation_prompt, lode_buf *out)
{
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content) return LODE_ERR_INVALID;
    lode_status st;
    switch (t->format) {
    case ENG_CHAT_CHATML:
        st = render_chatml(t, msgs, n, add_generation_prompt, out);
        break;
    case ENG_CHAT_LLAMA3:
        st = render_llama3(msgs, n, add_generation_prompt, out);
        break;
    case ENG_CHAT_LLAMA2:
        st = render_llama2(msgs, n, out);
        break;
    default:
        return LODE_ERR_UNSUPPORTED;
    }
    if (st == LODE_OK && !out->data) st = lode_buf_append(out, "", 0);
    return st;
}
