#!/usr/bin/env python3
"""openai-compat.py: checks a running `lode serve` with the official `openai` Python
client: the model list, a chat completion, a streamed chat completion, a text
completion, error mapping, and embeddings (float and the client's default base64
encoding, single and batched input) when EMBED_MODEL is given. Prints one line per check
and exits 0 when every check passed.

usage: openai-compat.py BASE_URL [API_KEY [EMBED_MODEL]]
       (BASE_URL like http://127.0.0.1:8080/v1)
"""
import sys

import openai
from openai import OpenAI


def main():
    base = sys.argv[1]
    key = sys.argv[2] if len(sys.argv) > 2 else "unused"
    embed_model = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
    client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
    failed = 0

    def check(name, cond, detail=""):
        nonlocal failed
        print(f"openai-compat: {name}: {'ok' if cond else 'FAILED'} {detail}".rstrip())
        if not cond:
            failed += 1

    models = client.models.list()
    ids = [m.id for m in models.data]
    check("models.list", len(ids) == (2 if embed_model else 1)
          and (not embed_model or ids[1] == embed_model), f"{ids}")
    model = ids[0]
    check("models.retrieve", client.models.retrieve(model).id == model)

    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "You are brief."},
                  {"role": "user", "content": "Name a colour."}],
        max_tokens=4, temperature=0, seed=1)
    c = r.choices[0]
    check("chat", r.object == "chat.completion" and c.message.role == "assistant"
          and isinstance(c.message.content, str) and len(c.message.content) > 0
          and c.finish_reason in ("stop", "length")
          and r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 5
          and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
          repr(c.message.content))

    again = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=4, temperature=0, seed=1)
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=4, temperature=0, seed=1, stream=True,
        stream_options={"include_usage": True})
    parts, finish, usage, chunks = [], None, None, 0
    for ch in stream:
        chunks += 1
        if ch.usage:
            usage = ch.usage
        for choice in ch.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    text = "".join(parts)
    check("chat stream", chunks >= 3 and finish in ("stop", "length") and usage is not None
          and text == again.choices[0].message.content, repr(text))

    n2 = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, n=2,
        temperature=0.8, seed=3, logprobs=True)
    check("chat n=2 logprobs", len(n2.choices) == 2
          and all(len(x.logprobs.content) >= 1 for x in n2.choices)
          and all(t.logprob <= 0 for x in n2.choices for t in x.logprobs.content))

    comp = client.completions.create(model=model, prompt="The capital of France is",
                                     max_tokens=5, temperature=0, stop=["\n"])
    check("completions", comp.object == "text_completion" and len(comp.choices) == 1
          and comp.usage.completion_tokens >= 1, repr(comp.choices[0].text))

    try:
        client.chat.completions.create(model="no-such-model",
                                       messages=[{"role": "user", "content": "x"}])
        check("unknown model -> NotFoundError", False)
    except openai.NotFoundError as e:
        check("unknown model -> NotFoundError", e.status_code == 404)
    try:
        client.chat.completions.create(model=model, messages=[], max_tokens=1)
        check("empty messages -> BadRequestError", False)
    except openai.BadRequestError as e:
        check("empty messages -> BadRequestError", e.status_code == 400)

    if embed_model:
        texts = ["The write-ahead log lets readers run beside a writer.",
                 "A cat sat on the mat.", "A kitten rested on the rug."]
        # the client asks for base64 by default and decodes it itself
        emb = client.embeddings.create(model=embed_model, input=texts)
        vecs = [d.embedding for d in emb.data]
        dot = lambda a, b: sum(x * y for x, y in zip(a, b))
        check("embeddings (base64)", emb.model == embed_model and len(vecs) == 3
              and [d.index for d in emb.data] == [0, 1, 2]
              and all(len(v) == 384 for v in vecs)
              and all(abs(dot(v, v) - 1) < 1e-3 for v in vecs)
              and dot(vecs[1], vecs[2]) > dot(vecs[0], vecs[1])
              and emb.usage.prompt_tokens > 10
              and emb.usage.total_tokens == emb.usage.prompt_tokens)
        one = client.embeddings.create(model=embed_model, input=texts[0],
                                       encoding_format="float")
        check("embeddings (float)", len(one.data) == 1
              and dot(one.data[0].embedding, vecs[0]) > 0.9999)
        try:
            client.embeddings.create(model=embed_model, input="")
            check("empty input -> BadRequestError", False)
        except openai.BadRequestError as e:
            check("empty input -> BadRequestError", e.status_code == 400)
    else:
        print("openai-compat: embeddings: skipped (no embedding model named)")

    print(f"openai-compat: {'all passed' if failed == 0 else f'{failed} FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
