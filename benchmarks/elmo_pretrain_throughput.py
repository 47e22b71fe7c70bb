"""ELMo biLM pretraining throughput: the zoo vs PyTorch (torch.nn.LSTM with proj_size) vs stock Keras, tokens/s.

One training step = forward, backward and the update of bilm-tf's recipe on one synthetic static-shape batch of
B sentences x T = 20 positions (unroll 20; every position real; the same char ids and word ids for every
contender): char CNN -> highway -> projection -> 2 LSTM layers per direction (the second with a residual from its
input) -> one shared softmax, trained with a sampled softmax (S log-uniform negatives per direction, drawn with
replacement, accidental hits removed, logits corrected by -log expected count) over a vocabulary of V words,
loss 0.5 * (forward + backward) per prediction with its gradient scaled by T - 1 (bilm-tf's `loss * unroll_steps`),
dropout 0.1 on every LSTM layer's input and on the top layers, Adagrad lr 0.2 with accumulators from 1.0 (epsilon
1e-7) and global-norm clip 10. Contenders:
  * zoo:        zoo.elmo's pretrainer (`ElmoLanguageModel` on `ElmoBackbone`: ProjectedLSTM with TF1 LSTMCell
                semantics, cell and projection clip 3, hand-written backward loop) + the family's "adagrad" recipe
                (zoo.optim) + zoo.training.loop's step function, as trainers.pretrain runs it (`--jit_compile` off
                by default on CPU; --zoo_xla=on,off measures both).
  * torch:      the same model as a PyTorch user writes it today: nn.Embedding -> one nn.Conv1d per filter, max
                over time, relu -> nn.Linear highways -> nn.Linear projection -> per direction two
                nn.LSTM(P, U, proj_size=P) layers (separate modules, for the dropout and the residual between
                them; the backward LM runs on torch.flip of the embeddings) -> a shared [V, P] softmax table with
                the same sampled softmax written out (torch has no sampled-softmax op) -> torch.optim.Adagrad +
                clip_grad_norm_(10). Differences: torch's LSTM has no cell or projection clip (the zoo clips c and
                h to +-3: a few elementwise ops per step; nothing is clipped here, so the maths differ only there),
                and its gate order / forget-bias convention is torch's (bias_ih + bias_hh, no +1 at run time); same
                parameter count but for the second LSTM bias. bfloat16 = torch.autocast("cpu", bfloat16), float32
                parameters. torch's oneDNN LSTM kernel does not take projections (it warns and falls back to
                ATen's per-step cell), which is what a user gets.
  * keras_lstm: the model in stock Keras layers, as a Keras user writes it: Embedding -> Conv1D(relu) +
                GlobalMaxPooling1D per filter (over the B*T words folded into one batch with ops.reshape; a
                TimeDistributed Conv1D with a static T = 20 unrolls into 20 convolutions per filter) -> Dense
                highways -> Dense projection -> per layer keras.layers.LSTM(U) + Dense(P) (stock LSTM has no
                projection inside the recurrence: its recurrence is [B, U] @ [U, 4U], not [B, P] @ [P, 4U], and
                it has no clips: a bigger model than ELMo's at the same width, 4U(P + U) + UP weights per layer
                instead of 4U(2P) + UP) -> the same sampled softmax written in keras.ops / tf (Keras has
                none), compiled with keras.optimizers.Adagrad(0.2, initial_accumulator_value=1.0,
                global_clipnorm=10) and trained with train_on_batch's step (model.train_function). XLA on and
                off (--keras_xla); the best is the peer's number.
  * keras_proj: the same, but each LSTM layer is keras.layers.RNN over a 10-line projected-LSTM cell
                (benchmarks.elmo_lstm.ProjectedLSTMCell: the TF1 cell's maths, clips included): the same model
                and FLOPs as the zoo's, in the stock Keras RNN loop.
Precisions: float32 and bfloat16 (Keras `mixed_bfloat16`: bf16 compute, float32 variables; torch.autocast).

Sizes (--sizes): "small" is the zoo's `small` preset (allennlp's released Small: 2,048-channel char CNN, 1 highway,
1,024 cells projected to 128, 8,192 negatives), "original" the paper's model (filters (1,32)...(7,1024) = 2,048
channels, 2 highway, 4,096 cells projected to 512, 8,192 negatives). Both use a V = 100,000-word vocabulary (the
paper's 793,471-word softmax table, Adagrad slots and dense gradients of the peers would not fit several
processes into this machine's 24 GiB; the sampled softmax's cost does not depend on V, the V x P update does) and
T = 20; the batch is 32 (small) and 16 (original), not the paper's 128, so that the settings of one group fit in
memory side by side and one step takes seconds on 2 cores (--batch overrides both).

Left out by default (--skip; the reasons are in SKIP_REASONS and the JSON): keras_lstm at the original size, in
both precisions (stock LSTM(4096) without an in-loop projection: 68.6 s per step and 16.7 GB in float32, more than
the machine's 23 GB in bfloat16). XLA for the Keras peers is tried on and off at the small size (--keras_xla) and
only off at the original size (--original_keras_xla): there, keras_proj with XLA took 13.4 s per step against
3.2 s without, and 10.2 GB, in a trial run (bfloat16, B = 16, one round, 2026-12-08).

Method: every setting runs in its own Python process, started once and kept alive ("persistent workers"), so the
expensive part (imports, building, tracing, XLA compiling, first steps) is paid once per setting, not per round.
The parent then alternates the settings of one (size, precision) group round by round (A B C D A B C D ...; the
groups run one after the other so that at most one group's processes hold memory at once), each round timing
--steps steps of one setting while the others sleep; the reported number is the MEDIAN round. A warm-up of
--warmup steps (tracing, compilation, allocator) is never timed. The machine's matmul peak (tf.matmul 4096^2,
fastest single call, float32 and bfloat16) is measured in its own process at the start. The load average (uptime)
is recorded at the start and the end of the run: other jobs share these cores.

Model FLOPs (one formula for every contender, the zoo's model; keras_lstm's bigger recurrence is not credited):
per token 2 * [sum_w (C - w + 1) w E n  +  H 2 F^2  +  F P  +  2 L (2 * 4U P + U P)  +  2 (S + 1) P] forward, x 3
for training (tokens = B * T; C 50 characters, E 16, F channels, H highways).

Recorded run (about 20 minutes on 2 otherwise idle cores; longer when other jobs share them):
  PYTHONPATH=. python -m benchmarks.elmo_pretrain_throughput --sizes=small,original --rounds=3 \\
      --json_out=benchmarks/results/elmo_pretrain_throughput_<date>_<machine>.json
Smoke test (tests/test_benchmarks.py: zoo, torch, keras_lstm with XLA off in float32, 1 round, --threads=1):
  PYTHONPATH=. python -m benchmarks.elmo_pretrain_throughput --tiny --contenders=zoo,torch,keras_lstm \\
      --precisions=float32 --keras_xla=off
"""

import json
import math
import os
import queue
import statistics
import subprocess
import sys
import threading
import time

from benchmarks import common

MODULE = "benchmarks.elmo_pretrain_throughput"
CONTENDERS = ("zoo", "torch", "keras_lstm", "keras_proj")
T = 20  # unroll steps (bilm-tf's unroll_steps)
VOCAB = 100_000
PAPER_FILTERS = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))
COMMON = dict(chars=50, char_dim=16, num_characters=262, layers=2, samples=8192, vocab=VOCAB, seq=T, dropout=0.1,
              clip=3.0)
SIZES = {
    "small": dict(filters=PAPER_FILTERS, highway=1, projection=128, cells=1024, batch=32),
    "original": dict(filters=PAPER_FILTERS, highway=2, projection=512, cells=4096, batch=16),
}
TINY = dict(filters=((1, 4), (2, 8)), highway=1, projection=16, cells=32, batch=2, chars=50, char_dim=4,
            num_characters=262, layers=2, samples=20, vocab=200, seq=6, dropout=0.1, clip=3.0)
RECIPE = dict(learning_rate=0.2, initial_accumulator=1.0, epsilon=1e-7, clipnorm=10.0)  # bilm-tf; zoo.optim.adagrad
READY = "WORKER_READY "
# Settings left out by default, and why (measured on this 2-core, 24 GiB machine).
SKIP = "original/keras_lstm/float32,original/keras_lstm/bfloat16"
SKIP_REASONS = {
    "original/keras_lstm/float32": "stock keras.layers.LSTM(4096) + Dense(512) (a recurrence over 4,096-wide h: "
                                   "302M LSTM weights instead of ELMo's 76M) took 68.6 s per step (21 s of CPU) "
                                   "at B = 16 with XLA off and peaked at 16.7 GB RSS (2026-12-08, load average ~6)",
    "original/keras_lstm/bfloat16": "the same under mixed_bfloat16 also casts the [4096, 16384] recurrent kernel to "
                                    "bf16 at every step and keeps each cast for the backward pass: the process grew "
                                    "to 23 GB (all of the machine's memory) with XLA off; XLA on failed with "
                                    "ResourceExhaustedError",
}


def model_flops_per_step(d):
    """Training FLOPs of one step by the formula in the module docstring (3 x forward); the same for all."""
    C, E, P, U, L, S = d["chars"], d["char_dim"], d["projection"], d["cells"], d["layers"], d["samples"]
    F = sum(n for _, n in d["filters"])
    cnn = sum((C - w + 1) * w * E * n for w, n in d["filters"])
    per_token = cnn + d["highway"] * 2 * F * F + (F * P if F != P else 0) + 2 * L * (2 * 4 * U * P + U * P)
    tokens, predictions = d["batch"] * d["seq"], d["batch"] * (d["seq"] - 1)
    return 3 * 2 * (per_token * tokens + 2 * (S + 1) * P * predictions)


def synthetic_batch(d, seed=0):
    """numpy {"char_ids" int32 [B, T, C], "token_ids" int32 [B, T], "padding_mask" int32 [B, T]}: `<S>` w .. w `</S>`
    sentences filling all T positions, words drawn log-uniformly (as a count-sorted vocabulary's are), each word
    id spelled as a fixed 3-12 letter string in bilm-tf's character ids (zoo.elmo.chars' layout, without TF)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    B, L, V, C = d["batch"], d["seq"], d["vocab"], d["chars"]
    u = rng.random((B, L))
    ids = np.clip(np.floor(np.exp(u * np.log(V + 1.0))).astype(np.int64) - 1, 3, V - 1)  # clear of <S> </S> <UNK>
    ids[:, 0], ids[:, -1] = 0, 1  # <S>, </S> (the zoo's word vocabulary puts them first)
    bow, eow, pad, bos, eos = 258, 259, 260, 256, 257
    chars = np.full((B, L, C), pad, np.int64)
    chars[:, :, 0] = bow
    for b in range(B):
        for t in range(L):
            k = int(ids[b, t])
            if k < 2:
                word = [bos if k == 0 else eos]
            else:
                word = [97 + (k * 7 + 3 * i + i * i) % 26 for i in range(3 + k % 10)]
            chars[b, t, 1:1 + len(word)] = word
            chars[b, t, 1 + len(word)] = eow
    return {"char_ids": (chars + 1).astype(np.int32), "token_ids": ids.astype(np.int32),
            "padding_mask": np.ones((B, L), np.int32)}


# ---- the zoo ------------------------------------------------------------------------------------------------
def zoo_config(d):
    """The zoo's ElmoConfig of a size."""
    from zoo.elmo.config import ElmoConfig

    return ElmoConfig(vocabulary_size=d["vocab"], char_embedding_dim=d["char_dim"], filters=d["filters"],
                      num_highway=d["highway"], projection_dim=d["projection"], lstm_dim=d["cells"],
                      num_layers=d["layers"], cell_clip=d["clip"], projection_clip=d["clip"], dropout=d["dropout"],
                      max_characters_per_token=d["chars"], num_characters=d["num_characters"],
                      max_sequence_length=d["seq"], num_samples=d["samples"])


def _zoo(d, batch, precision, xla):
    """The family's pretrainer + its optimizer recipe + zoo.training.loop's step, as trainers.pretrain builds them.
    (benchmarks.common.zoo_pretraining_step builds the transformer families' Configs from heads/hidden/
    intermediate, which ElmoConfig does not have; this is the same code path for ELMo.)"""
    import keras
    import tensorflow as tf

    import zoo
    from zoo import optim
    from zoo.training import loop

    common.set_keras_precision(precision)
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    family = zoo.family("elmo")
    with strategy.scope():
        model = family.pretrainer(zoo_config(d))
        optimizer = optim.make_optimizer(family.optimizer, learning_rate=RECIPE["learning_rate"], warmup_steps=0,
                                         total_steps=1, weight_decay=0.0, variables=model.trainable_variables)
        optimizer.build(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    iterator = iter(strategy.distribute_datasets_from_function(lambda ctx: dataset))
    run_steps = loop._make_train_function(model, optimizer, strategy, xla)

    def run(n):
        return float(run_steps(iterator, tf.constant(n))["loss"])

    extra = {"compute_dtype": model.backbone.token_encoder.compute_dtype,
             "optimizer": f"{type(optimizer).__name__} (zoo.optim '{family.optimizer}' recipe)"}
    return run, model.count_params(), extra


# ---- PyTorch --------------------------------------------------------------------------------------------------
def _torch_model(d):
    import torch
    from torch import nn

    class Highway(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.transform, self.gate = nn.Linear(dim, dim), nn.Linear(dim, dim)
            nn.init.constant_(self.gate.bias, -2.0)

        def forward(self, x):
            g = torch.sigmoid(self.gate(x))
            return g * torch.relu(self.transform(x)) + (1.0 - g) * x

    class TorchElmo(nn.Module):
        """The biLM + sampled softmax (see the module docstring); forward(char_ids, token_ids) -> loss."""

        def __init__(self):
            super().__init__()
            P, U, F = d["projection"], d["cells"], sum(n for _, n in d["filters"])
            self.char_embedding = nn.Embedding(d["num_characters"], d["char_dim"])
            self.convs = nn.ModuleList(nn.Conv1d(d["char_dim"], n, w) for w, n in d["filters"])
            self.highways = nn.ModuleList(Highway(F) for _ in range(d["highway"]))
            self.projection = nn.Linear(F, P) if F != P else nn.Identity()
            self.lstms = nn.ModuleDict({  # ModuleDict keys must not shadow Module attributes ("forward")
                direction: nn.ModuleList(nn.LSTM(P, U, proj_size=P, batch_first=True) for _ in range(d["layers"]))
                for direction in ("fw", "bw")})
            self.dropout = nn.Dropout(d["dropout"])
            self.softmax_weights = nn.Parameter(torch.randn(d["vocab"], P) / P ** 0.5)
            self.softmax_bias = nn.Parameter(torch.zeros(d["vocab"]))
            self.log_v1 = math.log(d["vocab"] + 1.0)

        def encode(self, char_ids):
            B, L, C = char_ids.shape
            chars = self.char_embedding(char_ids.reshape(B * L, C)).transpose(1, 2)  # [N, E, C]
            x = torch.cat([torch.relu(conv(chars).amax(dim=2)) for conv in self.convs], dim=1)  # [N, F]
            for highway in self.highways:
                x = highway(x)
            return self.projection(x).reshape(B, L, -1)

        def direction(self, name, x):
            for i, lstm in enumerate(self.lstms[name]):
                layer_input = self.dropout(x)
                out, _ = lstm(layer_input)
                x = out + layer_input if i > 0 else out
            return self.dropout(x)

        def sampled_loss(self, hidden, labels):
            """hidden [N, P], labels [N] -> mean sampled-softmax CE (zoo.layers.sampled_softmax's maths)."""
            S, V = d["samples"], d["vocab"]
            u = torch.rand(S)
            sampled = (torch.floor(torch.exp(u * self.log_v1)).long() - 1).clamp(0, V - 1)
            q = lambda c: torch.log1p(1.0 / (c.float() + 1.0)) / self.log_v1  # noqa: E731
            true_w, sampled_w = self.softmax_weights[labels], self.softmax_weights[sampled]
            true_logits = (hidden * true_w).sum(-1).float() + self.softmax_bias[labels] - torch.log(S * q(labels))
            sampled_logits = (hidden @ sampled_w.t()).float() + self.softmax_bias[sampled] - torch.log(S * q(sampled))
            sampled_logits = sampled_logits.masked_fill(labels[:, None] == sampled[None, :], float("-inf"))
            logits = torch.cat([true_logits[:, None], sampled_logits], dim=1)
            return nn.functional.cross_entropy(logits, torch.zeros_like(labels))

        def forward(self, char_ids, token_ids):
            x = self.encode(char_ids)
            forward = self.direction("fw", x)[:, :-1]
            backward = torch.flip(self.direction("bw", torch.flip(x, [1])), [1])[:, 1:]
            P = forward.shape[-1]
            loss = 0.5 * (self.sampled_loss(forward.reshape(-1, P), token_ids[:, 1:].reshape(-1))
                          + self.sampled_loss(backward.reshape(-1, P), token_ids[:, :-1].reshape(-1)))
            return loss

    return TorchElmo()


def _torch(d, batch, precision, xla):
    import contextlib

    import torch

    torch.manual_seed(0)
    model = _torch_model(d).train()
    params = list(model.parameters())
    optimizer = torch.optim.Adagrad(params, lr=RECIPE["learning_rate"], eps=RECIPE["epsilon"],
                                    initial_accumulator_value=RECIPE["initial_accumulator"])
    char_ids, token_ids = (torch.from_numpy(batch[k].astype("int64")) for k in ("char_ids", "token_ids"))
    bf16 = precision == "bfloat16"
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    scale = float(d["seq"] - 1)

    def run(n):
        for _ in range(n):
            with autocast():
                loss = model(char_ids, token_ids)
            (loss * scale).backward()
            torch.nn.utils.clip_grad_norm_(params, RECIPE["clipnorm"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    extra = {"compute_dtype": "bfloat16 (autocast)" if precision == "bfloat16" else "float32",
             "torch_threads": torch.get_num_threads()}
    return run, sum(p.numel() for p in params), extra


# ---- stock Keras ---------------------------------------------------------------------------------------------
def _keras_model(d, recurrence):
    import keras
    import tensorflow as tf
    from keras import layers, ops

    from benchmarks.elmo_lstm import ProjectedLSTMCell

    P, U, F = d["projection"], d["cells"], sum(n for _, n in d["filters"])
    V, S = d["vocab"], d["samples"]

    class SampledSoftmaxLoss(layers.Layer):
        """The shared [V, P] table and the sampled softmax (the zoo's maths in ops; Keras has no such layer)."""

        def build(self, input_shape=None):
            self.kernel = self.add_weight(shape=(V, P), initializer=keras.initializers.RandomNormal(stddev=P ** -0.5),
                                          name="softmax_weights")
            self.bias = self.add_weight(shape=(V,), initializer="zeros", name="softmax_bias")
            self.seed = keras.random.SeedGenerator(0)

        def call(self, hidden, labels):
            # A float32 layer (so the [V, P] table is not cast to bf16 whole at every read) whose matmuls run in
            # the global policy's compute dtype, as the zoo's.
            hidden = ops.cast(hidden, keras.mixed_precision.global_policy().compute_dtype)
            log_v1 = math.log(V + 1.0)
            u = keras.random.uniform((S,), seed=self.seed)
            sampled = ops.clip(ops.cast(ops.floor(ops.exp(u * log_v1)), "int32") - 1, 0, V - 1)
            q = lambda c: ops.log1p(1.0 / (ops.cast(c, "float32") + 1.0)) / log_v1  # noqa: E731
            true_w = ops.cast(ops.take(self.kernel, labels, axis=0), hidden.dtype)
            sampled_w = ops.cast(ops.take(self.kernel, sampled, axis=0), hidden.dtype)
            true_logits = (ops.cast(ops.sum(hidden * true_w, axis=-1), "float32") + ops.take(self.bias, labels)
                           - ops.log(S * q(labels)))
            sampled_logits = (ops.cast(ops.matmul(hidden, ops.transpose(sampled_w)), "float32")
                              + ops.take(self.bias, sampled) - ops.log(S * q(sampled)))
            hits = ops.equal(labels[:, None], sampled[None, :])
            sampled_logits = ops.where(hits, -1e30, sampled_logits)
            logits = ops.concatenate([true_logits[:, None], sampled_logits], axis=1)
            return keras.losses.sparse_categorical_crossentropy(ops.zeros_like(labels), logits, from_logits=True)

    class KerasElmo(keras.Model):
        def __init__(self):
            super().__init__()
            self.char_embedding = layers.Embedding(d["num_characters"], d["char_dim"])
            self.convs = [layers.Conv1D(n, w, activation="relu") for w, n in d["filters"]]
            self.pool = layers.GlobalMaxPooling1D()
            self.highway_transform = [layers.Dense(F, activation="relu") for _ in range(d["highway"])]
            gate_bias = keras.initializers.Constant(-2.0)
            self.highway_gate = [layers.Dense(F, activation="sigmoid", bias_initializer=gate_bias)
                                 for _ in range(d["highway"])]
            self.projection = layers.Dense(P) if F != P else None
            self.rnns = {}
            for direction in ("forward", "backward"):
                for i in range(d["layers"]):
                    if recurrence == "keras_lstm":
                        lstm = [layers.LSTM(U, return_sequences=True), layers.Dense(P)]
                    else:
                        lstm = [layers.RNN(ProjectedLSTMCell(U, P, clip=d["clip"]), return_sequences=True)]
                    self.rnns[(direction, i)] = lstm
                    for j, layer in enumerate(lstm):
                        setattr(self, f"{direction}_{i}_{j}", layer)
            self.dropout = layers.Dropout(d["dropout"])
            self.softmax = SampledSoftmaxLoss(dtype="float32")

        def direction(self, name, x, training):
            for i in range(d["layers"]):
                layer_input = self.dropout(x, training=training)
                out = layer_input
                for layer in self.rnns[(name, i)]:
                    out = layer(out)
                x = out + layer_input if i > 0 else out
            return self.dropout(x, training=training)

        def call(self, inputs, training=False):
            char_ids, token_ids = inputs["char_ids"], inputs["token_ids"]
            B, L, C = char_ids.shape
            chars = self.char_embedding(ops.reshape(char_ids, (B * L, C)))
            x = ops.concatenate([self.pool(conv(chars)) for conv in self.convs], axis=-1)
            for transform, gate in zip(self.highway_transform, self.highway_gate):
                g = gate(x)
                x = g * transform(x) + (1.0 - g) * x
            if self.projection is not None:
                x = self.projection(x)
            x = ops.reshape(x, (B, L, P))
            forward = self.direction("forward", x, training)[:, :-1]
            backward = ops.flip(self.direction("backward", ops.flip(x, axis=1), training), axis=1)[:, 1:]
            losses = [self.softmax(ops.reshape(h, (-1, P)), ops.reshape(y, (-1,)))
                      for h, y in ((forward, token_ids[:, 1:]), (backward, token_ids[:, :-1]))]
            return 0.5 * (ops.mean(losses[0]) + ops.mean(losses[1]))

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            # The model's output is the loss; its gradient is scaled by T - 1 as the others' (value unchanged).
            scale = float(d["seq"] - 1)
            return y_pred * scale - tf.stop_gradient(y_pred * (scale - 1.0))

    return KerasElmo()


def _keras(d, batch, precision, xla, recurrence):
    import keras
    import tensorflow as tf

    common.set_keras_precision(precision)
    keras.utils.set_random_seed(0)
    model = _keras_model(d, recurrence)
    features = {k: tf.constant(batch[k]) for k in ("char_ids", "token_ids")}
    model(features)  # builds the weights
    model.compile(optimizer=keras.optimizers.Adagrad(RECIPE["learning_rate"],
                                                     initial_accumulator_value=RECIPE["initial_accumulator"],
                                                     epsilon=RECIPE["epsilon"], global_clipnorm=RECIPE["clipnorm"]),
                  jit_compile=xla)
    dataset = tf.data.Dataset.from_tensors((features,)).repeat()
    iterator = iter(dataset)
    model.make_train_function()

    def run(n):
        for _ in range(n):
            logs = model.train_function(iterator)
        return float(logs["loss"])  # compute_loss's value is the loss itself (scale L - (scale - 1) L)

    return run, model.count_params(), {"compute_dtype": model.char_embedding.compute_dtype}


BUILDERS = {"zoo": _zoo, "torch": _torch,
            "keras_lstm": lambda *a: _keras(*a, "keras_lstm"), "keras_proj": lambda *a: _keras(*a, "keras_proj")}


# ---- persistent workers -------------------------------------------------------------------------------------
def serve(spec):
    """The worker process: builds the setting, runs the warm-up, prints READY, then times `steps N` requests read
    from stdin (one result line each) until `quit` (or end of input), and prints its peak RSS."""
    if spec["contender"] == "peak":  # one-shot: the machine's matmul peak
        common.emit(common.matmul_peak(spec["matmul_n"], seconds=spec["matmul_seconds"], fastest_call=True))
        return
    d = spec["dims"]
    batch = synthetic_batch(d)
    (run, params, extra), build_s = common.timed(BUILDERS[spec["contender"]], d, batch, spec["precision"],
                                                 spec["xla"] == "on")
    build_peak = common.peak_rss_mb()
    # The warm-up's last step is timed on its own: a steady step, which the XLA trials and --round_seconds use.
    _, first_s = common.timed(run, spec["warmup"] - 1) if spec["warmup"] > 1 else (None, 0.0)
    loss, warm_step_s = common.timed(run, 1)
    print(READY + json.dumps({"build_s": build_s, "warmup_s": first_s + warm_step_s, "warm_step_ms": 1000 * warm_step_s,
                              "warmup_loss": loss, "params": int(params), "build_peak_rss_mb": build_peak, **extra}),
          flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        steps = int(command[1])
        cpu = time.process_time()
        loss, seconds = common.timed(run, steps)
        print(common.RESULT_PREFIX + json.dumps({"seconds": seconds, "cpu_seconds": time.process_time() - cpu,
                                                 "steps": steps, "loss": loss}), flush=True)
    print(common.RESULT_PREFIX + json.dumps({"peak_rss_mb": common.peak_rss_mb()}), flush=True)


class Worker:
    """One persistent worker process (see `serve`)."""

    def __init__(self, spec, threads, log):
        self.spec = spec
        command = [sys.executable, "-m", MODULE, "--worker=" + json.dumps(spec)]
        self.log = log
        self.proc = subprocess.Popen(command, cwd=common.REPO, env=common.worker_env(threads), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # end of output

    def _read(self, prefix, timeout):
        """The next stdout line that starts with `prefix`, parsed (other lines are passed on to the log)."""
        deadline = time.time() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(1.0, deadline - time.time()))
            except queue.Empty:
                self.proc.kill()
                raise common.WorkerError(f"worker {label(self.spec)} timed out after {timeout}s") from None
            if line is None:
                self.proc.wait()
                self.log.flush()
                raise common.WorkerError(f"worker {label(self.spec)} exited with {self.proc.returncode}; its stderr "
                                         f"is in {self.log.name}")
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])
            self.log.write(line)

    def ready(self, timeout):
        return self._read(READY, timeout)

    def time_steps(self, steps, timeout):
        self.proc.stdin.write(f"steps {steps}\n")
        self.proc.stdin.flush()
        return self._read(common.RESULT_PREFIX, timeout)

    def close(self, timeout):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            out = self._read(common.RESULT_PREFIX, timeout)
        finally:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return out


def label(spec):
    return f"{spec['size']}/{spec['contender']}/{spec['precision']}/xla={spec['xla']}"


def _start(specs, args, log):
    """Starts `specs` at once (each only while the machine has --min_available_gb of memory: other jobs share it)
    and waits until they are warm. Returns [(worker or None, row)]; a row that failed has `error`."""
    started = []
    for spec in specs:
        row = {**spec, "rounds": [], "cpu_rounds": [], "loss_rounds": [], "steps_per_round": []}
        available = available_gb()
        if available < args.min_available_gb:
            row["error"] = f"not started: {available:.1f} GB of memory available (--min_available_gb)"
            started.append((None, row))
        else:
            started.append((Worker(spec, args.threads, log), row))
    for worker, row in started:
        if worker is None:
            continue
        try:
            row.update(worker.ready(args.timeout))
            print(f"  ready {label(row)}: build {row['build_s']:.0f} s, warm-up {row['warmup_s']:.0f} s (last step "
                  f"{row['warm_step_ms']:,.0f} ms), {available_gb():.1f} GB available", file=sys.stderr, flush=True)
        except common.WorkerError as e:
            row["error"] = str(e)
    for _, row in started:
        if "error" in row:
            print(f"  FAILED {label(row)}: {row['error']}", file=sys.stderr, flush=True)
    return started


def _close(worker, row, args):
    try:
        if worker is not None and worker.proc.poll() is None:
            row.update(worker.close(args.timeout))
    except common.WorkerError as e:
        row.setdefault("error", str(e))


def _time(worker, row, steps, args):
    """Times `steps` steps of a warm worker: its result line (seconds, cpu_seconds, steps, loss), or None with the
    row's `error` set."""
    time.sleep(args.pause)  # lets the previous worker's threads go idle
    try:
        out = worker.time_steps(steps, args.timeout)
    except common.WorkerError as e:
        row["error"] = str(e)
        return None
    return out


def run_group(specs, args, log):
    """One (size, precision) group: the Keras peers' XLA trials, then every survivor alternated over --rounds.

    A Keras peer with several XLA settings starts them together, times one step of each (alternated, after the
    warm-up) and keeps the faster (by the smaller of that step and the warm-up's last step); the others are closed
    before the next workers start, so that the group's memory stays that of one process per contender. The
    remaining settings start --start_at_once at a time (their builds are CPU-bound; the machine has 2 cores).

    Returns:
      (rows, trials): a row per spec with its READY fields and, for the alternated ones, `round_step_ms`,
      `round_tokens_per_s`, `round_cpu_ms` (one per round), step_ms / tokens_per_s / cpu_ms of the median round,
      peak_rss_mb; a worker that failed has `error`, a trial's loser `xla_trial_lost`. trials: one dict per trial.
    """
    alive, rows, trials = [], [], []
    by_contender = {}
    for spec in specs:
        by_contender.setdefault(spec["contender"], []).append(spec)
    trial_sets = [group for group in by_contender.values() if len(group) > 1]
    singles = [group[0] for group in by_contender.values() if len(group) == 1]
    for group in trial_sets:
        started = _start(group, args, log)
        rows += [row for _, row in started]
        timed_steps = {id(row): [row["warm_step_ms"]] for _, row in started if "error" not in row}
        for worker, row in started:
            if "error" not in row:
                out = _time(worker, row, 1, args)
                if out:
                    timed_steps[id(row)].append(1000 * out["seconds"])
        ok = [(w, r) for w, r in started if "error" not in r]
        if ok:
            winner = min(ok, key=lambda wr: min(timed_steps[id(wr[1])]))
            trial = {"size": winner[1]["size"], "contender": winner[1]["contender"],
                     "precision": winner[1]["precision"], "kept": winner[1]["xla"],
                     "step_ms": {r["xla"]: timed_steps[id(r)] for _, r in ok}}
            trials.append(trial)
            print(f"  XLA trial {label(winner[1])}: " + ", ".join(
                f"xla={x} {min(v):,.0f} ms" for x, v in trial["step_ms"].items()) + f" -> keeps xla={trial['kept']}",
                file=sys.stderr, flush=True)
            for worker, row in ok:
                if row is winner[1]:
                    alive.append((worker, row))
                else:
                    row["xla_trial_lost"] = True
                    row["trial_step_ms"] = timed_steps[id(row)]
                    _close(worker, row, args)
        for worker, row in started:
            if "error" in row:
                _close(worker, row, args)
    for wave in range(0, len(singles), args.start_at_once):
        started = _start(singles[wave:wave + args.start_at_once], args, log)
        rows += [row for _, row in started]
        alive += [(w, r) for w, r in started if "error" not in r]
    order = {id(r): i for i, r in enumerate(rows)}
    alive.sort(key=lambda wr: order[id(wr[1])])
    for r in range(args.rounds):
        for worker, row in alive:
            if "error" in row:
                continue
            # --steps at most, fewer for a slow setting: about --round_seconds per round, at least one step.
            steps = max(1, min(args.steps, round(args.round_seconds / (row["warm_step_ms"] / 1000))))
            out = _time(worker, row, steps, args)
            if out is None:
                continue
            row["rounds"].append(out["seconds"] / out["steps"])
            row["cpu_rounds"].append(out["cpu_seconds"] / out["steps"])
            row["loss_rounds"].append(out["loss"])
            row["steps_per_round"].append(out["steps"])
            print(f"  [{r + 1}/{args.rounds}] {label(row)}: {1000 * out['seconds'] / out['steps']:,.0f} ms/step "
                  f"({out['steps']} steps)", file=sys.stderr, flush=True)
    for worker, row in alive:
        _close(worker, row, args)
    for row in rows:
        d = row["dims"]
        tokens = d["batch"] * d["seq"]
        if row["rounds"]:
            row["round_step_ms"] = [1000 * s for s in row["rounds"]]
            row["round_tokens_per_s"] = [tokens / s for s in row["rounds"]]
            row["step_ms"] = statistics.median(row["round_step_ms"])
            row["tokens_per_s"] = tokens / (row["step_ms"] / 1000)
            row["round_cpu_ms"] = [1000 * s for s in row["cpu_rounds"]]
            row["cpu_ms"] = statistics.median(row["round_cpu_ms"])
            row["loss"] = row["loss_rounds"][-1]
        del row["rounds"], row["cpu_rounds"]
    return rows, trials


def available_gb():
    """MemAvailable of /proc/meminfo in GB (inf where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("inf")


def load():
    """`uptime`'s line and os.getloadavg() (1, 5, 15 minutes)."""
    try:
        line = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        line = ""
    return {"uptime": line, "loadavg": list(os.getloadavg())}


# ---- parent ------------------------------------------------------------------------------------------------
def _groups(args):
    """[(size, precision, [specs])]: every setting of a size and precision in one group."""
    names = common.csv_list(args.sizes, SIZES, "sizes")
    sizes = {"tiny": dict(TINY)} if args.tiny else {name: {**COMMON, **SIZES[name]} for name in names}
    for dims in sizes.values():
        if args.batch:
            dims["batch"] = args.batch
        if args.vocab and not args.tiny:
            dims["vocab"] = args.vocab
        dims["filters"] = [list(f) for f in dims["filters"]]
    contenders = common.csv_list(args.contenders, CONTENDERS, "contenders")
    skip = {tuple(item.split("/")) for item in args.skip.split(",") if item}
    groups, skipped = [], []
    for size, dims in sizes.items():
        keras_xla = args.original_keras_xla if size == "original" else args.keras_xla
        for precision in common.csv_list(args.precisions, common.PRECISIONS, "precisions"):
            specs = []
            for contender in contenders:
                if (size, contender, precision) in skip:
                    skipped.append(f"{size}/{contender}/{precision}")
                    continue
                xlas = {"zoo": args.zoo_xla, "torch": "n/a"}.get(contender, keras_xla)
                for xla in common.csv_list(xlas, ("on", "off", "n/a"), "xla"):
                    specs.append({"size": size, "contender": contender, "precision": precision, "xla": xla,
                                  "dims": dims, "warmup": args.warmup})
            groups.append((size, precision, specs))
    return groups, skipped


def _setting(row):
    return f"{row['precision']}/xla={row['xla']}"


def summarize(rows, peaks):
    """MFU per row; per size and precision, the zoo's best setting over each peer's best and over the best peer."""
    for row in rows:
        if "tokens_per_s" not in row:
            continue
        flops = model_flops_per_step(row["dims"])
        row["model_tflops_per_step"] = flops / 1e12
        achieved = flops / (row["step_ms"] / 1000.0)
        row["mfu_pct"] = 100.0 * achieved / (peaks[row["precision"]] * 1e12)
        row["mfu_bf16_peak_pct"] = 100.0 * achieved / (peaks["bfloat16"] * 1e12)
    ratios = []
    done = [r for r in rows if "tokens_per_s" in r]
    for size in dict.fromkeys(r["size"] for r in done):
        for precision in dict.fromkeys(r["precision"] for r in done):
            top = {}
            for row in done:
                if (row["size"], row["precision"]) == (size, precision):
                    if row["tokens_per_s"] > top.get(row["contender"], {}).get("tokens_per_s", 0.0):
                        top[row["contender"]] = row
            if "zoo" not in top:
                continue
            peers = [c for c in top if c != "zoo"]
            for peer in peers + (["best_peer"] if peers else []):
                best_peer = max((top[c] for c in peers), key=lambda r: r["tokens_per_s"])
                other = best_peer if peer == "best_peer" else top[peer]
                ratios.append({"size": size, "precision": precision, "peer": peer, "peer_contender": other["contender"],
                               "ratio": top["zoo"]["tokens_per_s"] / other["tokens_per_s"],
                               "zoo_setting": _setting(top["zoo"]), "peer_setting": _setting(other)})
    return ratios


COLUMNS = [("size", "size", ""), ("contender", "contender", ""), ("precision", "precision", ""), ("xla", "xla", ""),
           ("tokens/s", "tokens_per_s", ",.0f"),
           ("rounds", lambda r: " ".join(f"{v:,.0f}" for v in r.get("round_tokens_per_s", [])), ""),
           ("step ms", "step_ms", ",.0f"), ("CPU ms", "cpu_ms", ",.0f"), ("MFU %", "mfu_pct", ".2f"),
           ("MFU % bf16 peak", "mfu_bf16_peak_pct", ".2f"),
           ("build s", "build_s", ".0f"), ("warm-up s", "warmup_s", ".0f"), ("peak RSS MB", "peak_rss_mb", ",.0f"),
           ("params", "params", ",d"), ("loss", "loss", ".3f")]


def report(rows, peaks, ratios, goal, trials=()):
    print("matmul peak (tf.matmul 4096^2, fastest call): "
          + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in peaks.items()))
    print(format_rows(rows))
    for t in trials:
        print(f"XLA trial {t['size']}/{t['contender']}/{t['precision']} (ms/step, warm-up's last and one timed): "
              + "; ".join(f"xla={x} " + " ".join(f"{v:,.0f}" for v in steps) for x, steps in t["step_ms"].items())
              + f" -> xla={t['kept']} alternated")
    for row in rows:
        if "error" in row:
            print(f"FAILED {label(row)}: {row['error'][:300]}")
    for r in ratios:
        name = f"{r['peer']} ({r['peer_contender']})" if r["peer"] == "best_peer" else r["peer"]
        print(f"{r['size']} {r['precision']}: zoo best ({r['zoo_setting']}) / {name} best ({r['peer_setting']}) "
              f"= {r['ratio']:.2f}x")
    best = [r for r in ratios if r["peer"] == "best_peer"]
    if best:
        met = all(r["ratio"] >= goal for r in best)
        print(f"goal zoo >= {goal}x the best peer at every size and precision: {'met' if met else 'NOT met'} "
              f"(lowest {min(r['ratio'] for r in best):.2f}x)")


def format_rows(rows):
    return common.format_table([r for r in rows if "tokens_per_s" in r], COLUMNS)


def main(argv=None):
    parser = common.base_parser(__doc__)
    parser.set_defaults(timeout=1200)
    parser.add_argument("--sizes", default="small,original",
                        help="Comma list of small, original (ignored with --tiny).")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--precisions", default=",".join(common.PRECISIONS))
    parser.add_argument("--zoo_xla", default="off", help="XLA settings of the zoo's step (trainers.pretrain's "
                                                          "--jit_compile; off is its default).")
    parser.add_argument("--keras_xla", default="off,on", help="jit_compile settings of the Keras peers (but at "
                                                              "the original size).")
    parser.add_argument("--original_keras_xla", default="off",
                        help="jit_compile settings of the Keras peers at the original size (see the module docstring "
                             "for why XLA is off there by default).")
    parser.add_argument("--skip", default=SKIP, help="Comma list of size/contender/precision settings not run (see "
                                                     "the module docstring).")
    parser.set_defaults(repeats=None)
    parser.add_argument("--rounds", type=int, default=None, help="Alternated timed rounds (default 3; 1 with --tiny); "
                                                                 "the median round is reported. --repeats is the "
                                                                 "same (the other benchmarks' name).")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per round at most (default 2; 1 with "
                                                                "--tiny).")
    parser.add_argument("--round_seconds", type=float, default=4.0,
                        help="Steps per round are about this long for a setting (at least 1, at most --steps): the "
                             "slow peers get fewer steps per round, not fewer rounds.")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed steps first (default 2; 1 with --tiny).")
    parser.add_argument("--batch", type=int, default=0, help="Sentences per batch at every size (default: the size's).")
    parser.add_argument("--vocab", type=int, default=0, help=f"Softmax vocabulary (default {VOCAB:,}).")
    parser.add_argument("--start_at_once", type=int, default=2, help="Workers started (built, warmed up) at once.")
    parser.add_argument("--min_available_gb", type=float, default=3.0,
                        help="A worker is not started while the machine has less memory available (it is reported "
                             "as failed; the others run).")
    parser.add_argument("--pause", type=float, default=0.5, help="Seconds of rest before each timed round.")
    parser.add_argument("--goal", type=float, default=1.5, help="The issue's goal: zoo / best peer.")
    args = parser.parse_args(argv)
    if args.worker:
        serve(json.loads(args.worker))
        return 0
    args.rounds = args.rounds or args.repeats or (1 if args.tiny else 3)
    args.steps = args.steps or (1 if args.tiny else 2)
    args.warmup = max(1, args.warmup or (1 if args.tiny else 2))  # >= 1: tracing/compilation is never timed
    command = common.command_line(MODULE, argv)
    if os.environ.get("PYTHONPATH") == ".":
        command = "PYTHONPATH=. " + command
    meta = common.run_metadata(command)
    meta["load_start"] = load()
    start = time.time()
    peak_spec = {"contender": "peak", "matmul_n": 256 if args.tiny else 4096,
                 "matmul_seconds": 0.3 if args.tiny else 3.0}
    peak = {}
    measure_peak = lambda: peak.update(common.run_worker(MODULE, peak_spec, args.timeout, args.threads))  # noqa: E731
    # The peak is measured alone before the workers start, but for --tiny (meaningless numbers) it overlaps them.
    peak_thread = threading.Thread(target=measure_peak)
    peak_thread.start()
    if not args.tiny:
        peak_thread.join()
    rows = []
    log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"elmo_pretrain_throughput_{os.getpid()}.log")
    groups, skipped = _groups(args)
    trials = []
    with open(log_path, "w") as log:
        for size, precision, specs in groups:
            print(f"{size} {precision}: {len(specs)} settings", file=sys.stderr, flush=True)
            group_rows, group_trials = run_group(specs, args, log)
            rows += group_rows
            trials += group_trials
    peak_thread.join()
    if "peak_tflops" not in peak:
        raise common.WorkerError("the matmul-peak worker failed (its traceback is above)")
    peaks = peak["peak_tflops"]
    meta["load_end"] = load()
    meta["wall_s"] = time.time() - start
    ratios = summarize(rows, peaks)
    report(rows, peaks, ratios, args.goal, trials)
    payload = {"meta": meta, "benchmark": "elmo_pretrain_throughput", "tiny": args.tiny, "threads": args.threads,
               "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup, "peak_tflops": peaks, "rows": rows,
               "ratios": ratios, "goal": args.goal, "skipped": skipped, "skip_reasons": SKIP_REASONS,
               "xla_trials": trials, "round_seconds": args.round_seconds,
               "goal_met": bool(ratios) and all(r["ratio"] >= args.goal for r in ratios if r["peer"] == "best_peer")}
    common.write_json(args.json_out, payload)
    failed = [r for r in rows if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
