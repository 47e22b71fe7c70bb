r"""Bug check for the demo's "pretraining hurts": pretrain HF's BertForMaskedLM as the zoo demo pretrains, then
fine-tune it exactly as the zoo's own and set both beside random init.

  # 1. the zoo's own demo pretraining (writes runs/bert_tiny with its vocab.txt)
  python -m trainers.pretrain --flagfile=tpu_configs/bert_tiny_cpu.cfg
  # 2. HF at the same size / corpus / vocabulary / steps / batch / LR schedule, then the comparison
  python -m benchmarks.hf_mlm_pretrain --zoo_model_dir=runs/bert_tiny --output=runs/hf_bert_tiny \
      --compare_seeds=0,1,2 --json_out=benchmarks/results/hf_mlm_bugcheck.json

What is the same as the zoo run: the documents (``--default_corpus --max_documents=24000`` through
``trainers.common.read_corpus``), the zoo run's vocab.txt and tokenizer, the packed ``[CLS] A [SEP] B [SEP]``
sequences of ``zoo.data.instances.create_pair_instances`` (same seed; HF gets the segment ids too), the
architecture (its zoo_config.json), steps, batch, sequence length, AdamW (decay 0.01 off biases/LayerNorm,
eps 1e-6, global-norm clip 1.0) and the warmup + linear decay schedule. What differs, on purpose: HF trains
MLM only (BertForMaskedLM, no NSP head), masks the HF way (each real token with probability 15 %, 80 % [MASK] /
10 % random / 10 % kept, no cap on predictions per sequence) and computes in float32 (the zoo demo: mixed
bfloat16; torch's CPU autocast was slower here). The MLM head runs on the masked positions only
(``masked_lm_loss``), the same loss as BertForMaskedLM's own.

The model is saved with ``save_pretrained`` (plus vocab.txt and tokenizer_config.json), converted with
``python -m trainers.convert --from=hf --to=zoo --allow_missing=pooler`` and fine-tuned with the demo's flags
(``benchmarks.finetune_seeds``) over the seeds, on the dev and the test split (a check, not a selection).
"""

import argparse
import json
import os
import shutil
import sys
import time
import types

from benchmarks import finetune_seeds as fs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo_model_dir", default="runs/bert_tiny", help="The zoo pretraining run to mirror: its vocab.txt, zoo_config.json and training settings.")
    parser.add_argument("--output", default="runs/hf_bert_tiny", help="HF folder to write (save_pretrained).")
    parser.add_argument("--train_steps", type=int, default=None, help="Default: the zoo run's train_steps.")
    parser.add_argument("--global_batch_size", type=int, default=None, help="Default: the zoo run's.")
    parser.add_argument("--learning_rate", type=float, default=None, help="Default: the zoo run's.")
    parser.add_argument("--warmup_steps", type=int, default=None, help="Default: the zoo run's.")
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--max_documents", type=int, default=24000, help="As --default_corpus --max_documents.")
    parser.add_argument("--seed", type=int, default=None, help="Seed of the pairs and masks (default: the zoo run's).")
    parser.add_argument("--precision", choices=["bfloat16", "float32"], default="float32",
                        help="float32 by default: torch's CPU bfloat16 autocast ran this model 5x slower here (1.2 vs 6.5 steps/s on 2 cores).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    parser.add_argument("--log_every", type=int, default=250)
    parser.add_argument("--compare_seeds", default="", help="If set (e.g. 0,1,2): convert and fine-tune zoo, HF and random init over these seeds.")
    parser.add_argument("--eval_splits", default="dev,test")
    parser.add_argument("--finetune_flags", default="{}", help="JSON of trainers.finetune flags replacing the demo's (e.g. '{\"max_train_examples\": 1000}').")
    parser.add_argument("--runs_dir", default="runs/bugcheck", help="Where the converted model and the fine-tunes go.")
    parser.add_argument("--json_out", default="")
    parser.add_argument("--skip_pretrain", action="store_true", help="Reuse an existing --output.")
    return parser.parse_args(argv)


def zoo_settings(zoo_model_dir):
    """(backbone config dict, training settings dict, lowercase, vocab path) of a zoo pretraining model dir."""
    with open(os.path.join(zoo_model_dir, "zoo_config.json")) as f:
        config = json.load(f)
    vocab = os.path.join(zoo_model_dir, config["preprocessor"]["vocabulary"])
    return config["backbone"], config.get("training", {}), config["preprocessor"]["lowercase"], vocab, config["preprocessor"]["sequence_length"]


def pair_instances(vocab_path, lowercase, max_documents, sequence_length, seed):
    """The zoo's packed sentence pairs of the demo corpus, tokenized with the zoo run's vocabulary."""
    from trainers import common
    from zoo.data import instances
    from zoo.text.wordpiece import load_vocabulary

    source = types.SimpleNamespace(corpus=None, tfds=None, default_corpus=True, paragraph_mode=False, skip_documents=0, max_documents=max_documents)
    documents = common.read_corpus(source)
    tokenizer, ids = common.tokenize(documents, load_vocabulary(vocab_path), lowercase)
    pairs = instances.stack_instances(instances.create_pair_instances(ids, vocabulary=tokenizer.vocabulary, sequence_length=sequence_length, seed=seed))
    return tokenizer, pairs


def hf_config(backbone, pad_id):
    """transformers.BertConfig for a zoo BertConfig dict (the inverse of zoo.bert.convert_formats.hf_config_json)."""
    import transformers

    return transformers.BertConfig(
        vocab_size=backbone["vocabulary_size"], hidden_size=backbone["hidden_dim"], num_hidden_layers=backbone["num_layers"],
        num_attention_heads=backbone["num_heads"], intermediate_size=backbone["intermediate_dim"], hidden_act="gelu",
        hidden_dropout_prob=backbone["dropout"], attention_probs_dropout_prob=backbone["dropout"],
        max_position_embeddings=backbone["max_sequence_length"], type_vocab_size=backbone["num_segments"],
        layer_norm_eps=backbone["layer_norm_epsilon"], initializer_range=backbone["initializer_range"], pad_token_id=pad_id,
    )


def mask_batch(token_ids, padding_mask, special_ids, vocab_size, mask_id, generator, mask_prob=0.15):
    """HF's MLM masking (DataCollatorForLanguageModeling): (input_ids, labels with -100 off the masked positions)."""
    import torch

    labels = token_ids.clone()
    candidates = padding_mask.bool() & ~torch.isin(token_ids, special_ids)
    masked = (torch.rand(token_ids.shape, generator=generator) < mask_prob) & candidates
    labels[~masked] = -100
    inputs = token_ids.clone()
    replace = (torch.rand(token_ids.shape, generator=generator) < 0.8) & masked
    inputs[replace] = mask_id
    randomize = (torch.rand(token_ids.shape, generator=generator) < 0.5) & masked & ~replace
    inputs[randomize] = torch.randint(vocab_size, token_ids.shape, generator=generator)[randomize]
    return inputs, labels


def masked_lm_loss(model, inputs, segment_ids, padding_mask, labels, max_masked_fraction=0.25):
    """BertForMaskedLM's loss, with its prediction head run on (a fixed number of) the masked positions only.

    The same value as ``model(..., labels=labels).loss`` (mean cross-entropy over positions whose label is not
    -100), without the [B*T, V] logits of every position: on 2 CPU cores that full-vocabulary head made HF ~3x
    slower per step than the zoo, whose head, like google-research/bert's, sees only the masked positions. The
    gather has a fixed size (``max_masked_fraction`` of B*T, padded with ignored labels; 15 % masking never comes
    near it) because a new shape every step makes oneDNN rebuild its kernels (several times slower, growing memory).
    """
    import torch

    hidden = model.bert(input_ids=inputs, token_type_ids=segment_ids, attention_mask=padding_mask).last_hidden_state
    flat_labels = labels.reshape(-1)
    size = int(flat_labels.numel() * max_masked_fraction)
    positions = torch.nonzero(flat_labels != -100).squeeze(1)[:size]
    index = torch.zeros(size, dtype=torch.long)
    index[: len(positions)] = positions
    target = torch.full((size,), -100, dtype=torch.long)
    target[: len(positions)] = flat_labels[positions]
    logits = model.cls(hidden.reshape(-1, hidden.shape[-1])[index])
    return torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=-100)


def pretrain(args):
    """Trains BertForMaskedLM and saves it to args.output; returns a summary dict (loss, throughput)."""
    import torch
    import transformers

    backbone, training, lowercase, vocab_path, zoo_length = zoo_settings(args.zoo_model_dir)
    steps = args.train_steps or training.get("train_steps", 4000)
    batch = args.global_batch_size or training.get("global_batch_size", 64)
    peak = args.learning_rate or training.get("learning_rate", 2e-3)
    warmup = args.warmup_steps if args.warmup_steps is not None else training.get("warmup_steps", 400)
    seed = args.seed if args.seed is not None else training.get("seed", 12345)
    precision = args.precision or "float32"
    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)

    tokenizer, pairs = pair_instances(vocab_path, lowercase, args.max_documents, zoo_length, seed)
    token_ids = torch.from_numpy(pairs["token_ids"]).long()
    segment_ids = torch.from_numpy(pairs["segment_ids"]).long()
    padding_mask = torch.from_numpy(pairs["padding_mask"]).long()
    specials = torch.tensor([tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.unknown_id])
    print(f"{len(token_ids)} pairs of length {zoo_length}; {steps} steps x batch {batch}, peak lr {peak}, warmup {warmup}, {precision}", flush=True)

    model = transformers.BertForMaskedLM(hf_config(backbone, tokenizer.pad_id))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=peak, betas=(0.9, 0.999), eps=1e-6)

    def lr_at(step):  # zoo.optim.WarmupLinearDecay, as a multiplier of the peak
        return step / max(warmup, 1) if step < warmup else max(0.0, 1.0 - (step - warmup) / max(steps - warmup, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(seed)
    order, position, history = torch.randperm(len(token_ids), generator=generator), 0, []
    start = last = time.time()
    for step in range(1, steps + 1):
        if position + batch > len(order):
            order, position = torch.randperm(len(token_ids), generator=generator), 0
        index = order[position : position + batch]
        position += batch
        inputs, labels = mask_batch(token_ids[index], padding_mask[index], specials, tokenizer.vocabulary_size, tokenizer.mask_id, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = masked_lm_loss(model, inputs, segment_ids[index], padding_mask[index], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % args.log_every == 0 or step == steps:
            now = time.time()
            rate = args.log_every / max(now - last, 1e-9) if step % args.log_every == 0 else float("nan")
            last = now
            history.append({"step": step, "mlm_loss": float(loss), "lr": scheduler.get_last_lr()[0], "steps_per_second": rate})
            print(f"step {step}/{steps} | mlm_loss {float(loss):.4f} | lr {scheduler.get_last_lr()[0]:.2e} | {rate:.2f} steps/s | {rate * batch * zoo_length:,.0f} tokens/s", flush=True)
    seconds = time.time() - start

    if os.path.exists(args.output):
        shutil.rmtree(args.output)
    model.save_pretrained(args.output)
    shutil.copy(vocab_path, os.path.join(args.output, "vocab.txt"))
    with open(os.path.join(args.output, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": bool(lowercase), "strip_accents": None, "tokenize_chinese_chars": True,
                   "model_max_length": zoo_length}, f, indent=2)
    summary = {"steps": steps, "global_batch_size": batch, "sequence_length": zoo_length, "learning_rate": peak, "warmup_steps": warmup,
               "precision": precision, "torch_threads": args.threads, "seconds": round(seconds, 1), "steps_per_second": steps / seconds,
               "tokens_per_second": steps * batch * zoo_length / seconds, "final_mlm_loss": history[-1]["mlm_loss"], "history": history}
    with open(os.path.join(args.output, "pretrain_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"Done in {seconds:.0f}s: {summary['steps_per_second']:.2f} steps/s, {summary['tokens_per_second']:,.0f} tokens/s; saved {args.output}", flush=True)
    return summary


def compare(args, summary):
    """Converts the HF model and fine-tunes zoo / HF / random init over the seeds; returns the results dict."""
    seeds = [int(s) for s in args.compare_seeds.split(",")]
    splits = [s for s in args.eval_splits.split(",") if s]
    flags = json.loads(args.finetune_flags)
    converted = os.path.join(args.runs_dir, "hf_converted")
    fs.run_trainer("trainers.convert", {"from": "hf", "to": "zoo", "input": args.output, "output": converted, "allow_missing": "pooler",
                                        "overwrite": True}, converted + ".log")
    inits = {"zoo": (args.zoo_model_dir, False), "hf": (converted, False), "random": (args.zoo_model_dir, True)}
    results = {}
    for name, (init, random_init) in inits.items():
        rows = fs.finetune_seeds(init, os.path.join(args.runs_dir, name), seeds, splits, random_init=random_init, flags=flags)
        results[name] = {"init": init, "random_init": random_init, "runs": rows, **fs.summarize_rows(rows, splits)}
        print(f"{name:7} " + "  ".join(f"{s}: {fs.fmt(results[name][s])}" for s in splits), flush=True)
    payload = {"benchmark": "hf_mlm_pretrain", **fs.provenance("benchmarks.hf_mlm_pretrain"), "zoo_model_dir": args.zoo_model_dir, "hf_model": args.output,
               "hf_pretraining": {k: v for k, v in (summary or {}).items() if k != "history"}, "seeds": seeds, "eval_splits": splits,
               "finetune_flags": {**fs.DEMO_FINETUNE_FLAGS, **flags}, "results": results}
    print("\n| init | " + " | ".join(f"{s} accuracy (mean ± std)" for s in splits) + " |")
    print("|---|" + "---|" * len(splits))
    for name in inits:
        print(f"| {name} | " + " | ".join(fs.fmt(results[name][s]) for s in splits) + " |")
    return payload


def main(argv=None):
    args = parse_args(argv)
    summary = None
    if args.skip_pretrain:
        path = os.path.join(args.output, "pretrain_summary.json")
        if os.path.exists(path):
            with open(path) as f:
                summary = json.load(f)
    else:
        summary = pretrain(args)
    if args.compare_seeds:
        payload = compare(args, summary)
        if args.json_out:
            fs.write_json(args.json_out, payload)
            print(f"Wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
