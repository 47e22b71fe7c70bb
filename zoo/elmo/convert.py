"""bilm-tf weights into the zoo: `options.json` + `lm_weights.hdf5` (what bilm-tf's `dump_weights` writes) ->
(`ElmoConfig`, `ElmoBackbone`), and the token-embedding hdf5 of `dump_token_embeddings`.

Shape legend: E char embedding width, w filter width, n filter count, F CNN channels, P projection, U cells.

The file's quirks are handled here, so the model stays plain:
  * `char_embed` holds 261 rows for bilm-tf's ids 0..260; the zoo's ids are shifted by +1 (0 = mask), so a zero
    row is put first (262 rows), as bilm-tf's own inference model does.
  * `CNN/W_cnn_i` is a conv2d kernel [1, w, E, n]: the leading 1 is dropped.
  * `CNN_high_i/W_carry` is the highway's transform gate g (`gate`), `W_transform` its relu branch (`transform`).
  * `RNN_d/RNN/MultiRNNCell/Cell{i}/LSTMCell/W_0` [input + P, 4U] (gates i, j, f, o) is split into the input rows
    and the recurrent rows; `B` excludes TF's forget bias, which `ProjectedLSTM` adds at run time (1.0);
    `W_P_0` [U, P] is the projection. RNN_0 is the forward LM, RNN_1 the backward one.
The softmax is not in these files (bilm-tf never writes it).
"""

import os

import numpy as np
from absl import logging

from zoo import formats
from zoo.elmo.backbone import DIRECTIONS, ElmoBackbone
from zoo.elmo.config import ElmoConfig
from zoo.formats import ConversionError
from zoo.text.words import SPECIAL_WORDS


def config_from_options(options, path="options.json"):
    """An `ElmoConfig` from bilm-tf's options dict; ConversionError naming a missing or bad key."""
    def get(*keys, default=KeyError):
        value = options
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                if default is KeyError:
                    raise ConversionError(f"{path} has no {'.'.join(keys)}: not a bilm-tf options file?")
                return default
            value = value[key]
        return value

    activation = get("char_cnn", "activation")
    if activation not in ("relu", "tanh"):
        raise ConversionError(f"{path}: char_cnn.activation is {activation!r}; bilm-tf models use 'relu' or 'tanh'.")
    if get("char_cnn", "n_characters") not in (261, 262):
        raise ConversionError(f"{path}: char_cnn.n_characters is {get('char_cnn', 'n_characters')}; expected 261 "
                              "(training) or 262 (inference) for bilm-tf's byte vocabulary.")
    try:
        return ElmoConfig(
            vocabulary_size=int(get("n_tokens_vocab", default=0)),  # the softmax is not in the weight file
            char_embedding_dim=int(get("char_cnn", "embedding", "dim")),
            filters=tuple((int(w), int(n)) for w, n in get("char_cnn", "filters")),
            num_highway=int(get("char_cnn", "n_highway", default=0) or 0),
            projection_dim=int(get("lstm", "projection_dim")),
            lstm_dim=int(get("lstm", "dim")),
            num_layers=int(get("lstm", "n_layers", default=1)),
            cell_clip=get("lstm", "cell_clip", default=None),
            projection_clip=get("lstm", "proj_clip", default=None),
            use_skip_connections=bool(get("lstm", "use_skip_connections", default=False)),
            activation=activation,
            dropout=float(get("dropout", default=0.1)),
            max_characters_per_token=int(get("char_cnn", "max_characters_per_token")),
            num_characters=262,  # bilm-tf's ids + 1, as its inference model
            max_sequence_length=int(get("unroll_steps", default=20)),
            num_samples=int(get("n_negative_samples_batch", default=8192)),
        )
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{path}: a value of the wrong type ({e}).") from e


def weight_map(backbone):
    """[(hdf5 name, file shape, variable, to_zoo(array) -> array)] for every weight of `backbone` (built)."""
    encoder = backbone.token_encoder
    entries = []

    def add(name, variable, file_shape=None, to_zoo=lambda a: a):
        entries.append((name, tuple(file_shape or variable.shape), variable, to_zoo))

    embeddings = encoder.char_embedding.embeddings
    add("char_embed", embeddings, (embeddings.shape[0] - 1, embeddings.shape[1]),
        lambda a: np.concatenate([np.zeros((1, a.shape[1]), a.dtype), a]))
    for i, conv in enumerate(encoder.convolutions):
        add(f"CNN/W_cnn_{i}", conv.kernel, (1,) + tuple(conv.kernel.shape), lambda a: a[0])
        add(f"CNN/b_cnn_{i}", conv.bias)
    for i, highway in enumerate(encoder.highways):
        add(f"CNN_high_{i}/W_carry", highway.gate.kernel)
        add(f"CNN_high_{i}/b_carry", highway.gate.bias)
        add(f"CNN_high_{i}/W_transform", highway.transform.kernel)
        add(f"CNN_high_{i}/b_transform", highway.transform.bias)
    if encoder.projection is not None:
        add("CNN_proj/W_proj", encoder.projection.kernel)
        add("CNN_proj/b_proj", encoder.projection.bias)
    for d, direction in enumerate(DIRECTIONS):
        for i, lstm in enumerate(backbone.lstms[direction]):
            cell = f"RNN_{d}/RNN/MultiRNNCell/Cell{i}/LSTMCell/"
            input_rows = lstm.input_kernel.shape[0]
            kernel_shape = (input_rows + lstm.recurrent_kernel.shape[0], lstm.input_kernel.shape[1])
            add(cell + "W_0", lstm.input_kernel, kernel_shape, lambda a, n=input_rows: a[:n])
            add(cell + "W_0", lstm.recurrent_kernel, kernel_shape, lambda a, n=input_rows: a[n:])
            add(cell + "B", lstm.bias)
            if lstm.projection_dim:
                add(cell + "W_P_0", lstm.projection_kernel)
    return entries


def load_bilm_tf_weights(backbone, weights, path="lm_weights.hdf5"):
    """Assigns bilm-tf's {hdf5 name: array} to a built `ElmoBackbone`; every name and shape is checked first.

    Raises:
      ConversionError listing missing names, unexpected names and shape mismatches, before anything is assigned.
    """
    entries = weight_map(backbone)
    expected = {name: shape for name, shape, _, _ in entries}
    problems = [f"missing {name} {list(shape)}" for name, shape in expected.items() if name not in weights]
    problems += [f"{name} is {list(np.shape(weights[name]))}, expected {list(shape)}"
                 for name, shape in expected.items() if name in weights and tuple(np.shape(weights[name])) != shape]
    problems += [f"unexpected {name} {list(np.shape(weights[name]))}" for name in sorted(set(weights) - set(expected))]
    if problems:
        raise ConversionError(f"{path} does not match the architecture of its options (" + "; ".join(problems) + ").")
    for name, _, variable, to_zoo in entries:
        variable.assign(to_zoo(np.asarray(weights[name], np.float32)))


def convert_bilm_tf(options_path, weights_path, stateful=False, batch_size=None):
    """bilm-tf's `options.json` + `lm_weights.hdf5` -> (ElmoConfig, ElmoBackbone with those weights).

    Args:
      options_path, weights_path: the two files bilm-tf ships (and `dump_weights` writes).
      stateful, batch_size: `ElmoBackbone`'s stateful mode (bilm-tf's inference LSTMs are stateful).

    Raises:
      ConversionError naming the file and what is wrong (missing, not JSON / hdf5, names or shapes).

    Example:
      >>> config, backbone = convert_bilm_tf("options.json", "lm_weights.hdf5")  # doctest: +SKIP
    """
    config = config_from_options(formats.read_json(options_path, "bilm-tf options (options.json)"), options_path)
    weights = formats.read_hdf5(weights_path, "bilm-tf weights (lm_weights.hdf5 from dump_weights)")
    backbone = ElmoBackbone(**config.to_dict(), stateful=stateful, batch_size=batch_size)
    backbone.build()
    load_bilm_tf_weights(backbone, weights, weights_path)
    return config, backbone


def read_token_embeddings(path, projection_dim=None):
    """The token-embedding table bilm-tf's `dump_token_embeddings` writes (dataset `embedding` [V, P], one row per
    line of its vocabulary file) as float32 [V + 1, P] with a zero row 0 first, so token ids + 1 index it (bilm-tf's
    `TokenBatcher` convention, 0 = padding). Feed its rows to `ElmoBackbone.contextualize` in place of the char CNN.
    """
    arrays = formats.read_hdf5(path, "bilm-tf token embeddings (dataset 'embedding' from dump_token_embeddings)")
    table = arrays.get("embedding")
    if table is None or np.ndim(table) != 2:
        found = {k: list(np.shape(v)) for k, v in arrays.items()}
        raise ConversionError(f"{path} has no 2-D dataset 'embedding' (found {found}).")
    if projection_dim is not None and table.shape[1] != projection_dim:
        raise ConversionError(f"{path}: 'embedding' is {list(table.shape)}, expected width {projection_dim} (the "
                              "model's projection_dim).")
    return np.concatenate([np.zeros((1, table.shape[1]), np.float32), np.asarray(table, np.float32)])


# ---------------------------------------------------------------------------------------------------------
# A bilm-tf folder -> a zoo model dir (trainers.convert --model=elmo --from=bilm_tf --to=zoo).

OPTIONS_FILE = "options.json"
WEIGHT_FILES = ("lm_weights.hdf5", "weights.hdf5")  # bilm-tf's dump_weights name, and allennlp's downloads'
DEFAULT_SEQUENCE_LENGTH = 128  # positions per sentence (with <S> and </S>) of the converted model's preprocessor
_SKIPPED_LINE = "!!!MAXTERMID"


def _find_file(folder, names, what):
    for name in names:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise ConversionError(f"{folder} has no {' or '.join(names)}: expected bilm-tf's {what} there.")


def find_vocabulary(folder):
    """The folder's vocabulary file: vocab.txt, else the one *vocab*.txt file; None when there is none."""
    if os.path.isfile(os.path.join(folder, "vocab.txt")):
        return os.path.join(folder, "vocab.txt")
    found = sorted(f for f in os.listdir(folder) if "vocab" in f.lower() and f.endswith(".txt"))
    if len(found) > 1:
        raise ConversionError(f"{folder} holds several vocabulary files {found}: keep one, or name it vocab.txt.")
    return os.path.join(folder, found[0]) if found else None


def read_vocabulary_words(path):
    """(words, specials added): a bilm-tf vocab file's words as its `Vocabulary` reads them (lines stripped,
    `!!!MAXTERMID` skipped), with any of <S>, </S>, <UNK> it lacks appended at the end (ids of its words unchanged)."""
    try:
        with open(path, encoding="utf-8") as f:
            words = [line.strip() for line in f]
    except UnicodeDecodeError as e:
        raise ConversionError(f"{path} is not UTF-8 text ({e}); a bilm-tf vocabulary is one word per line.") from None
    words = [w for w in words if w and w != _SKIPPED_LINE]
    added = [w for w in SPECIAL_WORDS if w not in words]
    return words + added, added


def bilm_tf_to_zoo(input_path, output_path, allow_missing=(), sequence_length=None, lowercase=None, overwrite=False):
    """A bilm-tf folder (options.json + lm_weights.hdf5, optionally a vocabulary file) -> a zoo model dir.

    The weight file holds no softmax (bilm-tf never writes it), so by default the model dir is a feature model:
    vocabulary_size 0, its checkpoint the backbone only (`trainers.export`, `trainers.finetune --init`, the
    `ElmoEmbedder`). `allow_missing=("softmax",)` instead adds a freshly initialised softmax over the vocabulary
    (recorded as such), so that `trainers.pretrain` can continue training it. The vocabulary (vocab.txt, or the
    folder's one *vocab*.txt) gives the token ids; without one it is just <S>, </S>, <UNK> (the characters, not
    the ids, are what the biLM reads). zoo_config.json records the source under `conversion`.

    Returns:
      (ElmoConfig, ElmoBackbone) as written.
    """
    import tensorflow as tf

    from zoo import model_dir as md
    from zoo.elmo.preprocessor import ElmoTokenizer
    from zoo.elmo.pretrainer import ElmoLanguageModel

    unknown = sorted(set(allow_missing) - {"softmax"})
    if unknown:
        raise ConversionError(f"allow_missing={','.join(unknown)}: a bilm-tf source may lack only the softmax.")
    if not os.path.isdir(input_path):
        raise ConversionError(f"{input_path} is not a folder: give the folder holding bilm-tf's options.json and "
                              "lm_weights.hdf5.")
    formats.check_distinct_folders(input_path, output_path)
    options_path = _find_file(input_path, (OPTIONS_FILE,), "options")
    weights_path = _find_file(input_path, WEIGHT_FILES, "weights (dump_weights)")
    vocab_path = find_vocabulary(input_path)
    words, added = read_vocabulary_words(vocab_path) if vocab_path else (list(SPECIAL_WORDS), list(SPECIAL_WORDS))
    if vocab_path and added:
        logging.warning("%s lacks %s: appended at ids %d..%d.", vocab_path, ", ".join(added), len(words) - len(added),
                        len(words) - 1)
    tokenizer = ElmoTokenizer(words, lowercase=bool(lowercase))
    with_softmax = "softmax" in allow_missing
    config = config_from_options(formats.read_json(options_path, "bilm-tf options (options.json)"), options_path)
    config = config.replace(vocabulary_size=tokenizer.vocabulary_size if with_softmax else 0)
    weights = formats.read_hdf5(weights_path, "bilm-tf weights (lm_weights.hdf5 from dump_weights)")
    backbone = ElmoBackbone(**config.to_dict())
    backbone.build()
    load_bilm_tf_weights(backbone, weights, weights_path)
    length = DEFAULT_SEQUENCE_LENGTH if sequence_length is None else int(sequence_length)
    if length < 3:
        raise ConversionError(f"sequence_length={length} is too short: at least 3 (<S>, a word, </S>).")
    source = {"format": "bilm_tf", "path": os.path.abspath(input_path), "options": os.path.basename(options_path),
              "weights": os.path.basename(weights_path),
              "vocabulary": os.path.basename(vocab_path) if vocab_path else None, "special_words_added": added,
              "initialised": ["softmax"] if with_softmax else []}
    model = ElmoLanguageModel(backbone) if with_softmax else tf.train.Checkpoint(backbone=backbone)
    if with_softmax:
        model.build()
    with formats.atomic_dir(output_path, overwrite) as tmp:
        md.write_model_dir(tmp, "elmo", config, tokenizer, length, conversion=source)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=model), tmp, max_to_keep=1).save()
    logging.info("Converted %s (bilm-tf: %d filters, %d highway, LSTM %d/%d x %d%s) -> %s", input_path,
                 len(config.filters), config.num_highway, config.lstm_dim, config.projection_dim, config.num_layers,
                 ", softmax initialised" if with_softmax else ", no softmax", output_path)
    return config, backbone
