/*
 * test_chat.c: chat template recognition and rendering. ChatML is checked against
 * SmolLM2's own Jinja template rendered by Jinja2 (tests/data/smollm2/chat.json, made by
 * scripts/make-fixtures.sh); Llama-3 and Llama-2 against strings written out from their
 * published templates.
 * lode-test: engine
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/chat.h"
#include "engine/ejson.h"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

static void test_chatml_fixtures(void **state)
{
    (void)state;
    size_t len;
    char *txt = read_file("tests/data/smollm2/chat.json", &len);
    eng_json_doc *doc = NULL;
    char err[256];
    assert_int_equal(eng_json_parse(txt, len, &doc, err, sizeof err), LODE_OK);
    const eng_json *root = eng_json_root(doc);
    const char *tmpl = eng_json_get_str(root, "template", NULL);
    assert_non_null(tmpl);
    eng_chat_template t;
    assert_int_equal(eng_chat_template_init(&t, tmpl, false, err, sizeof err), LODE_OK);
    assert_int_equal(t.format, ENG_CHAT_CHATML);
    assert_string_equal(t.default_system,
                        "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    int n = 0;
    for (const eng_json *c = eng_json_get(root, "cases")->child; c; c = c->next) {
        eng_chat_msg msgs[8];
        size_t nm = 0;
        for (const eng_json *m = eng_json_get(c, "messages")->child; m && nm < 8; m = m->next) {
            msgs[nm].role = eng_json_get_str(m, "role", NULL);
            msgs[nm].content = eng_json_get_str(m, "content", NULL);
            nm++;
        }
        lode_buf b = LODE_BUF_INIT;
        assert_int_equal(
            eng_chat_render(&t, msgs, nm, eng_json_get_bool(c, "add_generation_prompt", 0), &b),
            LODE_OK);
        assert_string_equal(b.data, eng_json_get_str(c, "rendered", ""));
        lode_buf_free(&b);
        n++;
    }
    assert_int_equal(n, 4);
    eng_json_free(doc);
    free(txt);
}

static const char LLAMA3_TMPL[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

static const char LLAMA2_TMPL[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
    "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "
    "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' "
    "+ content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + "
    "content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

static void test_llama3(void **state)
{
    (void)state;
    eng_chat_template t;
    char err[128];
    assert_int_equal(eng_chat_template_init(&t, LLAMA3_TMPL, false, err, sizeof err), LODE_OK);
    assert_int_equal(t.format, ENG_CHAT_LLAMA3);
    eng_chat_msg m[] = {{"system", "Be terse."},
                        {"user", "  Hi there \n"},
                        {"assistant", "Hello."},
                        {"user", "Bye"}};
    lode_buf b = LODE_BUF_INIT;
    assert_int_equal(eng_chat_render(&t, m, 4, true, &b), LODE_OK);
    assert_string_equal(b.data, "<|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|>"
                                "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                                "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                                "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                                "<|start_header_id|>assistant<|end_header_id|>\n\n");
    lode_buf_free(&b);
}

static void test_llama2(void **state)
{
    (void)state;
    eng_chat_template t;
    char err[128];
    assert_int_equal(eng_chat_template_init(&t, LLAMA2_TMPL, false, err, sizeof err), LODE_OK);
    assert_int_equal(t.format, ENG_CHAT_LLAMA2);
    eng_chat_msg m[] = {
        {"system", "Be terse."}, {"user", "Hi "}, {"assistant", " Hello."}, {"user", "Bye"}};
    lode_buf b = LODE_BUF_INIT;
    assert_int_equal(eng_chat_render(&t, m, 4, true, &b), LODE_OK);
    assert_string_equal(b.data, "[INST] <<SYS>>\nBe terse.\n<</SYS>>\n\nHi [/INST] Hello. </s>"
                                "<s>[INST] Bye [/INST]");
    lode_buf_reset(&b);
    /* without a system message */
    assert_int_equal(eng_chat_render(&t, m + 1, 1, true, &b), LODE_OK);
    assert_string_equal(b.data, "[INST] Hi [/INST]");
    lode_buf_reset(&b);
    eng_chat_msg bad[] = {{"user", "a"}, {"tool", "b"}};
    assert_int_equal(eng_chat_render(&t, bad, 2, true, &b), LODE_ERR_INVALID);
    lode_buf_free(&b);
}

static void test_unknown_and_fallback(void **state)
{
    (void)state;
    eng_chat_template t;
    char err[256] = "";
    const char *odd = "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}";
    assert_int_equal(eng_chat_template_init(&t, odd, false, err, sizeof err), LODE_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "not recognized"));
    assert_int_equal(eng_chat_template_init(&t, NULL, false, err, sizeof err),
                     LODE_ERR_UNSUPPORTED);
    assert_int_equal(eng_chat_template_init(&t, odd, true, err, sizeof err), LODE_OK);
    assert_int_equal(t.format, ENG_CHAT_CHATML);
    assert_string_equal(t.default_system, "");
    eng_chat_msg m[] = {{"user", "Hi"}};
    lode_buf b = LODE_BUF_INIT;
    assert_int_equal(eng_chat_render(&t, m, 1, true, &b), LODE_OK);
    assert_string_equal(b.data, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    lode_buf_free(&b);
    /* a ChatML template whose system turn comes from the messages only has no default */
    assert_int_equal(eng_chat_template_init(&t,
                                            "{% for message in messages %}{{'<|im_start|>' + "
                                            "message['role'] + '\\n' + message['content'] + "
                                            "'<|im_end|>' + '\\n'}}{% endfor %}",
                                            false, err, sizeof err),
                     LODE_OK);
    assert_string_equal(t.default_system, "");
    assert_int_equal(eng_chat_format_from_name("llama3"), ENG_CHAT_LLAMA3);
    assert_int_equal(eng_chat_format_from_name("nope"), ENG_CHAT_UNKNOWN);
    eng_chat_msg nul[] = {{"user", NULL}};
    assert_int_equal(eng_chat_render(&t, nul, 1, true, &b), LODE_ERR_INVALID);
    lode_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml_fixtures),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_unknown_and_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
