"""The inference kernel forms the exports use, each against the form it replaced, in one process, alternated.

  transpose   the attention's [B, T, 3, N, D] -> [3, B, N, T, D] transpose: tf.transpose (oneDNN's reorder when
              oneDNN is on) vs zoo.layers.transpose (TF's own kernel, via a same-width integer bitcast)
  layer_norm  Keras' LayerNormalization ops vs zoo's inference form (oneDNN's fused layer norm from
              FUSED_MIN_ROWS rows, Keras' ops below, chosen by a tf.cond)
  attention   softmax(q k^T * scale + mask) v: oneDNN's kernels at every size, scale and mask as the batch matmul's
              epilogue (before) vs zoo.layers.attention.attention_for_inference (TF's own float32 kernels up to
              SMALL_ATTENTION_MAX_MACS, the oneDNN form above, chosen by a tf.cond)
              (until 2026-12-03 this row compared the scale-first form with the epilogue form: see RESULTS.md)

Each is a tf.function with dynamic shapes, as in an exported graph (TF's optimizer rewrites it the same way),
applying its kernel to LAYERS separate inputs (one per Transformer layer of MiniLM: H 384, 12 heads of 32), timed
at batch-1-like and batch-64-like sizes, in bf16 and float32. Prints the best of the repeats' median µs per call
(the function-call overhead included, the same for both forms) and after/before (below 1: the zoo's form is faster).

  PYTHONPATH=. python -m benchmarks.inference_kernels --repeats=3 \
      --json_out=benchmarks/results/inference_kernels_<date>_<machine>.json   # replaces that machine's older file
"""

import sys

from benchmarks import common

HIDDEN, HEADS, LAYERS = 384, 12, 6


def _per_layer(kernel):
    """kernel(x, *rest) -> one function over x stacked [LAYERS, ...]: the kernel on each layer's slice."""
    def fn(stacked, *rest):
        return [kernel(x, *rest) for x in _unstack(stacked)]
    return fn


def _unstack(stacked):
    import tensorflow as tf

    return tf.unstack(stacked, LAYERS, axis=0)


def _forms(tf, keras):
    from zoo.layers.attention import attention_for_inference
    from zoo.layers.normalization import layer_norm_for_inference
    from zoo.layers.transpose import transpose

    head_dim = HIDDEN // HEADS

    def keras_layer_norm(dtype):
        layer = keras.layers.LayerNormalization(epsilon=1e-12, dtype=dtype)
        layer.build([None, None, HIDDEN])
        return layer

    def transposes():
        return (lambda x: tf.transpose(x, (2, 0, 3, 1, 4)), lambda x: transpose(x, (2, 0, 3, 1, 4)))

    def layer_norms(dtype):
        layer = keras_layer_norm(dtype)
        return (layer, lambda x: layer_norm_for_inference(x, layer, layer.gamma, layer.beta, 1e-12, dtype))

    def attentions():
        def before(qkv, bias):
            q, k, v = tf.unstack(qkv, 3, axis=0)
            s = tf.linalg.matmul(q, k, adjoint_b=True) * tf.cast(head_dim**-0.5, q.dtype) + tf.cast(bias, q.dtype)
            return tf.linalg.matmul(tf.cast(tf.nn.softmax(tf.cast(s, tf.float32), -1), v.dtype), v)

        def after(qkv, bias):
            q, k, v = tf.unstack(qkv, 3, axis=0)
            return attention_for_inference(q, k, v, bias, tf.cast(head_dim**-0.5, q.dtype))

        return before, after

    return transposes, layer_norms, attentions


def main(argv=None):
    parser = common.base_parser(__doc__)
    args = parser.parse_args(argv)
    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    transposes, layer_norms, attentions = _forms(tf, keras)
    shapes = [(1, 9), (2, 64)] if args.tiny else [(1, 9), (8, 128), (64, 128)]  # (batch, tokens)
    dtypes = [tf.bfloat16, tf.float32]
    cases = []
    for dtype in dtypes:
        for batch, tokens in shapes:
            big = batch * tokens >= 1024
            n = 20 if args.tiny else (30 if big else 300)
            qkv_spec = tf.TensorSpec([LAYERS, 3, None, HEADS, None, HIDDEN // HEADS], dtype)
            five = tf.TensorSpec([LAYERS, None, None, 3, HEADS, HIDDEN // HEADS], dtype)
            rows = tf.TensorSpec([LAYERS, None, None, HIDDEN], dtype)
            bias_spec = tf.TensorSpec([None, 1, 1, None], tf.float32)
            x5 = tf.cast(tf.random.normal([LAYERS, batch, tokens, 3, HEADS, HIDDEN // HEADS]), dtype)
            x3 = tf.cast(tf.random.normal([LAYERS, batch, tokens, HIDDEN]) * 3 + 1, dtype)
            qkv = tf.cast(tf.random.normal([LAYERS, 3, batch, HEADS, tokens, HIDDEN // HEADS]), dtype)
            bias = tf.where(tf.random.uniform([batch, 1, 1, tokens]) < 0.9, 0.0, -1e9)
            for kernel, (before, after), specs, inputs in (
                ("transpose", transposes(), [five], (x5,)),
                ("layer_norm", layer_norms(dtype.name), [rows], (x3,)),
                ("attention", attentions(), [qkv_spec, bias_spec], (qkv, bias)),
            ):
                cases.append(dict(kernel=kernel, dtype=dtype.name, batch=batch, tokens=tokens, calls=n,
                                  fns=[tf.function(_per_layer(f), input_signature=specs, autograph=False)
                                       for f in (before, after)], inputs=inputs))
    results = []
    for repeat in range(args.repeats):
        for case in cases:
            for form, fn in zip(("before", "after"), case["fns"]):
                us = 1e6 * common.median_seconds(lambda: fn(*case["inputs"]), case["calls"], max(3, case["calls"] // 10))
                results.append({k: case[k] for k in ("kernel", "dtype", "batch", "tokens")} | {"form": form, "us": us,
                                                                                                 "repeat": repeat})
    rows = []
    print(f"{'kernel':<11} {'dtype':<9} {'batch x tokens':>14} {'before µs':>10} {'after µs':>10} {'after/before':>13}")
    for case in cases:
        key = {k: case[k] for k in ("kernel", "dtype", "batch", "tokens")}
        best = {form: min(r["us"] for r in results if r["form"] == form and all(r[k] == v for k, v in key.items()))
                for form in ("before", "after")}
        row = key | {"before_us": best["before"], "after_us": best["after"], "ratio": best["after"] / best["before"]}
        rows.append(row)
        print(f"{case['kernel']:<11} {case['dtype']:<9} {case['batch']:>6} x {case['tokens']:<5} "
              f"{row['before_us']:>10.1f} {row['after_us']:>10.1f} {row['ratio']:>13.2f}")
    meta = common.run_metadata(common.command_line("benchmarks.inference_kernels", argv))
    common.write_json(args.json_out, {"meta": meta, "benchmark": "inference_kernels", "tiny": args.tiny,
                                      "results": results, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
