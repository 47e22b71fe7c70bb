"""BERT pretraining throughput: the zoo vs keras-hub vs Hugging Face (PyTorch CPU), tokens/s and MFU.

One training step = forward, backward and AdamW update (lr 1e-4, decay 0.01 off for biases/LayerNorm, eps 1e-6,
global-norm clip 1.0) on a synthetic static-shape batch (the same arrays for every contender): sequence 128,
20 masked positions, vocabulary 30,522, dropout 0.1.
  * zoo:       zoo.bert.pretrainer (MLM + NSP) + zoo.optim.adamw + zoo.training.loop's step function.
  * keras_hub: keras_hub.models.BertMaskedLM on a BertBackbone built from a config (no preset download),
               compiled with its default loss (MLM only: keras-hub has no NSP head) and the same AdamW.
  * hf:        transformers BertForPreTraining (MLM + NSP) + torch.optim.AdamW; note that it projects EVERY
               position onto the vocabulary (not only the 20 masked ones), as HF does.
Precisions: float32 and bfloat16 (Keras `mixed_bfloat16`; torch.autocast("cpu", bfloat16)); XLA on/off for the
Keras contenders. Every setting runs in its own process, alternated over --repeats; warm-up steps (tracing, XLA
compilation) are excluded. Model-FLOPs utilisation uses ONE formula for every contender:
  6 * (L * (4H^2 + 2HI)) * B*T  +  12 * L * T * H * B*T  +  6 * (H^2 + HV) * B*P  +  6 * (H^2 + 2H) * B
(encoder matmuls, attention scores and context, the MLM head at the P masked positions, pooler + NSP), divided by
the tf.matmul peak of the setting's precision ("MFU %") and by the bfloat16 peak, the machine's fastest ("MFU % of
bf16 peak"); both peaks are measured in the same run, in their own process, once per repeat (best kept).
By default each library picks its own thread count (TF: all logical cores, torch: physical cores); --threads=N gives
every worker the same N (OMP/MKL_NUM_THREADS, TF_NUM_INTRAOP_THREADS).

Full run (hours on a small CPU; run it on a quiet machine):
  PYTHONPATH=. python -m benchmarks.pretrain_throughput --sizes=mini,base --repeats=2 --steps=10 --warmup=2 \
      --contenders=zoo,keras_hub,hf --precisions=float32,bfloat16 --xla=on,off \
      --json_out=benchmarks/results/pretrain_throughput_<date>_<machine>.json   # replaces that machine's older file
Smoke test (about 1.5 minutes, 11 worker processes): PYTHONPATH=. python -m benchmarks.pretrain_throughput --tiny
"""

import sys

from benchmarks import common

MODULE = "benchmarks.pretrain_throughput"
CONTENDERS = ("zoo", "keras_hub", "hf")
PRECISIONS = common.PRECISIONS
# L/H/A as Turc et al.'s BERT-mini and the paper's BERT-base; I = 4H; T, P, V as BERT's phase-1 pretraining.
SIZES = {
    "mini": dict(layers=4, hidden=256, heads=4, intermediate=1024, batch=32),
    "base": dict(layers=12, hidden=768, heads=12, intermediate=3072, batch=16),
}
COMMON = dict(seq=128, predictions=20, vocab=30522)
TINY = dict(layers=1, hidden=32, heads=2, intermediate=64, batch=4, seq=16, predictions=4, vocab=100)


def model_flops_per_step(d):
    """Training FLOPs of one step by the paper-style formula (see the module docstring); the same for all."""
    L, H, I, T, P, V, B = (d[k] for k in ("layers", "hidden", "intermediate", "seq", "predictions", "vocab", "batch"))
    encoder = 6 * L * (4 * H * H + 2 * H * I) * B * T
    attention = 12 * L * T * H * B * T
    mlm_head = 6 * (H * H + H * V) * B * P
    nsp = 6 * (H * H + 2 * H) * B
    return encoder + attention + mlm_head + nsp


# ---- workers (each runs in its own process) ----------------------------------------------------------------
def _zoo(d, batch, precision, xla):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    run, model = common.zoo_pretraining_step(d, dataset, precision, xla)
    return run, model.count_params(), {"compute_dtype": model.backbone.blocks[0].compute_dtype}


def _keras_hub(d, batch, precision, xla):
    import keras
    import keras_hub
    import tensorflow as tf

    from zoo import optim

    common.set_keras_precision(precision)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=d["vocab"], num_layers=d["layers"], num_heads=d["heads"],
                                             hidden_dim=d["hidden"], intermediate_dim=d["intermediate"])
    model = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
    # loss / weighted_metrics "auto": keras-hub's own (sparse CE from logits, weighted by mask_weights).
    model.compile(optimizer=optim.adamw(1e-4, variables=model.trainable_variables), jit_compile=xla)
    features = {k: batch[k] for k in ("token_ids", "segment_ids", "padding_mask", "mask_positions")}
    dataset = tf.data.Dataset.from_tensors((features, batch["mask_ids"], batch["mask_weights"])).repeat()
    return common.keras_train_steps(model, dataset), model.count_params(), {"compute_dtype": backbone.compute_dtype}


def _hf(d, batch, precision, xla):
    import numpy as np
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=d["vocab"], hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                                     num_attention_heads=d["heads"], intermediate_size=d["intermediate"])
    model = transformers.BertForPreTraining(config).train()
    optimizer, params = common.torch_adamw(model, 1e-4, epsilon=1e-6)
    labels = np.full(batch["token_ids"].shape, -100, np.int64)  # HF: -100 = not a masked position
    np.put_along_axis(labels, batch["mask_positions"], batch["mask_ids"], 1)
    inputs = {"input_ids": batch["token_ids"], "token_type_ids": batch["segment_ids"],
              "attention_mask": batch["padding_mask"], "labels": labels, "next_sentence_label": batch["next_sentence_labels"]}
    inputs = {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in inputs.items()}
    run = common.torch_train_steps(model, inputs, optimizer, params, precision)
    return run, sum(p.numel() for p in params), common.torch_extra(model, precision)


def worker(spec):
    """Runs one worker spec; returns its measurements."""
    if spec["contender"] == "peak":
        return common.matmul_peak(spec["matmul_n"])
    d = spec["dims"]
    batch = common.synthetic_pretraining_batch(d["batch"], d["seq"], d["predictions"], d["vocab"])
    build = {"zoo": _zoo, "keras_hub": _keras_hub, "hf": _hf}[spec["contender"]]
    return common.measure_training(lambda: build(d, batch, spec["precision"], spec["xla"] == "on"), spec["steps"],
                                   spec["warmup"], d["batch"] * d["seq"])


# ---- parent ------------------------------------------------------------------------------------------------
def _specs(args):
    names = common.csv_list(args.sizes, SIZES, "sizes")
    sizes = {"tiny": {**TINY}} if args.tiny else {name: {**SIZES[name], **COMMON} for name in names}
    specs = [{"contender": "peak", "matmul_n": 256 if args.tiny else 4096}]
    for size, dims in sizes.items():
        for contender in common.csv_list(args.contenders, CONTENDERS, "contenders"):
            for precision in common.csv_list(args.precisions, PRECISIONS, "precisions"):
                # XLA is a Keras/TF switch; the PyTorch contender runs eagerly ("n/a").
                for xla in common.csv_list(args.xla, ("on", "off"), "xla") if contender != "hf" else ["n/a"]:
                    specs.append({"size": size, "contender": contender, "precision": precision, "xla": xla,
                                  "dims": dims, "steps": args.steps, "warmup": args.warmup})
    return specs


def summarize(results):
    """Best repeat per setting with MFU, and the zoo's best setting over each peer's best, per size."""
    return common.summarize_throughput(results, ("size", "contender", "precision", "xla"), model_flops_per_step, _setting)


def _setting(row):
    return f"{row['precision']}/xla={row['xla']}"


def report(summary):
    """Prints the results table, the matmul peaks and the ratios."""
    common.report_throughput(summary, common.throughput_columns([("precision", "precision", ""), ("xla", "xla", "")]))


def main(argv=None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--sizes", default="mini,base", help="Comma list of mini, base (ignored with --tiny).")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--xla", default="on,off", help="XLA settings for the Keras contenders.")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per run (default 10; 2 with --tiny).")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed steps first (default 2; 1 with --tiny).")
    args = parser.parse_args(argv)
    if common.worker_main(args, worker):
        return 0
    args.steps = args.steps or (2 if args.tiny else 10)
    args.warmup = max(1, args.warmup or (1 if args.tiny else 2))  # >= 1: tracing/compilation is never timed
    results = common.run_all(MODULE, _specs(args), args)
    summary = summarize(results)
    report(summary)
    meta = common.run_metadata(common.command_line(MODULE, argv))
    payload = {"meta": meta, "benchmark": "pretrain_throughput", "tiny": args.tiny, "threads": args.threads,
               "results": results, **summary}
    common.write_json(args.json_out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
