#!/usr/bin/env python3
"""Generates the tokenizer fixtures for TokenizerTests (run by hand, never in CI).

    pip install tokenizers numpy gguf sentencepiece
    python Tests/SwiftQuantTests/Fixtures/make_tokenizer_fixtures.py [--smollm2-gguf FILE --smollm2-out DIR]

Writes, next to this script:
  tokenizer_<name>.json   tiny tokenizers trained here with the Hugging Face `tokenizers` library:
                          gpt2 (ByteLevel BPE), llama3 (Llama-3 split regex + ByteLevel, ignore_merges, BOS
                          template), qwen2 (NFC + Qwen2 split regex + ByteLevel), sp (Llama-2 style SentencePiece
                          BPE with byte fallback: Prepend/Replace normalizer), sp_metaspace (same model, Metaspace
                          pre-tokenizer with prepend_scheme "first").
  gguf_llama_cases.json   a SentencePiece BPE (byte fallback) trained with the `sentencepiece` library, as GGUF
                          "llama" metadata (tokens, scores, types), with sentencepiece's ids (+ BOS) and decodes.
  pretokenizer_cases.json random tricky strings and `tokenizers`' split of each by every known pattern.
  tokenizer_cases.json    for every tokenizer and test string: `tokenizers`' encode(text).ids and decode()
                          with and without skip_special_tokens (each stored only where it differs from the
                          text / from the plain decode).
With --smollm2-gguf: builds SmolLM2's tokenizer.json from the GGUF metadata (tokenizer.ggml.*; the
"smollm" pre-tokenizer is Digits(individual) + ByteLevel) as --smollm2-out/tokenizer.json, and the variant that
transformers' GGUF conversion builds (plain ByteLevel) as tokenizer-transformers_gguf.json (neither committed,
~2 MB each); writes smollm2_wikitext.json (per variant: count, first/last 50 ids, sha256 of the ids as
little-endian int32) for the WikiText-2 test text in ../shared/data/wikitext-2-raw/test.joined.txt.
"""
import argparse
import hashlib
import json
import random
import struct
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers, Regex, AddedToken

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
WIKI = REPO.parent / "shared" / "data" / "wikitext-2-raw" / "test.joined.txt"

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

EXTRA = [
    "Hello world! It's a test. I'm here, you're there, we'll see, they'd know, we've won.",
    "Ünïcödé àccénts: café, naïve, façade, résumé, Ærøskøbing, straße.",
    "日本語のテキストと中文的句子。한국어 문장도 있습니다.",
    "Привет, мир! Ελληνικά γράμματα. مرحبا بالعالم ٣٤٥",
    "Numbers: 12345, 3.14159, 2024-11-29, 1,000,000 and ½ ¾ ² ³ Ⅷ.",
    "Emoji: 😀 😂 👍🏽 👨‍👩‍👧 🚀 ❤️",
    "Code: def f(x):\n    return x ** 2  # square\n\tprint('done')\r\n",
]


def corpus():
    lines = []
    if WIKI.exists():
        lines = WIKI.read_text(encoding="utf-8").split("\n")[:400]
    else:
        print(f"note: {WIKI} not found, training on the built-in sentences only")
    return lines + EXTRA * 20


def test_strings():
    fixed = [
        "", " ", "  ", "\n", "\n\n", "a", "Hello world", "Hello  world", " leading space", "   three leading",
        "trailing   ", "tabs\tand\ttabs", "line one\nline two\n\nline four\n", "windows\r\nline\r\n",
        "  \n  \n  x", "x \n\n \t y", "numbers 1234567 and 3.14159, 2024-11-29",
        "digits 1 22 333 4444 55555 666666", "Ünïcödé àccénts café naïve façade",
        "cafe\u0301 decomposed e\u0301\u0301", "日本語のテキスト 中文", "한국어",
        "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇫🇷", "I'm, you're, he'll, she'd, it's, we've, can't",
        "I'M YOU'RE HE'LL SHE'D IT'S WE'VE", "'s 't 're 've 'm 'll 'd ''s", "the ſ: 'ſ 'ſt",
        "<|endoftext|>", "Hello<|endoftext|> world<|endoftext|>", "<s>hi</s> <s> there </s>",
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n", "<|begin_of_text|>x",
        "x² y³ ⅷ ½ ٣٤٥ ०१२", "Ελληνικά Привет, мир!", "a\u00a0b nbsp", "ideographic\u3000space",
        "line\u2028sep", "zero\u200bwidth", "word's 'quoted' text", "!!!??...---***", " !!! ?? ", "$$$ 100$ €5",
        "supercalifragilisticexpialidocious " * 3, "a" * 100, "  \t  \n", "\r\r\n\n", "x\u0301\u0302",
        "mixed123abc456 7up 1st 2nd", "<0x41> literal byte token text", "▁ literal metaspace",
        "a <tool> b <tool_call> c <tool_cal <tool_call><tool>", "x  <mask>  y\n<mask>\nz<mask>", "<mask>",
        " \t<mask> <|endoftext|><mask><tool>",
        "<sw> a <sw> b<sw> <sw>c _<sw> é<sw> 1<sw> .<sw>. <sw>>x <sw>> ²<sw> \u0301<sw> <sw><sw>",
        "Ⅷ<sw> ٣<sw> ‿<sw> ः<sw> ʰ<sw> 〇<sw> ½<sw> -<sw>- \u200d<sw> \u200b<sw> ⓐ<sw>",
    ]
    rng = random.Random(1234)
    pool = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789    \n\t\r'.,!?-_()[]\"")
    pool += list("éàüßñçøÆ日本中文語한국😀👍🏽❤️ ²½٣\u00a0\u3000\u0301")
    for _ in range(60):
        n = rng.randint(1, 40)
        fixed.append("".join(rng.choice(pool) for _ in range(n)))
    return fixed


def train_byte_level(pattern, digits_split=False, nfc=False, vocab_size=700, ignore_merges=False,
                     specials=("<|endoftext|>",)):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    if pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    return tok


def make_sp(metaspace=False):
    # Train on characters (Metaspace-style), then rebuild the Llama-2 layout: <unk> <s> </s>, 256 byte tokens,
    # then the trained pieces; byte fallback for anything else.
    base = Tokenizer(models.BPE())
    base.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(vocab_size=600, limit_alphabet=120, show_progress=False)
    base.train_from_iterator(corpus(), trainer)
    data = json.loads(base.to_str())
    trained = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in trained:
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken("<unk>", special=True, normalized=False),
                            AddedToken("<s>", special=True, normalized=False),
                            AddedToken("</s>", special=True, normalized=False)])
    # A normalized added token: its content is normalized too ("▁<tool>"), so it matches only after a space.
    tok.add_tokens([AddedToken("<tool>", special=False, normalized=True)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return tok


def build():
    toks = {}
    gpt2 = train_byte_level(None)
    # Overlapping added tokens (longest match wins) and an lstrip/rstrip one (absorbs neighbouring whitespace).
    gpt2.add_tokens([AddedToken("<tool>", special=False, normalized=False),
                     AddedToken("<tool_call>", special=False, normalized=False)])
    gpt2.add_special_tokens([AddedToken("<mask>", special=True, normalized=False, lstrip=True, rstrip=True)])
    # single_word: only where no word character (letter, mark, decimal digit, "_"...) touches it; "<sw>" is also a prefix of the longer "<sw>>".
    gpt2.add_tokens([AddedToken("<sw>", special=False, normalized=False, single_word=True),
                     AddedToken("<sw>>", special=False, normalized=False, single_word=True)])
    toks["gpt2"] = gpt2

    llama3 = train_byte_level(LLAMA3, ignore_merges=True,
                              specials=("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"))
    bot = llama3.token_to_id("<|begin_of_text|>")
    llama3.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bot)])
    toks["llama3"] = llama3

    qwen2 = train_byte_level(QWEN2, nfc=True, specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    # A normalized added token: matched after NFC, so a decomposed "cafe\u0301" finds it too.
    qwen2.add_tokens([AddedToken("café", special=False, normalized=True)])
    toks["qwen2"] = qwen2

    toks["sp"] = make_sp(metaspace=False)
    toks["sp_metaspace"] = make_sp(metaspace=True)

    cases = {}
    strings = test_strings()
    for name, tok in toks.items():
        path = HERE / f"tokenizer_{name}.json"
        tok.save(str(path), pretty=False)
        tok = Tokenizer.from_file(str(path))   # what the Swift side reads
        rows = []
        for s in strings:
            ids = tok.encode(s).ids
            row = {"text": s, "ids": ids}
            # Decodes stored only where they differ (decoded from text, decoded_skip from decoded): smaller file.
            dec, dec_skip = tok.decode(ids, skip_special_tokens=False), tok.decode(ids, skip_special_tokens=True)
            if dec != s:
                row["decoded"] = dec
            if dec_skip != dec:
                row["decoded_skip"] = dec_skip
            rows.append(row)
        # Decodes of cut id lists (invalid UTF-8 at the cut: replacement characters) and of reversed ones.
        partial = []
        for s in ["emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇫🇷", "日本語のテキスト 中文", "Ünïcödé àccénts", "x² ½ ٣٤٥"]:
            ids = tok.encode(s).ids
            for cut in (2, 3, 5, 8, len(ids) - 1):
                partial.append({"ids": ids[:cut], "decoded": tok.decode(ids[:cut], skip_special_tokens=False)})
            partial.append({"ids": ids[::-1], "decoded": tok.decode(ids[::-1], skip_special_tokens=False)})
        rows.append({"text": "", "ids": [], "partial": partial})
        cases[name] = rows
        print(f"{name}: vocab {tok.get_vocab_size()}, {path.stat().st_size} bytes")
    (HERE / "tokenizer_cases.json").write_text(json.dumps(cases, ensure_ascii=False, separators=(",", ":")),
                                               encoding="utf-8")


def sentencepiece_gguf_llama():
    """A SentencePiece BPE model (byte fallback) trained with the `sentencepiece` library, written as the GGUF
    "llama" tokenizer metadata would hold it (tokens, scores, token types), with sentencepiece's own ids as the
    oracle for TokenizerSpec.fromGGUF(model: "llama") (score-ordered merges, as llama.cpp does)."""
    try:
        import sentencepiece as spm
    except ImportError:
        print("note: sentencepiece not installed, gguf_llama_cases.json not regenerated")
        return
    import io
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in corpus() if line.strip()]), model_writer=buf, model_type="bpe",
        vocab_size=700, byte_fallback=True, character_coverage=0.995, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True,
        allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    n = sp.get_piece_size()
    tokens = [sp.id_to_piece(i) for i in range(n)]
    scores = [sp.get_score(i) for i in range(n)]
    # GGUF token types: 1 normal, 2 unknown, 3 control, 6 byte.
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    cases = []
    for s in test_strings():
        if any(t in s for t in ("<s>", "</s>", "<unk>")):
            continue   # sentencepiece does not match control tokens in text; llama.cpp and Tokenizer do
        ids = sp.encode(s)
        cases.append({"text": s, "ids": [1] + ids, "decoded": sp.decode(ids)})
    (HERE / "gguf_llama_cases.json").write_text(json.dumps(
        {"tokens": tokens, "scores": scores, "types": types, "bos": 1, "eos": 2, "unk": 0, "cases": cases},
        ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    print(f"sentencepiece (GGUF llama): vocab {n}, {len(cases)} cases")


def pretokenizer_fuzz():
    """Random tricky strings and how `tokenizers` splits them with each known pattern (piece lengths in code
    points): a direct oracle for the hand-written scanner, independent of any vocabulary."""
    rng = random.Random(99)
    pool = list("aZ kK sStTdDmMlLrReEvV'0123456789") + list(" " * 6) + ["\n", "\n", "\r", "\t", "\x0b", "\x0c"]
    pool += ["\u0085", "\u00a0", "\u1680", "\u2003", "\u2028", "\u2029", "\u202f", "\u3000", "\u200b",
             "\u017f", "\u212a", "\u0301", "\u0903", "é", "ß", "Ǆ", "ʰ", "日", "한", "٣", "²", "½", "Ⅷ", "〇",
             "😀", "🏽", "\u200d", ".", ",", "!", "-", "_", "$", "€", "(", '"', "’", "\U000e0001", "\ufeff"]
    strings = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 24))) for _ in range(250)]
    variants = {
        "gpt2": pre_tokenizers.Split(Regex(GPT2), behavior="isolated"),
        "llama3": pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated"),
        "qwen2": pre_tokenizers.Split(Regex(QWEN2), behavior="isolated"),
        "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                           pre_tokenizers.Split(Regex(GPT2), behavior="isolated")]),
        "metaspace_always_split": pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        "metaspace_first_split": pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        "metaspace_never_split": pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
    }
    splits = {name: [[len(p) for p, _ in pre.pre_tokenize_str(s)] for s in strings] for name, pre in variants.items()}
    (HERE / "pretokenizer_cases.json").write_text(json.dumps({"strings": strings, "splits": splits},
                                                             ensure_ascii=False, separators=(",", ":")),
                                                  encoding="utf-8")


def smollm2(gguf_path, out_dir):
    from gguf import GGUFReader
    r = GGUFReader(gguf_path)

    def field(k):
        f = r.fields.get(k)
        return None if f is None else f.contents()

    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "smollm"
    tokens = field("tokenizer.ggml.tokens")
    types = field("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in field("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    text = WIKI.read_text(encoding="utf-8")
    refs = {}
    # "smollm": SmolLM2's own pre-tokenizer (Digits(individual) + ByteLevel), also llama.cpp's reading of the name.
    # "transformers_gguf": what transformers' GGUF conversion builds for this file (it does not know "smollm" and
    # falls back to plain ByteLevel / GPT-2 regex); the 304,986-token count in shared/data/.../SOURCE.md is this.
    variants = {
        "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                           pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
        "transformers_gguf": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    }
    for name, pre in variants.items():
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                for i, t in enumerate(types) if t == 3])
        out = Path(out_dir) / ("tokenizer.json" if name == "smollm" else f"tokenizer-{name}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        tok.save(str(out))
        tok = Tokenizer.from_file(str(out))
        ids = tok.encode(text).ids
        digest = hashlib.sha256(struct.pack(f"<{len(ids)}i", *ids)).hexdigest()
        print(f"SmolLM2 ({name}): {len(ids)} ids on WikiText-2 test, sha256 {digest}; wrote {out}")
        refs[name] = {"count": len(ids), "first": ids[:50], "last": ids[-50:], "sha256_int32le": digest}
    (HERE / "smollm2_wikitext.json").write_text(json.dumps(refs), encoding="utf-8")

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2-gguf")
    ap.add_argument("--smollm2-out", default="smollm2-tokenizer")
    a = ap.parse_args()
    build()
    pretokenizer_fuzz()
    sentencepiece_gguf_llama()
    if a.smollm2_gguf:
        smollm2(a.smollm2_gguf, a.smollm2_out)
