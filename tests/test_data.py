"""Tests of zoo.data: corpora, records, BERT instances and input pipelines (tiny, seconds)."""

import logging
import os
import random
import time

import numpy as np
import pytest
import tensorflow as tf

from zoo.data import corpus, instances, pipeline, records, schema

# A tiny BERT-style vocabulary: specials, whole words, and '##' continuation pieces.
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(150)]
PIECES = [f"##p{i}" for i in range(50)]
VOCAB = SPECIALS + WORDS + PIECES
PAD, UNK, CLS, SEP, MASK = range(5)
WORD_IDS = list(range(5, 5 + len(WORDS)))
PIECE_IDS = list(range(5 + len(WORDS), len(VOCAB)))


class WhitespaceTokenizer(tf.Module):
    """Stand-in tokenizer: whitespace split + dict lookup (unknown words -> [UNK])."""

    def __init__(self, vocabulary):
        super().__init__()
        self.vocabulary = list(vocabulary)
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.vocabulary, tf.range(len(self.vocabulary), dtype=tf.int32)),
            default_value=UNK)

    def tokenize(self, texts):
        words = tf.strings.split(texts)
        return tf.ragged.map_flat_values(self._table.lookup, words)


def random_documents(seed, num_documents=40, whole_words=False):
    """Documents of token ids; with whole_words, words are a word id plus 0-2 '##' pieces."""
    rng = random.Random(seed)
    documents = []
    for _ in range(num_documents):
        document = []
        for _ in range(rng.randint(1, 12)):
            sentence = []
            for _ in range(rng.randint(1, 25)):
                sentence.append(rng.choice(WORD_IDS))
                if whole_words:
                    sentence.extend(rng.choice(PIECE_IDS) for _ in range(rng.randint(0, 2)))
            document.append(sentence)
        documents.append(document)
    return documents


def make_instances(seed=12345, **kwargs):
    args = dict(vocabulary=VOCAB, sequence_length=64, max_predictions=16, dupe_factor=3)
    args.update(kwargs)
    return list(instances.create_pretraining_instances(random_documents(seed=0), seed=seed, **args))


# ---------------------------------------------------------------------------------------------------------------
# corpus


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


def test_blank_line_format_files_folders_globs(tmp_path):
    a = write(tmp_path / "c/a.txt", "One.\nTwo.\n\n\n  Three.  \n")
    write(tmp_path / "c/sub/b.txt", "Four.\n\nFive.\nSix.")
    write(tmp_path / "c/.hidden", "never read")
    assert corpus.read_documents(a) == [["One.", "Two."], ["Three."]]
    # A folder reads recursively in sorted order; hidden files are skipped.
    everything = [["One.", "Two."], ["Three."], ["Four."], ["Five.", "Six."]]
    assert corpus.read_documents(str(tmp_path / "c")) == everything
    assert corpus.read_documents(str(tmp_path / "c/*.txt")) == everything[:2]
    assert corpus.read_documents(f"{a}, {tmp_path / 'c/sub/b.txt'}") == everything
    assert corpus.read_documents([tmp_path / "c/sub/b.txt", a]) == everything[2:] + everything[:2]


def test_paragraph_mode(tmp_path):
    path = write(tmp_path / "p.txt", "First one. Second one! Third?\n\n   \nAnother paragraph. \"Quoted.\" 3 items.\n")
    assert corpus.read_documents(path, paragraph_mode=True) == [
        ["First one.", "Second one!", "Third?"], ["Another paragraph.", '"Quoted."', "3 items."]]
    # No split inside abbreviations before a lower-case word or inside numbers.
    assert corpus.split_sentences("The U.S. customs cost 3.5 dollars. Then") == [
        "The U.S. customs cost 3.5 dollars.", "Then"]


def test_invalid_utf8_is_replaced_and_counted(tmp_path, caplog):
    path = write(tmp_path / "bad.txt", b"ok \xff\xfe here\nend \xc3\n")
    with caplog.at_level(logging.WARNING):
        documents = corpus.read_documents(path)
    assert documents == [["ok \ufffd\ufffd here", "end \ufffd"]]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(path in m and " 3 " in m for m in messages), messages


@pytest.mark.parametrize("case", ["empty_file", "missing", "empty_glob", "empty_folder"])
def test_corpus_errors_name_the_path(tmp_path, case):
    if case == "empty_file":
        path = write(tmp_path / "empty.txt", "\n  \n\n")
    elif case == "missing":
        path = str(tmp_path / "nope.txt")
    elif case == "empty_glob":
        path = str(tmp_path / "*.nothing")
    else:
        (tmp_path / "empty_dir").mkdir()
        path = str(tmp_path / "empty_dir")
    with pytest.raises(corpus.CorpusError) as error:
        corpus.read_documents(path)
    assert isinstance(error.value, ValueError)
    assert path in str(error.value)


def test_one_megabyte_line(tmp_path):
    line = " ".join(["word"] * 200_000) + ". " + "X" * 100_000 + "." * 100_000
    assert len(line) > 1_000_000
    path = write(tmp_path / "long.txt", line + "\n")
    start = time.perf_counter()
    assert corpus.read_documents(path) == [[line.strip()]]
    assert len(corpus.read_documents(path, paragraph_mode=True)[0]) == 2
    assert time.perf_counter() - start < 5.0


def test_tfds_documents_from_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    texts = ["A film. It was long.\nSecond paragraph here.", "", "Short one"]

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"text": texts, "label": [0, 1, 0]})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        documents = corpus.read_tfds_documents("imdb_reviews", split="train")
        assert corpus.read_tfds_documents("imdb_reviews", max_documents=1) == documents[:1]
        with pytest.raises(corpus.CorpusError, match="label_text"):
            corpus.read_tfds_documents("imdb_reviews", text_key="label_text")
    assert documents == [["A film.", "It was long.", "Second paragraph here."], ["Short one"]]
    # Random mock data of a dataset whose text feature is called 'sentence'.
    with tfds.testing.mock_data(num_examples=3):
        assert 1 <= len(corpus.read_tfds_documents("glue/sst2", split="train")) <= 3


def test_default_corpus_is_real_imdb_text_without_rotten_tomatoes():
    path = corpus.default_corpus_path()
    assert os.path.exists(path) and path == corpus.default_corpus_path()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert len(text.split()) > 1_000_000
    assert "<br" not in text and "\ufffd" not in text
    lines = set(text.split("\n"))
    task = corpus.rotten_tomatoes_task(seed=0)
    assert len(task["train"]) + len(task["dev"]) + len(task["test"]) == 8530
    assert len(task["test"]) == 1706 and len(task["dev"]) == 852
    assert {label for _, label in task["train"]} == {label for _, label in task["dev"]} == {0, 1}
    parts = [{t for t, _ in task[p]} for p in ("train", "dev", "test")]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert not lines & set().union(*parts)
    # The test split is the benchmark: carving out a dev split leaves it as it was.
    assert sorted(task["test"]) == sorted(corpus.rotten_tomatoes_task(seed=0, dev_fraction=0.0)["test"])
    assert task == corpus.rotten_tomatoes_task(seed=0) and task != corpus.rotten_tomatoes_task(seed=1)


# ---------------------------------------------------------------------------------------------------------------
# records


def test_atomic_writer_leaves_nothing_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with records.ShardedRecordWriter(str(tmp_path / "train-*.tfrecord"), num_shards=3) as writer:
            writer.write(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_writer_shard_names_and_stale_shards(tmp_path):
    pattern = str(tmp_path / "train-*.tfrecord")
    paths = records.write_examples([{"x": np.arange(3)}] * 5, pattern, num_shards=4)
    assert [os.path.basename(p) for p in paths] == [f"train-0000{i}-of-00004.tfrecord" for i in range(4)]
    paths = records.write_examples([{"x": np.arange(3)}] * 5, pattern, num_shards=2)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(p) for p in paths]  # the 4-shard run is gone
    assert sum(1 for _ in tf.data.TFRecordDataset(paths)) == 5
    with pytest.raises(ValueError, match="token_ids"):
        records.make_example({"token_ids": np.zeros(3)}, schema.bert_pretraining_spec(4, 2))


def test_records_round_trip_through_schema_parser(tmp_path):
    examples = make_instances(dupe_factor=1)[:10]
    spec = schema.bert_pretraining_spec(64, 16)
    paths = records.write_examples(examples, str(tmp_path), num_shards=2, spec=spec)
    parse = records.parse_fn(schema.bert_pretraining_features(64, 16))
    parsed = [parse(r) for r in tf.data.TFRecordDataset(paths[0])]  # shard 0 holds examples 0, 2, 4, ...
    assert len(parsed) == 5
    for original, got in zip(examples[::2], parsed):
        assert set(got) == set(spec)
        for name, feature in spec.items():
            assert got[name].dtype == feature.dtype and tuple(got[name].shape) == feature.shape
            np.testing.assert_array_equal(got[name].numpy(), original[name])


# ---------------------------------------------------------------------------------------------------------------
# instances


def test_instances_are_deterministic_and_static():
    first, again, other = make_instances(seed=1), make_instances(seed=1), make_instances(seed=2)
    assert len(first) > 100
    spec = schema.bert_pretraining_spec(64, 16)
    for a, b in zip(first, again):
        assert set(a) == set(spec)
        for name, feature in spec.items():
            assert a[name].shape == feature.shape and a[name].dtype == feature.dtype.as_numpy_dtype
            np.testing.assert_array_equal(a[name], b[name])
    assert any(not np.array_equal(a["token_ids"], b["token_ids"]) for a, b in zip(first, other))


def test_packing_truncation_and_next_sentence_rate():
    # Sentences much longer than T force truncation.
    documents = [[[random.Random(d * 7 + s).choice(WORD_IDS) for _ in range(90)] for s in range(4)]
                 for d in range(20)] + random_documents(seed=3)
    produced = list(instances.create_pretraining_instances(documents, vocabulary=VOCAB, sequence_length=32,
                                                           max_predictions=5, dupe_factor=5, seed=7))
    # Chunks of one (long) sentence have no real B: the original then always draws a random B.
    labels = np.array([i["next_sentence_labels"] for i in produced])
    assert labels.mean() > 0.6
    # Many short sentences: nearly every chunk has several, so the 50% coin shows.
    rng = random.Random(0)
    documents = [[[rng.choice(WORD_IDS) for _ in range(rng.randint(4, 8))] for _ in range(30)] for _ in range(30)]
    short = instances.create_pretraining_instances(documents, vocabulary=VOCAB, sequence_length=64,
                                                   max_predictions=5, dupe_factor=10, seed=7)
    labels = np.array([i["next_sentence_labels"] for i in short])
    assert len(labels) > 1000 and 0.45 < labels.mean() < 0.57, labels.mean()
    for inst in produced:
        n = int(inst["padding_mask"].sum())
        assert 5 <= n <= 32 and inst["padding_mask"][:n].all() and not inst["padding_mask"][n:].any()
        original = inst["token_ids"].copy()
        original[inst["mask_positions"][inst["mask_weights"] > 0]] = inst["mask_ids"][inst["mask_weights"] > 0]
        seps = np.flatnonzero(original[:n] == SEP)
        assert original[0] == CLS and len(seps) == 2 and seps[1] == n - 1
        assert (inst["segment_ids"][:seps[0] + 1] == 0).all() and (inst["segment_ids"][seps[0] + 1:n] == 1).all()
        assert (inst["token_ids"][n:] == PAD).all()


def test_truncate_seq_pair_matches_the_original_loop_and_is_linear():
    def original(a, b, max_num_tokens, rng):  # google-research/bert truncate_seq_pair, verbatim logic
        while len(a) + len(b) > max_num_tokens:
            trunc = a if len(a) > len(b) else b
            if rng.random() < 0.5:
                del trunc[0]
            else:
                trunc.pop()

    for seed in range(20):
        rng = random.Random(seed)
        a, b = list(range(rng.randint(1, 80))), list(range(100, 100 + rng.randint(1, 80)))
        want_a, want_b, got_a, got_b = list(a), list(b), list(a), list(b)
        original(want_a, want_b, 40, random.Random(seed))
        instances.truncate_seq_pair(got_a, got_b, 40, random.Random(seed))
        assert (got_a, got_b) == (want_a, want_b)
    start = time.perf_counter()
    huge = [[[WORD_IDS[i % 100] for i in range(300_000)]], [[5, 6], [7]]]
    produced = list(instances.create_pretraining_instances(huge, vocabulary=VOCAB, sequence_length=16,
                                                           max_predictions=3, dupe_factor=2))
    assert produced and time.perf_counter() - start < 10


def test_masking_rates_and_no_specials_masked():
    produced = make_instances(seed=5)
    masked = real = kept = as_mask = 0
    for inst in produced:
        weights = inst["mask_weights"]
        positions = inst["mask_positions"][weights > 0]
        ids = inst["mask_ids"][weights > 0]
        n = int(inst["padding_mask"].sum())
        assert len(positions) == min(16, max(1, round(n * 0.15)))
        assert (np.diff(positions) > 0).all() and (positions > 0).all() and (positions < n - 1).all()
        assert not np.isin(ids, [PAD, CLS, SEP, MASK]).any()
        assert (inst["mask_positions"][weights == 0] == 0).all() and (inst["mask_ids"][weights == 0] == 0).all()
        assert not np.isin(inst["token_ids"][positions], [PAD, CLS, SEP, UNK]).any()  # no random special
        masked += len(positions)
        real += n
        as_mask += int((inst["token_ids"][positions] == MASK).sum())
        kept += int((inst["token_ids"][positions] == ids).sum())
    assert 0.13 < masked / real < 0.17
    assert 0.77 < as_mask / masked < 0.83
    assert 0.08 < kept / masked < 0.13  # 10% kept, plus random draws that hit the original word
    assert 0.07 < (masked - as_mask - kept) / masked < 0.12


def test_whole_word_masking_masks_every_piece():
    documents = random_documents(seed=1, whole_words=True)
    produced = list(instances.create_pretraining_instances(
        documents, vocabulary=VOCAB, sequence_length=64, max_predictions=12, dupe_factor=2, whole_word_mask=True,
        seed=3))
    continuation = np.isin(np.arange(len(VOCAB)), PIECE_IDS)
    saw_multi_piece_word = False
    for inst in produced:
        weights = inst["mask_weights"] > 0
        original = inst["token_ids"].copy()
        original[inst["mask_positions"][weights]] = inst["mask_ids"][weights]
        is_masked = np.zeros(64, bool)
        is_masked[inst["mask_positions"][weights]] = True
        n = int(inst["padding_mask"].sum())
        # A word = a non-piece token plus the '##' pieces after it: masked all together or not at all.
        starts = [i for i in range(1, n) if not continuation[original[i]] or original[i - 1] in (CLS, SEP)]
        for start, end in zip(starts, starts[1:] + [n]):
            assert is_masked[start:end].all() or not is_masked[start:end].any()
            saw_multi_piece_word |= bool(end - start > 1 and is_masked[start])
    assert saw_multi_piece_word


def test_pair_instances_and_progress():
    calls = []
    pairs = list(instances.create_pair_instances(random_documents(seed=0), vocabulary=VOCAB, sequence_length=64,
                                                 dupe_factor=2, seed=1, progress=lambda d, t: calls.append((d, t))))
    assert calls[-1] == (80, 80) and len(calls) == 80
    stacked = instances.stack_instances(pairs)
    assert set(stacked) == set(schema.bert_pair_spec(64))
    assert stacked["token_ids"].shape == (len(pairs), 64) and stacked["next_sentence_labels"].shape == (len(pairs),)
    assert not (stacked["token_ids"] == MASK).any()
    with pytest.raises(ValueError, match="sequence_length"):
        instances.create_pair_instances([[[5]]], vocabulary=VOCAB, sequence_length=4)


# ---------------------------------------------------------------------------------------------------------------
# pipeline


def assert_static_spec(dataset, batch_size, sequence_length=64, max_predictions=16):
    expected = schema.tensor_specs(schema.bert_pretraining_spec(sequence_length, max_predictions), batch_size)
    assert set(dataset.element_spec) == set(expected)
    for name, spec in expected.items():
        got = dataset.element_spec[name]
        assert got.dtype == spec.dtype and got.shape == spec.shape, (name, got)


def test_records_pipeline_batches_and_shards(tmp_path):
    examples = make_instances(dupe_factor=1)[:24]
    pattern = str(tmp_path / "train-*.tfrecord")
    records.write_examples(examples, pattern, num_shards=4, spec=schema.bert_pretraining_spec(64, 16))
    dataset = pipeline.pretraining_dataset_from_records(pattern, batch_size=5, sequence_length=64,
                                                        max_predictions=16, repeat=False, seed=1)
    assert_static_spec(dataset, batch_size=5)
    batches = list(dataset)
    assert len(batches) == 4  # 24 // 5, remainder dropped
    seen = sorted(tuple(t) for b in batches for t in b["token_ids"].numpy())
    assert len(set(seen)) == 20
    again = list(pipeline.pretraining_dataset_from_records(pattern, batch_size=5, sequence_length=64,
                                                           max_predictions=16, repeat=False, seed=1))
    np.testing.assert_array_equal(batches[0]["token_ids"], again[0]["token_ids"])
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    half = pipeline.pretraining_dataset_from_records(pattern, batch_size=4, sequence_length=64, max_predictions=16,
                                                     repeat=False, input_context=context)
    assert sum(1 for _ in half) == 3  # 2 of 4 shards = 12 records
    with pytest.raises(ValueError, match="nothing-here"):
        pipeline.pretraining_dataset_from_records(str(tmp_path / "nothing-here*"), batch_size=2,
                                                  sequence_length=64, max_predictions=16)


def test_dynamic_masking_dataset_new_masks_each_step():
    pairs = instances.stack_instances(instances.create_pair_instances(
        random_documents(seed=0), vocabulary=VOCAB, sequence_length=64, dupe_factor=1, seed=1))
    pairs = {k: v[:8] for k, v in pairs.items()}
    make = lambda seed: pipeline.dynamic_masking_dataset(
        pairs, batch_size=8, vocabulary_size=len(VOCAB), mask_id=MASK, special_ids=[PAD, CLS, SEP, MASK],
        max_predictions=16, seed=seed, shuffle=False)
    dataset = make(3)
    assert_static_spec(dataset, batch_size=8)
    first = list(dataset.take(3))
    again = list(make(3).take(3))
    for a, b in zip(first, again):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    # Same pairs every step (no shuffle, N == B), yet different masks each step.
    np.testing.assert_array_equal(first[0]["segment_ids"], first[1]["segment_ids"])
    assert not np.array_equal(first[0]["mask_positions"], first[1]["mask_positions"])
    batch = first[0]
    weights = batch["mask_weights"].numpy() > 0
    positions = batch["mask_positions"].numpy()
    original = np.take_along_axis(pairs["token_ids"], positions, axis=1)
    np.testing.assert_array_equal(batch["mask_ids"].numpy()[weights], original[weights])
    assert not np.isin(original[weights], [PAD, CLS, SEP]).any()


def test_tokenize_documents_then_instances():
    tokenizer = WhitespaceTokenizer(VOCAB)
    documents = [["w1 w2 w3", "w4 zzz"], ["w5"], ["w6 w7", "w8"]]
    ids = pipeline.tokenize_documents(documents, tokenizer, batch_size=2)
    assert ids == [[[6, 7, 8], [9, UNK]], [[10]], [[11, 12], [13]]]
    produced = list(instances.create_pretraining_instances(ids, vocabulary=VOCAB, sequence_length=16,
                                                           max_predictions=3, dupe_factor=2))
    assert produced and all(p["token_ids"].shape == (16,) for p in produced)


def test_end_to_end_with_real_wordpiece_tokenizer(tmp_path):
    """text file -> documents -> real WordPiece ids -> whole-word instances -> records -> batches."""
    from zoo.text.wordpiece import WordPieceTokenizer

    vocabulary = SPECIALS + ["the", "cat", "sat", "on", "mat", "un", "##aff", "##able", "dog", "ran", ".", "!"]
    tokenizer = WordPieceTokenizer(vocabulary, lowercase=True)
    text = "The unaffable cat sat on the mat. The dog ran! Unaffable dog.\nThe cat ran. The mat sat on the dog.\n"
    documents = corpus.read_documents(write(tmp_path / "c.txt", text * 3), paragraph_mode=True)
    assert documents[0] == ["The unaffable cat sat on the mat.", "The dog ran!", "Unaffable dog."]
    ids = pipeline.tokenize_documents(documents, tokenizer)
    v = {t: i for i, t in enumerate(vocabulary)}
    assert ids[0][0] == [v[w] for w in "the un ##aff ##able cat sat on the mat .".split()]

    produced = list(instances.create_pretraining_instances(
        ids, vocabulary=tokenizer.vocabulary, sequence_length=24, max_predictions=8, masked_lm_prob=0.3,
        dupe_factor=20, whole_word_mask=True, seed=0))
    whole_words_masked = 0
    for inst in produced:
        weights = inst["mask_weights"] > 0
        original = inst["token_ids"].copy()
        original[inst["mask_positions"][weights]] = inst["mask_ids"][weights]
        masked = set(inst["mask_positions"][weights].tolist())
        for start in np.flatnonzero(original == v["un"]):
            if start in masked:  # un ##aff ##able: all three pieces or none
                assert {start + 1, start + 2} <= masked
                whole_words_masked += 1
    assert whole_words_masked > 0

    pattern = str(tmp_path / "records/train-*.tfrecord")
    records.write_examples(produced, pattern, num_shards=2, spec=schema.bert_pretraining_spec(24, 8))
    batch = next(iter(pipeline.pretraining_dataset_from_records(pattern, batch_size=4, sequence_length=24,
                                                                max_predictions=8)))
    assert batch["token_ids"].shape == (4, 24) and batch["mask_weights"].dtype == tf.float32

    pairs = instances.stack_instances(instances.create_pair_instances(
        ids, vocabulary=tokenizer.vocabulary, sequence_length=24, dupe_factor=4))
    dataset = pipeline.dynamic_masking_dataset(
        pairs, batch_size=4, vocabulary_size=tokenizer.vocabulary_size, mask_id=tokenizer.mask_id,
        special_ids=[tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id], max_predictions=8, seed=0)
    assert_static_spec(dataset, batch_size=4, sequence_length=24, max_predictions=8)
