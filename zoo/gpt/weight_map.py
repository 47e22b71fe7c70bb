"""GPT-1's weight names: one canonical layout (HF transformers' `OpenAIGPTModel` names), onto which the original
openai/finetune-transformer-lm arrays and our Keras variables map.

Every layout stores its projections as [in, out]: HF's `Conv1D`, the original's conv1d kernels [1, in, out] (the
leading 1 squeezed) and Keras `Dense` kernels. So no direction transposes anything. The fused query-key-value
projection is one [H, 3H] matrix everywhere, split q | k | v along its output and then into N heads of D, and that
is also how `zoo.layers.MultiHeadAttention` reads its `qkv` kernel. The original's arrays carry no names: their
order in params_shapes.json is the order of `canonical_names`.

Shape legend: V token rows, P positions, H hidden, F intermediate (4H in GPT-1), L layers.
"""

import numpy as np

from zoo.formats import check_weights

POSITIONS = "positions_embed.weight"  # [P, H]
TOKENS = "tokens_embed.weight"  # [V, H]
# Per block, in the original's order: (canonical suffix, the original's variable name under model/h<i>/).
LAYER_PARTS = (
    ("attn.c_attn.weight", "attn/c_attn/w"),
    ("attn.c_attn.bias", "attn/c_attn/b"),
    ("attn.c_proj.weight", "attn/c_proj/w"),
    ("attn.c_proj.bias", "attn/c_proj/b"),
    ("ln_1.weight", "ln_1/g"),
    ("ln_1.bias", "ln_1/b"),
    ("mlp.c_fc.weight", "mlp/c_fc/w"),
    ("mlp.c_fc.bias", "mlp/c_fc/b"),
    ("mlp.c_proj.weight", "mlp/c_proj/w"),
    ("mlp.c_proj.bias", "mlp/c_proj/b"),
    ("ln_2.weight", "ln_2/g"),
    ("ln_2.bias", "ln_2/b"),
)
CONFIG_WHAT = "the GPT config"  # how check_weights' messages name what a checkpoint must match


def canonical_names(num_layers):
    """Every canonical name of an L-layer GPT, in the original's order: positions, tokens, then each block."""
    return [POSITIONS, TOKENS] + [f"h.{i}.{suffix}" for i in range(num_layers) for suffix, _ in LAYER_PARTS]


def original_name(name):
    """The original's name of a canonical name ('h.0.attn.c_attn.weight' -> 'h0/attn/c_attn/w'), for messages."""
    if name in (POSITIONS, TOKENS):
        return "we (positions)" if name == POSITIONS else "we (tokens)"
    _, layer, suffix = name.split(".", 2)
    return f"h{layer}/{dict(LAYER_PARTS)[suffix]}"


def is_conv_kernel(name):
    """True for the projections, which the original stores as 3-D conv kernels [1, in, out]."""
    return name.endswith("weight") and (".attn." in name or ".mlp." in name)


def expected_shapes(config, token_rows=None):
    """{canonical name: shape} for a `GPTConfig`; the token table has `token_rows` rows (default: the config's V)."""
    H, F = config.hidden_dim, config.intermediate_dim
    shapes = {POSITIONS: (config.max_sequence_length, H), TOKENS: (token_rows or config.vocabulary_size, H)}
    per_layer = {"attn.c_attn.weight": (H, 3 * H), "attn.c_attn.bias": (3 * H,), "attn.c_proj.weight": (H, H),
                 "mlp.c_fc.weight": (H, F), "mlp.c_fc.bias": (F,), "mlp.c_proj.weight": (F, H)}
    for i in range(config.num_layers):
        for suffix, _ in LAYER_PARTS:
            shapes[f"h.{i}.{suffix}"] = per_layer.get(suffix, (H,))
    return shapes


# ---------------------------------------------------------------------------------------------------------
# Our Keras variables <-> canonical.

def _block_variables(block):
    """{canonical suffix: tf.Variable} of one `zoo.layers.TransformerBlock`."""
    return {
        "attn.c_attn.weight": block.attention.qkv.kernel, "attn.c_attn.bias": block.attention.qkv.bias,
        "attn.c_proj.weight": block.attention.output_dense.kernel, "attn.c_proj.bias": block.attention.output_dense.bias,
        "ln_1.weight": block.attention_norm.gamma, "ln_1.bias": block.attention_norm.beta,
        "mlp.c_fc.weight": block.intermediate.kernel, "mlp.c_fc.bias": block.intermediate.bias,
        "mlp.c_proj.weight": block.ffn_output.kernel, "mlp.c_proj.bias": block.ffn_output.bias,
        "ln_2.weight": block.ffn_norm.gamma, "ln_2.bias": block.ffn_norm.beta,
    }


def _variables(backbone):
    """{canonical name: tf.Variable} of a built `GPTBackbone`."""
    out = {POSITIONS: backbone.position_embedding.embeddings, TOKENS: backbone.token_embedding.embeddings}
    for i, block in enumerate(backbone.blocks):
        out.update({f"h.{i}.{suffix}": v for suffix, v in _block_variables(block).items()})
    return out


def from_backbone(backbone):
    """{canonical name: float32 np.ndarray} of a built `GPTBackbone`."""
    return {name: np.asarray(v.numpy(), np.float32) for name, v in _variables(backbone).items()}


def assign(weights, backbone):
    """Assigns canonical weights into a built `GPTBackbone`, every name and shape checked first.

    Raises:
      ConversionError: listing every missing and unexpected name and every shape mismatch.
    """
    check_weights(weights, expected_shapes(backbone.config), what=CONFIG_WHAT)
    for name, variable in _variables(backbone).items():
        variable.assign(np.asarray(weights[name], np.float32))
