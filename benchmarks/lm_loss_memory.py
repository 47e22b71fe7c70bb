"""The tied LM loss's memory and time: zoo.layers.losses.tied_softmax_cross_entropy, whole logits vs chunked.

What runs (--mode=loss, the default): the loss alone at GPT-1's shapes, forward + backward, in a tf.function
(XLA off unless --xla=on): hidden [B*(T-1), 768] in the compute dtype (bfloat16 or float32, --precisions), the
tied table a float32 [40483, 768] variable cast to it (as under Keras mixed_bfloat16), labels uniform, the mean
cross-entropy's gradients with respect to the hidden rows and the table (both returned, as a training step keeps
them). T = 512 and B in --batches (4, 8, 16). Paths (--paths): "whole" (max_logits_bytes huge: the [N, V] logits,
softmax and gradient at once) and "chunked" at each of --chunk_rows (max_logits_bytes 0). --baseline=DIR also runs
the chunked path with `zoo` imported from DIR, another revision's tree (e.g. `git archive HEAD | tar -x -C DIR`):
the before/after of a change to the loss.

--mode=step instead runs one GPT-1 training step (12 x 768, T 512, the benchmarks.gpt_pretrain_throughput recipe,
XLA off) per --batches and --precisions with the LM loss "whole", "chunked" (at the first --chunk_rows) or "none":
a stand-in loss with no vocabulary-sized buffer (the label rows of the table dotted with the hidden rows), so
"whole - none" is what the LM loss adds to the step's peak.

Every setting runs in its own fresh process (benchmarks.common workers, alternated over --repeats, the best
repeat kept), so peaks do not mix. Time: the median of --calls calls after one untimed call (tracing).

Memory, measured directly: TensorFlow's CPU allocator keeps its own pool (a BFC allocator: memory a tensor
frees goes back to the pool, not to the system), so the process's RSS high-water mark is the pool's high-water
mark plus fragmentation, and MALLOC_MMAP_THRESHOLD_ cannot make it give memory back. The number reported is
the allocator's own peak: `tf.config.experimental.get_memory_info("CPU:0")` after `reset_memory_stats` (bytes
that tensors held at once, exact), minus what was allocated when the measured calls began (the inputs and the
table): "peak MB" is the memory the calls needed on top of their inputs, outputs (the gradients) included.
"RSS MB" (VmHWM after the calls minus VmHWM before the first call) is reported next to it, pool effects and all.
oneDNN's own scratch buffers are not in the allocator's count.

Recorded run (about 25 minutes on 2 shared cores):
  PYTHONPATH=. python -m benchmarks.lm_loss_memory --batches=4,8,16 --precisions=bfloat16,float32 \\
      --chunk_rows=256,512,1024 --baseline=/tmp/lm_head --repeats=2 --calls=3 \\
      --json_out=benchmarks/results/lm_loss_memory_<date>_<machine>.json
  PYTHONPATH=. python -m benchmarks.lm_loss_memory --mode=step --batches=4 --precisions=bfloat16 --chunk_rows=1024 \\
      --paths=whole,chunked,none --repeats=1 --calls=1 --json_out=benchmarks/results/lm_loss_memory_<...>_step.json
Smoke test (tests/test_layers_fast_paths.py runs it in-process in seconds):
  PYTHONPATH=. python -m benchmarks.lm_loss_memory --tiny
"""

import functools
import os
import sys

from benchmarks import common

MODULE = "benchmarks.lm_loss_memory"
PAPER = dict(hidden=768, vocab=40483, seq=512)  # GPT-1 (Radford et al. 2018): 40,478 BPE + the zoo's 5 specials
TINY = dict(hidden=16, vocab=97, seq=9)
GPT1 = dict(layers=12, hidden=768, heads=12, intermediate=3072, positions=512)
PATHS = ("whole", "chunked", "none")
WHOLE = 1 << 62  # max_logits_bytes that always takes the whole path


# ---- measuring (in the worker) ---------------------------------------------------------------------------------
def _vm_hwm_mb():
    """This process's resident high-water mark (VmHWM) in MiB; ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return common.peak_rss_mb()


def _allocator_bytes():
    """(current, peak) bytes of TensorFlow's CPU allocator."""
    import tensorflow as tf

    info = tf.config.experimental.get_memory_info("CPU:0")
    return info["current"], info["peak"]


def measure(call, calls):
    """Median seconds of `calls` calls of call() after one untimed one, and the memory they needed.

    Returns:
      {"seconds", "peak_mb" (allocator peak during the timed calls over what was allocated before them),
       "inputs_mb" (that allocation), "rss_mb" (VmHWM growth from before the first call)}.
    """
    import tensorflow as tf

    rss_before = _vm_hwm_mb()
    call()  # tracing; its peak is the same as a later call's, but it is not timed
    tf.config.experimental.reset_memory_stats("CPU:0")
    base, _ = _allocator_bytes()
    seconds = common.median_seconds(call, calls, warmup=0)
    _, peak = _allocator_bytes()
    mb = 1024 * 1024
    return {"seconds": seconds, "peak_mb": (peak - base) / mb, "inputs_mb": base / mb,
            "rss_mb": _vm_hwm_mb() - rss_before}


def _losses(zoo_root=None):
    """zoo.layers.losses, or that file of the tree `zoo_root` (another revision; it imports only TensorFlow)."""
    if not zoo_root:
        from zoo.layers import losses

        return losses
    import importlib.util

    path = os.path.join(zoo_root, "zoo", "layers", "losses.py")
    spec = importlib.util.spec_from_file_location("baseline_zoo_losses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loss_inputs(d, batch, precision):
    """hidden [B*(T-1), H] in `precision`, a float32 [V, H] table variable (GPT's init), labels: fixed seed."""
    import numpy as np
    import tensorflow as tf

    rows = batch * (d["seq"] - 1)
    rng = np.random.default_rng(0)
    hidden = tf.constant(rng.normal(size=(rows, d["hidden"])).astype(np.float32), precision)  # layer-normed scale
    table = tf.Variable(rng.normal(scale=0.02, size=(d["vocab"], d["hidden"])).astype(np.float32))
    labels = tf.constant(rng.integers(0, d["vocab"], size=rows), tf.int32)
    return hidden, table, labels


def _loss_call(losses, inputs, setting, xla):
    """call() -> one forward + backward of the mean loss (its gradients with respect to hidden and the table)."""
    import tensorflow as tf

    hidden, table, labels = inputs
    options = {"max_logits_bytes": WHOLE if setting["path"] == "whole" else 0}
    if setting["path"] == "chunked":
        options["chunk_rows"] = setting["chunk_rows"]

    @tf.function(jit_compile=xla == "on")
    def step():
        with tf.GradientTape() as tape:
            tape.watch(hidden)
            ce, hits = losses.tied_softmax_cross_entropy(hidden, tf.cast(table, hidden.dtype), labels, **options)
            loss = tf.reduce_mean(ce)
        d_hidden, d_table = tape.gradient(loss, [hidden, table])
        return loss, tf.reduce_mean(hits), d_hidden, d_table

    def call():
        loss, _, d_hidden, d_table = step()
        return float(loss) + float(d_hidden[0, 0]) + float(d_table[0, 0])  # waits for every output

    return call, step


def _loss_worker(spec):
    d = spec["dims"]
    losses = _losses(spec.get("zoo_root"))
    inputs = _loss_inputs(d, spec["batch"], spec["precision"])
    call, step = _loss_call(losses, inputs, spec, spec["xla"])
    out = measure(call, spec["calls"])
    rows = int(inputs[0].shape[0])
    out.update(loss=float(step()[0]), rows=rows, logits_mb=rows * d["vocab"] * 4 / 2**20, loss_module=losses.__file__)
    return out


def _interleaved_worker(spec):
    """Every setting of one batch/precision in one process, called in turn (A B C A B C ...) for spec["rounds"]
    rounds after one untimed call each: a shared machine's load then hits them alike. Times only."""
    import time

    inputs = _loss_inputs(spec["dims"], spec["batch"], spec["precision"])
    calls = [_loss_call(_losses(s.get("zoo_root")), inputs, s, spec["xla"])[0] for s in spec["settings"]]
    for call in calls:
        call()
    times = [[] for _ in calls]
    for _ in range(spec["rounds"]):
        for call, seconds in zip(calls, times):
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
    return {"times": times}


def _step_worker(spec):
    import numpy as np
    import tensorflow as tf

    if spec.get("zoo_root"):
        sys.path.insert(0, spec["zoo_root"])
    from benchmarks import gpt_pretrain_throughput as gpt
    from zoo.gpt import causal_lm

    def stand_in(hidden, table, labels, **_):  # no vocabulary-sized buffer: each row dotted with its label's row
        ce = tf.reduce_sum(tf.cast(hidden, tf.float32) * tf.cast(tf.gather(tf.cast(table, hidden.dtype), labels),
                                                                  tf.float32), axis=-1)
        return ce, tf.zeros_like(ce)

    loss = causal_lm.tied_softmax_cross_entropy
    d = {**spec["dims"], "batch": spec["batch"]}
    ids = np.random.default_rng(0).integers(5, d["vocab"], size=(d["batch"], d["seq"])).astype(np.int32)
    dataset = tf.data.Dataset.from_tensors({"token_ids": ids}).repeat()
    causal_lm.tied_softmax_cross_entropy = {"none": stand_in,
                                            "chunked": functools.partial(loss, chunk_rows=spec["chunk_rows"])}.get(
                                                spec["path"], loss)
    try:  # the loss is looked up when the step is traced: in measure's first call
        run, _ = common.zoo_pretraining_step(d, dataset, spec["precision"], spec["xla"] == "on", family="gpt",
                                             optimizer=gpt._recipe_optimizer,
                                             attributes={"max_logits_bytes": 0 if spec["path"] == "chunked" else WHOLE},
                                             max_sequence_length=d["positions"])
        out = measure(lambda: run(1), spec["calls"])
    finally:
        causal_lm.tied_softmax_cross_entropy = loss
    out.update(rows=d["batch"] * (d["seq"] - 1), loss_module=causal_lm.__file__)
    return out


def worker(spec):
    """Runs one worker spec; returns its measurements."""
    return {"step": _step_worker, "loss": _loss_worker, "interleaved": _interleaved_worker}[spec["mode"]](spec)


# ---- parent ------------------------------------------------------------------------------------------------
def _specs(args):
    tiny = args.tiny
    dims = {**(TINY if tiny else {**PAPER, "seq": args.seq, "hidden": args.hidden})}
    if args.mode == "step":
        dims.update(TINY_STEP if tiny else GPT1)
    batches = [2] if tiny else [int(b) for b in common.csv_list(args.batches)]
    chunk_rows = [4] if tiny else [int(c) for c in common.csv_list(args.chunk_rows)]
    paths = common.csv_list(args.paths, PATHS if args.mode == "step" else PATHS[:2], "paths")
    baseline_rows = [str(rows) for rows in chunk_rows] if tiny else common.csv_list(args.baseline_chunk_rows)
    specs = []
    for batch in batches:
        for precision in common.csv_list(args.precisions, common.PRECISIONS, "precisions"):
            base = {"mode": args.mode, "batch": batch, "precision": precision, "xla": args.xla, "dims": dims,
                    "calls": args.calls, "revision": "current"}
            for path in paths:
                if path != "chunked":
                    specs.append({**base, "path": path, "chunk_rows": 0})
                    continue
                for rows in chunk_rows:
                    specs.append({**base, "path": path, "chunk_rows": rows})
                    if args.baseline and str(rows) in baseline_rows:
                        specs.append({**base, "path": path, "chunk_rows": rows, "revision": "baseline",
                                      "zoo_root": os.path.abspath(args.baseline)})
    if args.mode == "loss" and args.rounds:  # per batch and precision, every setting's time in one process
        groups = {}
        for spec in specs:
            groups.setdefault((spec["batch"], spec["precision"]), []).append(spec)
        specs += [{"mode": "interleaved", "batch": batch, "precision": precision, "xla": args.xla, "dims": dims,
                   "rounds": args.rounds, "settings": [{k: s[k] for k in SETTING if k in s} for s in group]}
                  for (batch, precision), group in groups.items()]
    return specs


SETTING = ("path", "chunk_rows", "revision", "zoo_root")


TINY_STEP = dict(layers=1, hidden=16, heads=2, intermediate=64, positions=16, vocab=97, seq=9)
KEYS = ("mode", "batch", "precision", "path", "chunk_rows", "revision")


def _interleaved(results):
    """{(batch, precision, path, chunk_rows, revision): (median seconds, median of the rounds' time / whole's)}
    over every interleaved worker's rounds (all repeats pooled)."""
    import statistics

    pooled = {}
    for r in results:
        if r["mode"] != "interleaved":
            continue
        whole = next(i for i, s in enumerate(r["settings"]) if s["path"] == "whole") if any(
            s["path"] == "whole" for s in r["settings"]) else None
        for i, s in enumerate(r["settings"]):
            key = (r["batch"], r["precision"], s["path"], s["chunk_rows"], s["revision"])
            seconds, ratios = pooled.setdefault(key, ([], []))
            seconds += r["times"][i]
            if whole is not None:
                ratios += [t / w for t, w in zip(r["times"][i], r["times"][whole])]
    return {k: (statistics.median(s), statistics.median(q) if q else None) for k, (s, q) in pooled.items()}


def summarize(results):
    """Best (fastest) repeat per setting; each row's time and peak over the same batch/precision's whole path;
    the interleaved workers' times (pooled medians) beside them."""
    timed = _interleaved(results)
    results = [r for r in results if r["mode"] != "interleaved"]
    rows = common.best(results, KEYS, "seconds", higher_is_better=False)
    for row in rows:
        row["peak_mb"] = max(r["peak_mb"] for r in results if all(r.get(k) == row[k] for k in KEYS))
        row["rss_mb"] = max(r["rss_mb"] for r in results if all(r.get(k) == row[k] for k in KEYS))
        whole = [r for r in rows if r["path"] == "whole" and all(r[k] == row[k] for k in ("mode", "batch", "precision"))]
        if whole:
            row["time_over_whole"] = row["seconds"] / whole[0]["seconds"]
            row["peak_over_whole"] = row["peak_mb"] / max(whole[0]["peak_mb"], 1e-9)
        key = (row["batch"], row["precision"], row["path"], row["chunk_rows"], row["revision"])
        if key in timed:
            row["interleaved_seconds"], row["interleaved_over_whole"] = timed[key]
    rows.sort(key=lambda r: (r["mode"], r["precision"], r["batch"], PATHS.index(r["path"]), r["revision"],
                             r["chunk_rows"]))
    return {"rows": rows}


def report(summary):
    columns = [("batch", "batch", ""), ("rows", "rows", ",d"), ("precision", "precision", ""), ("path", "path", ""),
               ("chunk rows", "chunk_rows", ""), ("revision", "revision", ""), ("median ms", lambda r: 1000 * r["seconds"], ",.0f"),
               ("x whole", "time_over_whole", ".2f"),
               ("interleaved ms", lambda r: 1000 * r["interleaved_seconds"] if "interleaved_seconds" in r else "", ",.0f"),
               ("x whole", lambda r: r.get("interleaved_over_whole") or "", ".2f"),
               ("peak MB", "peak_mb", ",.0f"), ("peak / whole", "peak_over_whole", ".2f"), ("RSS MB", "rss_mb", ",.0f")]
    print(common.format_table(summary["rows"], columns))


def main(argv=None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--mode", default="loss", choices=("loss", "step"), help="The loss alone, or a GPT-1 step.")
    parser.add_argument("--batches", default="4,8,16", help="Sequences of T = 512 tokens (ignored with --tiny).")
    parser.add_argument("--seq", type=int, default=PAPER["seq"], help="Tokens per sequence T (loss mode; not --tiny).")
    parser.add_argument("--hidden", type=int, default=PAPER["hidden"], help="H (loss mode; 256 is the mini preset's).")
    parser.add_argument("--precisions", default=",".join(common.PRECISIONS))
    parser.add_argument("--paths", default="whole,chunked", help="whole, chunked (and, with --mode=step, none).")
    parser.add_argument("--chunk_rows", default="256,512,1024", help="The chunked path's chunk_rows settings.")
    parser.add_argument("--baseline", default="", help="A tree of another revision whose zoo also runs the chunked path.")
    parser.add_argument("--baseline_chunk_rows", default="1024", help="The --chunk_rows the baseline runs at.")
    parser.add_argument("--xla", default="off", choices=("on", "off"), help="jit_compile the measured function.")
    parser.add_argument("--calls", type=int, default=2, help="Timed calls per memory worker (the median is kept).")
    parser.add_argument("--rounds", type=int, default=5,
                        help="Loss mode: rounds of the interleaved timing worker per batch/precision (0: none).")
    parser.add_argument("--in_process", action="store_true",
                        help="Run the workers in this process (smoke tests only: peaks and times then mix).")
    args = parser.parse_args(argv)
    if common.worker_main(args, worker):
        return 0
    if args.in_process and args.baseline and args.mode == "step":
        raise SystemExit("--mode=step --baseline needs fresh worker processes: a process imports one zoo.")
    if args.tiny:
        args.calls, args.rounds = 1, min(args.rounds, 2)
    specs = _specs(args)
    run = (lambda spec: worker(spec)) if args.in_process else (lambda spec: common.run_one(MODULE, spec, args))
    results = common.alternate(specs, args.repeats, run)
    summary = summarize(results)
    if args.mode == "loss":  # which path the loss's default takes at each size (the parent's checkout)
        from zoo.layers import losses

        summary["default_max_logits_bytes"] = losses.DEFAULT_MAX_LOGITS_BYTES
        for row in summary["rows"]:
            row["default_path"] = "whole" if row["logits_mb"] * 2**20 <= losses.DEFAULT_MAX_LOGITS_BYTES else "chunked"
    report(summary)
    meta = common.run_metadata(common.command_line(MODULE, argv))
    payload = {"meta": meta, "benchmark": "lm_loss_memory", "tiny": args.tiny, "threads": args.threads,
               "results": results, **summary}
    common.write_json(args.json_out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
