r"""Export a pretrained or fine-tuned zoo model as a SavedModel on raw strings (TF Serving ready).

  python -m trainers.export --model_dir=runs/<model> --export_dir=exports/<model>

Signatures are the family's (`Family.serving_endpoints`): feature-based ones with every layer's output (e.g.
encode / encode_pairs) and, for a fine-tuned model, its task outputs (e.g. classify -> probabilities, logits;
then the serving_default). Only TF core and TF Text ops that TF Serving runs (checked before anything is written).
"""

from absl import flags, logging

from trainers import common
from trainers import flags as zflags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A zoo model dir (from trainers.pretrain, finetune or convert).")
flags.DEFINE_string("export_dir", None, "Where to write the SavedModel (must not exist unless --overwrite).")
flags.DEFINE_integer("sequence_length", None, "Maximum tokens per input (default: the model's training length).")
flags.DEFINE_bool("overwrite", False, "Replace --export_dir if it exists.")
flags.DEFINE_enum("precision", "float32", list(common.EXPORT_PRECISIONS),
                  "float32 (exact) or bfloat16 (bf16 weights and matmuls, float32 softmax/LayerNorm/outputs: half the size, "
                  "faster batches on bf16 CPUs and TPUs; outputs within 5 % of float32's scale).")
flags.DEFINE_bool("jit_compile", False, "Run the network as XLA computations (compiled per batch size and 8-token length "
                  "bucket on first use): lower small-batch CPU latency. TF Serving needs --xla_cpu_compilation_enabled=true.")
flags.DEFINE_bool("freeze_weights", False, "Read the weights as graph constants, so oneDNN caches them in its blocked "
                  "layout (with --precision=bfloat16 the matmuls then run on AMX: faster batches and single texts on recent "
                  "Xeons) at the cost of more serving memory (about 20x the weight bytes). Ignored with --jit_compile.")


def main(_):
    zflags.require(model_dir=FLAGS.model_dir, export_dir=FLAGS.export_dir)
    if FLAGS.freeze_weights and FLAGS.jit_compile:
        logging.warning("--freeze_weights is ignored with --jit_compile (XLA does not use oneDNN's weight cache).")
    path = common.export_model_dir(FLAGS.model_dir, FLAGS.export_dir, FLAGS.sequence_length, FLAGS.overwrite, FLAGS.precision,
                                   FLAGS.jit_compile, FLAGS.freeze_weights)
    logging.info("Try it: saved_model_cli run --dir %s --tag_set serve --signature_def serving_default --input_exprs 'text=[\"hello world\"]'", path)


if __name__ == "__main__":
    zflags.run(main)
