"""ProjectedLSTM (zoo/layers/projected_lstm.py) against stock Keras: one training pass (forward + backward) per step.

  PYTHONPATH=. python -m benchmarks.elmo_lstm                    # B 32, T 20, D = P 128, U 512, float32
  PYTHONPATH=. python -m benchmarks.elmo_lstm --units=1024 --precision=mixed_bfloat16

Every row of the batch but the first ends with 10 % padding (a mask, as ELMo batches have). Contenders, each a
tf.function of the same loss (sum of squares of the [B, T, P] outputs) and its gradients:
  zoo          ProjectedLSTM: input gates hoisted into one matmul, a tf.while_loop doing h @ W_h per step
  zoo_autodiff ProjectedLSTM(manual_backward=False): TensorFlow differentiates the loop
  zoo_xla      zoo with jit_compile=True (the TPU / --jit_compile path)
  keras_proj   keras.layers.RNN over a Keras LSTM cell with projection and clips (the same model, stock RNN loop)
  keras_lstm   keras.layers.LSTM(U) + Dense(P) (what a user writes with stock layers; its recurrence is
               [B, U] @ [U, 4U], not [B, P] @ [P, 4U], and it neither projects inside the loop nor clips)
The contenders alternate (A B C D A B C D ...) over --rounds in one process; each round times --steps steps and the
best round is reported, as tokens/s and as zoo's ratio over each peer.
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.projected_lstm import ProjectedLSTM


class ProjectedLSTMCell(keras.layers.Layer):
    """The same maths as ProjectedLSTM, as a Keras RNN cell (what one writes for keras.layers.RNN)."""

    def __init__(self, units, projection_dim, clip=3.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.projection_dim, self.clip = units, projection_dim, clip
        self.state_size = (units, projection_dim)
        self.output_size = projection_dim

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1] + self.projection_dim, 4 * self.units), name="kernel")
        self.bias = self.add_weight(shape=(4 * self.units,), initializer="zeros", name="bias")
        self.projection = self.add_weight(shape=(self.units, self.projection_dim), name="projection")

    def call(self, x, states):
        c, h = states
        z = keras.ops.matmul(keras.ops.concatenate([x, h], axis=-1), self.kernel) + self.bias
        i, j, f, o = keras.ops.split(z, 4, axis=-1)
        c = keras.ops.clip(keras.ops.sigmoid(f + 1.0) * c + keras.ops.sigmoid(i) * keras.ops.tanh(j), -self.clip, self.clip)
        h = keras.ops.clip(keras.ops.matmul(keras.ops.sigmoid(o) * keras.ops.tanh(c), self.projection), -self.clip, self.clip)
        return h, (c, h)


def contenders(args, mask):
    zoo = ProjectedLSTM(args.units, args.projection_dim, cell_clip=3.0, projection_clip=3.0)
    autodiff = ProjectedLSTM(args.units, args.projection_dim, cell_clip=3.0, projection_clip=3.0, manual_backward=False)
    keras_proj = keras.layers.RNN(ProjectedLSTMCell(args.units, args.projection_dim), return_sequences=True)
    lstm, dense = keras.layers.LSTM(args.units, return_sequences=True), keras.layers.Dense(args.projection_dim)
    return {
        "zoo": (lambda x: zoo(x, mask=mask)[0], False),
        "zoo_autodiff": (lambda x: autodiff(x, mask=mask)[0], False),
        "zoo_xla": (lambda x: zoo(x, mask=mask)[0], True),
        "keras_proj": (lambda x: keras_proj(x, mask=mask), False),
        "keras_lstm": (lambda x: dense(lstm(x, mask=mask)), False),
    }


def train_step(forward, jit_compile, x):
    forward(x)  # builds the weights before tracing
    layers_weights = None

    @tf.function(jit_compile=jit_compile)
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.cast(forward(x), tf.float32)))
        return loss, tape.gradient(loss, layers_weights)

    # The trainable weights the forward pass reads, found by tracing it once under a tape.
    with tf.GradientTape() as tape:
        forward(x)
    layers_weights = [v for v in tape.watched_variables() if v.trainable]
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--projection_dim", type=int, default=128)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", default="", help="Comma-separated contenders (default: all).")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(args.precision)
    x = tf.constant(np.random.default_rng(0).normal(0, 1, (args.batch, args.length, args.projection_dim)), tf.float32)
    lengths = np.full(args.batch, args.length - max(1, args.length // 10))
    lengths[0] = args.length
    mask = tf.constant(np.arange(args.length)[None] < lengths[:, None])
    steps = {}
    for name, (forward, jit) in contenders(args, mask).items():
        if not args.only or name in args.only.split(","):
            steps[name] = train_step(forward, jit, x)
            for _ in range(3):  # trace, compile, warm up
                steps[name](x)[0].numpy()
    best = {name: float("inf") for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                loss, _ = step(x)
            loss.numpy()
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    tokens = args.batch * args.length
    print(f"B {args.batch} T {args.length} D=P {args.projection_dim} U {args.units} {args.precision}, "
          f"best of {args.rounds} alternated rounds of {args.steps} training steps:")
    for name, seconds in best.items():
        ratio = "" if "zoo" not in best else f"   zoo is {seconds / best['zoo']:.2f}x faster"
        print(f"  {name:11s} {seconds * 1e3:8.2f} ms/step {tokens / seconds:10.0f} tokens/s{ratio}")


if __name__ == "__main__":
    main()
