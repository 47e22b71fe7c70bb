"""Writes a seeded, randomly initialised GPT-1 in HF transformers' own layout or in the original
openai/finetune-transformer-lm layout, for the converter's tests (tests/test_gpt_convert.py) and for trying
`trainers.convert` without downloading GPT-1.

  python scripts/make_gpt_reference_weights.py --output=/tmp/gpt_tiny_hf                       # HF, tiny, seed 0
  python scripts/make_gpt_reference_weights.py --output=/tmp/gpt1_hf --size=gpt1 --vocab_dir=../shared/fixtures/gpt1_bpe
  python scripts/make_gpt_reference_weights.py --output=/tmp/gpt_tiny_original --layout=original

The model is transformers' `OpenAIGPTLMHeadModel` initialised by transformers under `torch.manual_seed(seed)`
(N(0, 0.02) matrices, zero biases, unit LayerNorm scales); then, unless --plain_init, every bias and LayerNorm
parameter gets seeded noise, so a swapped bias or scale would show in a comparison. Sizes: tiny (L=2, H=32,
2 heads, 64 positions) and gpt1 (the paper's: L=12, H=768, 12 heads, 3072, 512 positions).

Layouts:
  hf        `save_pretrained` (config.json, model.safetensors) + vocab.json + merges.txt: what HF's hub folder
            `openai-gpt` holds (no special tokens in the vocabulary or the embedding, unless --special_tokens).
  original  params_shapes.json + params_0..9.npy (every array flattened, concatenated in the original's order,
            split into 10 shards; projections as conv kernels [1, in, out]) + encoder_bpe_40000.json +
            vocab_40000.bpe. Written here from the layout's description, independently of zoo's converter.

Vocabulary: --vocab_dir's BPE files (vocab.json + merges.txt or encoder_bpe_40000.json + vocab_40000.bpe, e.g.
GPT-1's own), or else a small BPE learned from a few sentences, padded with '<filler_i>' symbols to --vocab_size.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SIZES = {
    "tiny": dict(n_layer=2, n_embd=32, n_head=2, n_positions=64),
    "gpt1": dict(n_layer=12, n_embd=768, n_head=12, n_positions=512),
}
GPT1_VOCABULARY_SIZE = 40478
SHARDS = 10
# The original's per-block arrays in params_shapes.json order: (HF module path, parameter).
ORIGINAL_BLOCK_ORDER = (
    ("attn.c_attn", "weight"), ("attn.c_attn", "bias"), ("attn.c_proj", "weight"), ("attn.c_proj", "bias"),
    ("ln_1", "weight"), ("ln_1", "bias"), ("mlp.c_fc", "weight"), ("mlp.c_fc", "bias"),
    ("mlp.c_proj", "weight"), ("mlp.c_proj", "bias"), ("ln_2", "weight"), ("ln_2", "bias"),
)
SENTENCES = [
    "the film was a gripping story , beautifully acted and far too short .",
    "a dull , predictable plot that goes on for two hours .",
    "i did not expect to like it , but the cast is wonderful !",
    "the story of a family in a small town , told with humour and care .",
    "what a waste of time : the dialogue is flat and the ending makes no sense .",
]


def read_bpe_files(folder):
    """({token: id}, [merge line]) of a folder's BPE files (HF names first, then the original's)."""
    for vocab_name, merges_name in (("vocab.json", "merges.txt"), ("encoder_bpe_40000.json", "vocab_40000.bpe")):
        if os.path.exists(os.path.join(folder, vocab_name)):
            with open(os.path.join(folder, vocab_name), encoding="utf-8") as f:
                vocabulary = json.load(f)
            with open(os.path.join(folder, merges_name), encoding="utf-8") as f:
                lines = f.read().split("\n")
            return vocabulary, [line for line in lines[1:] if line]  # after the '#version' header
    raise SystemExit(f"{folder} holds no vocab.json or encoder_bpe_40000.json")


def vocabulary(vocab_dir=None, size=None, special_tokens=False):
    """({token: id} of the BPE symbols, [merge line]); `size` pads with filler symbols; `special_tokens` appends
    the zoo's five (what a zoo -> HF export's vocab.json holds)."""
    if vocab_dir:
        vocab, merges = read_bpe_files(vocab_dir)
    else:
        from zoo.text.bpe import SPECIAL_TOKENS, BytePairTokenizer

        learned = BytePairTokenizer.learn(SENTENCES * 4, 160)
        symbols = [t for t in learned.vocabulary if t not in SPECIAL_TOKENS.values()]
        vocab, merges = {t: i for i, t in enumerate(symbols)}, [f"{a} {b}" for a, b in learned.merges]
    if size is not None:
        if len(vocab) > size:
            raise SystemExit(f"the vocabulary has {len(vocab)} symbols, more than --vocab_size={size}")
        vocab.update({f"<filler_{i}>": i for i in range(len(vocab), size)})  # never produced from text ('<' splits)
    if special_tokens:
        from zoo.text.bpe import SPECIAL_TOKENS

        vocab.update({t: len(vocab) + i for i, t in enumerate(SPECIAL_TOKENS.values())})
    return vocab, merges


def hf_model(size, vocabulary_size, seed=0, perturb=True):
    """A seeded OpenAIGPTLMHeadModel (float32, eval mode)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.OpenAIGPTConfig(vocab_size=vocabulary_size, **SIZES[size])
    model = transformers.OpenAIGPTLMHeadModel(config).eval()
    if perturb:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.ndim == 1:  # biases and LayerNorm scales/shifts: not 0 / 1 everywhere
                    parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def _write_bpe(vocab, merges, folder, names):
    with open(os.path.join(folder, names[0]), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, names[1]), "w", encoding="utf-8") as f:
        f.write("\n".join(["#version: 0.2"] + list(merges)) + "\n")


def save_hf(model, vocab, merges, folder):
    """HF's own layout: save_pretrained + vocab.json + merges.txt."""
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    _write_bpe(vocab, merges, folder, ("vocab.json", "merges.txt"))
    return folder


def original_arrays(model):
    """[positions [P, H], tokens [V, H], then per block the 12 arrays] in the original's order and shapes."""
    state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.transformer.state_dict().items()}
    arrays = [state["positions_embed.weight"], state["tokens_embed.weight"]]
    for i in range(model.config.n_layer):
        for module, parameter in ORIGINAL_BLOCK_ORDER:
            value = state[f"h.{i}.{module}.{parameter}"]
            arrays.append(value[None] if parameter == "weight" and module.startswith(("attn", "mlp")) else value)
    return arrays


def save_original(model, vocab, merges, folder):
    """The original layout: params_shapes.json, params_0..9.npy, encoder_bpe_40000.json, vocab_40000.bpe."""
    os.makedirs(folder, exist_ok=True)
    arrays = original_arrays(model)
    with open(os.path.join(folder, "params_shapes.json"), "w") as f:
        json.dump([list(a.shape) for a in arrays], f)
    flat = np.concatenate([a.ravel() for a in arrays])
    for i, shard in enumerate(np.array_split(flat, SHARDS)):
        np.save(os.path.join(folder, f"params_{i}.npy"), shard)
    _write_bpe(vocab, merges, folder, ("encoder_bpe_40000.json", "vocab_40000.bpe"))
    return folder


def make(output, size="tiny", layout="hf", seed=0, vocab_dir=None, vocab_size=None, special_tokens=False, perturb=True):
    """Writes the model to `output`; returns (the HF model, its vocabulary, merges)."""
    vocab, merges = vocabulary(vocab_dir, vocab_size, special_tokens)
    model = hf_model(size, len(vocab), seed, perturb)
    (save_hf if layout == "hf" else save_original)(model, vocab, merges, output)
    return model, vocab, merges


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--layout", choices=("hf", "original"), default="hf")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab_dir", default=None, help="BPE files to use (default: a small learned BPE)")
    parser.add_argument("--vocab_size", type=int, default=None,
                        help="pad the vocabulary to this many symbols (default: 40478 for gpt1 without --vocab_dir)")
    parser.add_argument("--special_tokens", action="store_true", help="append the zoo's 5 special tokens to vocab.json")
    parser.add_argument("--plain_init", action="store_true", help="keep transformers' zero biases and unit scales")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    vocab_size = args.vocab_size or (GPT1_VOCABULARY_SIZE if args.size == "gpt1" and not args.vocab_dir else None)
    model, vocab, _ = make(args.output, args.size, args.layout, args.seed, args.vocab_dir, vocab_size,
                           args.special_tokens, not args.plain_init)
    print(f"wrote {args.layout} layout of a {args.size} OpenAIGPTLMHeadModel (seed {args.seed}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(vocab)} tokens) to {args.output}")


if __name__ == "__main__":
    main()
