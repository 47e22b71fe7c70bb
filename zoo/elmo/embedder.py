"""`ElmoEmbedder`: every layer of ELMo, and their scalar mix, for each word of raw sentences or pre-split tokens
(feature-based use: allennlp's `ElmoEmbedder`, TF Hub elmo/3's outputs).

Shape legend: B batch, T positions (<S>, the words, </S>, padding), W words (the longest sentence of the batch,
without <S> and </S>), P projection width, L LSTM layers per direction.

Sentences are split on whitespace (as TF Hub's `default` signature and bilm-tf do) and framed `<S> words </S>` by
`ElmoPreprocessor`, which keeps the first T - 2 words of a longer sentence; pre-split tokens with lengths skip
the split (TF Hub's `tokens` signature). The biLM runs over the framed positions; the outputs drop <S> and </S>:

  word_emb       [B, W, P]    the char-CNN token representation (layer 0, one copy)
  lstm_outputs1..L [B, W, 2P] layer j = [forward_j; backward_j]
  layers         [B, L + 1, W, 2P] (Python only) every layer, layer 0 = [word_emb; word_emb]
  elmo           [B, W, 2P]   the scalar mix gamma * sum_j softmax(w)_j * layer_j (allennlp runs it over the
                              framed positions, so with do_layer_norm the statistics include <S> and </S>, as here)
  default        [B, 2P]      the mean of `elmo` over the words (0 for a sentence without words)
  sequence_len   int32 [B]    words per sentence after the cut; mask int32 [B, W] (1 = a word)
Every output is 0 past a sentence's words.
"""

import numpy as np
import tensorflow as tf

from zoo.layers.bilstm import masked_pool
from zoo.layers.scalar_mix import ScalarMix


def word_positions(x, padding_mask):
    """Drops the <S> and </S> positions: x [B, T, ...] -> (x at the words [B, W, ...], zero elsewhere;
    word mask bool [B, W]), W = max(T - 2, 0). Padding must be on the right (ElmoPreprocessor's)."""
    lengths = tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)  # [B]: words + 2
    width = tf.maximum(tf.shape(x)[1] - 2, 0)
    words = x[:, 1:1 + width]  # [B, W, ...]
    word_mask = tf.sequence_mask(tf.maximum(lengths - 2, 0), width)  # [B, W]
    keep = tf.reshape(word_mask, tf.concat([tf.shape(word_mask), tf.ones([x.shape.rank - 2], tf.int32)], 0))
    return tf.where(keep, words, tf.zeros([], x.dtype)), word_mask


def default_mix(backbone, name="scalar_mix"):
    """A built `ScalarMix` over the backbone's L + 1 layers at an even mix (w = 0, gamma = 1): what a pretrained
    model's `elmo` output uses before a task learns its own."""
    mix = ScalarMix(backbone.num_layers + 1, name=name)
    mix.build()
    return mix


def feature_outputs(backbone, mix, features, layers=False):
    """The module docstring's outputs (float32 tensors) from the preprocessor's features; `layers` adds them stacked."""
    out = backbone({"char_ids": features["char_ids"], "padding_mask": features["padding_mask"]}, training=False)
    mask = features["padding_mask"]
    tokens, word_mask = word_positions(tf.cast(out["token_embedding"], tf.float32), mask)
    stacked = [word_positions(tf.cast(h, tf.float32), mask)[0] for h in out["layers"]]  # L + 1 of [B, W, 2P]
    elmo = word_positions(tf.cast(mix(out["layers"], mask=mask), tf.float32), mask)[0]
    result = {"word_emb": tokens}
    for j, h in enumerate(stacked[1:], 1):
        result[f"lstm_outputs{j}"] = h
    result.update(elmo=elmo, default=masked_pool(elmo, word_mask, "mean"),
                  sequence_len=tf.reduce_sum(tf.cast(word_mask, tf.int32), axis=1), mask=tf.cast(word_mask, tf.int32))
    if layers:
        result["layers"] = tf.stack(stacked, axis=1)  # [B, L + 1, W, 2P]
    return result


def token_words(tokenizer, tokens, sequence_len=None):
    """Pre-split tokens -> string ragged [B, (n)]: tokens string [B, K] with sequence_len int [B] (each row's
    first sequence_len tokens, clipped to [0, K]; all K when None), or a tf.RaggedTensor / list of lists of
    words. Lower-cased when the tokenizer lower-cases (as its sentence split does)."""
    if isinstance(tokens, (list, tuple)) and sequence_len is None:
        rows = [[w.encode("utf-8") if isinstance(w, str) else bytes(w) for w in row] for row in tokens]
        tokens = tf.ragged.constant(rows, dtype=tf.string, ragged_rank=1, inner_shape=()) if rows else \
            tf.RaggedTensor.from_row_lengths(tf.constant([], tf.string), tf.constant([], tf.int64))
    if not isinstance(tokens, tf.RaggedTensor):
        tokens = tf.convert_to_tensor(tokens, tf.string)
        width = tf.shape(tokens, out_type=tf.int64)[1]
        if sequence_len is None:
            lengths = tf.fill(tf.shape(tokens, out_type=tf.int64)[:1], width)
        else:
            lengths = tf.clip_by_value(tf.cast(sequence_len, tf.int64), 0, width)
        tokens = tf.RaggedTensor.from_tensor(tokens, lengths=lengths)
    if tokenizer.lowercase:
        tokens = tf.ragged.map_flat_values(tf.strings.lower, tokens, encoding="utf-8")
    return tokens


class ElmoEmbedder:
    """ELMo features of raw sentences or pre-split tokens (see the module docstring for the outputs).

    Args:
      backbone: an `ElmoBackbone` (trained weights in it).
      preprocessor: its `ElmoPreprocessor` (a trimming one is faster: `trim=True`).
      mix: the `ScalarMix` for `elmo` (default: an even mix over every layer, `default_mix`).

    Example (a tiny biLM with random weights; `ElmoEmbedder.from_model_dir(path)` loads a model dir or export):
      >>> from zoo.elmo import ElmoBackbone, ElmoPreprocessor, ElmoTokenizer
      >>> from zoo.elmo.embedder import ElmoEmbedder
      >>> tokenizer = ElmoTokenizer.learn(["the cat is on the mat"], 10)
      >>> backbone = ElmoBackbone(0, filters=((1, 4), (2, 8)), num_highway=1, projection_dim=8, lstm_dim=16)
      >>> backbone.build()
      >>> embedder = ElmoEmbedder(backbone, ElmoPreprocessor(tokenizer, 20, trim=True))
      >>> out = embedder.embed(["the cat is on the mat", "dogs are in the fog"])
      >>> out["layers"].shape, out["elmo"].shape, out["default"].shape   # [B, L + 1, W, 2P], [B, W, 2P], [B, 2P]
      ((2, 3, 6, 16), (2, 6, 16), (2, 16))
      >>> embedder.embed_tokens([["the", "cat"], ["dogs"]])["lstm_outputs2"].shape
      (2, 2, 16)
    """

    def __init__(self, backbone, preprocessor, mix=None):
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.mix = mix if mix is not None else default_mix(backbone)

    @classmethod
    def from_model_dir(cls, path, sequence_length=None):
        """From a pretrained (or converted) model dir or export; a fine-tuned one brings its task's learned mix
        when the task mixes every layer."""
        from zoo.elmo import FAMILY
        from zoo.model_dir import read_config

        if "task" in read_config(path):
            task = FAMILY.load_task(path, trim=True)
            pre = FAMILY.preprocessor(task.preprocessor.tokenizer, sequence_length or task.preprocessor.sequence_length,
                                      trim=True)
            return cls(task.backbone, pre, task.feature_mix())
        backbone, pre = FAMILY.load_pretrained(path, sequence_length=sequence_length, trim=True)
        return cls(backbone, pre)

    # ---- features ---------------------------------------------------------------------------------------------
    def sentence_features(self, texts):
        """string [B] sentences -> the preprocessor's features."""
        return self.preprocessor(tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1]))

    def token_features(self, tokens, sequence_len=None):
        """Pre-split tokens (see `token_words`) -> the preprocessor's features."""
        return self.preprocessor.features(self.preprocessor.frame(token_words(self.preprocessor.tokenizer, tokens,
                                                                              sequence_len)))

    def outputs(self, features, layers=False):
        """Tensors of the module docstring from features (what the SavedModel's signatures return)."""
        return feature_outputs(self.backbone, self.mix, features, layers=layers)

    # ---- numpy for Python users ----------------------------------------------------------------------------
    def embed(self, texts, batch_size=64):
        """Raw sentences (a str or a list of str; split on whitespace) -> {output: numpy array} with `layers`.

        Batches of `batch_size`; W is the longest sentence of all (shorter ones zero-padded)."""
        texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
        return self._batched([self.sentence_features(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)])

    def embed_tokens(self, tokens, sequence_len=None, batch_size=64):
        """Pre-split tokens (a list of lists of words, or [B, K] strings with sequence_len [B]) -> `embed`'s dict."""
        n = len(tokens) if not hasattr(tokens, "shape") else int(tokens.shape[0])
        batches = []
        for i in range(0, n, batch_size):
            part = tokens[i:i + batch_size]
            lengths = None if sequence_len is None else np.asarray(sequence_len)[i:i + batch_size]
            batches.append(self.token_features(part, lengths))
        return self._batched(batches)

    def _batched(self, batches):
        outs = [{k: v.numpy() for k, v in self.outputs(f, layers=True).items()} for f in batches]
        if not outs:
            outs = [{k: v.numpy() for k, v in self.outputs(self.sentence_features([]), layers=True).items()}]
        width = max(o["mask"].shape[1] for o in outs)
        merged = {}
        for key in outs[0]:
            parts = []
            for o in outs:
                value = o[key]
                axis = 2 if key == "layers" else 1
                if value.ndim > axis and key not in ("default", "sequence_len"):
                    pad = [(0, 0)] * value.ndim
                    pad[axis] = (0, width - value.shape[axis])
                    value = np.pad(value, pad)
                parts.append(value)
            merged[key] = np.concatenate(parts, axis=0)
        return merged
