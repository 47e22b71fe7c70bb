"""Pretraining objectives: what a family learns from raw text, as data. Knows no model family.

`OBJECTIVES` names each objective in one literal dict; a family names its own by key (`Family.objective`). An
objective owns its settings (a dataclass whose field names are the trainers' flag names), its feature spec
(`zoo.data.schema`), its examples from tokenized documents (dynamic, in tf.data) and from TFRecords (static, as
`trainers.create_pretraining_data` writes them), and what a record folder must agree on with a run.

  masked_lm_nsp   BERT: sentence pairs + next-sentence labels, 80/10/10 masked LM (google-research/bert)
  causal_lm       GPT: documents packed into contiguous fixed-length blocks with end-of-text separators
  bilm_sentences  ELMo: sentences as `<S> words </S>` windows with character ids, for a forward and backward LM

The interface (what trainers.pretrain / create_pretraining_data / evaluate call):
  Settings                                   dataclass of the objective's settings
  tokens_per_example(settings) -> int        for the tokens/s figure
  tokenize(documents, tokenizer) -> tokenized
                                             raw documents (lists of sentence strings) -> what prepare and
                                             write_records take: documents of id lists (`Objective`'s default)
  count_tokens(tokenized, tokenizer) -> (tokens, unknown tokens)   for the log
  prepare(tokenized, tokenizer, settings, *, seed, training=True, progress=None) -> examples
                                             tokenized documents -> examples (numpy), built once per run
  dataset(examples, tokenizer, settings, *, batch_size, seed, input_context=None, training=True)
                                             -> batches of the feature spec (masks drawn per step where any)
  records_dataset(pattern, settings, *, batch_size, seed, input_context=None, shard_by="file")
  write_records(tokenized, tokenizer, settings, *, output_pattern, num_shards, seed, progress=None) -> (paths, n)
  RECORD_KEYS                                settings a record folder fixes (checked against a run's)
Batches are per replica with static shapes (drop_remainder), as XLA and TPUs need.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from zoo.data import instances, pipeline, records, schema, sentences

logger = logging.getLogger(__name__)


def settings_from(objective, values):
    """`objective.Settings` from a mapping that may hold more keys (e.g. every flag): the known ones are taken."""
    names = {f.name for f in dataclasses.fields(objective.Settings)}
    return objective.Settings(**{k: v for k, v in dict(values).items() if k in names and v is not None})


class Objective:
    """What every objective shares: how raw documents become the input of `prepare` / `write_records`."""

    def tokenize(self, documents, tokenizer):
        """Documents (lists of sentence strings) -> documents of id lists (sentence -> ids)."""
        return pipeline.tokenize_documents(documents, tokenizer)

    @staticmethod
    def count_tokens(tokenized, tokenizer):
        """(tokens, unknown tokens) in `tokenize`'s output."""
        unknown = tokenizer.special_ids.get("unknown")
        return (sum(len(s) for d in tokenized for s in d),
                sum(t == unknown for d in tokenized for s in d for t in s))


class MaskedLMNextSentence(Objective):
    """BERT's objective: `[CLS] A [SEP] B [SEP]` pairs (50 % random B), 15 % of tokens masked 80/10/10.

    From documents the pairs are built once and masked per step in tf.data (new masks every epoch); from
    records the static masks of `write_records` (google-research/bert's create_pretraining_data) are read.
    The tokenizer must have the special ids pad, unknown, cls, sep, mask and a `vocabulary` ('##' pieces for
    whole-word masking).
    """

    name = "masked_lm_nsp"
    RECORD_KEYS = ("sequence_length", "max_predictions")

    @dataclasses.dataclass
    class Settings:
        """sequence_length T (with [CLS] and two [SEP]); max_predictions P masked positions per example;
        masked_lm_prob; short_seq_prob (shorter random targets); dupe_factor (static-mask copies on disk);
        whole_word_mask (static masks only)."""

        sequence_length: int = 128
        max_predictions: int = 20
        masked_lm_prob: float = 0.15
        short_seq_prob: float = 0.1
        dupe_factor: int = 10
        whole_word_mask: bool = False

    @staticmethod
    def tokens_per_example(settings):
        return settings.sequence_length

    @staticmethod
    def _special_ids(tokenizer):
        ids = tokenizer.special_ids
        return [ids[k] for k in ("pad", "cls", "sep", "mask", "unknown")]

    def prepare(self, documents, tokenizer, settings, *, seed, training=True, progress=None):
        """Documents of id lists -> packed pairs (numpy arrays, `schema.bert_pair_spec`), built once per run."""
        pairs = instances.stack_instances(instances.create_pair_instances(
            documents, vocabulary=tokenizer.vocabulary, sequence_length=settings.sequence_length,
            short_seq_prob=settings.short_seq_prob if training else 0.1, dupe_factor=1, seed=seed, progress=progress))
        if training:
            logger.info("%d sentence pairs (%.1f%% random next)", len(pairs["next_sentence_labels"]),
                        100 * pairs["next_sentence_labels"].mean())
        return pairs

    def dataset(self, examples, tokenizer, settings, *, batch_size, seed, input_context=None, training=True):
        """`prepare`'s pairs -> dynamically masked batches (`schema.bert_pretraining_spec`).

        training=False: one pass, no shuffle, P = round(masked_lm_prob * T) (every masked token scored).
        """
        max_predictions = (settings.max_predictions if training
                           else max(1, round(settings.masked_lm_prob * settings.sequence_length)))
        return pipeline.dynamic_masking_dataset(
            examples, batch_size=batch_size, vocabulary_size=tokenizer.vocabulary_size,
            mask_id=tokenizer.special_ids["mask"], special_ids=self._special_ids(tokenizer),
            max_predictions=max_predictions, mask_prob=settings.masked_lm_prob, seed=seed,
            input_context=input_context, repeat=training, shuffle=training)

    @staticmethod
    def records_dataset(pattern, settings, *, batch_size, seed, input_context=None, shard_by="file"):
        return pipeline.pretraining_dataset_from_records(
            pattern, batch_size=batch_size, sequence_length=settings.sequence_length,
            max_predictions=settings.max_predictions, seed=seed, input_context=input_context, shard_by=shard_by)

    def write_records(self, documents, tokenizer, settings, *, output_pattern, num_shards, seed, progress=None):
        """Statically masked instances as sharded TFRecords; returns (paths, number of examples)."""
        examples = instances.create_pretraining_instances(
            documents, vocabulary=tokenizer.vocabulary, sequence_length=settings.sequence_length,
            short_seq_prob=settings.short_seq_prob, dupe_factor=settings.dupe_factor,
            masked_lm_prob=settings.masked_lm_prob, max_predictions=settings.max_predictions,
            whole_word_mask=settings.whole_word_mask, seed=seed, progress=progress)
        return records.write_counted(examples, output_pattern, num_shards)


def pack_blocks(documents, end_of_text_id, sequence_length):
    """Documents of sentences of ids -> int32 [N, T]: each document's tokens, then end-of-text, all documents in
    one stream cut into N = len // T contiguous blocks (the remainder, under one block, is dropped).

    Raises:
        ValueError: the corpus holds fewer than T tokens (not one block).
    """
    stream = []
    for document in documents:
        for sentence in document:
            stream.extend(sentence)
        stream.append(end_of_text_id)
    blocks = len(stream) // sequence_length
    if blocks == 0:
        raise ValueError(f"The corpus has {len(stream)} tokens, fewer than one block of --sequence_length="
                         f"{sequence_length}; give more text or a shorter --sequence_length.")
    return np.asarray(stream[:blocks * sequence_length], np.int32).reshape(blocks, sequence_length)


class CausalLanguageModel(Objective):
    """GPT's objective: predict each token from the ones before it, over contiguous fixed-length blocks.

    Documents are joined with the end-of-text token into one stream and cut into blocks of T tokens (static shapes,
    no padding, as Radford et al. train on "contiguous sequences of 512 tokens"); a block's first token has no
    target, so a block scores T - 1 predictions. The tokenizer must have the special id end_of_text.
    """

    name = "causal_lm"
    RECORD_KEYS = ("sequence_length",)

    @dataclasses.dataclass
    class Settings:
        """sequence_length T: tokens per block (the context the model trains on)."""

        sequence_length: int = 128

    @staticmethod
    def tokens_per_example(settings):
        return settings.sequence_length

    def prepare(self, documents, tokenizer, settings, *, seed, training=True, progress=None):
        """Documents of id lists -> {"token_ids": int32 [N, T]} (`pack_blocks`)."""
        blocks = pack_blocks(documents, tokenizer.special_ids["end_of_text"], settings.sequence_length)
        if training:
            logger.info("%d blocks of %d tokens", len(blocks), settings.sequence_length)
        return {schema.TOKEN_IDS: blocks}

    def dataset(self, examples, tokenizer, settings, *, batch_size, seed, input_context=None, training=True):
        """Blocks -> batches {"token_ids": int32 [B, T]}: shuffled and repeated for training, one ordered pass
        (remainder dropped) for evaluation. With several input pipelines each takes every n-th block."""
        dataset = tf.data.Dataset.from_tensor_slices(examples)
        if input_context is not None and input_context.num_input_pipelines > 1:
            dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        if training:
            dataset = dataset.shuffle(len(examples[schema.TOKEN_IDS]), seed=seed, reshuffle_each_iteration=True).repeat()
        return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    @staticmethod
    def records_dataset(pattern, settings, *, batch_size, seed, input_context=None, shard_by="file"):
        return pipeline.dataset_from_records(pattern, schema.causal_lm_block_spec(settings.sequence_length),
                                             batch_size=batch_size, seed=seed, input_context=input_context,
                                             shard_by=shard_by)

    def write_records(self, documents, tokenizer, settings, *, output_pattern, num_shards, seed, progress=None):
        """The packed blocks, shuffled with `seed`, as sharded TFRecords; returns (paths, number of blocks)."""
        blocks = self.prepare(documents, tokenizer, settings, seed=seed)[schema.TOKEN_IDS]
        order = np.random.default_rng(seed).permutation(len(blocks))
        spec = schema.causal_lm_block_spec(settings.sequence_length)
        return records.write_counted(({schema.TOKEN_IDS: blocks[i]} for i in order), output_pattern, num_shards, spec)


class BidirectionalLMSentences(Objective):
    """ELMo's objective: a forward LM and a backward LM over sentences, `<S> words </S>` (bilm-tf's data).

    Sentences are split into words by the tokenizer (whitespace, as bilm-tf); a sentence longer than a window
    of T positions fills several windows that share one position (`zoo.data.sentences.windows`), so every word
    is predicted once from each side. Each window starts its LSTMs from zeros: bilm-tf instead streams sentences
    through stateful LSTMs, carrying the state from one batch to the next (truncated backprop); windows that
    stand alone shuffle freely, need no state in the checkpoint and give the same batches on any number of
    replicas, at the price of less context at the start of a window. Batches hold `schema.bilm_window_spec`:
    `char_ids` [B, T, C] (from the words themselves, so out-of-vocabulary words keep their characters),
    `token_ids` [B, T] and `padding_mask` [B, T].

    The tokenizer must have `words(texts)`, `lookup(words)`, `char_ids(words, max_characters)` and the special
    ids bos, eos and unknown (the ELMo family's tokenizer; `zoo.text.words.WordVocabulary` gives the first two).
    """

    name = "bilm_sentences"
    RECORD_KEYS = ("sequence_length", "max_characters_per_token")

    @dataclasses.dataclass
    class Settings:
        """sequence_length T: positions per window (bilm-tf's unroll_steps, 20); max_characters_per_token C."""

        sequence_length: int = 20
        max_characters_per_token: int = 50

    @staticmethod
    def tokens_per_example(settings):
        return settings.sequence_length

    def tokenize(self, documents, tokenizer):
        """Documents of sentences -> `zoo.data.sentences.SentenceWords` (every sentence of every document)."""
        return sentences.split_words((s for d in documents for s in d), tokenizer)

    @staticmethod
    def count_tokens(tokenized, tokenizer):
        unknown = tokenizer.special_ids["unknown"]
        return len(tokenized.word_index), int(np.sum(tokenized.token_ids[tokenized.word_index] == unknown))

    def prepare(self, tokenized, tokenizer, settings, *, seed, training=True, progress=None):
        """`SentenceWords` -> {"windows": int32 [N, T] word-table indices, "words", "token_ids": the tables}."""
        windows = sentences.windows(tokenized, settings.sequence_length)
        if len(windows) == 0:
            raise ValueError("The corpus holds no words: give text with at least one non-blank sentence.")
        if training:
            logger.info("%d windows of %d positions from %d sentences", len(windows), settings.sequence_length,
                        tokenized.num_sentences)
        if progress is not None:
            progress(len(windows), len(windows))
        return {"windows": windows, "words": tokenized.words, "token_ids": tokenized.token_ids}

    @staticmethod
    def _featurize(examples, tokenizer, settings):
        words = tf.constant(examples["words"], tf.string)
        token_ids = tf.constant(examples["token_ids"], tf.int32)
        spec = schema.bilm_window_spec(settings.sequence_length, settings.max_characters_per_token)

        def featurize(index):  # int32 [B, T] -> the spec's features [B, T, ...]
            features = sentences.window_features(
                index, words, token_ids, lambda w: tokenizer.char_ids(w, settings.max_characters_per_token))
            return {name: tf.ensure_shape(features[name], [index.shape[0], *s.shape]) for name, s in spec.items()}

        return featurize

    def dataset(self, examples, tokenizer, settings, *, batch_size, seed, input_context=None, training=True):
        """Windows -> batches of `schema.bilm_window_spec`: shuffled and repeated for training, one ordered pass
        (remainder dropped) for evaluation. With several input pipelines each takes every n-th window."""
        dataset = tf.data.Dataset.from_tensor_slices(examples["windows"])
        if input_context is not None and input_context.num_input_pipelines > 1:
            dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        if training:
            dataset = dataset.shuffle(len(examples["windows"]), seed=seed, reshuffle_each_iteration=True).repeat()
        dataset = dataset.batch(batch_size, drop_remainder=True)
        return dataset.map(self._featurize(examples, tokenizer, settings), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    @staticmethod
    def records_dataset(pattern, settings, *, batch_size, seed, input_context=None, shard_by="file"):
        spec = schema.bilm_window_spec(settings.sequence_length, settings.max_characters_per_token)
        return pipeline.dataset_from_records(pattern, spec, batch_size=batch_size, seed=seed,
                                             input_context=input_context, shard_by=shard_by)

    def write_records(self, tokenized, tokenizer, settings, *, output_pattern, num_shards, seed, progress=None):
        """The windows, shuffled with `seed`, with their features as sharded TFRecords; returns (paths, count)."""
        examples = self.prepare(tokenized, tokenizer, settings, seed=seed)
        windows = examples["windows"][np.random.default_rng(seed).permutation(len(examples["windows"]))]
        featurize = self._featurize(examples, tokenizer, settings)
        spec = schema.bilm_window_spec(settings.sequence_length, settings.max_characters_per_token)

        def rows():
            for start in range(0, len(windows), 1024):
                batch = {k: v.numpy() for k, v in featurize(tf.constant(windows[start:start + 1024])).items()}
                for i in range(len(batch[schema.TOKEN_IDS])):
                    yield {k: v[i] for k, v in batch.items()}
                if progress is not None:
                    progress(min(start + 1024, len(windows)), len(windows))

        return records.write_counted(rows(), output_pattern, num_shards, spec)


OBJECTIVES = {
    "masked_lm_nsp": MaskedLMNextSentence(),
    "causal_lm": CausalLanguageModel(),
    "bilm_sentences": BidirectionalLMSentences(),
}


def get(name):
    """The objective named `name`, or ValueError listing them."""
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown pretraining objective {name!r}; known: {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[name]
