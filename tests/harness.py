"""The shared test harness every model family's tests call: plain functions that assert, one per kind of object.

  check_layer_contract(layer, inputs)                     Keras contract: build, call, get_config/from_config,
                                                          .keras save/load, registration as a serializable
  check_backbone(family, config, features)                output shapes, every layer's output, get_config == the
                                                          config dataclass, padding invariance, checkpoint round trip
  check_pretrainer_learns(family, config, dataset_fn, steps, model_dir, global_batch_size)
                                                          the zoo loop lowers the loss; a stopped run resumed in the
                                                          same model dir retraces an uninterrupted run's losses
  check_export(model_dir, export_dir, reference=...)      trainers.common.export_model_dir, fresh-process parity
                                                          (a process importing only tensorflow + tensorflow_text),
                                                          the TF Serving op allow-list, hostile inputs

Each takes a family (`zoo.family(name)`) or its objects and raises AssertionError (with what differed) when the
contract does not hold; tests/test_harness.py feeds each a broken object to see it fail. A family's tests call
these at tiny sizes (BERT: tests/test_bert_family.py, the `pretrained` fixture of tests/test_pretrain_finetune.py
and the `exported` fixture of tests/test_export.py) and keep only what is the family's own.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

# ---- helpers ----------------------------------------------------------------------------------------------------


def _numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def flat_outputs(outputs, prefix=""):
    """{path: numpy array} of a (nested) dict / list / tuple / tensor of outputs: "encoder_outputs/1", ..."""
    if isinstance(outputs, dict):
        out = {}
        for key in sorted(outputs):
            out.update(flat_outputs(outputs[key], f"{prefix}{key}/"))
        return out
    if isinstance(outputs, (list, tuple)):
        out = {}
        for i, value in enumerate(outputs):
            out.update(flat_outputs(value, f"{prefix}{i}/"))
        return out
    return {prefix.rstrip("/") or "output": _numpy(outputs)}


def assert_same_outputs(got, want, atol=1e-6, what="outputs"):
    """Same structure (paths), shapes, dtypes and values within `atol` for every flattened output."""
    got, want = flat_outputs(got), flat_outputs(want)
    assert sorted(got) == sorted(want), f"{what}: output keys differ: {sorted(got)} != {sorted(want)}"
    for key in want:
        assert got[key].shape == want[key].shape, f"{what}: {key} shape {got[key].shape} != {want[key].shape}"
        assert got[key].dtype == want[key].dtype, f"{what}: {key} dtype {got[key].dtype} != {want[key].dtype}"
        np.testing.assert_allclose(got[key], want[key], atol=atol, rtol=0, err_msg=f"{what}: {key}")


def _clone_weights(source, target):
    """Copies `source`'s weights into `target` (same architecture) by position; asserts they line up."""
    assert len(source.weights) == len(target.weights), (
        f"{type(target).__name__}: {len(target.weights)} weights after a round trip, {len(source.weights)} before")
    for a, b in zip(source.weights, target.weights):
        assert tuple(a.shape) == tuple(b.shape), f"weight {a.path} {tuple(a.shape)} vs {b.path} {tuple(b.shape)}"
        b.assign(a)


# ---- layers -------------------------------------------------------------------------------------------------


def check_layer_contract(layer, inputs, atol=1e-6, call_kwargs=None, tmp_dir=None):
    """A layer (or model) keeps the Keras contract; returns its outputs on `inputs`.

    * it builds and calls on `inputs` (any structure the layer takes: a tensor, a feature dict, raw strings);
    * its class is a registered Keras serializable (`register_keras_serializable`: a package-qualified name that
      resolves back to the class), so `.keras` files and nested configs find it;
    * `from_config(get_config())` gives a layer whose own config is the same and whose outputs, with the weights
      copied over, are the same;
    * a `.keras` save / load round trip (in `tmp_dir` or a temporary dir) gives the same class, config and outputs.
    """
    import keras

    call_kwargs = dict(call_kwargs or {})
    cls = type(layer)
    outputs = layer(inputs, **call_kwargs)
    assert layer.built, f"{cls.__name__} is not built after a call"

    name = keras.saving.get_registered_name(cls)
    assert ">" in name, f"{cls.__name__} is not registered (keras.saving.register_keras_serializable): its name is {name!r}"
    assert keras.saving.get_registered_object(name) is cls, f"{name!r} resolves to {keras.saving.get_registered_object(name)}"

    config = layer.get_config()
    json.dumps(keras.saving.serialize_keras_object(layer))  # the config is JSON (what a .keras file stores)
    clone = cls.from_config(config)
    assert type(clone) is cls, f"from_config made a {type(clone).__name__}, not a {cls.__name__}"
    assert clone.get_config() == config, (
        f"{cls.__name__}.from_config(get_config()) lost or changed arguments:\n{clone.get_config()}\n!=\n{config}")
    clone(inputs, **call_kwargs)  # builds it
    _clone_weights(layer, clone)
    assert_same_outputs(clone(inputs, **call_kwargs), outputs, atol=atol, what=f"{cls.__name__} from_config(get_config())")

    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        path = os.path.join(tmp, f"{cls.__name__}.keras")
        keras.saving.save_model(layer, path)
        loaded = keras.saving.load_model(path)
    assert type(loaded) is cls, f"the .keras file loads as a {type(loaded).__name__}, not a {cls.__name__}"
    assert loaded.get_config() == config, f"{cls.__name__}: the .keras round trip changed the config"
    assert_same_outputs(loaded(inputs, **call_kwargs), outputs, atol=atol, what=f"{cls.__name__} .keras round trip")
    return outputs


# ---- backbones ----------------------------------------------------------------------------------------------


def layer_outputs_key(family):
    """The backbone output holding every layer's output (a list of L tensors); a family's Backbone may name it
    in a `layer_outputs_key` class attribute (default "encoder_outputs", BERT's)."""
    return getattr(family.Backbone, "layer_outputs_key", "encoder_outputs")


def check_backbone(family, config, features, expected_shapes, num_layer_outputs=None, sequence_key="sequence_output",
                   padding_key="padding_mask", atol=1e-5):
    """A family's backbone for `config`: shapes, every layer's output, config, padding, checkpoint; returns outputs.

    expected_shapes: {output path: shape} that must all be present ("sequence_output": (B, T, H), ...); paths as
      `flat_outputs` names them ("encoder_outputs/0").
    num_layer_outputs: how many tensors the layer outputs (`layer_outputs_key`) hold (default config.num_layers);
      each is finite, has the sequence output's shape, and no two are the same tensor.
    The padding check (when `features` has `padding_key`): the row with the most padding, cut to its real length,
    gives the same `sequence_key` output at its real positions.
    """
    import tensorflow as tf

    backbone = family.backbone(config)
    assert backbone.built
    # The config: the dataclass round trip, get_config == the config's fields, from_config rebuilds it.
    assert backbone.config == config, f"{backbone.config} != {config}"
    keras_config = backbone.get_config()
    fields = {k: v for k, v in keras_config.items() if k not in ("name", "trainable", "dtype")}
    assert fields == config.to_dict(), f"get_config() {fields} != the config {config.to_dict()}"
    assert type(backbone).from_config(keras_config).config == config

    outputs = backbone(features)
    flat = flat_outputs(outputs)
    for path, shape in expected_shapes.items():
        assert path in flat, f"backbone output {path!r} missing; it has {sorted(flat)}"
        assert tuple(flat[path].shape) == tuple(shape), f"{path}: shape {flat[path].shape} != {tuple(shape)}"
    for path, value in flat.items():
        if value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), f"{path} is not finite"

    key = layer_outputs_key(family)
    layers = outputs.get(key)
    expected = config.num_layers if num_layer_outputs is None else num_layer_outputs
    assert isinstance(layers, (list, tuple)) and len(layers) == expected, (
        f"{key} should hold every layer's output ({expected}); got {type(layers).__name__} of {len(layers or ())}")
    for i, layer in enumerate(layers):
        assert tuple(layer.shape) == tuple(outputs[sequence_key].shape), f"{key}[{i}] shape {layer.shape}"
    for i in range(1, len(layers)):
        assert not np.array_equal(_numpy(layers[i]), _numpy(layers[i - 1])), f"{key}[{i}] repeats layer {i - 1}"
    np.testing.assert_array_equal(_numpy(layers[-1]), _numpy(outputs[sequence_key]), err_msg=f"{key}[-1] is not the last layer")

    if padding_key in features:
        mask = _numpy(features[padding_key]).astype(bool)
        row = int(np.argmin(mask.sum(1)))
        length = int(mask[row].sum())
        assert length < mask.shape[1], "the padding check needs a padded row in `features`"
        short = {k: _numpy(v)[row:row + 1, :length] for k, v in features.items() if _numpy(v).shape[:2] == mask.shape}
        np.testing.assert_allclose(_numpy(backbone(short)[sequence_key])[0], _numpy(outputs[sequence_key])[row, :length],
                                   atol=atol, err_msg="padding changed the outputs at real positions")

    # Checkpoint round trip into fresh weights.
    fresh = family.backbone(config)
    differs = any(not np.array_equal(_numpy(a), _numpy(b)) for a, b in zip(backbone.weights, fresh.weights))
    assert differs, "two fresh backbones have the same weights: the round trip below would prove nothing"
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(model=backbone).save(os.path.join(tmp, "ckpt"))
        tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
    assert_same_outputs(fresh(features), outputs, atol=0, what="checkpoint round trip")
    return outputs


# ---- pretrainers ----------------------------------------------------------------------------------------------


def _train(family, config, dataset_fn, model_dir, train_steps, optimizer_settings, loop_settings, global_batch_size, seed,
           weights_seed=None):
    import keras
    import tensorflow as tf

    from zoo import optim
    from zoo.training import loop

    keras.utils.set_random_seed(seed if weights_seed is None else weights_seed)
    model = family.pretrainer(config)
    # The input pipeline's shuffles take TF's global seed with their own: keep it the run's, as a resumed
    # trainers.pretrain run does (--seed), whatever seed drew the fresh weights.
    tf.random.set_seed(seed)
    optimizer = optim.make_optimizer(family.optimizer, variables=model.trainable_variables, **optimizer_settings)
    return loop.train(model, optimizer, dataset_fn, tf.distribute.get_strategy(),
                      loop.LoopConfig(model_dir=model_dir, train_steps=train_steps, **loop_settings), global_batch_size)


def check_pretrainer_learns(family, config, dataset_fn, steps, model_dir, global_batch_size, *, learning_rate=1e-3,
                            warmup_steps=0, weight_decay=0.01, steps_per_loop=1, log_every=None, tokens_per_step=0,
                            max_final_loss=None, resume_at=None, resume_steps=None, seed=0, rtol=1e-5):
    """The family's pretrainer learns in the zoo loop (zoo.training.loop.train), and resumes exactly; returns the
    uninterrupted run's history (one row per `steps_per_loop` steps).

    dataset_fn: `fn(input_context) -> tf.data.Dataset` of feature batches, deterministic (the loop's contract).
    The run: `steps` steps with the family's optimizer recipe (schedule over `steps`) in `model_dir` (checkpoint at
      the end; write the model dir's config there first if the model is used afterwards): every loss finite, the
      last below the first (and below `max_final_loss` if given).
    The resume (when `resume_steps`): in a temporary dir, `resume_at` steps (default steps_per_loop), stopped; then
      a fresh model and optimizer (other initial weights) resumed to `resume_at + resume_steps` in the same dir:
      both parts' losses equal the uninterrupted run's same steps (rtol).
    """
    settings = dict(learning_rate=learning_rate, warmup_steps=warmup_steps, total_steps=steps, weight_decay=weight_decay)
    loop_settings = dict(steps_per_loop=steps_per_loop, log_every=log_every or steps_per_loop, tokens_per_step=tokens_per_step)

    def run(directory, train_steps, checkpoint_every, weights_seed):
        return _train(family, config, dataset_fn, directory, train_steps, settings,
                      dict(loop_settings, checkpoint_every=checkpoint_every), global_batch_size, seed, weights_seed)

    history = run(model_dir, steps, steps, seed)
    losses = [h["loss"] for h in history]
    assert [h["step"] for h in history] == list(range(steps_per_loop, steps + 1, steps_per_loop)), [h["step"] for h in history]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], f"the loss did not fall over {steps} steps: {losses}"
    if max_final_loss is not None:
        assert losses[-1] < max_final_loss, f"the last loss {losses[-1]:.3f} is not below {max_final_loss:.3f}: {losses}"

    if resume_steps:
        resume_at = resume_at or steps_per_loop
        end = resume_at + resume_steps
        assert end <= steps and resume_at % steps_per_loop == 0 == resume_steps % steps_per_loop, (resume_at, resume_steps)
        by_step = {h["step"]: h["loss"] for h in history}
        with tempfile.TemporaryDirectory() as tmp:
            first = run(tmp, resume_at, resume_at, seed)
            second = run(tmp, end, end, seed + 1)  # other fresh weights: only the checkpoint makes them equal
        assert [h["step"] for h in first] == list(range(steps_per_loop, resume_at + 1, steps_per_loop))
        assert [h["step"] for h in second] == list(range(resume_at + steps_per_loop, end + 1, steps_per_loop)), (
            f"the resumed run should train steps {resume_at + 1}..{end}; it logged {[h['step'] for h in second]}")
        for part, rows in (("before the stop", first), ("after the resume", second)):
            got = [h["loss"] for h in rows]
            want = [by_step[h["step"]] for h in rows]
            np.testing.assert_allclose(got, want, rtol=rtol, err_msg=f"losses {part} differ from the uninterrupted run's")
    return history


# ---- exports ------------------------------------------------------------------------------------------------

# What a server might send: every endpoint answers each with finite outputs of the usual rank and dtype.
HOSTILE_INPUTS = {
    "empty_strings": [b"", b"", b""],
    "zero_batch": [],
    "invalid_utf8": [b"\xff\xfe bad bytes", b"ok \xc3\x28 then \xa0\xa1", b"\x80", b"\xed\xa0\x80 surrogate"],
    "long_100kb": [("a long input " * 8000).encode()[:100_000], b"short"],
    "control_characters": ["\x00\x01\x02 nul \t tab \r\n \x1b[31m escape \x7f".encode(), "\u200b\u200d\ufeff\u2028".encode(), b"\x00"],
}
TEXTS = ["The movie was great!", "", "naïve café — 東京 🙂 " * 40, "Ünïcödé and ZWJ 👩‍👩‍👧 family", "short"]
PAIRS = (["Is it good?", "", "a b c"], ["Yes, very.", "x", ""])

# The serving side: a process importing only tensorflow + tensorflow_text calls every signature on every case.
FRESH_PROCESS = r"""
import base64, json, sys
import numpy as np, tensorflow as tf, tensorflow_text  # the only imports a server-side user needs
assert not any(m.startswith("zoo") for m in sys.modules), "a serving process must not need zoo"
loaded = tf.saved_model.load(sys.argv[1])
spec = json.load(open(sys.argv[2]))
cases, settings = spec["cases"], spec["settings"]
out, errors, inputs, ranks = {}, {}, {}, {}

def decode(batch):
    return [decode(t) if isinstance(t, list) else base64.b64decode(t) for t in batch]

def at_rank(batch, rank):
    # A batch of strings or of rows of K strings, at the input's rank: a row gives its first string to a [B]
    # input; a string becomes a row of two copies for a [B, K] input (e.g. multiple-choice candidates).
    if rank == 2:
        rows = [t if isinstance(t, list) else [t, t] for t in batch]
        return tf.constant(rows, tf.string, shape=[len(rows), len(rows[0]) if rows else 2])
    return tf.constant([t[0] if isinstance(t, list) else t for t in batch], tf.string, shape=[len(batch)])

for name, signature in loaded.signatures.items():
    specs = signature.structured_input_signature[1]
    names = sorted(n for n in specs if specs[n].dtype == tf.string)  # string inputs take the batches in turn
    inputs[name], ranks[name] = names, [specs[n].shape.rank for n in names]
    for case, batches in cases.items():
        batches = [decode(b) for b in batches]
        feed = {n: at_rank(batches[i % len(batches)], specs[n].shape.rank) for i, n in enumerate(names)}
        try:
            rows = len(batches[0]) if batches else 0
            for n in specs:  # every other input (e.g. sampling settings) comes from the settings
                if n not in feed:
                    value = settings[n]
                    if specs[n].shape.rank == 1 and np.ndim(value) == 0:  # a [B] input: the number once per row
                        value = [value] * rows
                    feed[n] = tf.constant(value, specs[n].dtype, shape=[rows] if specs[n].shape.rank == 1 else None)
            for key, value in signature(**feed).items():
                out[f"{case}|{name}|{key}"] = value.numpy()
        except Exception as e:  # reported, with every other failure, by the harness
            errors[f"{case}|{name}"] = f"{type(e).__name__}: {str(e)[:500]}"
assert not any(m.startswith("zoo") for m in sys.modules), "a serving process must not need zoo"
np.savez(sys.argv[3], **out)
json.dump({"errors": errors, "inputs": inputs, "ranks": ranks}, open(sys.argv[4], "w"))
"""


def _b64(texts):
    return [_b64(t) if isinstance(t, (list, tuple)) else base64.b64encode(t if isinstance(t, bytes) else t.encode("utf-8")).decode("ascii")
            for t in texts]


def serve_in_fresh_process(export_dir, cases, timeout=300, settings=None):
    """Calls every signature of `export_dir` on each case in a fresh process (tensorflow + tensorflow_text only).

    cases: {case: [batch]} or {case: [batch_a, batch_b]}: batches of str/bytes (or of rows of K str/bytes); a
    signature's string inputs (sorted by name) take the batches in turn. A [B, K] string input takes rows as they
    are and a string as a row of two copies; a [B] input takes a row's first string. settings: {input name: number
    or list} for every non-string input (e.g. max_new_tokens, seed), cast to the signature's dtype; a number for a
    [B] input (e.g. the sequence_len of pre-split tokens) is repeated once per row of the case's batch. Returns
    ({case: {signature: {key: array}}}, {"case|signature": error}, {signature: [its string input names]}).
    """
    outputs, errors, inputs, _ = _serve(export_dir, cases, timeout, settings)
    return outputs, errors, inputs


def _serve(export_dir, cases, timeout=300, settings=None):
    """`serve_in_fresh_process`, plus {signature: [the rank of each string input]}."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "cases.json")
        with open(spec, "w") as f:
            json.dump({"cases": {case: [_b64(b) for b in batches] for case, batches in cases.items()},
                       "settings": dict(settings or {})}, f)
        npz, meta = os.path.join(tmp, "out.npz"), os.path.join(tmp, "meta.json")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of this repo on the path
        result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, export_dir, spec, npz, meta], capture_output=True,
                                text=True, cwd=tmp, env=env, timeout=timeout)
        assert result.returncode == 0, f"the fresh serving process failed:\n{result.stderr[-3000:]}"
        with np.load(npz, allow_pickle=True) as arrays:  # string outputs (generated text) are object arrays
            flat = {k: arrays[k] for k in arrays.files}
        with open(meta) as f:
            meta = json.load(f)
    outputs = {}
    for key, value in flat.items():
        case, signature, name = key.split("|")
        outputs.setdefault(case, {}).setdefault(signature, {})[name] = value
    return outputs, meta["errors"], meta["inputs"], meta["ranks"]


def check_export(model_dir, export_dir, reference=None, texts=TEXTS, pairs=PAIRS, atol=1e-5, compare=None,
                 expect_ops=(), settings=None, choices=None, **export_options):
    """Exports `model_dir` with trainers.common.export_model_dir(**export_options) and checks the SavedModel.

    * the op allow-list: `zoo.export.check_serving_ops` passes and `disallowed_ops` is empty (`expect_ops`: ops
      that must be there, e.g. the tokenizer's, so the check really sees them);
    * `settings` feed every non-string input (e.g. {"max_new_tokens": 4, "seed": 1}; see serve_in_fresh_process);
    * served in a fresh process (tensorflow + tensorflow_text only, no zoo), every signature answers `texts`
      (single-input signatures) / `pairs` (two-input ones) / `choices` (signatures with a [B, K] string input:
      one batch per string input in sorted-name order, rows of K strings for the [B, K] ones, e.g.
      `[candidate_rows, contexts]` for `choose(candidates, context)`) and every `HOSTILE_INPUTS` case (a string
      becomes a row of two for a [B, K] input) without an error;
    * hostile inputs: every output is finite, has the batch's size first and the same rank and dtype as on `texts`;
    * parity (when `reference` is given): `reference(signature, batches) -> {key: array}` (the Keras model on the
      same strings) equals the served outputs within `atol`, same keys and shapes; `compare(signature, got, want)`
      replaces that comparison (e.g. for padded XLA lengths).
    Returns {"export_dir", "ops", "outputs": {signature: {key: array}} on texts/pairs, "hostile": {case: ...}}.
    """
    from trainers.common import export_model_dir
    from zoo import export as export_lib

    out = export_model_dir(model_dir, export_dir, **export_options)
    ops = export_lib.list_ops(out)
    export_lib.check_serving_ops(out)
    assert export_lib.disallowed_ops(ops) == [], export_lib.disallowed_ops(ops)
    for op in expect_ops:
        assert op in ops, f"{op} not among the export's ops: the op check may not see them"

    cases = {"texts": [list(texts)], "pairs": [list(pairs[0]), list(pairs[1])], **{k: [v] for k, v in HOSTILE_INPUTS.items()}}
    if choices is not None:
        cases["choices"] = [list(b) for b in choices]
    served, errors, inputs, ranks = _serve(out, cases, settings=settings)
    assert not errors, f"signatures failed in the serving process: {json.dumps(errors, indent=1)}"
    signatures = sorted(served["texts"])
    assert signatures, "the export has no signatures"

    def usual_case(s):  # a signature's usual answer: on choices if it takes [B, K] strings, else texts or pairs
        if 2 in ranks[s]:
            assert choices is not None, f"{s} takes a [B, K] string input: pass choices= to check it"
            return "choices"
        return "pairs" if len(inputs[s]) == 2 else "texts"

    usual = {s: (served[usual_case(s)][s], cases[usual_case(s)]) for s in signatures}
    for case, batches in HOSTILE_INPUTS.items():
        for signature in signatures:
            got, want = served[case][signature], usual[signature][0]
            assert sorted(got) == sorted(want), f"{case}/{signature}: outputs {sorted(got)} != {sorted(want)}"
            for key, value in got.items():
                where = f"{case}/{signature}/{key}"
                assert value.shape[:1] == (len(batches),), f"{where}: batch {value.shape} for {len(batches)} strings"
                assert value.ndim == want[key].ndim, f"{where}: rank {value.ndim} != {want[key].ndim} ({value.shape})"
                assert value.dtype == want[key].dtype, f"{where}: dtype {value.dtype} != {want[key].dtype}"
                if value.dtype.kind == "f":
                    assert np.all(np.isfinite(value)), f"{where}: not finite"
                if case != "zero_batch":
                    assert value.shape[2:] == want[key].shape[2:], f"{where}: shape {value.shape} vs {want[key].shape}"
    outputs = {signature: usual[signature][0] for signature in signatures}
    if reference is not None:
        for signature in signatures:
            want = {k: _numpy(v) for k, v in reference(signature, usual[signature][1]).items()}
            got = outputs[signature]
            if compare is not None:
                compare(signature, got, want)
                continue
            assert sorted(got) == sorted(want), f"{signature}: served {sorted(got)}, the Keras model {sorted(want)}"
            for key in want:
                assert got[key].shape == want[key].shape, f"{signature}/{key}: {got[key].shape} != {want[key].shape}"
                diff = float(np.abs(got[key].astype(np.float64) - want[key]).max()) if got[key].size else 0.0
                assert diff <= atol, f"{signature}/{key}: served and Keras outputs differ by {diff:.3g} > {atol}"
    return {"export_dir": out, "ops": ops, "outputs": outputs,
            "hostile": {case: served[case] for case in HOSTILE_INPUTS}}
