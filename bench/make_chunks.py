#!/usr/bin/env python3
"""Writes benchmark chunks, one a line, from the SQLite documentation's HTML pages
(Debian's sqlite3-doc): text outside script/style, whitespace collapsed, cut at word
boundaries into chunks of about CHARS characters (about 200 word pieces each for 1000).

  make_chunks.py OUT_FILE [COUNT] [CHARS]

With --corpus it writes a synthetic collection instead, for search latency at a size the
real documentation does not reach: text files of paragraphs of about CHARS characters,
100 a file, whose words are drawn (seeded, so the same every run) from the
documentation's own words with their frequencies, so term statistics look like the real
corpus while no paragraph repeats:

  make_chunks.py --corpus OUT_DIR COUNT [CHARS]
"""
import glob
import html.parser
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


def doc_words():
    words = []
    for path in sorted(glob.glob("/usr/share/doc/sqlite3/*.html")):
        p = Text()
        with open(path, encoding="utf-8", errors="replace") as f:
            p.feed(f.read())
        words.extend(" ".join(p.parts).split())
    if not words:
        sys.exit("make_chunks: no SQLite documentation under /usr/share/doc/sqlite3")
    return words


def corpus(out_dir, count, size):
    import os
    import random
    rng = random.Random(20261126)
    words = doc_words()
    os.makedirs(out_dir, exist_ok=True)
    per_file = 100
    for fi in range((count + per_file - 1) // per_file):
        paras = []
        for _ in range(min(per_file, count - fi * per_file)):
            cur, n = [], 0
            while n < size:
                w = words[rng.randrange(len(words))]
                cur.append(w)
                n += len(w) + 1
            paras.append(" ".join(cur))
        with open(os.path.join(out_dir, "synthetic-%05d.txt" % fi), "w", encoding="utf-8") as f:
            f.write("\n\n".join(paras) + "\n")


def main():
    if sys.argv[1] == "--corpus":
        corpus(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 700)
        return
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    chunks = []
    for path in sorted(glob.glob("/usr/share/doc/sqlite3/*.html")):
        p = Text()
        with open(path, encoding="utf-8", errors="replace") as f:
            p.feed(f.read())
        words = " ".join(p.parts).split()
        cur = []
        n = 0
        for w in words:
            cur.append(w)
            n += len(w) + 1
            if n >= size:
                chunks.append(" ".join(cur))
                cur, n = [], 0
        if len(chunks) >= count:
            break
    if not chunks:
        sys.exit("make_chunks: no SQLite documentation under /usr/share/doc/sqlite3")
    with open(out, "w", encoding="utf-8") as f:
        for c in chunks[:count]:
            f.write(c + "\n")


if __name__ == "__main__":
    main()
