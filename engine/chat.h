/*
 * chat.h: turning a conversation into the prompt text a chat model was trained on.
 *
 * GGUF files carry a Jinja template (tokenizer.chat_template). lode does not run Jinja:
 * it recognizes the template's family by signature substrings and renders that family's
 * format itself. Known: ChatML (<|im_start|>role\n...<|im_end|>\n; SmolLM2, Qwen),
 * Llama-3 (<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>) and Llama-2
 * ([INST] <<SYS>>...). A ChatML template that writes a system turn of its own when the
 * conversation has none (SmolLM2 does) has that default system text taken from it.
 *
 * The rendered text contains special tokens as text; tokenize it with
 * ENG_TOK_PARSE_SPECIAL. A leading BOS is not written: ENG_TOK_ADD_SPECIAL adds it when the
 * vocabulary asks for one.
 */
#ifndef LODE_ENGINE_CHAT_H
#define LODE_ENGINE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/lode.h"

typedef enum eng_chat_format {
    ENG_CHAT_UNKNOWN = 0,
    ENG_CHAT_CHATML,
    ENG_CHAT_LLAMA3,
    ENG_CHAT_LLAMA2,
} eng_chat_format;

#define ENG_CHAT_MAX_SYSTEM 1024

/* A recognized template: a plain value, no allocation. */
typedef struct eng_chat_template {
    eng_chat_format format;
    /* the system turn the template adds when the first message is not "system" ("" = none) */
    char default_system[ENG_CHAT_MAX_SYSTEM];
} eng_chat_template;

typedef struct eng_chat_msg {
    const char *role; /* "system", "user", "assistant" (ChatML and Llama-3 take any role) */
    const char *content;
} eng_chat_msg;

/* The family of a Jinja template by its signature, ENG_CHAT_UNKNOWN if none matches or
 * tmpl is NULL. */
eng_chat_format eng_chat_detect(const char *tmpl);
const char *eng_chat_format_name(eng_chat_format f); /* "chatml", "llama3", "llama2", "unknown" */
/* The format named "chatml", "llama3" or "llama2" (for a --chat-template option). */
eng_chat_format eng_chat_format_from_name(const char *name);

/* Recognizes tmpl (the GGUF's tokenizer.chat_template; NULL when it has none). An unknown
 * or missing template is LODE_ERR_UNSUPPORTED with a message in err, unless
 * chatml_fallback is set: then *t is plain ChatML and LODE_OK. */
lode_status eng_chat_template_init(eng_chat_template *t /* OUT */, const char *tmpl,
                                   bool chatml_fallback, char *err, size_t errlen);

/* Appends the rendered conversation to out; with add_generation_prompt, the opening of
 * the assistant's turn follows. LODE_ERR_INVALID for a NULL role/content or, in Llama-2,
 * a role other than system/user/assistant. */
lode_status eng_chat_render(const eng_chat_template *t, const eng_chat_msg *msgs, size_t n,
                            bool add_generation_prompt, lode_buf *out);

#endif
