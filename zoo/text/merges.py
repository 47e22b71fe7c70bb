"""Learning subword vocabularies from a corpus: word counts after basic tokenization, and BPE merge learning.

Both learners share this: WordPiece (BERT) runs BPE on '##'-prefixed continuation characters, as HF `tokenizers`
trains WordPiece; BPE (GPT-1) runs it on characters whose last one carries the end-of-word suffix '</w>', as
Sennrich et al. and openai/finetune-transformer-lm's `vocab_40000.bpe`. Plain Python (runs once per corpus).
"""

import collections
import heapq
from typing import Callable, Iterable, Sequence

import tensorflow as tf

from zoo.text.basic import BasicTokenizer


def count_words(texts: Iterable, lowercase: bool, final_sigma: bool = True, batch_size: int = 4096) -> collections.Counter:
    """{basic token: count} over `texts` (str, UTF-8 bytes or tf.data string elements), split in the graph exactly
    as the tokenizers split them (`BasicTokenizer(lowercase, final_sigma=final_sigma)`)."""
    basic = BasicTokenizer(lowercase=lowercase, final_sigma=final_sigma)
    split = tf.function(basic.__call__, input_signature=[tf.TensorSpec([None], tf.string)])
    counts = collections.Counter()
    batch = []

    def flush():
        if batch:
            counts.update(split(tf.constant(batch)).values.numpy().tolist())
            batch.clear()

    for text in texts:
        if hasattr(text, "numpy"):  # elements of a tf.data.Dataset
            text = text.numpy()
        batch.append(text.encode("utf-8") if isinstance(text, str) else bytes(text))
        if len(batch) == batch_size:
            flush()
    flush()
    return collections.Counter({w.decode("utf-8"): c for w, c in counts.items()})


def _pairs(symbols):
    return zip(symbols, symbols[1:])


def learn_merges(words: Sequence[list], counts: Sequence[int], budget: int,
                 join: Callable[[str, str], str]) -> list:
    """Greedy BPE: repeatedly merges the most frequent adjacent symbol pair (count >= 2) until `budget` distinct
    merged symbols exist (two pairs can make the same symbol: 'a'+'bc' and 'ab'+'c').

    Incremental pair counts with a lazy max-heap, so each merge only revisits the words containing the pair. Ties
    between equally frequent pairs go to the lexicographically smallest pair (deterministic across runs).

    Args:
      words: each word as its list of initial symbols (modified in place).
      counts: each word's corpus count.
      budget: the most distinct merged symbols to learn (the vocabulary they add).
      join: (left, right) -> the merged symbol, e.g. `lambda a, b: a + b[2:]` for '##' continuations.

    Returns:
      [(left, right, merged)] in the order learned (the merge ranks of a BPE merges file).
    """
    pair_count = collections.Counter()
    where = collections.defaultdict(set)
    for i, symbols in enumerate(words):
        for pair in _pairs(symbols):
            pair_count[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)
    learned, seen = [], set()
    while heap and len(seen) < budget:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale entry: the pair's count changed after it was pushed
        if -neg < 2:
            break  # every remaining pair occurs once; merging those only memorizes single words
        merged = join(*pair)
        learned.append((pair[0], pair[1], merged))
        seen.add(merged)
        changed = set()
        for i in where.pop(pair, ()):
            symbols, c = words[i], counts[i]
            for p in _pairs(symbols):
                pair_count[p] -= c
                changed.add(p)
            out, j = [], 0
            while j < len(symbols):
                if j + 1 < len(symbols) and (symbols[j], symbols[j + 1]) == pair:
                    out.append(merged)
                    j += 2
                else:
                    out.append(symbols[j])
                    j += 1
            words[i] = out
            for p in _pairs(out):
                pair_count[p] += c
                where[p].add(i)
                changed.add(p)
        for p in changed:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
            else:
                pair_count.pop(p, None)
    return learned
