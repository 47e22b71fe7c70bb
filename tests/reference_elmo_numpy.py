"""An independent, readable numpy implementation of bilm-tf's ELMo biLM forward pass (bilm/data.py, bilm/model.py).

It reads weights by the ORIGINAL hdf5 names that bilm-tf's `dump_weights` writes (char_embed, CNN/W_cnn_i,
CNN_high_i/W_carry, CNN_proj/W_proj, RNN_d/RNN/MultiRNNCell/Celli/LSTMCell/{W_0, B, W_P_0}), handles the file's
quirks itself (261 char rows without the mask row, [1, w, E, n] kernels, the forget bias not stored), shares no
code with zoo/, and is the oracle for tests of the model and of the converter. Steps run one at a time in Python.
Shapes: B batch, T words, C chars, E char dim, F CNN channels, P projection, U cells.
"""

import numpy as np

BOS, EOS, BOW, EOW, PAD = 256, 257, 258, 259, 260


def word_char_ids(word, max_chars=50):
    """bilm-tf's `_convert_word_to_char_ids` + the batcher's +1, for a word given as str or bytes."""
    if word in ("<S>", "</S>", b"<S>", b"</S>"):
        code = [BOW, BOS if word in ("<S>", b"<S>") else EOS, EOW] + [PAD] * (max_chars - 3)
        return np.array(code) + 1
    data = word.encode("utf-8") if isinstance(word, str) else bytes(word)
    if not data:
        return np.zeros(max_chars, np.int64)
    code = [PAD] * max_chars
    code[0] = BOW
    body = data[: max_chars - 2]
    code[1:1 + len(body)] = list(body)
    code[1 + len(body)] = EOW
    return np.array(code) + 1


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def token_embedding(w, options, char_ids):
    """char ids [B, T, C] (bilm-tf's ids + 1) -> [B, T, P] in float64."""
    cnn = options["char_cnn"]
    projection_dim = options["lstm"]["projection_dim"]
    table = np.concatenate([np.zeros((1, w["char_embed"].shape[1])), w["char_embed"]])  # the mask row 0 first
    chars = table[char_ids]  # [B, T, C, E]
    B, T, C, E = chars.shape
    pooled = []
    for i, (width, num) in enumerate(cnn["filters"]):
        kernel = w[f"CNN/W_cnn_{i}"][0]  # [w, E, n]
        windows = np.stack([chars[:, :, s:s + width, :] for s in range(C - width + 1)], axis=2)  # [B, T, C-w+1, w, E]
        conv = np.einsum("btswe,wen->btsn", windows, kernel) + w[f"CNN/b_cnn_{i}"]
        top = conv.max(axis=2)  # max over time first ...
        pooled.append(np.maximum(top, 0.0) if cnn["activation"] == "relu" else np.tanh(top))  # ... then activation
    x = np.concatenate(pooled, axis=-1)  # [B, T, F]
    for i in range(cnn.get("n_highway") or 0):
        h = f"CNN_high_{i}/"
        gate = sigmoid(x @ w[h + "W_carry"] + w[h + "b_carry"])  # "carry" is the transform gate
        transformed = np.maximum(x @ w[h + "W_transform"] + w[h + "b_transform"], 0.0)
        x = gate * transformed + (1.0 - gate) * x
    if x.shape[-1] != projection_dim:
        x = x @ w["CNN_proj/W_proj"] + w["CNN_proj/b_proj"]
    return x


def lstm_layer(x, lengths, W, b, W_P, cell_clip, proj_clip, state=None):
    """One TF1 LSTMCell(num_proj, cell_clip, proj_clip) under dynamic_rnn(sequence_length), step by step.

    x [B, T, D]; W [D + P, 4U] (rows: input then h), b [4U] (without the forget bias); W_P [U, P] or None.
    Returns (outputs [B, T, P], zero past each length; (c [B, U], h [B, P]) at each sequence's last step).
    """
    B, T, _ = x.shape
    U = W.shape[1] // 4
    P = W_P.shape[1] if W_P is not None else U
    c, h = (np.zeros((B, U)), np.zeros((B, P))) if state is None else (state[0].copy(), state[1].copy())
    outputs = np.zeros((B, T, P))
    for t in range(T):
        z = np.concatenate([x[:, t], h], axis=1) @ W + b
        i, j, f, o = np.split(z, 4, axis=1)
        new_c = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(j)
        if cell_clip:
            new_c = np.clip(new_c, -cell_clip, cell_clip)
        new_h = sigmoid(o) * np.tanh(new_c)
        if W_P is not None:
            new_h = new_h @ W_P
            if proj_clip:
                new_h = np.clip(new_h, -proj_clip, proj_clip)
        live = (t < lengths)[:, None]
        c, h = np.where(live, new_c, c), np.where(live, new_h, h)
        outputs[:, t] = np.where(live, new_h, 0.0)
    return outputs, (c, h)


def reverse_within_lengths(x, lengths):
    out = x.copy()
    for k, n in enumerate(lengths):
        out[k, :n] = x[k, :n][::-1]
    return out


def bilm(w, options, char_ids, states=None):
    """The biLM: char ids [B, T, C] -> (token [B, T, P], forward layers, backward layers (aligned), new states).

    states: {(direction, layer): (c, h)} carried between calls (bilm-tf's stateful LSTMs) or None (zeros).
    """
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    lstm = options["lstm"]
    lengths = (char_ids > 0).any(axis=2).sum(axis=1)  # bilm-tf's mask: any nonzero char id
    tokens = token_embedding(w, options, char_ids)
    states = dict(states or {})
    layers = {}
    for d, direction in enumerate(("forward", "backward")):
        x = tokens if d == 0 else reverse_within_lengths(tokens, lengths)
        layers[direction] = []
        for i in range(lstm.get("n_layers", 1)):
            cell = f"RNN_{d}/RNN/MultiRNNCell/Cell{i}/LSTMCell/"
            W_P = w.get(cell + "W_P_0") if lstm["projection_dim"] < lstm["dim"] else None
            out, states[direction, i] = lstm_layer(x, lengths, w[cell + "W_0"], w[cell + "B"], W_P,
                                                   lstm.get("cell_clip"), lstm.get("proj_clip"), states.get((direction, i)))
            if lstm["use_skip_connections"] and i > 0:
                out = out + np.where((np.arange(x.shape[1])[None, :] < lengths[:, None])[..., None], x, 0.0)
            layers[direction].append(out)
            x = out
    backward = [reverse_within_lengths(x, lengths) for x in layers["backward"]]
    return tokens, layers["forward"], backward, states


def random_bilm_tf_weights(options, rng, scale=0.5):
    """Random weights in bilm-tf's hdf5 layout and shapes for `options` (261 char rows, as files hold)."""
    cnn, lstm = options["char_cnn"], options["lstm"]
    E, P, U = cnn["embedding"]["dim"], lstm["projection_dim"], lstm["dim"]
    F = sum(n for _, n in cnn["filters"])
    w = {"char_embed": rng.uniform(-1, 1, (261, E))}  # bilm-tf ids 0..260, whatever n_characters (261 or 262) says
    for i, (width, num) in enumerate(cnn["filters"]):
        w[f"CNN/W_cnn_{i}"] = rng.normal(0, scale, (1, width, E, num))
        w[f"CNN/b_cnn_{i}"] = rng.normal(0, 0.1, (num,))
    for i in range(cnn.get("n_highway") or 0):
        for name in ("carry", "transform"):
            w[f"CNN_high_{i}/W_{name}"] = rng.normal(0, 1 / np.sqrt(F), (F, F))
            w[f"CNN_high_{i}/b_{name}"] = rng.normal(0, 0.1, (F,))
    if F != P:
        w["CNN_proj/W_proj"] = rng.normal(0, 1 / np.sqrt(F), (F, P))
        w["CNN_proj/b_proj"] = rng.normal(0, 0.1, (P,))
    for d in range(2):
        for i in range(lstm["n_layers"]):
            cell = f"RNN_{d}/RNN/MultiRNNCell/Cell{i}/LSTMCell/"
            w[cell + "W_0"] = rng.normal(0, scale, (P + (P if P < U else U), 4 * U))
            w[cell + "B"] = rng.normal(0, 0.1, (4 * U,))
            if P < U:
                w[cell + "W_P_0"] = rng.normal(0, scale, (U, P))
    return {k: v.astype(np.float32) for k, v in w.items()}
