"""An independent GPT-1 forward pass in numpy (float64), read straight from the original
openai/finetune-transformer-lm layout, for tests/test_gpt_convert.py.

Written from the original train.py (`model`, `block`, `attn`, `mlp`, `_norm`, `gelu`, `mask_attn_weights`), not
from zoo: embeddings = token row + position row; L post-LN blocks `n = LN(x + attn(x)); h = LN(n + mlp(n))`;
attention scaled by 1/sqrt(D) with the causal mask `w * b - 1e9 * (1 - b)`; tanh GELU; LayerNorm epsilon 1e-5; no
final LayerNorm; logits = h @ tokens^T (tied). Like the original there is no padding mask: with right padding the
real positions never see a padded one.

Shape legend: B batch, T length, V token rows, P positions, H hidden, N heads, D head dim, L layers.
"""

import json
import math
import os

import numpy as np

ARRAYS_PER_BLOCK = 12


def load_original(folder):
    """The arrays of params_shapes.json + params_0..9.npy, as train.py splits and reshapes them."""
    with open(os.path.join(folder, "params_shapes.json")) as f:
        shapes = json.load(f)
    offsets = np.cumsum([np.prod(shape) for shape in shapes])
    flat = np.concatenate([np.load(os.path.join(folder, f"params_{n}.npy")) for n in range(10)], 0)
    return [part.reshape(shape) for part, shape in zip(np.split(flat, offsets)[:-1], shapes)]


def _layer_norm(x, g, b, epsilon=1e-5):
    mean = x.mean(-1, keepdims=True)
    variance = np.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * g + b


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _conv1d(x, w, b):
    """x [B, T, in] @ the 1x1 conv kernel w [1, in, out] + b [out]."""
    return x @ w[0] + b


def _attention(x, w_attn, b_attn, w_proj, b_proj, num_heads):
    batch, length, hidden = x.shape
    q, k, v = np.split(_conv1d(x, w_attn, b_attn), 3, axis=-1)  # 3 x [B, T, H]
    heads = lambda t: t.reshape(batch, length, num_heads, hidden // num_heads).transpose(0, 2, 1, 3)  # noqa: E731  [B, N, T, D]
    q, k, v = heads(q), heads(k), heads(v)
    w = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hidden // num_heads)  # [B, N, T, T]
    causal = np.tril(np.ones((length, length)))[None, None]
    w = w * causal - 1e9 * (1 - causal)
    w = np.exp(w - w.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    a = (w @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)  # [B, T, H]
    return _conv1d(a, w_proj, b_proj)


def gpt_forward(arrays, token_ids, num_heads):
    """The original model in eval mode on token ids int [B, T].

    Returns:
      (embeddings [B, T, H], [each block's output [B, T, H]] (L of them), logits [B, T, V]), float64.
    """
    arrays = [np.asarray(a, np.float64) for a in arrays]
    positions, tokens = arrays[0], arrays[1]
    length = token_ids.shape[1]
    h = tokens[token_ids] + positions[:length][None]
    embeddings, layers = h, []
    for start in range(2, len(arrays), ARRAYS_PER_BLOCK):
        w_attn, b_attn, w_aproj, b_aproj, g_1, b_1, w_fc, b_fc, w_mproj, b_mproj, g_2, b_2 = arrays[start:start + ARRAYS_PER_BLOCK]
        n = _layer_norm(h + _attention(h, w_attn, b_attn, w_aproj, b_aproj, num_heads), g_1, b_1)
        h = _layer_norm(n + _conv1d(_gelu(_conv1d(n, w_fc, b_fc)), w_mproj, b_mproj), g_2, b_2)
        layers.append(h)
    return embeddings, layers, h @ tokens.T
