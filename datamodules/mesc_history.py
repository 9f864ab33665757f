"""MESCHistoryDataModule: MESC dialogues as history-reconstruction items for ConvCompressor
pretraining (stage A; paper 3.2 and appendix B.2; :mod:`multimood.data.reconstruction`).

Dialogues come from :func:`multimood.data.mesc.load_mesc`, so the splits are MESC's: val and test
are the dialogues of ``val.json``/``test.json`` matched to ``MESC.csv``, and train is every other
dialogue of ``MESC.csv`` (the real release has no ``train.json``; it would only add descriptions
and problem/situation). The module trains on train and validates on val.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from datamodules.common import ModelConnectedMixin, MultiModalDataModule
from multimood.data.datasets import ChatEncoder, MultiModalCollator
from multimood.data.mesc import SPLIT_FILES, MESCData, check_context_options, load_mesc
from multimood.data.reconstruction import (
    RECONSTRUCTION_INSTRUCTIONS,
    ConversationEntries,
    HistoryReconstructionDataset,
    ReconstructionUnit,
    WindowReport,
    build_windows,
    dialogue_entries,
)

log = logging.getLogger(__name__)


class MESCHistoryDataModule(ModelConnectedMixin, MultiModalDataModule):
    """MESC histories to reconstruct from ``<MEM>`` embeddings (ConvCompressor pretraining).

    Args:
        data_dir: Folder with ``MESC.csv``, ``val.json``, ``test.json`` (and ``train.json`` if you
            have it): the real annotations or ``multimood synth mesc`` output. A relative path is
            read from the working directory.
        unit: ``utterance`` (phase 1, "3 epochs on single utterances"): every utterance is a
            one-turn history. ``conversation`` (phase 2, "1 epoch on full conversations"): a whole
            dialogue, cut into consecutive windows only where it exceeds a token budget.
        conversation_entries: What one ``<MEM>`` stands for with ``unit=conversation``: ``turns``
            (default; merged turns, as the SFT history feeds the compressor) or ``utterances``
            (one per utterance, as the authors' pretraining code).
        tokenizer: The LLM's tokenizer (hub id, path or ``tiny:``). None (default): the model's,
            taken when a trainer runs this module (``fit.py``); set it only to use the data alone.
        system_prompt: System message of the chat; None keeps the chat template's default.
        instruction: The user message before the ``<history>`` placeholder. None: the authors'
            sentence for the unit ("Please reconstruct the conversation in a natural way." /
            "Please reconstruct the conversation history").
        history_tokenizer: Tokenizer of the ConvCompressor's backbone. None (default): the model's
            compressor's.
        history_max_tokens: Compressor budget of one window, ``<MEM>`` ids included. None
            (default): the compressor's ``max_tokens`` (else 4096). Longer conversations are cut
            into windows.
        max_answer_tokens: LLM-token budget of one reconstruction text (the end-of-turn token not
            counted); longer conversations are cut into windows. None: no limit.
        descriptions: The generated face/voice descriptions in the entries (``[Description: ...]``
            as in the SFT history): ``auto`` (default) only when every split has them (train
            needs ``train.json``), ``true`` requires them, ``false`` never.
        allow_eval_only_context: Let ``descriptions: true`` apply to val and test when train
            lacks them.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        seed: Seed of the shuffling.
        limit_samples: Use only the first N windows of each split (smoke runs, tests).
    """

    SPLITS: ClassVar[dict[str, str]] = {"train": "train", "val": "val", "test": "test", "predict": "test"}

    def __init__(
        self,
        data_dir: str,
        unit: ReconstructionUnit = "utterance",
        conversation_entries: ConversationEntries = "turns",
        tokenizer: str | None = None,
        system_prompt: str | None = None,
        instruction: str | None = None,
        history_tokenizer: str | None = None,
        history_max_tokens: int | None = None,
        max_answer_tokens: int | None = 2048,
        descriptions: bool | Literal["auto"] = "auto",
        allow_eval_only_context: bool = False,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        limit_samples: int | None = None,
    ) -> None:
        super().__init__()
        if unit not in RECONSTRUCTION_INSTRUCTIONS:
            raise ValueError(f"unit must be 'utterance' or 'conversation', got {unit!r}")
        if conversation_entries not in ("turns", "utterances"):
            raise ValueError(
                f"conversation_entries must be 'turns' or 'utterances', got {conversation_entries!r}"
            )
        if history_max_tokens is not None and history_max_tokens < 1:
            raise ValueError(f"history_max_tokens must be >= 1, got {history_max_tokens}")
        if max_answer_tokens is not None and max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens must be >= 1 or None, got {max_answer_tokens}")
        check_context_options(Path(data_dir).expanduser(), descriptions, False, allow_eval_only_context)
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.data: MESCData | None = None
        self.reports: dict[str, WindowReport] = {}
        self._history_tokenizer: Any = None

    @property
    def instruction(self) -> str:
        """The instruction the LLM reads before the memory embeddings."""
        return self.hparams.instruction or RECONSTRUCTION_INSTRUCTIONS[self.hparams.unit]

    @property
    def history_tokenizer(self) -> Any:
        """The compressor-side :class:`~multimood.data.history.HistoryTokenizer`."""
        if self._history_tokenizer is None:
            from multimood.data.history import HistoryTokenizer

            if not self.hparams.history_tokenizer:
                raise ValueError(
                    "MESCHistoryDataModule: no history_tokenizer: run it with a model that has a "
                    "history_compressor (it is taken from it) or set data.init_args.history_tokenizer"
                )
            self._history_tokenizer = HistoryTokenizer(
                self.hparams.history_tokenizer, max_tokens=self.hparams.history_max_tokens or 4096
            )
        return self._history_tokenizer

    CONNECTED = ("tokenizer", "history_tokenizer", "history_max_tokens")

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.connect_trainer_model()
        hp = self.hparams
        # problem/situation never reach a reconstruction item: leave them off.
        self.data = load_mesc(
            self.data_dir,
            descriptions=hp.descriptions,
            problem_situation=False,
            allow_eval_only_context=hp.allow_eval_only_context,
        )
        if "train" not in self.data.report.split_files:
            log.info(
                "MESC history reconstruction: no %s in %s; train is every MESC.csv dialogue that is in "
                "neither val.json nor test.json",
                SPLIT_FILES["train"],
                self.data_dir,
            )
        encoder = ChatEncoder(self.tokenizer, system_prompt=hp.system_prompt)
        for split, dialogues in self.data.dialogues.items():
            windows, report = build_windows(
                dialogues,
                hp.unit,
                self.history_tokenizer,
                self.tokenizer,
                hp.max_answer_tokens,
                conversation_entries=hp.conversation_entries,
                with_description=self.data.report.descriptions[split],
            )
            if hp.limit_samples is not None:
                windows = windows[: hp.limit_samples]
            self.reports[split] = report
            log.info("MESC history reconstruction (%s), %s: %s", hp.unit, split, report.summary())
            self.datasets[split] = HistoryReconstructionDataset(
                windows, encoder, self.history_tokenizer, self.instruction
            )

    def entries_per_split(self) -> dict[str, int]:
        """History entries per split before windowing (utterances, or merged turns in phase 2)."""
        if self.data is None:
            self.setup()
        hp = self.hparams
        return {
            split: sum(len(dialogue_entries(d, hp.unit, hp.conversation_entries)) for d in dialogues)
            for split, dialogues in self.data.dialogues.items()
        }

    def collator(self) -> MultiModalCollator:
        return MultiModalCollator(self.tokenizer.pad_token_id, self.history_tokenizer)
