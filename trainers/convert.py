r"""Convert a family's weights between its original formats and zoo model dirs.

  python -m trainers.convert --model=<family> --from=hf --to=zoo --input=all-MiniLM-L6-v2 --output=runs/minilm
  python -m trainers.convert --from=zoo --to=hf --input=runs/<model> --output=exports/<model>_hf

--model (or its alias --family) picks the family for a foreign source; a zoo source names its own. Each family
lists the formats it reads and writes (zoo.contract.Family.convert_formats; e.g. hf, tf1 and zoo). A zoo output is
a model dir like trainers.pretrain writes: use it as `trainers.pretrain --init_checkpoint`, `trainers.finetune
--init` or `trainers.export --model_dir`. Every name and shape is checked first, and nothing is written unless the
whole conversion succeeds. See docs/CONVERT.md.
"""

from absl import flags

from trainers import flags as zflags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "bert", "Model family of a foreign --input (a key of zoo.FAMILIES); a zoo --input names its own.")
flags.DEFINE_alias("family", "model")
flags.DEFINE_string("from", None, "Source format: zoo (model dir or export) or one the family reads (e.g. hf, tf1).")
flags.DEFINE_string("to", "zoo", "Target format: zoo or one the family writes (e.g. hf).")
flags.DEFINE_string("input", None, "The source folder (or checkpoint prefix).")
flags.DEFINE_string("output", None, "The folder to write (must not exist unless --overwrite).")
flags.DEFINE_enum("lowercase", "auto", ["auto", "true", "false"], "Tokenizer lower-casing: auto follows the source (its tokenizer config, folder name or vocabulary).")
flags.DEFINE_list("allow_missing", [], "Weight groups the source may lack (e.g. pooler, for a masked-LM-only checkpoint); they are freshly initialised and recorded as such.")
flags.DEFINE_integer("sequence_length", None, "The zoo preprocessor's maximum length (default: 128 for foreign sources, the source's for zoo).")
flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")


def main(_):
    import zoo

    source = FLAGS["from"].value
    zflags.require(**{"from": source, "input": FLAGS.input, "output": FLAGS.output})
    family = zoo.family_of(FLAGS.input) if source == "zoo" else zoo.family(FLAGS.model)
    for side, value in (("from", source), ("to", FLAGS.to)):
        if value not in family.convert_formats[side]:
            raise ValueError(f"--{side}={value}: {family.name} converts from {', '.join(family.convert_formats['from'])} "
                             f"to {', '.join(family.convert_formats['to'])}.")
    lowercase = {"auto": None, "true": True, "false": False}[FLAGS.lowercase]
    family.convert(source, FLAGS.to, FLAGS.input, FLAGS.output, lowercase=lowercase, allow_missing=FLAGS.allow_missing,
                   sequence_length=FLAGS.sequence_length, overwrite=FLAGS.overwrite)


if __name__ == "__main__":
    zflags.run(main)
