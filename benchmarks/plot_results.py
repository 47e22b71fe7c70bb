"""Plots the JSON written by the benchmark scripts (--json_out) as PNGs, with matplotlib's Agg backend.

  pretrain_throughput_*.json -> pretrain_tokens_per_s.png (tokens/s of every setting, one panel per size, MFU on top)
  serving_*.json             -> serving_latency.png (p50 bars, p99 marks) and serving_throughput.png (texts/s)
  data_pipeline_*.json       -> data_pipeline.png (examples/s and real tokens/s per contender)
  inference_kernels_*.json   -> inference_kernels.png (after/before time of each inference kernel form)
  training_kernels_*.json    -> training_kernels.png (forward + backward ms of each training kernel: islands, native)

The benchmark (hence the PNG's name) comes from the JSON's "benchmark" key; a later file of the same benchmark
overwrites the PNG of an earlier one, so pass one file per benchmark. A JSON with "meta"
(benchmarks.common.run_metadata) gets its date, commit and machine written under the plot.

Usage (the latest AMX Xeon runs, whose plots RESULTS.md shows):
  PYTHONPATH=. python -m benchmarks.plot_results --out_dir=benchmarks/results \
      benchmarks/results/pretrain_throughput_2026-12-04_xeon_amx_native_layers.json \
      benchmarks/results/serving_2026-12-04_xeon_amx.json benchmarks/results/data_pipeline_2026-12-04_xeon_amx.json \
      benchmarks/results/inference_kernels_2026-12-04_xeon_amx.json \
      benchmarks/results/training_kernels_2026-12-04_xeon_amx.json
"""

import argparse
import json
import os
import sys

COLORS = {"zoo": "#1f77b4", "zoo_bf16": "#17becf", "zoo_bf16_frozen": "#2f4f4f", "zoo_xla": "#9467bd", "keras_hub": "#d62728", "hf": "#ff7f0e", "reference": "#2ca02c"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stamp(meta):
    """One line naming the run of a JSON's "meta": date, commit, machine; "" without meta."""
    if not meta:
        return ""
    machine = str(meta.get("machine", "")).split(" (")[0].split(", ")[0]
    if meta.get("cores"):
        machine += f", {meta['cores']} cores"
    return f"{str(meta.get('date', ''))[:10]}, commit {meta.get('commit', '?')}, {machine}"


def _save(fig, out_dir, name, data=None):
    path = os.path.join(out_dir, name)
    line = stamp((data or {}).get("meta"))
    if line:
        fig.text(0.005, 0.005, line, fontsize=6, color="gray", ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.clf()
    return path


def _bars(ax, labels, values, colors, fmt="{:,.0f}", notes=None):
    bars = ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    for i, (bar, value) in enumerate(zip(bars, values)):
        text = fmt.format(value) + (f"\n{notes[i]}" if notes else "")
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7)
    ax.margins(y=0.2)


def plot_pretrain(data, out_dir):
    """One panel per size: tokens/s of each (contender, precision, xla) setting, MFU % on top."""
    plt = _plt()
    sizes = list(dict.fromkeys(r["size"] for r in data["rows"]))
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        rows = [r for r in data["rows"] if r["size"] == size]
        labels = [f"{r['contender']} {r['precision']}" + (f" xla={r['xla']}" if r["xla"] != "n/a" else "") for r in rows]
        _bars(ax, labels, [r["tokens_per_s"] for r in rows], [COLORS.get(r["contender"], "gray") for r in rows],
              notes=[f"MFU {r['mfu_pct']:.1f}%" for r in rows])
        dims = rows[0]["dims"]
        ax.set_title(f"{size}: L{dims['layers']} H{dims['hidden']} batch {dims['batch']} seq {dims['seq']}")
        ax.set_ylabel("training tokens/s (best repeat)")
    return [_save(fig, out_dir, "pretrain_tokens_per_s.png", data)]


def plot_serving(data, out_dir):
    """p50 latency at batch 1 (with p99 marks), and texts/s at batch B for short and ~128-token texts."""
    plt = _plt()
    rows = data["rows"]
    names = [r["contender"] for r in rows]
    colors = [COLORS.get(n, "gray") for n in names]
    fig, ax = plt.subplots(figsize=(5, 4))
    _bars(ax, names, [r["p50_ms"] for r in rows], colors, fmt="{:.2f} ms")
    ax.scatter(range(len(rows)), [r["p99_ms"] for r in rows], marker="_", s=400, color="black", label="p99", zorder=3)
    ax.set_ylabel("latency at batch 1, ms (bar p50)")
    ax.set_title("serving latency, short sentence")
    ax.legend()
    paths = [_save(fig, out_dir, "serving_latency.png", data)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key, title in zip(axes, ("short_texts_per_s", "long_texts_per_s"), ("short texts", "~128-token texts")):
        _bars(ax, names, [r[key] for r in rows], colors, fmt="{:,.1f}")
        ax.set_title(f"{title}, batch {data['dims']['batch']}")
        ax.set_ylabel("texts/s")
    paths.append(_save(fig, out_dir, "serving_throughput.png", data))
    return paths


def plot_data_pipeline(data, out_dir):
    """examples/s and real tokens/s of building pretraining data, per contender."""
    plt = _plt()
    rows = data["rows"]
    names = [r["contender"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key, label in zip(axes, ("examples_per_s", "tokens_per_s"), ("examples/s", "real tokens/s")):
        _bars(ax, names, [r[key] for r in rows], [COLORS.get(n, "gray") for n in names])
        ax.set_ylabel(label)
    keeps_up = data.get("keeps_up")
    title = "pretraining data from raw IMDB text"
    if keeps_up:
        title += f" (zoo step on real vs synthetic data: {keeps_up['difference_pct']:+.1f}%)"
    fig.suptitle(title, fontsize=10)
    return [_save(fig, out_dir, "data_pipeline.png", data)]


def plot_inference_kernels(data, out_dir):
    """after/before time of each inference kernel form, per size, one panel per dtype (below 1: zoo's is faster)."""
    plt = _plt()
    dtypes = sorted({r["dtype"] for r in data["rows"]})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4), squeeze=False)
    colors = {"transpose": "#1f77b4", "layer_norm": "#2ca02c", "attention": "#9467bd"}
    for ax, dtype in zip(axes[0], dtypes):
        rows = [r for r in data["rows"] if r["dtype"] == dtype]
        labels = [f"{r['kernel']}\n{r['batch']}x{r['tokens']}" for r in rows]
        _bars(ax, labels, [r["ratio"] for r in rows], [colors.get(r["kernel"], "gray") for r in rows], fmt="{:.2f}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("time after / before")
        ax.set_title(dtype)
        ax.tick_params(axis="x", labelsize=7)
    return [_save(fig, out_dir, "inference_kernels.png", data)]


def plot_training_kernels(data, out_dir):
    """Forward + backward ms of each training kernel, XLA islands vs native, one panel per dtype."""
    plt = _plt()
    dtypes = sorted({r["dtype"] for r in data["rows"]})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        rows = [r for r in data["rows"] if r["dtype"] == dtype]
        labels, values, colors, notes = [], [], [], []
        for r in rows:
            for form, color in (("islands", "#bbbbbb"), ("native", "#2ca02c")):
                labels.append(f"{r['kernel'].replace('_', chr(10))}\n{form}")
                values.append(r[f"{form}_ms"])
                colors.append(color)
                notes.append(f"{r['ratio']:.2f}x" if form == "native" else "")
        _bars(ax, labels, values, colors, fmt="{:.2f}", notes=notes)
        ax.set_ylabel("ms per forward + backward")
        ax.set_title(dtype)
        ax.tick_params(axis="x", labelsize=6)
    return [_save(fig, out_dir, "training_kernels.png", data)]


PLOTTERS = {"pretrain_throughput": plot_pretrain, "serving": plot_serving, "data_pipeline": plot_data_pipeline,
            "inference_kernels": plot_inference_kernels, "training_kernels": plot_training_kernels}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_files", nargs="+", help="Outputs of the benchmarks' --json_out.")
    parser.add_argument("--out_dir", default="", help="Folder for the PNGs (default: next to each JSON file).")
    args = parser.parse_args(argv)
    written = []
    for path in args.json_files:
        with open(path) as f:
            data = json.load(f)
        plotter = PLOTTERS.get(data.get("benchmark"))
        if plotter is None:
            raise SystemExit(f"{path}: not a benchmark output (benchmark={data.get('benchmark')!r}).")
        out_dir = args.out_dir or os.path.dirname(os.path.abspath(path))
        os.makedirs(out_dir, exist_ok=True)
        written += plotter(data, out_dir)
    for path in written:
        print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
