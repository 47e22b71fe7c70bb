"""GPT causal-LM pretraining throughput: the zoo vs keras-hub vs Hugging Face (PyTorch CPU), tokens/s, MFU, peak RSS.

One training step = forward, backward and the update of the zoo's GPT recipe on a synthetic static-shape batch
(the same token ids for every contender, every position real): next-token loss over the whole block, dropout 0.1,
vocabulary 40,478 BPE symbols + the zoo's 5 special tokens = 40,483 for every contender, learned positions 512.
  * zoo:       zoo.gpt's pretrainer (GPTCausalLM, tied head) + the "adam_cosine" recipe with
               tpu_configs/gpt1_tpu.cfg's settings (Adam eps 1e-8, lr 2.5e-4 with 2,000 warmup steps and cosine
               decay, decoupled L2 0.01 on the matrices, global-norm clip 1.0) + zoo.training.loop's step function
               (benchmarks.common.zoo_pretraining_step). Its LM loss (zoo.layers.losses.tied_softmax_cross_entropy)
               runs two ways (--lm_loss): "whole" makes the [B*(T-1), V] logits at once (max_logits_bytes huge),
               "chunked" goes through the rows 1,024 at a time and recomputes each chunk's logits in the backward
               pass (max_logits_bytes 0; the path the default of 256 MB takes at both recorded sizes: 329 MB of
               logits at mini batch 16, 331 MB at gpt1 batch 4). The rows' `default_lm_loss_path` says which.
  * keras_hub: keras_hub.models.GPT2CausalLM on a GPT2Backbone built from a config of the same size (no preset
               download, preprocessor=None), compiled with its default loss and weighted accuracy and the same zoo
               recipe. GPT-2 is pre-LN with a final LayerNorm (GPT-1 is post-LN without one): it is keras-hub's
               nearest model, not the same one; its cost per token is the same but for one LayerNorm. Fed the same
               T tokens with y = the next token and sample weight 0 on the last position (which has none).
  * hf:        transformers.OpenAIGPTLMHeadModel (GPT-1 itself; its afn "gelu" is the tanh form, as the zoo's) with
               labels=input_ids (HF shifts them) + torch.optim.AdamW with the same lr, eps, decay on the matrices
               only, and clip 1.0. Its eager attention is HF's only implementation for this model.
The peers' learning rate is constant: the schedule is one scalar per step. Precisions: float32 and bfloat16 (Keras
`mixed_bfloat16`; torch.autocast("cpu", bfloat16)); XLA on/off for the Keras contenders. Every setting runs in its
own process, alternated over --repeats (the best repeat is reported); warm-up steps (tracing, XLA compilation) are
excluded. Model-FLOPs utilisation uses ONE formula for every contender, with tokens = B*T:
  6 * L * (4H^2 + 2HI) * tokens  +  12 * L * T * H * tokens  +  6 * H * V * tokens
(the blocks' matmuls, attention scores and context, the tied LM head), divided by the tf.matmul peak of the
setting's precision ("MFU %") and by the bfloat16 peak ("MFU % of bf16 peak"), both measured in the same run in
their own process once per repeat, as the fastest single 4096^2 product (best kept): on a machine others share,
the rate over all calls of a busy second falls below what the steps reach. Peak RSS is each worker's peak
resident memory (max over repeats); "RSS over build" is what the warm-up and timed steps added to the peak of the
built model and optimizer: the memory the step itself needs, which the chunked LM loss is there to cut.

Recorded runs (the two sizes want different repeats; each writes its own JSON):
  PYTHONPATH=. python -m benchmarks.gpt_pretrain_throughput --sizes=mini --repeats=3 --steps=5 --warmup=2 \
      --contenders=zoo,keras_hub,hf --precisions=float32,bfloat16 --xla=off --lm_loss=whole,chunked \
      --json_out=benchmarks/results/gpt_pretrain_throughput_<date>_<machine>.json
  PYTHONPATH=. python -m benchmarks.gpt_pretrain_throughput --sizes=gpt1 --repeats=1 --steps=2 --warmup=1 \
      --contenders=zoo,keras_hub,hf --precisions=bfloat16 --xla=off --lm_loss=whole,chunked \
      --json_out=benchmarks/results/gpt_pretrain_throughput_<date>_<machine>_gpt1.json
Smoke test (15 worker processes, about 3 minutes; tests/test_benchmarks.py runs 5 of them, --xla=off
--precisions=bfloat16, in about a minute): PYTHONPATH=. python -m benchmarks.gpt_pretrain_throughput --tiny
"""

import sys

from benchmarks import common

MODULE = "benchmarks.gpt_pretrain_throughput"
CONTENDERS = ("zoo", "keras_hub", "hf")
LM_LOSS = {"whole": 1 << 62, "chunked": 0}  # GPTCausalLM.max_logits_bytes of each path
# The zoo's GPT presets: "mini" (4 x 256, 4 heads) and the paper's model; I = 4H; sequence and batch per size.
SIZES = {
    "mini": dict(layers=4, hidden=256, heads=4, intermediate=1024, seq=128, batch=16),
    "gpt1": dict(layers=12, hidden=768, heads=12, intermediate=3072, seq=512, batch=4),
}
COMMON = dict(vocab=40483, positions=512)
TINY = dict(layers=1, hidden=32, heads=2, intermediate=128, seq=16, batch=2, vocab=105, positions=16)
# tpu_configs/gpt1_tpu.cfg: the paper's recipe (Radford et al. 2018, section 4.1).
RECIPE = dict(learning_rate=2.5e-4, warmup_steps=2000, total_steps=1_200_000, weight_decay=0.01)
EPSILON = 1e-8  # the adam_cosine recipe's (zoo.optim._adam_cosine)


def model_flops_per_step(d):
    """Training FLOPs of one step by the paper-style formula (see the module docstring); the same for all."""
    L, H, I, T, V, B = (d[k] for k in ("layers", "hidden", "intermediate", "seq", "vocab", "batch"))
    tokens = B * T
    return 6 * L * (4 * H * H + 2 * H * I) * tokens + 12 * L * T * H * tokens + 6 * H * V * tokens


def synthetic_block(d, seed=0):
    """int32 [B, T] token ids of one packed block batch (ids >= 5, clear of the special tokens)."""
    import numpy as np

    return np.random.default_rng(seed).integers(5, d["vocab"], size=(d["batch"], d["seq"])).astype(np.int32)


def default_lm_loss_path(d):
    """The path GPTCausalLM's default max_logits_bytes takes at this size: "whole" or "chunked"."""
    from zoo.gpt.causal_lm import GPTCausalLM

    return "whole" if d["batch"] * (d["seq"] - 1) * d["vocab"] * 4 <= GPTCausalLM.max_logits_bytes else "chunked"


# ---- workers (each runs in its own process) ----------------------------------------------------------------
def _recipe_optimizer(variables):
    """The GPT family's optimizer recipe with the paper's settings."""
    import zoo
    from zoo import optim

    return optim.make_optimizer(zoo.family("gpt").optimizer, variables=variables, **RECIPE)


def _zoo(d, ids, precision, xla, lm_loss):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors({"token_ids": ids}).repeat()
    run, model = common.zoo_pretraining_step(d, dataset, precision, xla, family="gpt", optimizer=_recipe_optimizer,
                                             attributes={"max_logits_bytes": LM_LOSS[lm_loss]},
                                             max_sequence_length=d["positions"])
    extra = {"compute_dtype": model.backbone.blocks[0].compute_dtype, "default_lm_loss_path": default_lm_loss_path(d)}
    return run, model.count_params(), extra


def _keras_hub(d, ids, precision, xla, lm_loss):
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    common.set_keras_precision(precision)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=d["vocab"], num_layers=d["layers"], num_heads=d["heads"],
                                             hidden_dim=d["hidden"], intermediate_dim=d["intermediate"],
                                             max_sequence_length=d["positions"])
    model = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    # loss / weighted_metrics "auto": keras-hub's own (sparse CE from logits, weighted accuracy).
    model.compile(optimizer=_recipe_optimizer(model.trainable_variables), jit_compile=xla)
    features = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    labels = np.roll(ids, -1, axis=1)  # the next token; the last position's (wrapped) label is weighted 0
    weights = np.ones(ids.shape, np.float32)
    weights[:, -1] = 0.0
    dataset = tf.data.Dataset.from_tensors((features, labels, weights)).repeat()
    return common.keras_train_steps(model, dataset), model.count_params(), {"compute_dtype": backbone.compute_dtype}


def _hf(d, ids, precision, xla, lm_loss):
    import torch
    import transformers

    if d["intermediate"] != 4 * d["hidden"]:
        raise ValueError("OpenAIGPTConfig has no FFN width: the HF contender needs intermediate = 4 * hidden.")
    torch.manual_seed(0)
    config = transformers.OpenAIGPTConfig(vocab_size=d["vocab"], n_positions=d["positions"], n_embd=d["hidden"],
                                          n_layer=d["layers"], n_head=d["heads"], afn="gelu")
    model = transformers.OpenAIGPTLMHeadModel(config).train()
    optimizer, params = common.torch_adamw(model, RECIPE["learning_rate"], EPSILON, RECIPE["weight_decay"])
    tokens = torch.from_numpy(ids.astype("int64"))
    run = common.torch_train_steps(model, {"input_ids": tokens, "labels": tokens}, optimizer, params, precision)
    return run, sum(p.numel() for p in params), common.torch_extra(model, precision)


def worker(spec):
    """Runs one worker spec; returns its measurements."""
    if spec["contender"] == "peak":
        return common.matmul_peak(spec["matmul_n"], seconds=spec["matmul_seconds"], fastest_call=True)
    d = spec["dims"]
    ids = synthetic_block(d)
    build = {"zoo": _zoo, "keras_hub": _keras_hub, "hf": _hf}[spec["contender"]]
    settings = (spec["precision"], spec["xla"] == "on", spec["lm_loss"])
    return common.measure_training(lambda: build(d, ids, *settings), spec["steps"], spec["warmup"], d["batch"] * d["seq"])


# ---- parent ------------------------------------------------------------------------------------------------
def _specs(args):
    names = common.csv_list(args.sizes, SIZES, "sizes")
    sizes = {"tiny": {**TINY}} if args.tiny else {name: {**SIZES[name], **COMMON} for name in names}
    lm_losses = common.csv_list(args.lm_loss, LM_LOSS, "lm_loss")
    specs = [{"contender": "peak", "matmul_n": 256 if args.tiny else 4096, "matmul_seconds": 0.3 if args.tiny else 3.0}]
    for size, dims in sizes.items():
        for contender in common.csv_list(args.contenders, CONTENDERS, "contenders"):
            for precision in common.csv_list(args.precisions, common.PRECISIONS, "precisions"):
                # XLA is a Keras/TF switch (the PyTorch contender runs eagerly); the LM-loss path is the zoo's.
                for xla in common.csv_list(args.xla, ("on", "off"), "xla") if contender != "hf" else ["n/a"]:
                    for lm_loss in lm_losses if contender == "zoo" else ["n/a"]:
                        specs.append({"size": size, "contender": contender, "precision": precision, "xla": xla,
                                      "lm_loss": lm_loss, "dims": dims, "steps": args.steps, "warmup": args.warmup})
    return specs


KEYS = ("size", "contender", "precision", "xla", "lm_loss")


def summarize(results):
    """Best repeat per setting with MFU; the zoo's best over each peer's best, overall and per LM-loss path."""
    for r in results:
        if "build_peak_rss_mb" in r:  # per worker: what its steps added to the peak of the built model
            r["rss_over_build_mb"] = r["peak_rss_mb"] - r["build_peak_rss_mb"]
    summary = common.summarize_throughput(results, KEYS, model_flops_per_step, _setting)
    for row in summary["rows"]:  # the most any repeat needed, as peak_rss_mb
        row["rss_over_build_mb"] = max(r["rss_over_build_mb"] for r in results if all(r.get(k) == row[k] for k in KEYS))
    by_path = []
    for path in dict.fromkeys(r["lm_loss"] for r in summary["rows"] if r["contender"] == "zoo"):
        rows = [r for r in summary["rows"] if r["contender"] != "zoo" or r["lm_loss"] == path]
        by_path += [{**ratio, "lm_loss": path} for ratio in common.zoo_over_peers(rows, _setting)]
    summary["ratios_by_lm_loss"] = by_path
    return summary


def _setting(row):
    return f"{row['precision']}/xla={row['xla']}" + (f"/lm_loss={row['lm_loss']}" if row["contender"] == "zoo" else "")


def report(summary):
    """Prints the results table, the matmul peaks and the ratios (then those of each zoo LM-loss path)."""
    columns = common.throughput_columns([("precision", "precision", ""), ("xla", "xla", ""), ("LM loss", "lm_loss", "")])
    columns.insert(-2, ("RSS over build MB", "rss_over_build_mb", ",.0f"))  # next to peak RSS
    common.report_throughput(summary, columns)
    for r in summary["ratios_by_lm_loss"]:
        print(f"{r['size']}: zoo {r['lm_loss']} LM loss ({r['zoo_setting']}) / {r['peer']} best ({r['peer_setting']}) "
              f"= {r['ratio']:.2f}x")


def main(argv=None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--sizes", default="mini,gpt1", help="Comma list of mini, gpt1 (ignored with --tiny).")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--precisions", default=",".join(common.PRECISIONS))
    parser.add_argument("--xla", default="on,off", help="XLA settings for the Keras contenders.")
    parser.add_argument("--lm_loss", default="whole,chunked", help="The zoo's LM-loss paths: whole, chunked.")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per run (default 5; 2 with --tiny).")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed steps first (default 2; 1 with --tiny).")
    args = parser.parse_args(argv)
    if common.worker_main(args, worker):
        return 0
    args.steps = args.steps or (2 if args.tiny else 5)
    args.warmup = max(1, args.warmup or (1 if args.tiny else 2))  # >= 1: tracing/compilation is never timed
    results = common.run_all(MODULE, _specs(args), args)
    summary = summarize(results)
    report(summary)
    meta = common.run_metadata(common.command_line(MODULE, argv))
    payload = {"meta": meta, "benchmark": "gpt_pretrain_throughput", "tiny": args.tiny, "threads": args.threads,
               "results": results, **summary}
    common.write_json(args.json_out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
