"""`Tokenizer`: the interface every family's in-graph tokenizer implements (WordPiece, BPE, ELMo's characters).

What the trainers, the data pipeline and the export rely on, and nothing more:

  learn(texts, size, **options) -> Tokenizer     classmethod: a vocabulary learned from raw texts
  from_files(path, **options) -> Tokenizer       classmethod: from a user's file or folder (--vocab_file)
  save(directory) -> {role: file name}           writes the asset files (e.g. {"vocabulary": "vocab.txt"} or
                                                  {"vocabulary": "vocab.json", "merges": "merges.txt"})
  load(directory, config) -> Tokenizer           classmethod: back from `save`'s files and `config()`
  config() -> dict                               the options (JSON), without the vocabulary itself
  tokenize(string [B]) -> int32 RaggedTensor [B, (n)]   in the TF graph (eager, tf.data, SavedModels)
  detokenize(int [B, (n)]) -> string [B]
  special_ids -> {role: id}                      e.g. {"pad": 0, "unknown": 1, "cls": 2, ...}
  vocabulary_size, vocabulary (list of str), id_to_token(i)

A model dir records `{"class": ..., "assets": save()'s dict, **config()}` under "tokenizer"; the export copies
the asset files into its assets/.
"""

import tensorflow as tf


class Tokenizer(tf.Module):
    """Abstract base; see the module docstring."""

    @classmethod
    def learn(cls, texts, size, **options):
        raise NotImplementedError

    @classmethod
    def from_files(cls, path, **options):
        raise NotImplementedError

    @classmethod
    def load(cls, directory, config):
        raise NotImplementedError

    def save(self, directory):
        raise NotImplementedError

    def config(self):
        raise NotImplementedError

    def tokenize(self, texts):
        raise NotImplementedError

    def detokenize(self, ids):
        raise NotImplementedError

    @property
    def special_ids(self):
        raise NotImplementedError

    def describe(self):
        """One line for logs: class and vocabulary size."""
        return f"{type(self).__name__} with {self.vocabulary_size:,} tokens"

