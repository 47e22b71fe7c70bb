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
    convert_formats = {"from": ("zoo",), "to": ("zoo",)}
    allow_missing = ()

    def pretrainer(self, config):
        """A built `GPTCausalLM` (tied LM head, computes its own loss) with fresh weights."""
        model = GPTCausalLM(self.backbone(config))
        model.build()
        return model

    def preprocessor(self, tokenizer, sequence_length, trim=False, pad_to_multiple_of=1, form="lm"):
        return GPTPreprocessor(tokenizer, sequence_length, trim=trim, pad_to_multiple_of=pad_to_multiple_of, form=form)

    def task(self, backbone, preprocessor, num_classes, **options):
        raise NotImplementedError("GPT fine-tuning (the paper's input transforms) is not built yet; see issue 23.")

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
        raise NotImplementedError("GPT weight conversion (HF openai-gpt, finetune-transformer-lm) is not built yet; see issue 23.")
