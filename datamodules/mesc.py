"""MESCDataModule: MESC (Chu et al. 2025) for all four tasks, from the real annotation files.

Reads ``MESC.csv`` and the split files with :func:`multimood.data.mesc.load_mesc`, one sample per
therapist turn (merged consecutive therapist utterances, as the authors' code), and serves batches
for :class:`multimood.models.MultiMoodModel` (:class:`multimood.data.datasets.MultiModalCollator`
lists the keys). Without ``clips_dir`` it is text only and needs no media at all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from datamodules.common import ModelConnectedMixin, MultiModalDataModule, resolve_data_path, video_loader
from multimood.data.datasets import (
    ChatEncoder,
    HistoryMode,
    MESCDataset,
    Modality,
    MultiModalCollator,
    Target,
)
from multimood.data.media import AudioLoader, AudioMode
from multimood.data.mesc import (
    PER_UTTERANCE_WARNING,
    HistoryUnit,
    MESCData,
    SampleUnit,
    check_context_options,
    check_sample_options,
    load_mesc,
)

log = logging.getLogger(__name__)


class MESCDataModule(ModelConnectedMixin, MultiModalDataModule):
    """MESC batches: the figure-4 prompt, the four-task answer, clips, and the dialogue history.

    Args:
        data_dir: Folder with ``MESC.csv``, ``val.json``, ``test.json`` (and ``train.json`` if you
            have it): the real annotations or ``multimood synth mesc`` output. A relative path is
            read from the working directory (the configs use ``data/mesc``, run from the repo root).
        clips_dir: Folder of ``dia{D}_utt{U}_{row}.mp4`` clips (``multimood cut-clips`` makes them
            from your own episodes), relative to ``data_dir`` unless absolute. None: text only.
        tokenizer: The LLM's tokenizer (hub id, path or ``tiny:``). None (default): the model's,
            taken when a trainer runs this module (``fit.py``); set it only to use the data alone.
        system_prompt: System message of the chat; None keeps the chat template's default.
        history_mode: ``compressor`` (history ids for the ConvCompressor; paper "SFT+Comp"),
            ``text`` (history turns written into the prompt, one per line) or ``none``.
        history_tokenizer: Tokenizer of the ConvCompressor's backbone (``history_mode=compressor``).
            None (default): the model's compressor's.
        history_max_tokens: Token budget of one history for the compressor (oldest whole turns are
            dropped beyond it). None (default): the compressor's ``max_tokens`` (else 4096).
        sample_unit: ``turn`` (default): one sample per therapist turn, the run of consecutive
            therapist utterances merged, as the authors did; ``utterance``: one per therapist
            utterance, with the earlier utterances of its turn (and their labels) in the history.
            Per-utterance results are not comparable with paper table 4 (a warning is logged).
        history_length: History kept per sample, counted in ``history_unit``; None keeps all.
            Paper table 7 uses 0, 5, 9 and all.
        history_unit: What ``history_length`` counts: ``exchanges`` (default; client/therapist
            pairs of merged turns, the authors' ``chat_history[-k*2:]``), ``turns`` (merged turns)
            or ``utterances`` (single utterances, each its own history entry).
        descriptions: Generated face/voice descriptions of the split files: ``auto`` (default) uses
            them only when every split has them (train needs ``train.json``), so train and eval
            prompts match; ``true`` requires them (an error names the missing ``train.json``
            unless ``allow_eval_only_context``); ``false`` is the paper's "w/o desc" ablation.
        problem_situation: The prompt's ``Problem:`` and ``Situation:`` lines, same rule as
            ``descriptions``.
        allow_eval_only_context: Let ``descriptions``/``problem_situation: true`` apply to val and
            test when train lacks them (train and eval prompts then differ).
        prompt_max_tokens: Budget of the chat-formatted prompt in LLM tokens (media placeholders
            count one each; media and compressor embeddings are not text). Beyond it the oldest
            history turns are dropped (text mode), then the client text's oldest words; batches
            count both (``history_turns_dropped``, ``client_tokens_dropped``). 4096 as the
            authors' inference. None: no limit.
        modalities: Media to decode when ``clips_dir`` is set: ``video`` and/or ``audio``
            (paper table 7 "w/o video", "w/o audio").
        modality_probs: Random modality selection in training, p = [p_a, p_v, p_av] (paper 3.3):
            per sample, audio only, video only or both. None: always both. Evaluation always uses
            every configured modality.
        max_client_clips: Most recent clips of the client's current turn to use (the authors
            used 5); None for all.
        num_frames: Frames sampled per sample (16 in the paper).
        image_size: Frame side after padding to square and resizing. None (default): the vision
            tower's (384 for SigLIP-So400M, also the fallback without a model).
        image_mean: Normalisation mean (and padding colour). None: the tower's (SigLIP: 0.5).
        image_std: Normalisation std. None: the tower's (SigLIP: 0.5).
        max_audio_seconds: Audio is cropped to this length (30 s -> 1,496 BEATs tokens).
        audio_mode: ``clip``: the turn's audio once, unpadded (padding masked). ``videollama2``:
            as VideoLLaMA2-AV, whose audio projector MultiMood inherits: 8 windows of 2 s,
            concatenated and zero-padded to 30 s (always 1,496 BEATs tokens, padding fed as
            input); ``max_audio_seconds`` does not apply.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        seed: Seed of shuffling and of the per-sample modality draw.
        limit_samples: Use only the first N samples of each split (smoke runs, the demo).
        target: What the batches teach: ``answer`` (the four-field answer; stages C and D) or
            ``descriptions`` (stage B's alignment objective: the prompt is the media and one
            instruction, the answer the generated face/voice descriptions of the clips used). The
            descriptions come from the split files, so ``descriptions`` needs ``train.json`` (the
            released MESC has none: stage B then trains on ``answer``, the default); samples whose
            clips have no description are left out and counted in the log.
        rationale: Beyond the paper, for RL stages with the rationale reward
            (``multimood.rewards.rationale``): the prompt also asks for one ``Rationale: ...`` line
            before the four answer lines (a last line after ``[OUTPUT FORMAT]``; the prompt budget
            counts it). The supervised answer is unchanged (MESC has no reference rationales), so
            an SFT stage with it on would teach the model to ignore the request: keep it off there.
            The answer parser, the metrics and the similarity and trust rewards ignore the line.
            Needs ``target: answer``.
    """

    def __init__(
        self,
        data_dir: str,
        clips_dir: str | None = None,
        tokenizer: str | None = None,
        system_prompt: str | None = None,
        history_mode: HistoryMode = "compressor",
        history_tokenizer: str | None = None,
        history_max_tokens: int | None = None,
        sample_unit: SampleUnit = "turn",
        history_length: int | None = None,
        history_unit: HistoryUnit = "exchanges",
        descriptions: bool | Literal["auto"] = "auto",
        problem_situation: bool | Literal["auto"] = "auto",
        allow_eval_only_context: bool = False,
        prompt_max_tokens: int | None = 4096,
        modalities: tuple[Modality, ...] = ("video", "audio"),
        modality_probs: tuple[float, float, float] | None = None,
        max_client_clips: int | None = 5,
        num_frames: int = 16,
        image_size: int | None = None,
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        max_audio_seconds: float | None = 30.0,
        audio_mode: AudioMode = "clip",
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        limit_samples: int | None = None,
        target: Target = "answer",
        rationale: bool = False,
    ) -> None:
        super().__init__()
        if target not in ("answer", "descriptions"):
            raise ValueError(f"data.init_args.target must be 'answer' or 'descriptions', got {target!r}")
        if rationale and target != "answer":
            raise ValueError(
                "data.init_args.rationale asks the answer prompt for a rationale; it needs target: answer"
            )
        check_sample_options(sample_unit, history_length, history_unit)
        check_context_options(
            Path(data_dir).expanduser(),
            True if target == "descriptions" else descriptions,
            problem_situation,
            allow_eval_only_context and target == "answer",
        )
        if target == "descriptions" and clips_dir is None:
            raise ValueError(
                "data.init_args.target='descriptions' teaches what the clips show: set data.init_args.clips_dir"
            )
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.clips_dir = resolve_data_path(data_dir, clips_dir)
        self.data: MESCData | None = None
        self._history_tokenizer: Any = None

    # ------------------------------------------------------------------ building
    @property
    def history_tokenizer(self) -> Any:
        if self.hparams.history_mode != "compressor":
            return None
        if self._history_tokenizer is None:
            from multimood.data.history import HistoryTokenizer

            if not self.hparams.history_tokenizer:
                raise ValueError(
                    "history_mode='compressor' needs history_tokenizer: run with a model that has a "
                    "history_compressor (it is taken from it) or set data.init_args.history_tokenizer"
                )
            self._history_tokenizer = HistoryTokenizer(
                self.hparams.history_tokenizer, max_tokens=self.hparams.history_max_tokens or 4096
            )
        return self._history_tokenizer

    CONNECTED = (
        "tokenizer",
        "history_tokenizer",
        "history_max_tokens",
        "image_size",
        "image_mean",
        "image_std",
    )

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.connect_trainer_model()
        hp = self.hparams
        if self.clips_dir is not None and not self.clips_dir.is_dir():
            raise FileNotFoundError(
                f"clips_dir {self.clips_dir} is not a folder (set clips_dir: null for text only)"
            )
        self.data = load_mesc(
            self.data_dir,
            sample_unit=hp.sample_unit,
            history_length=hp.history_length,
            history_unit=hp.history_unit,
            # The descriptions target reads them from every split, whatever the prompt option says.
            descriptions=True if hp.target == "descriptions" else hp.descriptions,
            problem_situation=hp.problem_situation,
            allow_eval_only_context=hp.allow_eval_only_context,
        )
        log.info("%s", self.data.report.summary())
        if hp.sample_unit == "utterance":
            log.warning("%s", PER_UTTERANCE_WARNING)
        if hp.rationale:
            log.info(
                "rationale: the prompts ask for a 'Rationale:' line before the answer; the supervised "
                "answers have none (MESC has no reference rationales), so use it for RL stages"
            )
        encoder = ChatEncoder(self.tokenizer, system_prompt=hp.system_prompt)
        video = video_loader(hp)
        audio = AudioLoader(mode=hp.audio_mode, max_seconds=hp.max_audio_seconds)
        for split, samples in self.data.samples.items():
            if hp.limit_samples is not None:
                samples = samples[: hp.limit_samples]
            self.datasets[split] = MESCDataset(
                samples,
                encoder,
                clips_dir=self.clips_dir,
                modalities=hp.modalities,
                modality_probs=hp.modality_probs if split == "train" else None,
                video_loader=video,
                audio_loader=audio,
                max_client_clips=hp.max_client_clips,
                history_mode=hp.history_mode,
                history_tokenizer=self.history_tokenizer,
                prompt_max_tokens=hp.prompt_max_tokens,
                target=hp.target,
                rationale=hp.rationale,
            )
            if hp.target == "descriptions" and not len(self.datasets[split]):
                raise ValueError(
                    f"target='descriptions': no {split} sample of {self.data_dir} has a clip description"
                )
            if self.datasets[split].without_description:
                log.info(
                    "%s: %d samples left out (their clips have no description to use as the target)",
                    split,
                    self.datasets[split].without_description,
                )

    def make_metrics(self, bertscore_model: str | None = None) -> Any:
        """The four tasks of paper table 4, scored from generated answers."""
        from multimood.metrics import MESCMetrics

        return MESCMetrics(bertscore_model=bertscore_model)

    def collator(self) -> MultiModalCollator:
        return MultiModalCollator(self.tokenizer.pad_token_id, self.history_tokenizer)
