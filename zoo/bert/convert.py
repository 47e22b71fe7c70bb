"""Bring BERT weights in from HF transformers and google-research/bert TF1 checkpoints, and take them out to HF.

Every format is mapped onto one canonical layout: google-research/bert's TF1 variable names with TF kernel
layouts ([in, out]). HF names map onto it by renaming and transposing torch Linear weights; our Keras
variables map onto it by splitting/joining the fused query-key-value kernel. So each direction is one table.

Shape legend: H hidden, F intermediate, V vocabulary, P positions, S segments, N heads, D head dim.
"""

import re

import numpy as np

from zoo.bert.config import BertConfig


class ConversionError(ValueError):
    """A checkpoint does not match the expected layout; the message lists names and shapes."""


# ---------------------------------------------------------------------------------------------------------
# Canonical (google-research/bert) names.

def google_names(num_layers, heads=True):
    """Every canonical variable name of a BERT with `num_layers` layers (and the pretraining heads)."""
    names = [
        "bert/embeddings/word_embeddings",
        "bert/embeddings/position_embeddings",
        "bert/embeddings/token_type_embeddings",
        "bert/embeddings/LayerNorm/gamma",
        "bert/embeddings/LayerNorm/beta",
    ]
    for i in range(num_layers):
        p = f"bert/encoder/layer_{i}/"
        for part in ("query", "key", "value"):
            names += [p + f"attention/self/{part}/kernel", p + f"attention/self/{part}/bias"]
        names += [
            p + "attention/output/dense/kernel",
            p + "attention/output/dense/bias",
            p + "attention/output/LayerNorm/gamma",
            p + "attention/output/LayerNorm/beta",
            p + "intermediate/dense/kernel",
            p + "intermediate/dense/bias",
            p + "output/dense/kernel",
            p + "output/dense/bias",
            p + "output/LayerNorm/gamma",
            p + "output/LayerNorm/beta",
        ]
    names += ["bert/pooler/dense/kernel", "bert/pooler/dense/bias"]
    if heads:
        names += HEAD_NAMES
    return names


HEAD_NAMES = [
    "cls/predictions/transform/dense/kernel",
    "cls/predictions/transform/dense/bias",
    "cls/predictions/transform/LayerNorm/gamma",
    "cls/predictions/transform/LayerNorm/beta",
    "cls/predictions/output_bias",
    "cls/seq_relationship/output_weights",  # [2, H]: stored out x in in the original
    "cls/seq_relationship/output_bias",
]


def expected_shapes(config, heads=True):
    """{canonical name: shape} for a BertConfig."""
    H, F, V = config.hidden_dim, config.intermediate_dim, config.vocabulary_size
    shapes = {}
    for name in google_names(config.num_layers, heads):
        if name.endswith("word_embeddings"):
            shape = (V, H)
        elif name.endswith("position_embeddings"):
            shape = (config.max_sequence_length, H)
        elif name.endswith("token_type_embeddings"):
            shape = (config.num_segments, H)
        elif name.endswith("intermediate/dense/kernel"):
            shape = (H, F)
        elif name.endswith("intermediate/dense/bias"):
            shape = (F,)
        elif re.search(r"layer_\d+/output/dense/kernel$", name):
            shape = (F, H)
        elif name.endswith("output_weights"):
            shape = (2, H)
        elif name == "cls/seq_relationship/output_bias":
            shape = (2,)
        elif name == "cls/predictions/output_bias":
            shape = (V,)
        elif name.endswith("kernel"):
            shape = (H, H)
        else:
            shape = (H,)
        shapes[name] = shape
    return shapes


# ---------------------------------------------------------------------------------------------------------
# Our Keras variables <-> canonical.

def _dense(layer):
    return layer.kernel, layer.bias


def _layer_norm(layer):
    return layer.gamma, layer.beta


def zoo_to_google(backbone, pretrainer=None):
    """{canonical name: np.ndarray} from our built backbone (and pretrainer heads)."""
    out = {
        "bert/embeddings/word_embeddings": backbone.token_embedding.embeddings,
        "bert/embeddings/position_embeddings": backbone.position_embedding.embeddings,
        "bert/embeddings/token_type_embeddings": backbone.segment_embedding.embeddings,
    }
    out = {k: np.asarray(v.numpy()) for k, v in out.items()}
    g, b = _layer_norm(backbone.embeddings_norm)
    out["bert/embeddings/LayerNorm/gamma"], out["bert/embeddings/LayerNorm/beta"] = g.numpy(), b.numpy()
    H = backbone.hidden_dim
    for i, block in enumerate(backbone.blocks):
        p = f"bert/encoder/layer_{i}/"
        kernel, bias = (v.numpy() for v in _dense(block.attention.qkv))  # [H, 3H], [3H]
        for j, part in enumerate(("query", "key", "value")):
            out[p + f"attention/self/{part}/kernel"] = kernel[:, j * H : (j + 1) * H]
            out[p + f"attention/self/{part}/bias"] = bias[j * H : (j + 1) * H]
        for prefix, layer in (("attention/output/dense", block.attention.output_dense), ("intermediate/dense", block.intermediate), ("output/dense", block.ffn_output)):
            out[p + prefix + "/kernel"], out[p + prefix + "/bias"] = (v.numpy() for v in _dense(layer))
        for prefix, layer in (("attention/output/LayerNorm", block.attention_norm), ("output/LayerNorm", block.ffn_norm)):
            out[p + prefix + "/gamma"], out[p + prefix + "/beta"] = (v.numpy() for v in _layer_norm(layer))
    out["bert/pooler/dense/kernel"], out["bert/pooler/dense/bias"] = (v.numpy() for v in _dense(backbone.pooler))
    if pretrainer is not None:
        head = pretrainer.masked_lm_head
        out["cls/predictions/transform/dense/kernel"], out["cls/predictions/transform/dense/bias"] = (v.numpy() for v in _dense(head.transform))
        out["cls/predictions/transform/LayerNorm/gamma"], out["cls/predictions/transform/LayerNorm/beta"] = (v.numpy() for v in _layer_norm(head.layer_norm))
        out["cls/predictions/output_bias"] = head.output_bias.numpy()
        kernel, bias = (v.numpy() for v in _dense(pretrainer.next_sentence_head))
        out["cls/seq_relationship/output_weights"], out["cls/seq_relationship/output_bias"] = kernel.T, bias
    return out


def assign_google(weights, backbone, pretrainer=None):
    """Assigns canonical weights into a built backbone (and pretrainer heads); checks names and shapes first.

    Raises:
      ConversionError: listing missing and unexpected names, or the first shape mismatches with both shapes.
    """
    config = BertConfig(**{k: getattr(backbone, k) for k in BertConfig().to_dict()})
    want = expected_shapes(config, heads=pretrainer is not None)
    check_weights(weights, want, allow_extra=set(HEAD_NAMES) if pretrainer is None else set())
    w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    backbone.token_embedding.embeddings.assign(w["bert/embeddings/word_embeddings"])
    backbone.position_embedding.embeddings.assign(w["bert/embeddings/position_embeddings"])
    backbone.segment_embedding.embeddings.assign(w["bert/embeddings/token_type_embeddings"])
    _assign_ln(backbone.embeddings_norm, w, "bert/embeddings/LayerNorm")
    for i, block in enumerate(backbone.blocks):
        p = f"bert/encoder/layer_{i}/"
        kernel = np.concatenate([w[p + f"attention/self/{x}/kernel"] for x in ("query", "key", "value")], axis=1)  # [H, 3H]
        bias = np.concatenate([w[p + f"attention/self/{x}/bias"] for x in ("query", "key", "value")])
        block.attention.qkv.kernel.assign(kernel)
        block.attention.qkv.bias.assign(bias)
        _assign_dense(block.attention.output_dense, w, p + "attention/output/dense")
        _assign_ln(block.attention_norm, w, p + "attention/output/LayerNorm")
        _assign_dense(block.intermediate, w, p + "intermediate/dense")
        _assign_dense(block.ffn_output, w, p + "output/dense")
        _assign_ln(block.ffn_norm, w, p + "output/LayerNorm")
    _assign_dense(backbone.pooler, w, "bert/pooler/dense")
    if pretrainer is not None:
        head = pretrainer.masked_lm_head
        _assign_dense(head.transform, w, "cls/predictions/transform/dense")
        _assign_ln(head.layer_norm, w, "cls/predictions/transform/LayerNorm")
        head.output_bias.assign(w["cls/predictions/output_bias"])
        pretrainer.next_sentence_head.kernel.assign(w["cls/seq_relationship/output_weights"].T)
        pretrainer.next_sentence_head.bias.assign(w["cls/seq_relationship/output_bias"])


def _assign_dense(layer, w, prefix):
    layer.kernel.assign(w[prefix + "/kernel"])
    layer.bias.assign(w[prefix + "/bias"])


def _assign_ln(layer, w, prefix):
    layer.gamma.assign(w[prefix + "/gamma"])
    layer.beta.assign(w[prefix + "/beta"])


def check_weights(weights, expected, allow_extra=()):
    """Raises ConversionError naming missing/unexpected variables and shape mismatches (all of them)."""
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected) - set(allow_extra))
    bad_shapes = [
        f"{name}: checkpoint {tuple(np.shape(weights[name]))}, model expects {tuple(shape)}"
        for name, shape in expected.items()
        if name in weights and tuple(np.shape(weights[name])) != tuple(shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing variables: {missing}")
    if unexpected:
        problems.append(f"unexpected variables: {unexpected}")
    if bad_shapes:
        problems.append("shape mismatches: " + "; ".join(bad_shapes))
    if problems:
        raise ConversionError("The checkpoint does not match the BERT config. " + " | ".join(problems))
