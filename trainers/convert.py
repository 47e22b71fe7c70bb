r"""Convert BERT weights between HF transformers, google-research/bert (TF1) and zoo model dirs.

  python -m trainers.convert --from=hf --to=zoo --input=all-MiniLM-L6-v2 --output=runs/minilm
  python -m trainers.convert --from=tf1 --to=zoo --input=uncased_L-12_H-768_A-12 --output=runs/bert_base
  python -m trainers.convert --from=zoo --to=hf --input=runs/bert_tiny --output=exports/bert_tiny_hf

A zoo output is a model dir like trainers.pretrain writes (zoo_config.json, vocab.txt, checkpoint): use it as
`trainers.pretrain --init_checkpoint`, `trainers.finetune --init` or `trainers.export --model_dir`. An HF output
loads with transformers' BertModel / BertForPreTraining.from_pretrained. Every name and shape is checked
first, and nothing is written unless the whole conversion succeeds. See docs/CONVERT.md.
"""

from absl import flags

from trainers import flags as zflags

FLAGS = flags.FLAGS
flags.DEFINE_enum("from", None, ["hf", "tf1", "zoo"], "Source format: hf (transformers folder), tf1 (google-research/bert folder or checkpoint prefix), zoo (model dir or export).")
flags.DEFINE_enum("to", "zoo", ["zoo", "hf"], "Target format.")
flags.DEFINE_string("input", None, "The source folder (or TF1 checkpoint prefix).")
flags.DEFINE_string("output", None, "The folder to write (must not exist unless --overwrite).")
flags.DEFINE_enum("lowercase", "auto", ["auto", "true", "false"], "Tokenizer lower-casing: auto follows the checkpoint (tokenizer_config.json, the folder name, the vocabulary).")
flags.DEFINE_bool("allow_missing_pooler", False, "Accept a checkpoint without the pooler (e.g. BertForMaskedLM); it is then freshly initialised.")
flags.DEFINE_integer("sequence_length", None, "The zoo preprocessor's maximum length (default: 128 for hf/tf1 sources, the source's for zoo).")
flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")


def main(_):
    from zoo.bert import convert

    zflags.require(**{"from": FLAGS["from"].value, "input": FLAGS.input, "output": FLAGS.output})
    lowercase = {"auto": None, "true": True, "false": False}[FLAGS.lowercase]
    convert.convert(
        FLAGS["from"].value, FLAGS.to, FLAGS.input, FLAGS.output, lowercase=lowercase,
        allow_missing_pooler=FLAGS.allow_missing_pooler, sequence_length=FLAGS.sequence_length, overwrite=FLAGS.overwrite,
    )


if __name__ == "__main__":
    zflags.run(main)
