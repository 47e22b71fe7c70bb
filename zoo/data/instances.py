"""BERT sentence-pair + next-sentence + static masking instances, with google-research/bert semantics.

A port of ``create_pretraining_data.py`` (google-research/bert) working on token ids instead of strings:
documents are shuffled once, then ``dupe_factor`` passes over them each cut every document into chunks of about
``target_seq_length`` tokens (10% of the time a shorter random target, so the model also sees short inputs);
each chunk is split at a random sentence boundary into A and B, and half of the time B is replaced by a span of
a random other document (the chunk's unused sentences are "put back" to start the next chunk); pairs are
truncated to fit, packed as ``[CLS] A [SEP] B [SEP]``, and 15% of the tokens are masked (80% [MASK], 10% random,
10% kept), optionally whole words at a time.

Deliberate differences, each for a reason:
- The original shuffles *all* instances in memory; here a bounded shuffle buffer (``shuffle_buffer_size``)
  streams them, because a multi-GB list of instances does not fit a small machine.
- Random replacement tokens never are bracketed specials ([PAD], [CLS], [SEP], [MASK], [UNK], [unused*]): they
  carry no word to learn from and a random [SEP] would fake a segment boundary. One rng draw either way.
- Whole-word groups never span a [SEP] (the original joined a '##' piece opening B to the last word of A).
- Empty sentences are dropped (as the original does at reading time).

Everything is driven by one ``random.Random(seed)``, so the output is a pure function of its arguments.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from zoo.data import schema

Documents = Sequence[Sequence[Sequence[int]]]  # document -> sentence -> token ids
Progress = Callable[[int, int], None]


class _Vocabulary:
    """The ids instance creation needs, looked up by their BERT token strings."""

    def __init__(self, vocabulary: Sequence[str]):
        index = {token: i for i, token in enumerate(vocabulary)}
        missing = [t for t in ("[CLS]", "[SEP]", "[MASK]") if t not in index]
        if missing:
            raise ValueError(f"The vocabulary lacks {missing}; BERT instances need [CLS], [SEP] and [MASK].")
        self.cls_id, self.sep_id, self.mask_id = index["[CLS]"], index["[SEP]"], index["[MASK]"]
        self.pad_id = index.get("[PAD]", 0)  # google-research pads with id 0 regardless
        self.continuation = np.array([t.startswith("##") for t in vocabulary], dtype=bool)
        self.random_ids = [i for i, t in enumerate(vocabulary) if not (t.startswith("[") and t.endswith("]"))]
        if not self.random_ids:
            raise ValueError("The vocabulary has no ordinary (non-[bracketed]) token to use as random replacement.")


def _check_lengths(sequence_length: int, short_seq_prob: float) -> None:
    # [CLS] A [SEP] B [SEP] with |A|, |B| >= 1 needs 5 positions; target lengths are drawn from [2, T - 3].
    if sequence_length < 5:
        raise ValueError(f"sequence_length must be >= 5 for [CLS] A [SEP] B [SEP], got {sequence_length}.")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}.")


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Truncates the longer of A/B one token at a time, from the front or the back at random (in place).

    Random ends avoid the bias of always cutting the tail (which would over-represent sentence starts). Same
    rng draws as the original's loop, but the cuts are counted and applied once: ``del tokens[0]`` per token
    would be quadratic on a very long sentence (a corpus without sentence breaks).
    """
    lengths = [len(tokens_a), len(tokens_b)]
    front, back = [0, 0], [0, 0]
    while lengths[0] + lengths[1] > max_num_tokens:
        k = 0 if lengths[0] > lengths[1] else 1
        if rng.random() < 0.5:
            front[k] += 1
        else:
            back[k] += 1
        lengths[k] -= 1
    for k, tokens in enumerate((tokens_a, tokens_b)):
        tokens[:] = tokens[front[k]:front[k] + lengths[k]]


def _pairs_from_document(documents: Sequence[list[list[int]]], document_index: int, max_num_tokens: int,
                         short_seq_prob: float, rng: random.Random) -> Iterator[tuple[list[int], list[int], int]]:
    """Yields (tokens_a, tokens_b, next_sentence_label) from one document: create_instances_from_document."""
    document = documents[document_index]
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    current_chunk: list[list[int]] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                # a_end: how many chunk segments go into A.
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = [t for segment_a in current_chunk[:a_end] for t in segment_a]
                tokens_b: list[int] = []
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    label = schema.NEXT_SENTENCE_RANDOM
                    target_b_length = target_seq_length - len(tokens_a)
                    # Ten tries at a different document; with one document it falls back to itself.
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # The chunk's segments after A were not used: put them back so they start the next chunk.
                    i -= len(current_chunk) - a_end
                else:
                    label = schema.NEXT_SENTENCE_REAL
                    tokens_b = [t for segment_b in current_chunk[a_end:] for t in segment_b]
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                yield tokens_a, tokens_b, label
            current_chunk = []
            current_length = 0
        i += 1


def _pack(tokens_a: list[int], tokens_b: list[int], vocab: _Vocabulary) -> tuple[list[int], list[int]]:
    tokens = [vocab.cls_id, *tokens_a, vocab.sep_id, *tokens_b, vocab.sep_id]
    segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    return tokens, segment_ids


def _prepare(documents: Documents, sequence_length: int, short_seq_prob: float,
             dupe_factor: int) -> list[list[list[int]]]:
    """Checks arguments and copies the documents (eagerly, so errors surface at call time, not mid-iteration)."""
    _check_lengths(sequence_length, short_seq_prob)
    if dupe_factor < 1:
        raise ValueError(f"dupe_factor must be >= 1, got {dupe_factor}.")
    # Copy (never mutate the caller's lists) and drop empty sentences/documents, as the original reader does.
    docs = [d for d in ([list(s) for s in doc if len(s)] for doc in documents) if d]
    if not docs:
        raise ValueError("No tokens in the documents: every document/sentence is empty.")
    return docs


def _pairs(docs: list[list[list[int]]], vocab: _Vocabulary, sequence_length: int, short_seq_prob: float,
           dupe_factor: int, rng: random.Random, progress: Progress | None,
           on_pair: Callable[[list[int], list[int], int], dict]) -> Iterator[dict]:
    """Shuffles documents once, then runs ``dupe_factor`` passes; ``on_pair`` turns a packed pair into a dict."""
    rng.shuffle(docs)
    total = dupe_factor * len(docs)
    for dupe in range(dupe_factor):
        for document_index in range(len(docs)):
            for tokens_a, tokens_b, label in _pairs_from_document(docs, document_index, sequence_length - 3,
                                                                  short_seq_prob, rng):
                tokens, segment_ids = _pack(tokens_a, tokens_b, vocab)
                yield on_pair(tokens, segment_ids, label)
            if progress is not None:
                progress(dupe * len(docs) + document_index + 1, total)


def _pad(values: list, length: int, pad, dtype) -> np.ndarray:
    out = np.full((length,), pad, dtype=dtype)
    out[:len(values)] = values
    return out


def _pair_features(tokens: list[int], segment_ids: list[int], label: int, sequence_length: int,
                   pad_id: int) -> dict[str, np.ndarray]:
    return {
        schema.TOKEN_IDS: _pad(tokens, sequence_length, pad_id, np.int32),
        schema.SEGMENT_IDS: _pad(segment_ids, sequence_length, 0, np.int32),
        schema.PADDING_MASK: _pad([1] * len(tokens), sequence_length, 0, np.int32),
        schema.NEXT_SENTENCE_LABELS: np.asarray(label, dtype=np.int32),
    }


def create_masked_lm_predictions(tokens: list[int], *, vocab: _Vocabulary, masked_lm_prob: float,
                                 max_predictions: int, whole_word_mask: bool,
                                 rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    """Static masking of one packed sequence (google-research create_masked_lm_predictions).

    Args:
        tokens: ``[CLS] A [SEP] B [SEP]`` ids, unpadded.

    Returns:
        (output tokens, sorted masked positions, original ids at those positions).
    """
    cand_indexes: list[list[int]] = []
    after_special = True
    for i, token in enumerate(tokens):
        if token == vocab.cls_id or token == vocab.sep_id:
            after_special = True
            continue
        # A '##' piece joins the previous candidate so a whole word is masked (or not) together; never across
        # [SEP] (a truncated B may start with a piece, which the original glued to A's last word).
        if whole_word_mask and not after_special and vocab.continuation[token]:
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
        after_special = False
    rng.shuffle(cand_indexes)
    output_tokens = list(tokens)
    num_to_predict = min(max_predictions, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked: list[tuple[int, int]] = []
    covered: set[int] = set()
    for index_set in cand_indexes:
        if len(masked) >= num_to_predict:
            break
        # A whole word that would overflow the budget is skipped, not partially masked.
        if len(masked) + len(index_set) > num_to_predict:
            continue
        if any(index in covered for index in index_set):
            continue
        for index in index_set:
            covered.add(index)
            if rng.random() < 0.8:
                masked_token = vocab.mask_id
            elif rng.random() < 0.5:
                masked_token = tokens[index]
            else:
                masked_token = vocab.random_ids[rng.randint(0, len(vocab.random_ids) - 1)]
            output_tokens[index] = masked_token
            masked.append((index, tokens[index]))
    masked.sort()
    return output_tokens, [p for p, _ in masked], [label for _, label in masked]


def _shuffled(items: Iterator[dict], buffer_size: int, rng: random.Random) -> Iterator[dict]:
    """Streams ``items`` through a shuffle buffer (reservoir-style, like tf.data's shuffle)."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[dict] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        j = rng.randrange(buffer_size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


def create_pretraining_instances(documents: Documents, *, vocabulary: Sequence[str], sequence_length: int = 128,
                                 short_seq_prob: float = 0.1, dupe_factor: int = 10, masked_lm_prob: float = 0.15,
                                 max_predictions: int = 20, whole_word_mask: bool = False, seed: int = 12345,
                                 progress: Progress | None = None,
                                 shuffle_buffer_size: int = 10000) -> Iterator[dict[str, np.ndarray]]:
    """Statically masked BERT pretraining instances (masked LM + next sentence prediction).

    Args:
        documents: document -> sentence -> WordPiece ids (``zoo.data.pipeline.tokenize_documents``).
        vocabulary: id -> token string; must hold [CLS], [SEP], [MASK]; '##' marks continuation pieces.
        sequence_length: T, including [CLS] and two [SEP]s.
        short_seq_prob: probability of a shorter random target length for a document pass.
        dupe_factor: passes over the corpus, each with different chunks, pairs and masks.
        masked_lm_prob: share of tokens (counting [CLS]/[SEP]) to predict.
        max_predictions: P, cap on predictions per instance.
        whole_word_mask: mask all pieces of a word together.
        seed: seed of the one ``random.Random`` driving everything.
        progress: called as ``progress(documents_done, documents_total)`` over all passes.
        shuffle_buffer_size: size of the streaming shuffle buffer; <= 1 keeps generation order.

    Yields:
        ``schema.bert_pretraining_spec(T, P)`` dicts of numpy arrays: ``token_ids``, ``segment_ids``,
        ``padding_mask`` int32 [T], ``mask_positions``, ``mask_ids`` int32 [P], ``mask_weights`` float32 [P]
        (positions/ids padded with 0, weights 0.0), ``next_sentence_labels`` int32 [] (1 = random B).
    """
    vocab = _Vocabulary(vocabulary)
    if not 0.0 < masked_lm_prob < 1.0 or max_predictions <= 0:
        raise ValueError(f"Need 0 < masked_lm_prob < 1 and max_predictions > 0, got {masked_lm_prob}, "
                         f"{max_predictions}.")
    rng = random.Random(seed)

    def on_pair(tokens, segment_ids, label):
        masked_tokens, positions, ids = create_masked_lm_predictions(
            tokens, vocab=vocab, masked_lm_prob=masked_lm_prob, max_predictions=max_predictions,
            whole_word_mask=whole_word_mask, rng=rng)
        features = _pair_features(masked_tokens, segment_ids, label, sequence_length, vocab.pad_id)
        features[schema.MASK_POSITIONS] = _pad(positions, max_predictions, 0, np.int32)
        features[schema.MASK_IDS] = _pad(ids, max_predictions, 0, np.int32)
        features[schema.MASK_WEIGHTS] = _pad([1.0] * len(positions), max_predictions, 0.0, np.float32)
        return features

    docs = _prepare(documents, sequence_length, short_seq_prob, dupe_factor)
    pairs = _pairs(docs, vocab, sequence_length, short_seq_prob, dupe_factor, rng, progress, on_pair)
    return _shuffled(pairs, shuffle_buffer_size, rng)


def create_pair_instances(documents: Documents, *, vocabulary: Sequence[str], sequence_length: int = 128,
                          short_seq_prob: float = 0.1, dupe_factor: int = 1, seed: int = 12345,
                          progress: Progress | None = None,
                          shuffle_buffer_size: int = 10000) -> Iterator[dict[str, np.ndarray]]:
    """Unmasked packed sentence pairs, for dynamic masking (new masks every epoch, RoBERTa-style).

    Same chunking, random-next and truncation as ``create_pretraining_instances`` (see there for the args);
    ``dupe_factor`` defaults to 1 because masks are drawn later, per step.

    Yields:
        ``schema.bert_pair_spec(T)`` dicts: ``token_ids``, ``segment_ids``, ``padding_mask`` int32 [T],
        ``next_sentence_labels`` int32 []. ``stack_instances`` turns them into the arrays
        ``zoo.data.pipeline.dynamic_masking_dataset`` takes.
    """
    vocab = _Vocabulary(vocabulary)
    rng = random.Random(seed)

    def on_pair(tokens, segment_ids, label):
        return _pair_features(tokens, segment_ids, label, sequence_length, vocab.pad_id)

    docs = _prepare(documents, sequence_length, short_seq_prob, dupe_factor)
    pairs = _pairs(docs, vocab, sequence_length, short_seq_prob, dupe_factor, rng, progress, on_pair)
    return _shuffled(pairs, shuffle_buffer_size, rng)


def stack_instances(instances: Iterator[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stacks per-example dicts into one dict of [N, ...] arrays (dtype kept)."""
    instances = list(instances)
    if not instances:
        raise ValueError("No instances to stack.")
    return {name: np.stack([inst[name] for inst in instances]) for name in instances[0]}
