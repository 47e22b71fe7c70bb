"""BERT's weight names: every format mapped onto one canonical layout, and checked against a config.

Every format is mapped onto one canonical layout: google-research/bert's TF1 variable names with TF kernel
layouts ([in, out]). HF names map onto it by renaming and transposing torch Linear weights; our Keras
variables map onto it by splitting/joining the fused query-key-value kernel. So each direction is one table.

Modules: this one holds the name tables; zoo.bert.convert_io the readers/writers of each format (`Converted`);
zoo.bert.convert_formats BERT's config JSON and casing (the generic files are in zoo.formats); zoo.bert.convert
the API.

Shape legend: H hidden, F intermediate, V vocabulary, P positions, S segments, N heads, D head dim.
"""

import re

import numpy as np

from zoo.bert import convert_formats as fmt
from zoo.bert.config import BertConfig
from zoo.bert.convert_formats import ConversionError
from zoo.formats import check_weights

# How check_weights' messages name what a checkpoint must match.
CONFIG_WHAT = "the BERT config"

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
    check_weights(weights, want, allow_extra=set(HEAD_NAMES) if pretrainer is None else set(), what=CONFIG_WHAT)
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


MLM_NAMES = [n for n in HEAD_NAMES if n.startswith("cls/predictions/")]
NSP_NAMES = [n for n in HEAD_NAMES if n.startswith("cls/seq_relationship/")]
POOLER_NAMES = ["bert/pooler/dense/kernel", "bert/pooler/dense/bias"]
PARTS = {"pooler": POOLER_NAMES, "mlm": MLM_NAMES, "nsp": NSP_NAMES}


# ---------------------------------------------------------------------------------------------------------
# HF transformers names <-> canonical.

_HF_SPECIAL = {
    "cls/predictions/output_bias": "cls.predictions.bias",
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",  # [2, H] on both sides
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
}


def hf_name(name):
    """The HF transformers name of a canonical name, BertModel style (no 'bert.' prefix on the backbone)."""
    if name in _HF_SPECIAL:
        return _HF_SPECIAL[name]
    name = re.sub(r"layer_(\d+)", r"layer.\1", name.removeprefix("bert/")).replace("/", ".")
    for old, new in ((".kernel", ".weight"), (".gamma", ".weight"), (".beta", ".bias")):
        if name.endswith(old):
            return name[: -len(old)] + new
    return name + ".weight" if name.endswith("_embeddings") else name


def transposed(name):
    # torch Linear stores [out, in]; TF kernels are [in, out]. output_weights is [2, H] in both.
    return name.endswith("/kernel")


def normalize_hf(tensors, where):
    """HF state dict -> BertModel-style names: 'bert.' prefix dropped, LayerNorm gamma/beta renamed, buffers
    dropped, and the tied MLM decoder (which must equal the word embeddings / output bias) folded in."""
    out = {}
    for name, value in tensors.items():
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name.removeprefix("bert.")))
        if key in fmt.HF_BUFFERS:
            continue
        if key in out:
            raise ConversionError(f"{where}: {name} appears twice (with and without the 'bert.' prefix, or as gamma/beta and weight/bias).")
        out[key] = value
    decoder = out.pop("cls.predictions.decoder.weight", None)
    embeddings = out.get("embeddings.word_embeddings.weight")
    if decoder is not None and embeddings is not None and not np.array_equal(decoder, embeddings):
        raise ConversionError(
            f"{where}: cls.predictions.decoder.weight differs from embeddings.word_embeddings.weight; zoo BERT ties "
            "its MLM output projection to the input embeddings (as BERT does), so an untied decoder cannot be converted."
        )
    decoder_bias = out.pop("cls.predictions.decoder.bias", None)
    if decoder_bias is not None:
        bias = out.setdefault("cls.predictions.bias", decoder_bias)
        if not np.array_equal(bias, decoder_bias):
            raise ConversionError(f"{where}: cls.predictions.decoder.bias differs from cls.predictions.bias (HF ties them).")
    return out


def checked_canonical(tensors, config, where, rename=lambda n: n, transpose=lambda n: False, allow_missing_pooler=False):
    """Checks a source's tensors (under its own names/layouts) against `config`; returns canonical weights.

    The pretraining heads are optional as whole groups (cls/predictions, cls/seq_relationship); the pooler
    only with `allow_missing_pooler`. Messages use the source's names and shapes.

    Raises:
      ConversionError: naming `where`, every missing and unexpected variable, and every shape mismatch.
    """
    optional = set()
    for part, names in PARTS.items():
        if (part != "pooler" or allow_missing_pooler) and not any(rename(n) in tensors for n in names):
            optional.update(names)
    expected = {
        rename(n): tuple(reversed(shape)) if transpose(n) else shape for n, shape in expected_shapes(config, heads=True).items() if n not in optional
    }
    try:
        check_weights(tensors, expected, what=CONFIG_WHAT)
    except ConversionError as e:
        raise ConversionError(f"{where}: {e}") from None
    canonical = [n for n in expected_shapes(config, heads=True) if n not in optional]
    return {n: np.asarray(tensors[rename(n)].T if transpose(n) else tensors[rename(n)], np.float32) for n in canonical}


# ---------------------------------------------------------------------------------------------------------
# The API.
