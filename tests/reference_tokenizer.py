"""An independent, readable pure-Python BERT tokenizer: the oracle for token-id parity tests and golden files.

It follows google-research/bert tokenization.py (`BasicTokenizer`, `WordpieceTokenizer`, and
`_truncate_seq_pair` + the [CLS] A [SEP] B [SEP] packing of run_classifier.py) and, like tests/reference_bert_numpy.py,
shares no code with zoo/. Where google-research and HF's pure-Python port of it (`BertTokenizerLegacy`) differ,
it deliberately follows HF's variant, as zoo/text/wordpiece.py does:
  * every character of Unicode category C (not only Cc/Cf) other than \\t \\n \\r is dropped;
  * a word over 100 characters (google-research: 200) becomes [UNK].
It does not copy HF's other deviations (no NFC first, special-token strings such as "[CLS]" are split like any
other text). Used by scripts/record_tokenizer_golden.py and tests/test_tokenizer_parity.py.
"""

import unicodedata

MAX_CHARS_PER_WORD = 100  # HF; google-research's max_input_chars_per_word is 200

# The "CJK Unified Ideographs" blocks that google-research's `_is_chinese_char` puts spaces around.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def is_whitespace(char):
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_control(char):
    """Any category C character except \\t \\n \\r (which count as whitespace). HF's rule; google-research: Cc, Cf."""
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def is_punctuation(char):
    """Category P, plus every non-alphanumeric printable ASCII character (e.g. '$', '^', '`')."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(cp):
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def clean_text(text):
    """Drops NUL, U+FFFD and control characters; maps whitespace to ' '."""
    return "".join(
        " " if is_whitespace(c) else c
        for c in text
        if not (ord(c) == 0 or ord(c) == 0xFFFD or is_control(c))
    )


def strip_accents(text):
    """NFD, then drop nonspacing marks (Mn)."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def split_on_punctuation(token):
    """Every punctuation character becomes its own piece."""
    pieces, new_word = [], True
    for c in token:
        if is_punctuation(c):
            pieces.append(c)
            new_word = True
        else:
            if new_word:
                pieces.append("")
            new_word = False
            pieces[-1] += c
    return pieces


def basic_tokenize(text, lowercase):
    """`BasicTokenizer.tokenize`: clean, space out CJK, split on whitespace, lower + strip accents, punctuation split.

    Lower-casing (Python str.lower, so with the final-sigma rule) and accent stripping only if `lowercase`.
    """
    text = clean_text(text)
    text = "".join(f" {c} " if is_cjk(ord(c)) else c for c in text)
    words = []
    for token in text.split():
        if lowercase:
            token = strip_accents(token.lower())
        words.extend(split_on_punctuation(token))
    return " ".join(words).split()


def wordpiece(word, vocab, max_chars_per_word=MAX_CHARS_PER_WORD):
    """`WordpieceTokenizer` on one basic token: greedy longest-match-first ids; [UNK] if any part has no match."""
    if len(word) > max_chars_per_word:
        return [vocab["[UNK]"]]
    start, ids = 0, []
    while start < len(word):
        end = len(word)
        while end > start and ("##" * (start > 0) + word[start:end]) not in vocab:
            end -= 1
        if end == start:
            return [vocab["[UNK]"]]
        ids.append(vocab["##" * (start > 0) + word[start:end]])
        start = end
    return ids


def token_ids(text, vocab, lowercase):
    """`FullTokenizer`: basic tokenization, then WordPiece; ids without special tokens. vocab: {token: id}."""
    return [i for word in basic_tokenize(text, lowercase) for i in wordpiece(word, vocab)]


def truncate_seq_pair(a, b, max_length):
    """google-research `_truncate_seq_pair`: pop from the end of the longer list, from b on ties. Returns copies."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_length:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return a, b


def pack(a, b, vocab, length):
    """[CLS] a [SEP] (b is None, a cut to length - 2) or [CLS] a [SEP] b [SEP] (pair truncated to length - 3)."""
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    if b is None:
        return [cls] + a[: length - 2] + [sep]
    a, b = truncate_seq_pair(a, b, length - 3)
    return [cls] + a + [sep] + b + [sep]
