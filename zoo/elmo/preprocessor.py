"""ELMo's text side in the TF graph: the word vocabulary with character ids, and raw strings -> the biLM's features.

Shape legend: B batch, W words of a sentence, T positions (<S> and </S> included), C characters per word.

A sentence is split on whitespace (bilm-tf's `sentence.split()`, `zoo.text.words`), framed as `<S> words </S>`
and cut to T positions: `<S>`, its first T - 2 words, `</S>` (bilm-tf's batcher never cuts; its caller keeps
sentences short). Padding is on the right: char ids 0, token ids 0, padding_mask 0.
"""

import tensorflow as tf

from zoo.elmo import chars
from zoo.text.packing import trim_to_longest
from zoo.text.words import BOS, EOS, WordVocabulary


class ElmoTokenizer(WordVocabulary):
    """`WordVocabulary` (bilm-tf's vocab file, whitespace words) plus ELMo's character ids of words.

    It is what the `bilm_sentences` objective and `ElmoPreprocessor` are handed: words for the character CNN,
    ids for the softmax.
    """

    def char_ids(self, words, max_characters=chars.MAX_CHARS):
        """string [*S] (tensor or ragged) -> int32 [*S, C]: `zoo.elmo.chars.word_char_ids` (0 for b"")."""
        return chars.word_char_ids(words, max_characters)


class ElmoPreprocessor(tf.Module):
    """string [B] -> {"char_ids" int32 [B, T, C], "token_ids" int32 [B, T], "padding_mask" int32 [B, T]}.

    Args:
      tokenizer: an `ElmoTokenizer` (or a `WordVocabulary` with `char_ids`).
      sequence_length: T, positions per sentence with <S> and </S> (a longer sentence keeps its first T - 2 words).
      trim: cut the batch to its longest sentence (serving) instead of padding to T (static shapes).
      pad_to_multiple_of: with trim, round the cut up to a multiple of this.
      max_characters: C, character ids per word (the backbone's max_characters_per_token).

    Example:
      >>> import tensorflow as tf
      >>> from zoo.elmo.preprocessor import ElmoPreprocessor, ElmoTokenizer
      >>> pre = ElmoPreprocessor(ElmoTokenizer(["<S>", "</S>", "<UNK>", "good"]), 6)
      >>> pre(tf.constant(["good film"]))["token_ids"].numpy().tolist()
      [[0, 3, 2, 1, 0, 0]]
    """

    def __init__(self, tokenizer, sequence_length=20, trim=False, pad_to_multiple_of=1, max_characters=chars.MAX_CHARS,
                 name=None):
        super().__init__(name=name)
        if sequence_length < 3:
            raise ValueError(f"sequence_length must be at least 3 (<S>, a word, </S>); got {sequence_length}.")
        if int(pad_to_multiple_of) < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer; got {pad_to_multiple_of}.")
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.trim = bool(trim)
        self.pad_to_multiple_of = int(pad_to_multiple_of)
        self.max_characters = int(max_characters)

    def sentence_words(self, texts):
        """string [B] -> `<S> words </S>` as string ragged [B, (n)], n <= T."""
        words = self.tokenizer.words(tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1]))
        return self.frame(words)

    def frame(self, words):
        """Pre-split words, string ragged [B, (W)] -> `<S> words[:T - 2] </S>`, string ragged [B, (n)]."""
        words = words[:, :self.sequence_length - 2]
        rows = words.nrows()
        column = lambda word: tf.RaggedTensor.from_tensor(tf.fill(tf.stack([rows, 1]), word))  # noqa: E731
        return tf.concat([column(BOS), words.with_row_splits_dtype(tf.int64), column(EOS)], axis=1)

    def features(self, framed):
        """`frame`'s words, string ragged [B, (n)] -> the feature dict (see the class docstring)."""
        length = self.sequence_length
        dense = framed.to_tensor(default_value="", shape=[None, length])  # [B, T]
        mask = tf.ones_like(framed, tf.int32).to_tensor(default_value=0, shape=[None, length])  # [B, T]
        features = {"char_ids": self.tokenizer.char_ids(dense, self.max_characters),
                    "token_ids": self.tokenizer.lookup(dense) * mask,  # 0 at padding
                    "padding_mask": mask}
        if self.trim:
            features = trim_to_longest(features, length, self.pad_to_multiple_of, minimum=1)
        return features

    def __call__(self, texts):
        return self.features(self.sentence_words(texts))

    def get_config(self):
        return {"vocabulary": self.tokenizer.vocabulary, **self.tokenizer.config(), "sequence_length": self.sequence_length,
                "trim": self.trim, "pad_to_multiple_of": self.pad_to_multiple_of, "max_characters": self.max_characters}
