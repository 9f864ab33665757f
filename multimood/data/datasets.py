"""torch Datasets and the collate function shared by the MESC and DFEW data modules.

An item is one sample ready for the fused model: the chat-formatted prompt and answer as token ids
(labels masked to the answer), the prompt alone (for generation), the decoded media, the history
for the ConvCompressor, the targets for the metrics, and the media problems met on the way.

Missing and bad media: a clip that cannot be decoded is left out of its sample's timeline, and the
modality is missing for that sample only when none of its clips decodes. Each bad clip travels
with the item (:class:`MediaIssue`) so that the main process can count it per epoch and log each
file once (:class:`MediaIssueLog`). A sample is never replaced by another one. A DFEW sample whose
video fails has no input left: it is dropped, and the drop is counted the same way.

Randomness (the paper's random modality selection, p = [p_a, p_v, p_av], section 3.3) comes from
the seed :class:`~multimood.data.sampling.EpochSampler` hands every index with it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from multimood.constants import HISTORY_TOKEN, IGNORE_INDEX
from multimood.data import labels
from multimood.data.answer import format_answer, format_dfew_answer
from multimood.data.dfew import DFEWSample
from multimood.data.media import MEDIA_ERROR_REASONS, AudioLoader, MediaError, VideoLoader, pad_fbanks
from multimood.data.mesc import Sample, format_history_turn
from multimood.data.prompt import build_description_prompt, build_dfew_prompt, build_mesc_prompt
from multimood.data.sampling import split_key

log = logging.getLogger(__name__)

Target = Literal["answer", "descriptions"]
HistoryMode = Literal["compressor", "text", "none"]
Modality = Literal["video", "audio"]
# Index order of the paper's modality probabilities p = [p_a, p_v, p_av] (section 3.3).
MODALITY_CHOICES: tuple[tuple[str, ...], ...] = (("audio",), ("video",), ("audio", "video"))


# ----------------------------------------------------------------------------------- tokenising


class ChatEncoder:
    """Prompt and answer through the LLM's chat template; labels supervise the answer only.

    The prompt is rendered with the assistant turn opened (exactly what generation sees); the
    answer is appended as ``answer + eos`` (``<|im_end|>`` for ChatML), tokenised on its own, so the
    supervised tokens are the answer and the end-of-turn token, nothing of the prompt.

    Args:
        tokenizer: a transformers tokenizer with a chat template.
        system_prompt: optional system message; None keeps the template's default.
    """

    def __init__(self, tokenizer: Any, system_prompt: str | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template"
            )
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt

    def prompt_ids(self, user_message: str) -> list[int]:
        messages = [{"role": "user", "content": user_message}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(answer + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]

    def encode(self, user_message: str, answer: str) -> dict[str, torch.Tensor]:
        return self.encode_ids(self.prompt_ids(user_message), answer)

    def encode_ids(self, prompt: list[int], answer: str) -> dict[str, torch.Tensor]:
        """:meth:`encode` for a prompt already tokenised with :meth:`prompt_ids`."""
        target = self.answer_ids(answer)
        return {
            "input_ids": torch.tensor(prompt + target),
            "labels": torch.tensor([IGNORE_INDEX] * len(prompt) + target),
            "prompt_ids": torch.tensor(prompt),
        }


# ----------------------------------------------------------------------------------- media issues


class MediaIssue(NamedTuple):
    """A file that could not be used for one sample; one per bad clip.

    ``modality_missing`` says whether the sample lost the modality (no clip of it decoded) or
    kept it from its other clips. A NamedTuple, not a frozen dataclass: Lightning rebuilds every
    batch element when it moves a batch to the device, which frozen dataclasses refuse.
    """

    sample_id: str
    modality: str
    path: str
    reason: str
    modality_missing: bool = True


class MediaIssueLog:
    """Media issues per (stage, epoch), kept in the main process; each file is logged once."""

    def __init__(self) -> None:
        self.issues: dict[tuple[str, int], list[MediaIssue]] = defaultdict(list)
        self.dropped: dict[tuple[str, int], list[str]] = defaultdict(list)
        self._logged: set[tuple[str, str]] = set()

    def record(self, issues: Sequence[MediaIssue], dropped: Sequence[str], stage: str, epoch: int) -> None:
        self.issues[(stage, epoch)].extend(issues)
        self.dropped[(stage, epoch)].extend(dropped)
        for issue in issues:
            if (issue.path, issue.reason) not in self._logged:
                self._logged.add((issue.path, issue.reason))
                log.warning(
                    "%s: unusable %s for %s (%s); %s",
                    issue.path,
                    issue.modality,
                    issue.sample_id,
                    issue.reason,
                    "the modality is missing" if issue.modality_missing else "its other clips are used",
                )

    TOTAL_KEYS: ClassVar[tuple[str, ...]] = ("missing_video", "missing_audio", "dropped")

    @classmethod
    def summary_keys(cls) -> tuple[str, ...]:
        """Every key :meth:`summary` can return, in a fixed order (ranks sum counts key by key)."""
        reasons = tuple(f"{m}/{r}" for m in ("video", "audio") for r in MEDIA_ERROR_REASONS)
        return cls.TOTAL_KEYS + reasons

    def summary(self, stage: str, epoch: int) -> dict[str, int]:
        """Counts: ``missing_<modality>`` (samples that lost it), ``<modality>/<reason>`` (bad
        clips) and ``dropped`` samples."""
        counts: Counter[str] = Counter()
        missing: set[tuple[str, str]] = set()
        for issue in self.issues.get((stage, epoch), ()):
            if issue.modality_missing and (issue.sample_id, issue.modality) not in missing:
                missing.add((issue.sample_id, issue.modality))
                counts[f"missing_{issue.modality}"] += 1
            counts[f"{issue.modality}/{issue.reason}"] += 1
        counts["dropped"] = len(self.dropped.get((stage, epoch), ()))
        return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class FittedPrompt:
    """The MESC user message as the LLM reads it, after the prompt budget.

    ``history_lines``: the formatted history turns the sample keeps (text mode: the ones written
    into the prompt; compressor mode: all of them, for the compressor's own budget; none mode:
    none). ``history_turns_dropped``: oldest turns the prompt budget removed (text mode only).
    ``client_tokens_dropped``: tokens cut from the start of the client text when the prompt was
    still too long with no history left.
    """

    message: str
    prompt_ids: list[int]
    history_lines: list[str]
    history_turns_dropped: int = 0
    client_tokens_dropped: int = 0


class MESCPromptBuilder:
    """The paper-figure-4 user message of a MESC sample, within a token budget.

    Args:
        encoder: the LLM's :class:`ChatEncoder`; the budget counts its chat-formatted prompt (system
            turn, template tokens, the user message and the opened assistant turn).
        history_mode: ``compressor`` (``<history>`` stays, the compressor reads the turns),
            ``text`` (``<history>`` replaced by the turns, one per line) or ``none`` (removed).
        max_tokens: prompt budget in LLM tokens, None for no limit. The ``<video>``, ``<audio>``
            and ``<history>`` placeholders count one token each: the media and memory embeddings
            that replace them are not text and are not counted. When the prompt is too long, the
            oldest history turns are dropped first (text mode), one at a time; if it is still too
            long with no history left, the client text loses its oldest words until it fits.
            The default 4,096 is the authors' prompt limit: their inference keeps
            ``input_ids[:, -max_prompt_tokens:]`` with ``max_prompt_tokens=4096``
            (``framework/__init__.py``), and their RL data loader drops the oldest history pair until
            the prompt fits (``GRPO/dataloader.py``).
        rationale: ask for a ``Rationale:`` line before the answer
            (:data:`~multimood.data.prompt.RATIONALE_INSTRUCTION` after the output format; the
            rationale reward reads it). Part of the prompt, so the budget counts it.
    """

    def __init__(
        self,
        encoder: ChatEncoder,
        history_mode: HistoryMode = "compressor",
        max_tokens: int | None = 4096,
        rationale: bool = False,
    ) -> None:
        if history_mode not in ("compressor", "text", "none"):
            raise ValueError(f"history_mode must be compressor, text or none, got {history_mode!r}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"prompt max_tokens must be >= 1 or None, got {max_tokens}")
        self.encoder = encoder
        self.history_mode = history_mode
        self.max_tokens = max_tokens
        self.rationale = rationale

    def message(self, sample: Sample, history_lines: Sequence[str], client_text: str) -> str:
        prompt = build_mesc_prompt(
            client_text,
            problem_type=sample.problem_type,
            situation=sample.situation,
            rationale=self.rationale,
        )
        if self.history_mode == "text":
            prompt = prompt.replace(HISTORY_TOKEN, "\n".join(history_lines))
        elif self.history_mode == "none":
            prompt = prompt.replace(HISTORY_TOKEN, "")
        return prompt

    def __call__(self, sample: Sample) -> FittedPrompt:
        lines = [format_history_turn(turn) for turn in sample.history] if self.history_mode != "none" else []
        # Only text-mode history is prompt text the budget may cut; the compressor reads all of
        # its turns (it has its own budget).
        n = len(lines) if self.history_mode == "text" else 0

        def build(turns: int, client_text: str, client_tokens_dropped: int = 0) -> FittedPrompt:
            """The prompt with the newest ``turns`` text-mode history turns and this client text."""
            kept = lines[len(lines) - turns :] if turns else []
            message = self.message(sample, kept, client_text)
            history = kept if self.history_mode == "text" else lines
            ids = self.encoder.prompt_ids(message)
            return FittedPrompt(message, ids, history, n - turns, client_tokens_dropped)

        def fits(prompt: FittedPrompt) -> bool:
            return self.max_tokens is None or len(prompt.prompt_ids) <= self.max_tokens

        client = sample.client_text
        full = build(n, client)
        if fits(full):
            return full
        if fits(build(0, client)):
            # The newest turns that fit (binary search: fewer turns never lengthen the prompt).
            lo, hi = 0, n - 1  # build(lo) fits, build(n) does not
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(build(mid, client)) else (lo, mid - 1)
            return build(lo, client)

        # No history left and still too long: drop the client text's oldest words.
        words = client.split()
        if len(words) < 2 or not fits(build(0, words[-1])):
            raise ValueError(
                f"prompt_max_tokens={self.max_tokens} is too small for sample {sample.sample_id}: the "
                f"prompt without history and with one word of client text takes "
                f"{len(build(0, words[-1]).prompt_ids)} tokens"
            )
        lo, hi = 1, len(words) - 1  # words to drop: dropping hi fits, dropping lo - 1 does not
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(build(0, " ".join(words[mid:]))) else (mid + 1, hi)
        kept_client = " ".join(words[lo:])
        tokenizer = self.encoder.tokenizer
        dropped = len(tokenizer(client, add_special_tokens=False)["input_ids"]) - len(
            tokenizer(kept_client, add_special_tokens=False)["input_ids"]
        )
        return build(0, kept_client, max(dropped, 0))


class MESCDataset(Dataset):
    """One item per MESC sample (a therapist turn): the prompt of paper figure 4, the four-field answer.

    Args:
        samples: from :func:`multimood.data.mesc.load_mesc` (sample unit, history length and
            context are chosen there).
        encoder: the LLM's :class:`ChatEncoder`.
        clips_dir: folder of ``dia{D}_utt{U}_{row}.mp4`` clips; None for text only.
        modalities: which of ``video``/``audio`` to decode (with ``clips_dir``).
        modality_probs: the paper's p = [p_a, p_v, p_av]: per item, decode audio only, video only
            or both with these probabilities (training); None decodes every modality.
        video_loader / audio_loader: decoders (frame count, size, normalisation; audio length).
        max_client_clips: use the most recent clips of the client's current turn (the authors
            used 5); None for all.
        history_mode: ``compressor`` (history ids for the ConvCompressor, ``<history>`` replaced
            by its memory), ``text`` (``<history>`` replaced by the formatted turns, one per line)
            or ``none`` (no history).
        history_tokenizer: the compressor's :class:`~multimood.data.history.HistoryTokenizer`
            (``history_mode="compressor"``).
        prompt_max_tokens: budget of the chat-formatted prompt in LLM tokens (media placeholders
            count one each), None for none: :class:`MESCPromptBuilder` says what is cut first.
        target: ``answer`` (the four-field answer of paper figure 4) or ``descriptions`` (stage B's
            alignment objective: the prompt is the media and one instruction,
            :data:`~multimood.data.prompt.DESCRIPTION_PROMPT`, and the answer is the generated
            face/voice descriptions of the clips used, joined with spaces). Samples whose clips have
            no description are left out and counted (``without_description``).
        rationale: the prompt also asks for a ``Rationale:`` line before the four answer lines
            (``target="answer"`` only). For RL stages (the rationale reward): the supervised answer
            stays the four lines, as MESC has no reference rationales.

    Descriptions are whatever the samples carry (``load_mesc(descriptions=...)`` decides). Items
    carry ``history_turns`` / ``history_turns_dropped`` (history turns the LLM sees and those a
    budget removed: the compressor's in compressor mode, the prompt's in text mode) and
    ``client_tokens_dropped``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        encoder: ChatEncoder,
        clips_dir: str | Path | None = None,
        modalities: Sequence[Modality] = ("video", "audio"),
        modality_probs: Sequence[float] | None = None,
        video_loader: VideoLoader | None = None,
        audio_loader: AudioLoader | None = None,
        max_client_clips: int | None = 5,
        history_mode: HistoryMode = "compressor",
        history_tokenizer: Any | None = None,
        prompt_max_tokens: int | None = 4096,
        target: Target = "answer",
        rationale: bool = False,
    ) -> None:
        if target not in ("answer", "descriptions"):
            raise ValueError(f"target must be 'answer' or 'descriptions', got {target!r}")
        if rationale and target != "answer":
            raise ValueError(
                "rationale=True asks the MESC answer prompt for a rationale; it needs target='answer'"
            )
        self.prompt_builder = MESCPromptBuilder(encoder, history_mode, prompt_max_tokens, rationale=rationale)
        if history_mode == "compressor" and history_tokenizer is None:
            raise ValueError("history_mode='compressor' needs the compressor's history_tokenizer")
        unknown = set(modalities) - {"video", "audio"}
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; use video and/or audio")
        if modality_probs is not None:
            if (
                len(modality_probs) != 3
                or min(modality_probs) < 0
                or not math.isclose(sum(modality_probs), 1.0)
            ):
                raise ValueError(
                    f"modality_probs must be [p_a, p_v, p_av] summing to 1, got {list(modality_probs)}"
                )
            if set(modalities) != {"video", "audio"}:
                raise ValueError("modality_probs needs both modalities enabled")
        if max_client_clips is not None and max_client_clips < 1:
            raise ValueError(f"max_client_clips must be >= 1 or None, got {max_client_clips}")
        self.target = target
        self.max_client_clips = max_client_clips
        samples = list(samples)
        if target == "descriptions":
            described = [s for s in samples if self._description(s)]
            self.without_description = len(samples) - len(described)
            samples = described
        else:
            self.without_description = 0
        self.samples = samples
        self.encoder = encoder
        self.clips_dir = None if clips_dir is None else Path(clips_dir)
        self.modalities = tuple(modalities) if self.clips_dir is not None else ()
        # Text only (no clips): nothing to draw from.
        self.modality_probs = (
            None if modality_probs is None or not self.modalities else np.asarray(modality_probs, dtype=float)
        )
        self.video_loader = video_loader or VideoLoader()
        self.audio_loader = audio_loader or AudioLoader()
        self.history_mode = history_mode
        self.history_tokenizer = history_tokenizer

    def __len__(self) -> int:
        return len(self.samples)

    def _chosen_modalities(self, seed: int) -> tuple[str, ...]:
        if self.modality_probs is None:
            return self.modalities
        draw = np.random.default_rng(seed).choice(3, p=self.modality_probs)
        return MODALITY_CHOICES[draw]

    def _used_utterances(self, sample: Sample) -> tuple[Any, ...]:
        """The client-turn utterances whose clips the sample decodes (the most recent ones)."""
        utterances = sample.client_turn.utterances
        return utterances[-self.max_client_clips :] if self.max_client_clips is not None else utterances

    def _description(self, sample: Sample) -> str:
        """Stage B's target: the descriptions of the clips used, joined ('' when there are none)."""
        return " ".join(u.description for u in self._used_utterances(sample) if u.description)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key)
        sample = self.samples[index]
        if self.target == "descriptions":
            # No history and no client words: the description has to come from the media.
            answer = self._description(sample)
            prompt = FittedPrompt(
                build_description_prompt(), self.encoder.prompt_ids(build_description_prompt()), []
            )
        else:
            answer = format_answer(
                sample.client_emotion, sample.therapist_emotion, sample.strategy, sample.response
            )
            prompt = self.prompt_builder(sample)
        item: dict[str, Any] = {
            "sample_id": sample.sample_id,
            **self.encoder.encode_ids(prompt.prompt_ids, answer),
            "targets": {
                "client_emotion": labels.EMOTIONS.index(sample.client_emotion),
                "therapist_emotion": labels.EMOTIONS.index(sample.therapist_emotion),
                "strategy": labels.STRATEGIES.index(sample.strategy),
            },
            "reference": sample.response,
            "answer": answer,
            "media_issues": [],
            "history_turns": len(prompt.history_lines),
            "history_turns_dropped": prompt.history_turns_dropped,
            "client_tokens_dropped": prompt.client_tokens_dropped,
        }
        if self.history_mode == "compressor" and self.target == "answer":
            # the compressor's own budget decides what it keeps
            item["history"] = self.history_tokenizer(prompt.history_lines)
            item["history_turns"] = item["history"].num_kept
            item["history_turns_dropped"] = item["history"].num_dropped
        chosen = self._chosen_modalities(seed)
        item["modalities"] = chosen
        if chosen:
            clips = [self.clips_dir / u.clip_name for u in self._used_utterances(sample)]
            if "video" in chosen:
                item["video"] = self._load(item, "video", self.video_loader, clips)
            if "audio" in chosen:
                audio = self._load(item, "audio", self.audio_loader, clips)
                if audio is not None:
                    item["audio"], item["audio_frames"] = audio
        return item

    @staticmethod
    def _load(item: dict[str, Any], modality: str, loader: Any, clips: list[Path]) -> Any:
        """Decode one modality from the turn's clips; a bad clip costs only itself (one issue
        each), the modality is missing only when none decodes."""
        problems: list[MediaError] = []
        try:
            value = loader(clips, problems)
        except MediaError as error:
            if error not in problems:  # the loaders list what they raise; keep counting exact
                problems.append(error)
            value = None
        for error in problems:
            item["media_issues"].append(
                MediaIssue(item["sample_id"], modality, str(error.path), error.reason, value is None)
            )
        return value


class DFEWDataset(Dataset):
    """One item per DFEW clip: video frames, the recognition prompt, ``Emotion: <class>`` as answer.

    A clip whose video cannot be decoded leaves the sample without input: the item is marked
    dropped (with its media issue) and the collate function leaves it out of the batch.
    """

    def __init__(
        self, samples: Sequence[DFEWSample], encoder: ChatEncoder, video_loader: VideoLoader | None = None
    ) -> None:
        self.samples = list(samples)
        self.encoder = encoder
        self.video_loader = video_loader or VideoLoader()
        self._prompt = build_dfew_prompt()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, _ = split_key(key)
        sample = self.samples[index]
        item: dict[str, Any] = {"sample_id": sample.name, "media_issues": [], "modalities": ("video",)}
        try:
            item["video"] = self.video_loader(sample.source)
        except MediaError as error:
            item["media_issues"].append(MediaIssue(sample.name, "video", str(error.path), error.reason))
            item["dropped"] = True
            return item
        answer = format_dfew_answer(sample.label)
        item.update(self.encoder.encode(self._prompt, answer))
        item["answer"] = answer
        item["targets"] = {"emotion": sample.label}
        item["reference"] = labels.DFEW_LABELS[sample.label]
        return item


# ----------------------------------------------------------------------------------- collate


def _pad(sequences: Sequence[torch.Tensor], value: int, left: bool = False) -> torch.Tensor:
    if left:
        flipped = [s.flip(0) for s in sequences]
        return torch.nn.utils.rnn.pad_sequence(flipped, batch_first=True, padding_value=value).flip(1)
    return torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=value)


@dataclass
class MultiModalCollator:
    """Batches items for :class:`~multimood.models.multimood.MultiMoodModel`.

    Keys: ``input_ids``/``attention_mask``/``labels`` (right-padded, training),
    ``prompt_ids``/``prompt_attention_mask`` (left-padded, generation); ``video`` (B, T, 3, S, S)
    with ``video_mask`` (B,); ``audio`` (B, F, 128) with ``audio_frame_mask`` (B, F) and
    ``audio_mask`` (B,); ``history_ids``/``history_attention_mask`` with the history tokenizer's
    ``history_mem_token_id`` and ``history_tokenizer_name`` (compressor mode; the model checks them);
    ``history_turns``/``history_turns_dropped`` (B,) (turns seen / cut by a budget, compressor or
    text mode) and ``client_tokens_dropped`` (B,) (MESC); ``targets`` (dict of (B,) class indices);
    ``references`` (the response text), ``answers`` (the whole target answer), ``sample_ids``,
    ``modalities`` (lists); ``media_issues`` and ``dropped`` (for
    counting). Absent video/audio rows are zeros with a False mask.
    """

    pad_token_id: int
    history_tokenizer: Any | None = None

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        issues = [issue for item in items for issue in item["media_issues"]]
        dropped = [item["sample_id"] for item in items if item.get("dropped")]
        items = [item for item in items if not item.get("dropped")]
        batch: dict[str, Any] = {
            "sample_ids": [item["sample_id"] for item in items],
            "media_issues": issues,
            "dropped": dropped,
        }
        if not items:
            return batch
        batch["input_ids"] = _pad([i["input_ids"] for i in items], self.pad_token_id)
        batch["attention_mask"] = _pad([torch.ones_like(i["input_ids"]) for i in items], 0)
        batch["labels"] = _pad([i["labels"] for i in items], IGNORE_INDEX)
        batch["prompt_ids"] = _pad([i["prompt_ids"] for i in items], self.pad_token_id, left=True)
        batch["prompt_attention_mask"] = _pad([torch.ones_like(i["prompt_ids"]) for i in items], 0, left=True)
        batch["targets"] = {k: torch.tensor([i["targets"][k] for i in items]) for k in items[0]["targets"]}
        batch["references"] = [i["reference"] for i in items]
        batch["answers"] = [i["answer"] for i in items]
        batch["modalities"] = [i["modalities"] for i in items]

        videos = [i.get("video") for i in items]
        if any(v is not None for v in videos):
            shape = next(v for v in videos if v is not None).shape
            batch["video"] = torch.stack([v if v is not None else torch.zeros(shape) for v in videos])
            batch["video_mask"] = torch.tensor([v is not None for v in videos])
        audios = [i.get("audio") for i in items]
        if any(a is not None for a in audios):
            fbanks = [a if a is not None else torch.zeros(0, 128) for a in audios]
            audio, frame_mask = pad_fbanks(fbanks)
            valid = torch.tensor([i.get("audio_frames", 0) for i in items])
            batch["audio"] = audio
            batch["audio_frame_mask"] = frame_mask & (torch.arange(audio.shape[1]) < valid[:, None])
            batch["audio_mask"] = torch.tensor([a is not None for a in audios])
        if "history" in items[0]:
            if self.history_tokenizer is None:
                raise ValueError(
                    "items carry compressor history ids but the collator has no history_tokenizer"
                )
            histories = [i["history"] for i in items]
            batch["history_ids"], batch["history_attention_mask"] = self.history_tokenizer.collate(histories)
            # The fused model refuses history ids whose <MEM> id is not its compressor's.
            batch["history_mem_token_id"] = self.history_tokenizer.mem_token_id
            batch["history_tokenizer_name"] = self.history_tokenizer.name
        for key in ("history_turns", "history_turns_dropped", "client_tokens_dropped"):
            if key in items[0]:
                batch[key] = torch.tensor([i[key] for i in items])
        return batch
