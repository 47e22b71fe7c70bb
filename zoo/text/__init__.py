"""In-graph text processing (TF core ops + TF Text ops that old TF Serving has); knows no model.

  unicode.py    codepoint tables (classes, final-sigma context, lower-case fix-ups) and their graph lookups
  basic.py      BasicTokenizer (google-research/bert's clean / CJK / lower-case / accents / punctuation split)
  merges.py     word counts and the BPE merge learner both subword learners use
  wordpiece.py  WordPieceTokenizer (ids == google-research/bert FullTokenizer), vocab I/O, learner
  bpe.py        BytePairTokenizer (GPT-1's BPE with '</w>', ids == HF OpenAIGPTTokenizer), merges I/O, learner
  packing.py    pack_segments ([CLS] A [SEP] B [SEP] with original truncation), mask_tokens (dynamic MLM masks)

Names are exported lazily, so `from zoo.text import packing` does not import tensorflow_text.
"""

import importlib

_EXPORTS = {
    "RESERVED_TOKENS": "wordpiece",
    "BasicTokenizer": "basic",
    "BytePairTokenizer": "bpe",
    "WordPieceTokenizer": "wordpiece",
    "learn_vocabulary": "wordpiece",
    "load_vocabulary": "wordpiece",
    "save_vocabulary": "wordpiece",
    "pack_segments": "packing",
    "mask_tokens": "packing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"zoo.text.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'zoo.text' has no attribute {name!r}")
