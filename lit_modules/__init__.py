"""One LightningModule per training stage; each composes parts from `multimood`."""

from lit_modules.common import InitFrom
from lit_modules.compressor_pretrain import CompressorPretrainModule

__all__ = ["CompressorPretrainModule", "InitFrom"]
