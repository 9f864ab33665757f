"""One LightningModule per training stage; each composes parts from :mod:`multimood`."""

from lit_modules.common import InitFrom
from lit_modules.compressor_pretrain import CompressorPretrainModule
from lit_modules.grpo import GRPOModule
from lit_modules.ppo import PPOModule
from lit_modules.projector_align import ProjectorAlignModule
from lit_modules.reward_model import RewardModelModule
from lit_modules.sft import SFTModule

__all__ = [
    "CompressorPretrainModule",
    "GRPOModule",
    "InitFrom",
    "PPOModule",
    "ProjectorAlignModule",
    "RewardModelModule",
    "SFTModule",
]
