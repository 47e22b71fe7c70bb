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

import contextlib
import os
import sys
import time

from benchmarks import common

MODULE = "benchmarks.pretrain_throughput"
CONTENDERS = ("zoo", "keras_hub", "hf")
PRECISIONS = ("float32", "bfloat16")
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
    iterator = iter(tf.data.Dataset.from_tensors((features, batch["mask_ids"], batch["mask_weights"])).repeat())
    model.make_train_function()

    def run(n):  # what fit() does per step (steps_per_execution=1), without callbacks
        for _ in range(n):
            logs = model.train_function(iterator)
        return float(logs["loss"])

    return run, model.count_params(), {"compute_dtype": backbone.compute_dtype}


def _hf(d, batch, precision, xla):
    import numpy as np
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=d["vocab"], hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                                     num_attention_heads=d["heads"], intermediate_size=d["intermediate"])
    model = transformers.BertForPreTraining(config).train()
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.01},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-4, eps=1e-6)
    labels = np.full(batch["token_ids"].shape, -100, np.int64)  # HF: -100 = not a masked position
    np.put_along_axis(labels, batch["mask_positions"], batch["mask_ids"], 1)
    inputs = {"input_ids": batch["token_ids"], "token_type_ids": batch["segment_ids"],
              "attention_mask": batch["padding_mask"], "labels": labels, "next_sentence_label": batch["next_sentence_labels"]}
    inputs = {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in inputs.items()}
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bfloat16" else contextlib.nullcontext

    def run(n):
        for _ in range(n):
            with autocast():
                loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss)

    extra = {"compute_dtype": "bfloat16 (autocast)" if precision == "bfloat16" else "float32",
             "torch_threads": torch.get_num_threads(), "attn_implementation": model.config._attn_implementation}
    return run, sum(p.numel() for p in params), extra


def _peak(n, seconds=1.0):
    """float32 and bfloat16 tf.matmul throughput (TFLOP/s) of an n x n product: the machine's practical peak."""
    import tensorflow as tf

    out = {}
    for dtype in PRECISIONS:
        a = tf.cast(tf.random.normal([n, n], dtype=tf.float32), dtype)
        matmul = tf.function(lambda x: tf.reduce_sum(tf.matmul(x, x)))  # the n^2 sum is noise next to n^3
        matmul(a).numpy()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or count < 3:
            matmul(a).numpy()
            count += 1
        out[dtype] = 2.0 * n**3 * count / (time.perf_counter() - start) / 1e12
    return {"peak_tflops": out, "cpus": os.cpu_count()}


def worker(spec):
    """Runs one worker spec; returns its measurements."""
    if spec["contender"] == "peak":
        return _peak(spec["matmul_n"])
    d = spec["dims"]
    batch = common.synthetic_pretraining_batch(d["batch"], d["seq"], d["predictions"], d["vocab"])
    build = {"zoo": _zoo, "keras_hub": _keras_hub, "hf": _hf}[spec["contender"]]
    (run, params, extra), build_s = common.timed(build, d, batch, spec["precision"], spec["xla"] == "on")
    _, warmup_s = common.timed(run, spec["warmup"])
    loss, seconds = common.timed(run, spec["steps"])
    tokens = d["batch"] * d["seq"] * spec["steps"]
    return {"tokens_per_s": tokens / seconds, "step_ms": 1000 * seconds / spec["steps"], "build_s": build_s,
            "warmup_s": warmup_s, "loss": loss, "params": int(params), **extra}


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
    peaks = {}
    for row in results:
        for dtype, value in row.get("peak_tflops", {}).items():
            peaks[dtype] = max(peaks.get(dtype, 0.0), value)
    runs = [r for r in results if r["contender"] != "peak"]
    rows = common.best(runs, ("size", "contender", "precision", "xla"), "tokens_per_s")
    for row in rows:
        flops = model_flops_per_step(row["dims"])
        row["model_tflops_per_step"] = flops / 1e12
        achieved = flops / (row["step_ms"] / 1000.0)
        row["mfu_pct"] = 100.0 * achieved / (peaks[row["precision"]] * 1e12)  # vs the peak of its own precision
        row["mfu_bf16_peak_pct"] = 100.0 * achieved / (peaks["bfloat16"] * 1e12)  # vs the machine's fastest matmul
    ratios = []
    for size in dict.fromkeys(r["size"] for r in rows):
        top = {}
        for row in rows:
            if row["size"] == size and row["tokens_per_s"] > top.get(row["contender"], {}).get("tokens_per_s", 0.0):
                top[row["contender"]] = row
        for peer in (c for c in top if c != "zoo"):
            if "zoo" in top:
                ratios.append({"size": size, "peer": peer, "ratio": top["zoo"]["tokens_per_s"] / top[peer]["tokens_per_s"],
                               "zoo_setting": _setting(top["zoo"]), "peer_setting": _setting(top[peer])})
    return {"peak_tflops": peaks, "rows": rows, "ratios": ratios}


def _setting(row):
    return f"{row['precision']}/xla={row['xla']}"


def report(summary):
    """Prints the results table, the matmul peaks and the ratios."""
    peaks = summary["peak_tflops"]
    print("matmul peak (tf.matmul): " + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in peaks.items()))
    columns = [("size", "size", ""), ("contender", "contender", ""), ("precision", "precision", ""), ("xla", "xla", ""),
               ("tokens/s", "tokens_per_s", ",.0f"),
               ("all repeats", lambda r: " ".join(f"{v:,.0f}" for v in r["tokens_per_s_all"]), ""),
               ("step ms", "step_ms", ",.1f"), ("MFU %", "mfu_pct", ".2f"), ("MFU % of bf16 peak", "mfu_bf16_peak_pct", ".2f"),
               ("peak RSS MB", "peak_rss_mb", ",.0f"), ("params", "params", ",d"), ("loss", "loss", ".3f")]
    print(common.format_table(summary["rows"], columns))
    for r in summary["ratios"]:
        print(f"{r['size']}: zoo best ({r['zoo_setting']}) / {r['peer']} best ({r['peer_setting']}) = {r['ratio']:.2f}x")


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
