"""GPT's side of the family contract (zoo.contract.Family): BPE, causal LM over packed blocks, Adam + cosine,
generated-text samples."""

import tensorflow as tf

from zoo.contract import Family
from zoo.gpt import generation
from zoo.gpt.backbone import GPTBackbone
from zoo.gpt.causal_lm import GPTCausalLM
from zoo.gpt.config import PRESETS, GPTConfig
from zoo.gpt.preprocessor import GPTPreprocessor
from zoo.text.bpe import BytePairTokenizer


class GPTFamily(Family):
    """OpenAI GPT (Radford et al. 2018); see zoo.contract for what each attribute and method is for."""

    name = "gpt"
    Config = GPTConfig
    PRESETS = PRESETS
    Backbone = GPTBackbone
    Tokenizer = BytePairTokenizer
    objective = "causal_lm"
    optimizer = "adam_cosine"
    default_samples = ("the movie was", "i think that", "the story of")
    convert_formats = {"from": ("hf", "openai", "zoo"), "to": ("zoo", "hf")}
    allow_missing = ()  # a GPT source holds every weight: there is no optional part (the LM head is tied)

    def pretrainer(self, config):
        """A built `GPTCausalLM` (tied LM head, computes its own loss) with fresh weights."""
        model = GPTCausalLM(self.backbone(config))
        model.build()
        return model

    def preprocessor(self, tokenizer, sequence_length, trim=False, pad_to_multiple_of=1, form="lm"):
        return GPTPreprocessor(tokenizer, sequence_length, trim=trim, pad_to_multiple_of=pad_to_multiple_of, form=form)

    def task(self, backbone, preprocessor, num_classes, transform="classification", lm_coef=0.5, dropout=0.1):
        """A built `GPTClassifier` (zoo.gpt.classifier): the paper's input `transform` (classification, entailment,
        similarity or multiple_choice), the auxiliary LM loss weighted `lm_coef` (0 turns it off), classifier
        `dropout`; the preprocessor is switched to the transform's form."""
        from zoo.gpt.classifier import GPTClassifier

        model = GPTClassifier(backbone, num_classes, preprocessor=preprocessor, transform=transform, lm_coef=lm_coef,
                              dropout=dropout)
        model.build()
        return model

    def serving_endpoints(self, backbone, preprocessor, network_function, task=None, jit_compile=False):
        """encode, score, generate, generate_with_settings (see zoo.gpt.serving)."""
        from zoo.gpt import serving

        return serving.serving_endpoints(self, backbone, preprocessor, network_function, task, jit_compile=jit_compile)

    def banned_ids(self, tokenizer):
        """Ids generation never samples: the special tokens that are not text (end-of-text stops it instead)."""
        special = tokenizer.special_ids
        return tuple(special[k] for k in ("start", "delimiter", "classify", "pad"))

    def generate(self, model, preprocessor, prompts, max_new_tokens=32, temperature=0.8, top_k=40, top_p=1.0, seed=0):
        """[continuation text] for each prompt (each after an end-of-text separator, as documents start)."""
        texts = generation.continue_texts(model, preprocessor.tokenizer, tf.constant(list(prompts)), max_new_tokens,
                                          temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                          banned_ids=self.banned_ids(preprocessor.tokenizer))["text"]
        return [t.decode("utf-8") for t in texts.numpy().tolist()]

    def samples(self, pretrainer, preprocessor, prompts):
        """Generated text: {prompt: [prompt + continuation]} (top-k 40, temperature 0.8, seed 0, 32 tokens)."""
        texts = self.generate(pretrainer, preprocessor, prompts)
        return {prompt: [f"{prompt} {text}".strip()] for prompt, text in zip(prompts, texts)}

    def convert(self, source_format, target_format, input_path, output_path, **options):
        """See zoo.gpt.convert.convert (options: lowercase, sequence_length, overwrite, num_heads)."""
        from zoo.gpt import convert  # the converter pulls in the safetensors/torch readers: only when converting

        allow_missing = tuple(options.pop("allow_missing", ()) or ())
        if allow_missing:
            raise ValueError(f"--allow_missing={','.join(allow_missing)}: a GPT source must hold every weight; "
                             "none may be missing.")
        return convert.convert(source_format, target_format, input_path, output_path, **options)
