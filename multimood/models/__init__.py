"""Vision tower, STC connector, BEATs, ConvCompressor, LLM wrapper and the fused model (plain nn.Modules).

Every class here is importable as ``multimood.models.<Name>``, the ``class_path`` YAML configs use.
"""

from multimood.models.audio import AudioTower
from multimood.models.beats import BEATsConfig, BEATsEncoder
from multimood.models.compressor import MambaHistoryCompressor
from multimood.models.llm import LanguageModel
from multimood.models.multimood import MultiMoodModel
from multimood.models.projectors import AudioProjector
from multimood.models.stc import STCConnector
from multimood.models.vision import VisionTower

__all__ = [
    "AudioProjector",
    "AudioTower",
    "BEATsConfig",
    "BEATsEncoder",
    "LanguageModel",
    "MambaHistoryCompressor",
    "MultiMoodModel",
    "STCConnector",
    "VisionTower",
]
