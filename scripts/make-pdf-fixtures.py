#!/usr/bin/env python3
"""Writes the small PDF fixtures of tests/test_ingest_pdf.c into tests/data/pdf/.

Plain Python 3 (standard library only): each file is written object by object, with its
cross-reference table, using the standard Type 1 font Helvetica (not embedded, text in
WinAnsiEncoding), so the files are a few hundred bytes and byte-for-byte reproducible.

  text.pdf        4 pages: text on pages 1, 2 and 4 (page 4 with accented letters and two
                  paragraphs; page 2 with a line in a font whose ToUnicode map turns two
                  codes into the ligatures U+FB01 "fi" and U+FB02 "fl" and one into a soft
                  hyphen, as typeset PDFs have them), page 3 holds only an image; an Info
                  dictionary with a title
  image-only.pdf  2 pages with an image each and no text at all (a scan without OCR)
  encrypted.pdf   one page of text, encrypted with the standard security handler
                  (revision 2, RC4 40-bit) under the user password "lode-secret" and the
                  owner password "lode-owner"

Run: python3 scripts/make-pdf-fixtures.py [OUTDIR]   (default tests/data/pdf)
"""

import hashlib
import os
import sys

PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def rc4(key, data):
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 255
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for b in data:
        i = (i + 1) & 255
        j = (j + s[i]) & 255
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) & 255])
    return bytes(out)


def pdf_string(text):
    """A PDF literal string body for text in WinAnsiEncoding (Latin-1 here)."""
    raw = text.encode("latin-1")
    out = bytearray()
    for b in raw:
        if b in b"()\\":
            out += b"\\" + bytes([b])
        elif b < 32 or b > 126:
            out += b"\\%03o" % b
        else:
            out.append(b)
    return bytes(out)


def text_stream(paragraphs, ligature_line=None):
    """Content stream drawing paragraphs (lists of lines) top-down, a blank line between;
    ligature_line (raw bytes) is drawn last in the font /F2."""
    ops = [b"BT /F1 12 Tf 14 TL 72 720 Td"]
    first = True
    for para in paragraphs:
        if not first:
            ops.append(b"T*")  # an empty line between paragraphs
        first = False
        for line in para:
            ops.append(b"(" + pdf_string(line) + b") Tj T*")
    if ligature_line:
        ops.append(b"/F2 12 Tf (" + ligature_line + b") Tj T*")
    ops.append(b"ET")
    return b"\n".join(ops) + b"\n"


IMAGE_STREAM = b"q 144 0 0 144 72 576 cm /Im1 Do Q\n"
IMAGE_PIXELS = bytes(255 if (x // 2 + y // 2) % 2 else 0 for y in range(8) for x in range(8))


class Writer:
    """Collects numbered objects, then writes header, bodies, xref and trailer."""

    def __init__(self, key=None):
        self.objs = {}
        self.key = key  # file encryption key, or None

    def obj_key(self, num):
        k = self.key + num.to_bytes(3, "little") + (0).to_bytes(2, "little")
        return hashlib.md5(k).digest()[: min(len(self.key) + 5, 16)]

    def put(self, num, body):
        self.objs[num] = body

    def stream(self, num, data, extra=b""):
        if self.key is not None:
            data = rc4(self.obj_key(num), data)
        self.objs[num] = (b"<< /Length %d" % len(data)) + extra + b" >>\nstream\n" + data + b"\nendstream"

    def write(self, path, root, info=None, encrypt=None, file_id=None):
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        size = max(self.objs) + 1
        offsets = {}
        for num in sorted(self.objs):
            offsets[num] = len(out)
            out += b"%d 0 obj\n" % num + self.objs[num] + b"\nendobj\n"
        xref = len(out)
        out += b"xref\n0 %d\n" % size
        out += b"0000000000 65535 f \n"
        for num in range(1, size):
            if num in offsets:
                out += b"%010d 00000 n \n" % offsets[num]
            else:
                out += b"0000000000 65535 f \n"
        out += b"trailer\n<< /Size %d /Root %d 0 R" % (size, root)
        if info:
            out += b" /Info %d 0 R" % info
        if encrypt:
            out += b" /Encrypt %d 0 R" % encrypt
        if file_id:
            out += b" /ID [<" + file_id.hex().encode() + b"> <" + file_id.hex().encode() + b">]"
        out += b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
        with open(path, "wb") as f:
            f.write(out)


LIGATURE_CMAP = b"""/CIDInit /ProcSet findresource begin 12 dict begin begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Lode-Ligatures def /CMapType 2 def
1 begincodespacerange <00> <FF> endcodespacerange
3 beginbfchar <01> <FB01> <02> <FB02> <03> <00AD> endbfchar
endcmap CMapName currentdict /CMap defineresource pop end end
"""


def pages(w, first_num, contents):
    """Adds Catalog (1), Pages (2), the font (3) and one page per contents item, each
    ("text", paragraphs[, ligature line]) or ("image",); with a ligature line, a font
    with a ToUnicode map (objects first_num, first_num + 1). Returns the next free
    object number."""
    n = first_num
    if any(len(c) > 2 for c in contents):
        w.put(n, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding"
              b" /ToUnicode %d 0 R >>" % (n + 1))
        w.stream(n + 1, LIGATURE_CMAP)
        n += 2
    kids = []
    for c in contents:
        page, cont = n, n + 1
        n += 2
        if c[0] == "text":
            lig = c[2] if len(c) > 2 else None
            res = b"<< /Font << /F1 3 0 R /F2 %d 0 R >> >>" % first_num if lig else b"<< /Font << /F1 3 0 R >> >>"
            w.stream(cont, text_stream(c[1], lig))
        else:
            img = n
            n += 1
            res = b"<< /XObject << /Im1 %d 0 R >> >>" % img
            w.stream(cont, IMAGE_STREAM)
            w.stream(img, IMAGE_PIXELS,
                     b" /Type /XObject /Subtype /Image /Width 8 /Height 8"
                     b" /ColorSpace /DeviceGray /BitsPerComponent 8")
        w.put(page, b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
              + res + b" /Contents %d 0 R >>" % cont)
        kids.append(page)
    w.put(1, b"<< /Type /Catalog /Pages 2 0 R >>")
    w.put(2, b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids)
          + b"] /Count %d >>" % len(kids))
    w.put(3, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    return n


def write_text(path):
    w = Writer()
    n = pages(w, 4, [
        ("text", [["Lighthouse keepers trimmed the wicks every evening",
                   "and logged the weather in a leather-bound book."]]),
        ("text", [["The harbour pilot boarded incoming freighters at dawn",
                   "to steer them past the sandbanks."]],
         b"The \001nal \002ag went up at the of\001ce of the break\003water."),
        ("image",),
        ("text", [["A caf\u00e9 on the quay served na\u00efve tourists cr\u00e8me br\u00fbl\u00e9e."],
                  ["Fishermen mended nets while gulls circled overhead."]]),
    ])
    w.put(n, b"<< /Title (" + pdf_string("Harbour Notes") + b") /Producer (lode fixtures) >>")
    w.write(path, root=1, info=n)


def write_image_only(path):
    w = Writer()
    pages(w, 4, [("image",), ("image",)])
    w.write(path, root=1)


def write_encrypted(path):
    user, owner = b"lode-secret", b"lode-owner"
    file_id = hashlib.md5(b"lode encrypted fixture").digest()
    perms = -44  # print and copy not allowed; the reserved high bits set
    pad = lambda p: (p + PAD)[:32]
    o_entry = rc4(hashlib.md5(pad(owner)).digest()[:5], pad(user))
    key = hashlib.md5(pad(user) + o_entry + perms.to_bytes(4, "little", signed=True)
                      + file_id).digest()[:5]
    u_entry = rc4(key, PAD)
    w = Writer(key)
    n = pages(w, 4, [("text", [["The vault combination is written in the ledger."]])])
    w.put(n, b"<< /Filter /Standard /V 1 /R 2 /O <" + o_entry.hex().encode() + b"> /U <"
          + u_entry.hex().encode() + b"> /P %d >>" % perms)
    w.write(path, root=1, encrypt=n, file_id=file_id)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/pdf"
    os.makedirs(out, exist_ok=True)
    write_text(os.path.join(out, "text.pdf"))
    write_image_only(os.path.join(out, "image-only.pdf"))
    write_encrypted(os.path.join(out, "encrypted.pdf"))
    for name in sorted(os.listdir(out)):
        if name.endswith(".pdf"):
            print("%s/%s: %d bytes" % (out, name, os.path.getsize(os.path.join(out, name))))


if __name__ == "__main__":
    main()
