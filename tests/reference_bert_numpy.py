"""An independent, readable numpy implementation of BERT's forward pass (google-research/bert modeling.py).

It reads weights by the ORIGINAL TF1 variable names (bert/encoder/layer_0/attention/self/query/kernel, ...),
shares no code with zoo/, and is the oracle for tests of our layers and of the TF1 converter.
Shapes: B batch, T length, H hidden, N heads, D = H / N.
"""

import math

import numpy as np


def layer_norm(x, gamma, beta, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu(x):
    # BERT's exact GELU: x * Phi(x), Phi the standard normal CDF.
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def bert_forward(w, token_ids, segment_ids, input_mask, num_heads, eps=1e-12):
    """Returns (embedding_output [B,T,H], [every layer's output [B,T,H]], pooled [B,H]) in float64."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    B, T = token_ids.shape
    x = w["bert/embeddings/word_embeddings"][token_ids]
    x = x + w["bert/embeddings/token_type_embeddings"][segment_ids]
    x = x + w["bert/embeddings/position_embeddings"][:T][None]
    x = layer_norm(x, w["bert/embeddings/LayerNorm/gamma"], w["bert/embeddings/LayerNorm/beta"], eps)
    embedding_output = x
    H = x.shape[-1]
    D = H // num_heads
    # Additive mask as in modeling.py: 0 for real keys, -10000 for padding.
    adder = (1.0 - input_mask[:, None, None, :].astype(np.float64)) * -10000.0
    layers = []
    i = 0
    while f"bert/encoder/layer_{i}/attention/self/query/kernel" in w:
        p = f"bert/encoder/layer_{i}/"

        def dense(v, name):
            return v @ w[p + name + "/kernel"] + w[p + name + "/bias"]

        def heads(v):  # [B, T, H] -> [B, N, T, D]
            return v.reshape(B, T, num_heads, D).transpose(0, 2, 1, 3)

        q, k, v = (heads(dense(x, f"attention/self/{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D) + adder  # [B, N, T, T]
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
        attn = layer_norm(dense(context, "attention/output/dense") + x, w[p + "attention/output/LayerNorm/gamma"], w[p + "attention/output/LayerNorm/beta"], eps)
        inter = gelu(dense(attn, "intermediate/dense"))
        x = layer_norm(dense(inter, "output/dense") + attn, w[p + "output/LayerNorm/gamma"], w[p + "output/LayerNorm/beta"], eps)
        layers.append(x)
        i += 1
    pooled = np.tanh(x[:, 0] @ w["bert/pooler/dense/kernel"] + w["bert/pooler/dense/bias"])
    return embedding_output, layers, pooled


def masked_lm_logits(w, sequence_output, positions, eps=1e-12):
    """[B, P, V] logits of BERT's MLM head at `positions` [B, P]."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    x = np.take_along_axis(sequence_output, positions[..., None], axis=1)
    x = gelu(x @ w["cls/predictions/transform/dense/kernel"] + w["cls/predictions/transform/dense/bias"])
    x = layer_norm(x, w["cls/predictions/transform/LayerNorm/gamma"], w["cls/predictions/transform/LayerNorm/beta"], eps)
    return x @ w["bert/embeddings/word_embeddings"].T + w["cls/predictions/output_bias"]
