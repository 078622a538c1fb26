#!/usr/bin/env python3
"""openai-compat.py: checks a running `lode serve` with the official `openai` Python
client: the model list, a chat completion, a streamed chat completion, a text
completion, error mapping, and embeddings when the server has them (a 501 "not
available in this build" is reported as skipped). Prints one line per check and exits 0
when every check passed.

usage: openai-compat.py BASE_URL [API_KEY]     (BASE_URL like http://127.0.0.1:8080/v1)
"""
import sys

import openai
from openai import OpenAI


def main():
    base = sys.argv[1]
    key = sys.argv[2] if len(sys.argv) > 2 else "unused"
    client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
    failed = 0

    def check(name, cond, detail=""):
        nonlocal failed
        print(f"openai-compat: {name}: {'ok' if cond else 'FAILED'} {detail}".rstrip())
        if not cond:
            failed += 1

    models = client.models.list()
    ids = [m.id for m in models.data]
    check("models.list", len(ids) == 1, f"{ids}")
    model = ids[0]
    check("models.retrieve", client.models.retrieve(model).id == model)

    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "You are brief."},
                  {"role": "user", "content": "Name a colour."}],
        max_tokens=8, temperature=0, seed=1)
    c = r.choices[0]
    check("chat", r.object == "chat.completion" and c.message.role == "assistant"
          and isinstance(c.message.content, str) and len(c.message.content) > 0
          and c.finish_reason in ("stop", "length")
          and r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 5
          and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
          repr(c.message.content))

    again = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8, temperature=0, seed=1)
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8, temperature=0, seed=1, stream=True,
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

    try:
        emb = client.embeddings.create(model=model, input=["hello world"])
        check("embeddings", len(emb.data) == 1 and len(emb.data[0].embedding) > 0)
    except openai.APIStatusError as e:
        if e.status_code == 501:
            print(f"openai-compat: embeddings: skipped (server: {e.message})")
        else:
            check("embeddings", False, str(e))

    print(f"openai-compat: {'all passed' if failed == 0 else f'{failed} FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
