#!/usr/bin/env python3
"""Checks a question file of `lode eval retrieval` against the pages it names: every
"relevant" entry must name a page of the SQLite documentation (alternatives split on
"|"), and the question's "evidence" (a phrase that answers it) must occur in the text of
the first page named, so an edit of the file or a new sqlite3-doc cannot silently leave
questions pointing at pages that no longer answer them.

  check.py [FILE.jsonl] [DOC_DIR]   (defaults: sqlite-dev.jsonl beside this script,
                                     /usr/share/doc/sqlite3)
"""
import html.parser
import json
import os
import re
import sys


class Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def page_text(path):
    p = Text()
    with open(path, encoding="utf-8", errors="replace") as f:
        p.feed(f.read())
    return re.sub(r"\s+", " ", " ".join(p.parts)).lower()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    file = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "sqlite-dev.jsonl")
    docs = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/doc/sqlite3"
    bad = n = 0
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            q = json.loads(line)
            n += 1
            pages = [p for r in q["relevant"] for p in r.split("|")]
            missing = [p for p in pages if not os.path.exists(os.path.join(docs, p))]
            if missing:
                print("%s:%d: %s: no page %s" % (file, lineno, q["id"], ", ".join(missing)))
                bad += 1
                continue
            first = q["relevant"][0].split("|")[0]
            ev = re.sub(r"\s+", " ", q.get("evidence", "")).lower()
            if not ev or ev not in page_text(os.path.join(docs, first)):
                print("%s:%d: %s: evidence not in %s" % (file, lineno, q["id"], first))
                bad += 1
    print("%d questions, %d with problems" % (n, bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
