"""BERT's side of the family contract (zoo.contract.Family): WordPiece, masked LM + NSP, AdamW, fill-mask samples."""

import tensorflow as tf

from zoo.bert.backbone import BertBackbone
from zoo.bert.classifier import BertClassifier
from zoo.bert.config import PRESETS, BertConfig
from zoo.bert.preprocessor import BertPreprocessor
from zoo.bert.pretrainer import BertPretrainer
from zoo.bert.serving import serving_endpoints
from zoo.contract import Family
from zoo.text.wordpiece import WordPieceTokenizer


class BertFamily(Family):
    """BERT (Devlin et al. 2018); see zoo.contract for what each attribute and method is for."""

    name = "bert"
    Config = BertConfig
    PRESETS = PRESETS
    Backbone = BertBackbone
    Tokenizer = WordPieceTokenizer
    objective = "masked_lm_nsp"
    optimizer = "adamw_linear"
    default_samples = ("this movie was [MASK] .", "the acting was [MASK] and the plot was boring .", "i [MASK] this film .")
    convert_formats = {"from": ("hf", "tf1", "zoo"), "to": ("zoo", "hf")}
    allow_missing = ("pooler",)

    def pretrainer(self, config):
        """A built `BertPretrainer` (MLM + NSP, computes its own losses) with fresh weights."""
        model = BertPretrainer(self.backbone(config))
        model.build()
        return model

    def preprocessor(self, tokenizer, sequence_length, trim=False, pad_to_multiple_of=1):
        return BertPreprocessor(tokenizer, sequence_length, trim=trim, pad_to_multiple_of=pad_to_multiple_of)

    def task(self, backbone, preprocessor, num_classes, pooling="cls", dropout=0.1):
        """A built `BertClassifier`: pooling "cls" (the pooler) or "mean" (mean of the last layer)."""
        model = BertClassifier(backbone, num_classes, preprocessor=preprocessor, dropout=dropout, pooling=pooling)
        model.build()
        return model

    def serving_endpoints(self, backbone, preprocessor, network_function, task=None, jit_compile=False):
        return serving_endpoints(backbone, preprocessor, network_function, task, jit_compile=jit_compile)

    def samples(self, pretrainer, preprocessor, prompts, top_k=5):
        """Fill-mask: {prompt: ["token (probability)"] * top_k} for the first [MASK] of each prompt."""
        tokenizer = preprocessor.tokenizer
        out = {}
        for prompt in prompts:
            parts = prompt.split("[MASK]")
            if len(parts) < 2:
                raise ValueError(f"Fill-mask prompt {prompt!r} has no [MASK].")
            left = tokenizer.tokenize(tf.constant([parts[0]]))[0].numpy().tolist()
            right = tokenizer.tokenize(tf.constant(["[MASK]".join(parts[1:])]))[0].numpy().tolist()
            ids = [tokenizer.cls_id] + left + [tokenizer.mask_id] + right + [tokenizer.sep_id]
            features = {
                "token_ids": tf.constant([ids]), "segment_ids": tf.zeros([1, len(ids)], tf.int32),
                "padding_mask": tf.ones([1, len(ids)], tf.int32), "mask_positions": tf.constant([[len(left) + 1]]),
            }
            probs = tf.nn.softmax(pretrainer(features)["mlm_logits"][0, 0]).numpy()
            best = probs.argsort()[::-1][:top_k]
            out[prompt] = [f"{tokenizer.id_to_token(int(i))} ({probs[i]:.2f})" for i in best]
        return out

    def convert(self, source_format, target_format, input_path, output_path, **options):
        """See zoo.bert.convert.convert (options: lowercase, allow_missing, sequence_length, overwrite)."""
        from zoo.bert import convert  # the converter pulls in torch/safetensors readers: only when converting

        allow_missing = tuple(options.pop("allow_missing", ()) or ())
        unknown = sorted(set(allow_missing) - set(self.allow_missing))
        if unknown:
            raise ValueError(f"--allow_missing={','.join(unknown)}: a BERT source may lack only {', '.join(self.allow_missing)}.")
        return convert.convert(source_format, target_format, input_path, output_path,
                               allow_missing_pooler="pooler" in allow_missing, **options)
