"""The training step's memory-bound kernels, forward + backward: the XLA islands vs the native kernels (and plain ops).

  layer_norm          zoo.layers.normalization.layer_norm_for_training (x, gamma and beta gradients)
  residual_layer_norm LayerNormalization.add_and_normalize: LN(x + dropout(h)), rate 0.1 (islands: dropout
                      island, TF add, layer-norm islands; native: ZooDropoutAddLayerNorm + its gradient)
  gelu                zoo.layers.activations.gelu_for_training(x, bias) (x and bias gradients)
  dropout             zoo.layers.Dropout(0.1)
  attention_softmax   zoo.layers.softmax.attention_softmax_for_training: scale, padding bias, float32
                      softmax, cast, dropout 0.1

Shapes are BERT-base's pretraining step (batch 16 x 128 tokens, H 768, F 3072, 12 heads; --tiny: a few rows).
Each form is a tf.function (forward and gradient), traced with ZOO_KERNELS=xla (islands), native or plain (the
plain TF ops, the reference tier; zoo/layers/tiers.py); the forms alternate within each repeat; the best of the
repeats' median ms per call is printed with native/islands (below 1: the native kernel is faster). Needs g++ for
the native forms (zoo/kernels).

  PYTHONPATH=. python -m benchmarks.training_kernels --repeats=3 \
      --json_out=benchmarks/results/training_kernels_<date>_<machine>.json   # replaces that machine's older file
"""

import os
import sys

from benchmarks import common

FORMS = ("islands", "native", "plain")
TIER = {"islands": "xla", "native": "native", "plain": "plain"}  # ZOO_KERNELS of each form


def _cases(tf, keras, tiny, dtype):
    from zoo.layers import Dropout, LayerNormalization
    from zoo.layers.activations import gelu_for_training
    from zoo.layers.normalization import layer_norm_for_training
    from zoo.layers.softmax import attention_softmax_for_training

    batch, tokens, hidden, heads = (2, 16, 32, 2) if tiny else (16, 128, 768, 12)
    rows, ffn = batch * tokens, 4 * hidden

    def normal(shape, scale=1.0):
        return tf.cast(tf.random.normal(shape) * scale, dtype)

    x, h, dy = normal([rows, hidden], 2.0), normal([rows, hidden]), normal([rows, hidden])
    gamma, beta = tf.Variable(tf.ones([hidden])), tf.Variable(tf.zeros([hidden]))
    wide, wide_dy, bias = normal([rows, ffn]), normal([rows, ffn]), tf.Variable(tf.zeros([ffn]))
    scores, scores_dy = normal([batch, heads, tokens, tokens], 3.0), normal([batch, heads, tokens, tokens])
    mask = tf.where(tf.random.uniform([batch, 1, 1, tokens]) < 0.9, 0.0, -1e9)
    policy = keras.DTypePolicy("mixed_bfloat16" if dtype == tf.bfloat16 else "float32")  # as inside a model
    norm = LayerNormalization(epsilon=1e-12, dtype=policy)
    norm.build([None, hidden])
    dropout = Dropout(0.1, seed=1, dtype=policy)
    seed = tf.constant([3, 4], tf.int32)

    def grads(fn, inputs, watched, out_grad):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = fn()
        return y, tape.gradient(y, watched, output_gradients=out_grad)

    return {
        "layer_norm": lambda: grads(lambda: layer_norm_for_training(x, gamma, beta, 1e-12), [x], [x, gamma, beta], dy),
        "residual_layer_norm": lambda: grads(lambda: norm.add_and_normalize(x, h, dropout, training=True), [x, h],
                                             [x, h, norm.gamma, norm.beta], dy),
        "gelu": lambda: grads(lambda: gelu_for_training(wide, bias), [wide], [wide, bias], wide_dy),
        "dropout": lambda: grads(lambda: dropout(x, training=True), [x], [x], dy),
        "attention_softmax": lambda: grads(lambda: attention_softmax_for_training(scores, mask, seed, 6554,
                                                                                  scale=0.125), [scores], [scores],
                                           scores_dy),
    }


def _traced(tf, fn, form):
    """fn as a tf.function traced now with the form's kernels (the choice is made at trace time)."""
    previous = os.environ.get("ZOO_KERNELS")
    os.environ["ZOO_KERNELS"] = TIER[form]
    try:
        function = tf.function(fn, autograph=False)
        function.get_concrete_function()
        return function
    finally:
        if previous is None:
            os.environ.pop("ZOO_KERNELS")
        else:
            os.environ["ZOO_KERNELS"] = previous


def _synced(tf, fn):
    """fn() that also waits for its values (numpy), so a call's time is its kernels' time."""
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn())


def main(argv=None):
    parser = common.base_parser(__doc__)
    args = parser.parse_args(argv)
    import keras
    import tensorflow as tf

    from zoo import kernels

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if kernels.load("layer_ops") is None:
        print("The native kernels are unavailable (is g++ installed? ZOO_KERNELS=xla or plain turns them off): "
              "nothing to compare.", file=sys.stderr)
        return 1
    calls = 5 if args.tiny else 20
    cases = []
    for dtype in (tf.bfloat16, tf.float32):
        for kernel, fn in _cases(tf, keras, args.tiny, dtype).items():
            cases.append(dict(kernel=kernel, dtype=dtype.name, fns={form: _traced(tf, fn, form) for form in FORMS}))
    results = []
    for repeat in range(args.repeats):
        for case in cases:
            for form in FORMS:
                results.append(dict(kernel=case["kernel"], dtype=case["dtype"], form=form, repeat=repeat,
                                    ms=1e3 * common.median_seconds(_synced(tf, case["fns"][form]), calls)))
    rows = []
    print(f"{'kernel':<20} {'dtype':<9} {'islands ms':>11} {'native ms':>10} {'plain ms':>9} {'native/islands':>15}")
    for case in cases:
        best = {form: min(r["ms"] for r in results
                          if (r["kernel"], r["dtype"], r["form"]) == (case["kernel"], case["dtype"], form))
                for form in FORMS}
        row = {"kernel": case["kernel"], "dtype": case["dtype"], "islands_ms": best["islands"],
               "native_ms": best["native"], "plain_ms": best["plain"], "ratio": best["native"] / best["islands"]}
        rows.append(row)
        print(f"{row['kernel']:<20} {row['dtype']:<9} {row['islands_ms']:>11.2f} {row['native_ms']:>10.2f} "
              f"{row['plain_ms']:>9.2f} {row['ratio']:>15.2f}")
    if args.json_out:
        meta = common.run_metadata(common.command_line("benchmarks.training_kernels", argv))
        common.write_json(args.json_out, {"meta": meta, "benchmark": "training_kernels", "tiny": args.tiny,
                                          "results": results, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
