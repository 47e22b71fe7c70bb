"""OpenAI GPT (Radford et al. 2018): BPE with '</w>', post-LN causal decoder, next-token LM over packed blocks.

`FAMILY` is GPT's side of the family contract (zoo.contract.Family) that the trainers drive.
"""

from zoo.gpt.backbone import GPTBackbone
from zoo.gpt.causal_lm import GPTCausalLM
from zoo.gpt.classifier import GPTClassifier
from zoo.gpt.config import PRESETS, GPTConfig
from zoo.gpt.family import GPTFamily
from zoo.gpt.preprocessor import GPTPreprocessor

FAMILY = GPTFamily()
Config = GPTConfig

__all__ = ["FAMILY", "PRESETS", "Config", "GPTBackbone", "GPTCausalLM", "GPTClassifier", "GPTConfig", "GPTFamily", "GPTPreprocessor"]
