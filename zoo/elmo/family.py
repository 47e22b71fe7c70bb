"""ELMo's side of the family contract (zoo.contract.Family): a word vocabulary with character ids, a forward and
a backward LM over sentence windows, Adagrad as bilm-tf, fill-in-the-blank samples from both directions."""

import numpy as np
import tensorflow as tf

from zoo.contract import Family
from zoo.elmo.backbone import ElmoBackbone
from zoo.elmo.config import PRESETS, ElmoConfig
from zoo.elmo.preprocessor import ElmoPreprocessor, ElmoTokenizer
from zoo.elmo.pretrainer import ElmoLanguageModel
from zoo.text.words import SPECIAL_WORDS

BLANK = "___"  # where `samples` fills in a word
TOP_K = 5


class ElmoFamily(Family):
    """ELMo (Peters et al. 2018, allenai/bilm-tf); see zoo.contract for what each attribute and method is for."""

    name = "elmo"
    Config = ElmoConfig
    PRESETS = PRESETS
    Backbone = ElmoBackbone
    Tokenizer = ElmoTokenizer
    objective = "bilm_sentences"
    optimizer = "adagrad"
    default_samples = (f"This movie was {BLANK}", f"The acting was {BLANK} and the plot was boring.", f"I {BLANK} this film.")
    convert_formats = {"from": ("bilm_tf", "zoo"), "to": ("zoo",)}
    allow_missing = ("softmax",)  # bilm-tf's hdf5 never holds it: without it, a feature model; with it, a fresh one

    def pretrainer(self, config):
        """A built `ElmoLanguageModel` (shared softmax, sampled in training, full in evaluation), fresh weights."""
        model = ElmoLanguageModel(self.backbone(config))
        model.build()
        return model

    def preprocessor(self, tokenizer, sequence_length, trim=False, pad_to_multiple_of=1):
        return ElmoPreprocessor(tokenizer, sequence_length, trim=trim, pad_to_multiple_of=pad_to_multiple_of)

    def samples(self, pretrainer, preprocessor, prompts):
        """{prompt: the 5 words that best fill its blank}: sum of the forward LM's log-probability (from the words
        before the blank) and the backward LM's (from the words after it). A prompt without "___" gets one at
        its end (the next word of a sentence that ends there); <S>, </S> and <UNK> are never proposed."""
        prompts = list(prompts)
        texts = [p if BLANK in p.split() else f"{p} {BLANK}" for p in prompts]
        features = preprocessor(tf.constant(texts))
        framed = preprocessor.sentence_words(tf.constant(texts)).to_list()
        scores = {d: s.numpy() for d, s in pretrainer.log_probabilities(features).items()}  # [B, T, V] each
        banned = [preprocessor.tokenizer.token_to_id(w) for w in SPECIAL_WORDS]
        out = {}
        for row, (prompt, words) in enumerate(zip(prompts, framed)):
            if BLANK.encode() not in words:  # the blank was cut off (a prompt longer than the sequence length)
                out[prompt] = []
                continue
            position = words.index(BLANK.encode())
            # The forward LM at the position before the blank, the backward LM at the one after it (</S> at least).
            total = scores["forward"][row, position - 1] + scores["backward"][row, position + 1]
            total[banned] = -np.inf
            best = np.argsort(-total, kind="stable")[:TOP_K]
            out[prompt] = [preprocessor.tokenizer.id_to_token(i) for i in best]
        return out

    def task(self, backbone, preprocessor, num_classes, kind="classification", **options):
        """A built `ElmoClassifier` (kind "classification") or `ElmoTagger` ("tagging") on the frozen biLM
        (zoo.elmo.tasks): options layers ("all" | "top"), features ("elmo" | "elmo+words" | "words"),
        do_layer_norm, l2_coefficient, dropout, word_embedding_dim, encoder_dim, pooling ("max" | "mean" |
        "mean_max")."""
        from zoo.elmo import tasks

        return tasks.build_task(backbone, preprocessor, num_classes, kind=kind, **options)

    def serving_endpoints(self, backbone, preprocessor, network_function, task=None, jit_compile=False):
        """TF Hub elmo/3's `default` and `tokens` signatures, and classify / tag (see zoo.elmo.serving)."""
        from zoo.elmo import serving

        return serving.serving_endpoints(backbone, preprocessor, network_function, task, jit_compile=jit_compile)

    def convert(self, source_format, target_format, input_path, output_path, lowercase=None, allow_missing=(),
                sequence_length=None, overwrite=False):
        """bilm_tf -> zoo: a folder with options.json + lm_weights.hdf5 (+ a vocabulary) into a model dir
        (zoo.elmo.convert.bilm_tf_to_zoo; allow_missing=("softmax",) adds a fresh softmax). zoo -> zoo: a model
        dir or export rewritten as a model dir holding the backbone only (e.g. an export back into a model dir; the
        softmax is not carried, so the result is a feature model, vocabulary_size 0)."""
        import os

        from zoo import formats
        from zoo.elmo import convert

        if (source_format, target_format) == ("bilm_tf", "zoo"):
            return convert.bilm_tf_to_zoo(input_path, output_path, allow_missing=tuple(allow_missing or ()),
                                          sequence_length=sequence_length, lowercase=lowercase, overwrite=overwrite)
        if (source_format, target_format) != ("zoo", "zoo"):
            raise formats.ConversionError(f"Cannot convert {source_format!r} -> {target_format!r}: ELMo converts "
                                          "bilm_tf -> zoo and zoo -> zoo.")
        if allow_missing:
            raise ValueError("--allow_missing applies to bilm_tf sources only.")
        formats.check_distinct_folders(input_path, output_path)
        config = self.read_config(input_path)
        backbone, preprocessor = self.load_pretrained(input_path, sequence_length=sequence_length)
        tokenizer = preprocessor.tokenizer
        if lowercase is not None and bool(lowercase) != tokenizer.lowercase:
            tokenizer = self.Tokenizer(tokenizer.vocabulary, lowercase=bool(lowercase))
        with formats.atomic_dir(output_path, overwrite) as tmp:
            self.write_model_dir(tmp, backbone.config.replace(vocabulary_size=0), tokenizer, preprocessor.sequence_length,
                                 conversion={"format": "zoo", "path": os.path.abspath(input_path),
                                             **({"from": config["conversion"]} if "conversion" in config else {})})
            tf.train.CheckpointManager(tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=backbone)), tmp,
                                       max_to_keep=1).save()
        return backbone.config.replace(vocabulary_size=0), backbone
