"""ELMo (Peters et al. 2018): character-CNN token encoder, biLSTM language model with projections, scalar mix.

`FAMILY` is ELMo's side of the family contract (zoo.contract.Family) that the trainers drive.
"""

from zoo.elmo.backbone import ElmoBackbone
from zoo.elmo.config import PRESETS, ElmoConfig
from zoo.elmo.family import ElmoFamily
from zoo.elmo.preprocessor import ElmoPreprocessor, ElmoTokenizer
from zoo.elmo.pretrainer import ElmoLanguageModel

FAMILY = ElmoFamily()
Config = ElmoConfig

__all__ = ["FAMILY", "PRESETS", "Config", "ElmoBackbone", "ElmoConfig", "ElmoFamily", "ElmoLanguageModel",
           "ElmoPreprocessor", "ElmoTokenizer"]
