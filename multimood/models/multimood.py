"""The fused MultiMood model (paper section 3.1, eq. 1; appendix A.1).

    E'_V = STC(VisionTower(video))        (eqs. 2-3)
    E'_A = P_A(BEATs(audio))              (eq. 4)
    E'_H = P_H(Mamba(H' at <MEM>))        (ConvCompressor, section 3.2)

The prompt carries one ``<video>``, ``<audio>`` and ``<history>`` placeholder; each is replaced by
its block of projected features, forming X_LLM. Any block may be absent for a sample (a missing
clip, the paper's "random modal selection mechanism" of section 3.3, no history): its placeholder
is then replaced by nothing. Inserted positions are never supervised (label -100); only the answer
is.

Every trainable part takes part in every training step, also when no sample of the batch has its
modality (under DDP with ``find_unused_parameters=False`` a skipped part fails the next step; under
FSDP the rank falls out of step). The part then runs on a small stand-in input and an empty slice of
its output is joined to the sequence, so it contributes exactly nothing but is in the graph (as
VideoLLaMA2 joins an empty slice of the image features to text-only samples). Frozen towers do not
run on stand-ins unless ``stand_ins="all"`` (FSDP). See ``docs/design/model.md``.

Frozen parts run in eval mode even when the model trains (:mod:`multimood.models.modes`), and
:meth:`MultiMoodModel.generate` runs in eval mode (then restores every part's mode), so rollouts
generated inside a training step equal those of an evaluation.

Components are plain modules. Those whose width depends on another part are given as factories
(a class or ``functools.partial``; from YAML, a ``class_path`` without the sizes), called with the
sizes once the LLM and encoders exist:

    video_connector(vision_hidden_size, llm_hidden_size)
    audio_projector(audio_feature_size, llm_hidden_size)
    history_compressor(llm_hidden_size)

A ready-made ``nn.Module`` is accepted too. What trains is each component's own constructor argument
(``trainable``: ``frozen``, ``lora`` or ``full``, see :mod:`multimood.models.trainable`);
:meth:`MultiMoodModel.trainable_table` lists the result. What each part must provide is declared in
:mod:`multimood.models.contracts` and checked here at construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from multimood.constants import AUDIO_TOKEN, HISTORY_TOKEN, IGNORE_INDEX, PLACEHOLDER_TOKENS, VIDEO_TOKEN
from multimood.data.fbank import BEATS_MEL_BINS
from multimood.models.contracts import check_component, has_trainable_parameters, image_size_of
from multimood.models.llm import LanguageModel
from multimood.models.modes import eval_frozen_parts, evaluating
from multimood.models.trainable import trainable_table

# A factory receives the sizes it needs as leading positional arguments.
SizedFactory = Callable[[int, int], nn.Module]  # (input width, LLM width) -> module
LLMSizedFactory = Callable[[int], nn.Module]  # (LLM width) -> module


# Stand-in audio for an audio tower that runs on a stand-in (trainable, or stand_ins="all") when a
# batch has no audio: one second of fbank frames
# (10 ms hop), long enough for any tower to give at least one token (BEATs: 16 frames per token).
STAND_IN_AUDIO_FRAMES = 100


def _build(
    role: str, component: nn.Module | Callable[..., nn.Module] | None, *sizes: int
) -> nn.Module | None:
    if component is None or isinstance(component, nn.Module):
        return component
    if not callable(component):
        raise ValueError(f"{role}: expected a module or a factory (class, partial), got {component!r}")
    return component(*sizes)


def _param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype stand-in inputs take: the first floating parameter's, else float32."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _check_llm(llm: Any) -> None:
    """The LLM must give its width, its tokenizer and one id per placeholder token."""
    what = f"{type(llm).__name__} ({type(llm).__module__}.{type(llm).__qualname__})"
    if not isinstance(llm, nn.Module):
        raise ValueError(f"llm: {what} is not a torch.nn.Module")
    hidden = getattr(llm, "hidden_size", None)
    if not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"llm: {what} has no positive int 'hidden_size' (got {hidden!r})")
    ids = getattr(llm, "placeholder_ids", None)
    missing = [
        t for t in PLACEHOLDER_TOKENS if not isinstance(ids, Mapping) or not isinstance(ids.get(t), int)
    ]
    if missing:
        raise ValueError(f"llm: {what}.placeholder_ids lacks an int id for {missing}")
    if getattr(llm, "tokenizer", None) is None:
        raise ValueError(f"llm: {what} has no 'tokenizer'")


@dataclass
class SplicedInputs:
    """What the LLM receives, plus where each feature block landed (for tests and RL log-probs)."""

    inputs_embeds: torch.Tensor  # (B, S, hidden)
    attention_mask: torch.Tensor  # (B, S) long
    position_ids: torch.Tensor  # (B, S)
    labels: torch.Tensor | None  # (B, S) or None
    # spans[b][token] = (start, end) of the block that replaced `token` in sample b (end exclusive).
    spans: list[dict[str, tuple[int, int]]] = field(default_factory=list)


class MultiMoodModel(nn.Module):
    """Video, audio and compressed history spliced into a causal LM at their placeholders.

    Args:
        llm: The language model (with its tokenizer).
        vision_tower: Frames (B, T, 3, H, W) -> patch features (B, T, N, C); has ``hidden_size``.
        video_connector: Factory ``(C, llm_hidden) -> module`` mapping (B, T, N, C) -> (B, Nv, llm_hidden)
            (the STC connector), or a built module.
        audio_tower: Fbank (B, F, 128) + padding mask (B, F) -> (features (B, Na, C), padding mask
            (B, Na)); has ``output_dim``.
        audio_projector: Factory ``(C, llm_hidden) -> module`` (P_A), or a built module.
        history_compressor: Factory ``(llm_hidden) -> module`` mapping history ids (B, Lh) + mask
            to (memory (B, T, llm_hidden), memory mask (B, T)), or a built module.
        stand_ins: Which parts run on a stand-in input when no sample of a batch has their
            modality. ``trainable`` (default): parts with trainable parameters, while gradients are
            on; enough for DDP, and a frozen tower is not run (its output is replaced by zeros).
            ``all``: every part in every forward, frozen towers and no-grad passes included; needed
            when FSDP shards a frozen part, since every rank must gather the same modules' shards in
            the same order.
    """

    def __init__(
        self,
        llm: LanguageModel,
        vision_tower: nn.Module | None = None,
        video_connector: SizedFactory | nn.Module | None = None,
        audio_tower: nn.Module | None = None,
        audio_projector: SizedFactory | nn.Module | None = None,
        history_compressor: LLMSizedFactory | nn.Module | None = None,
        stand_ins: Literal["trainable", "all"] = "trainable",
    ) -> None:
        super().__init__()
        if stand_ins not in ("trainable", "all"):
            raise ValueError(f"stand_ins must be 'trainable' or 'all', got {stand_ins!r}")
        self.stand_ins = stand_ins
        if (vision_tower is None) != (video_connector is None):
            raise ValueError("vision_tower and video_connector go together: give both or neither")
        if (audio_tower is None) != (audio_projector is None):
            raise ValueError("audio_tower and audio_projector go together: give both or neither")
        _check_llm(llm)
        self.llm = llm
        d = llm.hidden_size
        if vision_tower is not None:
            check_component("vision_tower", vision_tower)
        if audio_tower is not None:
            check_component("audio_tower", audio_tower)
        self.vision_tower = vision_tower
        self.video_connector = _build(
            "video_connector", video_connector, getattr(vision_tower, "hidden_size", None), d
        )
        self.audio_tower = audio_tower
        self.audio_projector = _build(
            "audio_projector", audio_projector, getattr(audio_tower, "output_dim", None), d
        )
        self.history_compressor = _build("history_compressor", history_compressor, d)
        for role in ("video_connector", "audio_projector", "history_compressor"):
            part = getattr(self, role)
            if part is not None:
                check_component(role, part)
        if vision_tower is not None and self._runs_on_stand_ins(vision_tower):
            image_size_of(vision_tower)  # such a tower needs a stand-in clip: fail now, not mid-run
        self.token_ids = dict(llm.placeholder_ids)  # <video>, <audio>, <history> -> token id
        self.pad_token_id = llm.tokenizer.pad_token_id
        self.train(self.training)  # frozen parts go to eval mode now, not only when a trainer calls train()

    def train(self, mode: bool = True) -> MultiMoodModel:
        """Train mode for the trainable parts; parts with no trainable parameter stay in eval mode.

        Which parts are frozen is read now (``requires_grad``), so freezing after construction counts.
        The paper keeps parts frozen across stages ("Both visual and audio encoders remain frozen
        during training", "keeping the pre-trained audio-visual projectors and ConvCom frozen",
        appendix B.2); in train mode they would still apply dropout (a stage-A compressor's LoRA
        dropout) and so change their outputs from one pass to the next.
        """
        super().train(mode)
        if mode:
            eval_frozen_parts(self)
        return self

    @property
    def tokenizer(self) -> Any:
        return self.llm.tokenizer

    def trainable_table(self) -> dict[str, dict[str, Any]]:
        """Per part: the training modes it was built with and its trainable / total parameter counts
        (:func:`multimood.models.trainable.trainable_table`)."""
        return trainable_table(self)

    # ------------------------------------------------------------------ encoders
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(n, T, 3, H, W) -> (n, Nv, hidden)."""
        return self.video_connector(self.vision_tower(video))

    def encode_audio(
        self, fbank: torch.Tensor, frame_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, F, 128), valid-frame mask (n, F) -> (n, Na, hidden), valid-token mask (n, Na)."""
        padding = None if frame_mask is None else ~frame_mask.bool()
        features, feat_padding = self.audio_tower(fbank, padding)
        valid = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        if feat_padding is not None:
            valid = ~feat_padding.bool()
        return self.audio_projector(features), valid

    def encode_history(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Lh) -> memory (B, T, hidden), valid-turn mask (B, T)."""
        memory, valid = self.history_compressor(ids, mask)
        return memory, valid.bool()

    def feature_blocks(self, batch: Mapping[str, Any]) -> dict[str, list[torch.Tensor | None]]:
        """Per placeholder, one (n_i, hidden) block per sample, or None where the modality is absent.

        A modality tensor may be missing from the batch (the collator leaves it out when no sample
        has it) or present with a False mask row. When no sample has a modality, a trainable path
        still runs on a stand-in input while gradients are on, and a zero-row slice of its output
        becomes sample 0's block: :meth:`splice` joins it (at the placeholder, or at the end of the
        sequence) without changing a single value, and every trainable parameter gets a gradient.
        """
        input_ids = batch["input_ids"]
        batch_size, device = input_ids.shape[0], input_ids.device
        blocks: dict[str, list[torch.Tensor | None]] = {t: [None] * batch_size for t in self.token_ids}
        self._check_batch_history_tokenizer(batch)

        if self.vision_tower is not None:
            video = batch.get("video")
            present = self._present(batch, "video", batch_size, device)
            if present.any():
                encoded = self._checked_width("video_connector", self.encode_video(video[present]))
                for i, b in enumerate(present.nonzero().flatten().tolist()):
                    blocks[VIDEO_TOKEN][b] = encoded[i]
            elif self._must_take_part(self.vision_tower, self.video_connector):
                blocks[VIDEO_TOKEN][0] = self._stand_in_video(device)[0, :0]

        if self.audio_tower is not None:
            audio = batch.get("audio")
            present = self._present(batch, "audio", batch_size, device)
            if present.any():
                frame_mask = batch.get("audio_frame_mask")
                encoded, valid = self.encode_audio(
                    audio[present], None if frame_mask is None else frame_mask[present]
                )
                self._checked_width("audio_projector", encoded)
                for i, b in enumerate(present.nonzero().flatten().tolist()):
                    blocks[AUDIO_TOKEN][b] = encoded[i][valid[i]]
            elif self._must_take_part(self.audio_tower, self.audio_projector):
                blocks[AUDIO_TOKEN][0] = self._stand_in_audio(device)[0, :0]

        if self.history_compressor is not None:
            history = batch.get("history_ids")
            memory = None
            if history is not None:
                memory, valid = self.encode_history(history, batch["history_attention_mask"])
                self._checked_width("history_compressor", memory)
                for b in range(batch_size):
                    if valid[b].any():
                        blocks[HISTORY_TOKEN][b] = memory[b][valid[b]]
            if all(block is None for block in blocks[HISTORY_TOKEN]) and self._must_take_part(
                self.history_compressor
            ):
                if memory is None or not memory.requires_grad:
                    # The stand-in history is one empty turn: its <MEM> alone.
                    ids = torch.full((1, 1), self.history_compressor.mem_token_id, device=device)
                    memory, _ = self.encode_history(ids, torch.ones_like(ids))
                blocks[HISTORY_TOKEN][0] = memory[0, :0]
        return blocks

    def _must_take_part(self, *parts: nn.Module | None) -> bool:
        """A path without real input runs anyway when it could receive gradients in this pass
        (or always, with ``stand_ins="all"``)."""
        return self.stand_ins == "all" or (torch.is_grad_enabled() and has_trainable_parameters(*parts))

    def _runs_on_stand_ins(self, tower: nn.Module) -> bool:
        """Whether a tower itself runs on a stand-in input (else its output is replaced by zeros)."""
        return self.stand_ins == "all" or has_trainable_parameters(tower)

    def _stand_in_video(self, device: torch.device) -> torch.Tensor:
        """Connector output (1, Nv, hidden) for a stand-in clip of the fewest frames it accepts.

        A frozen tower is not run (unless ``stand_ins="all"``): its output is replaced by zeros,
        with as few patches as the connector accepts (``min_patches``; STC: a 2x2 grid instead of
        27x27). Otherwise the tower runs on a black clip. Zeros keep every activation finite, so
        the zero gradients that flow back through the empty slice stay zero (a NaN activation
        would turn them into NaN).
        """
        tower, connector = self.vision_tower, self.video_connector
        frames = int(getattr(connector, "min_frames", 1))
        dtype = _param_dtype(connector)
        if self._runs_on_stand_ins(tower):
            height, width = image_size_of(tower)
            features = tower(
                torch.zeros(1, frames, 3, height, width, device=device, dtype=_param_dtype(tower))
            )
        else:
            patches = int(getattr(connector, "min_patches", tower.num_patches))
            features = torch.zeros(1, frames, patches, tower.hidden_size, device=device, dtype=dtype)
        return self._checked_width("video_connector", connector(features))

    def _stand_in_audio(self, device: torch.device) -> torch.Tensor:
        """Projector output (1, Na, hidden) for stand-in audio (frozen tower: zero features)."""
        tower, projector = self.audio_tower, self.audio_projector
        if self._runs_on_stand_ins(tower):
            fbank = torch.zeros(
                1, STAND_IN_AUDIO_FRAMES, BEATS_MEL_BINS, device=device, dtype=_param_dtype(tower)
            )
            features, _ = tower(fbank, None)
        else:
            features = torch.zeros(1, 1, tower.output_dim, device=device, dtype=_param_dtype(projector))
        return self._checked_width("audio_projector", projector(features))

    def _checked_width(self, role: str, features: torch.Tensor) -> torch.Tensor:
        d = self.llm.hidden_size
        if features.shape[-1] != d:
            part = getattr(self, role)
            raise ValueError(
                f"{role}: {type(part).__name__} returned features of width {features.shape[-1]}, but the "
                f"LLM's hidden size is {d}; its factory is called with the LLM width, check how it uses it"
            )
        return features

    @staticmethod
    def _present(batch: Mapping[str, Any], key: str, batch_size: int, device: torch.device) -> torch.Tensor:
        """(B,) bool: samples that carry ``key``; all False when the batch has no such tensor."""
        if batch.get(key) is None:
            return torch.zeros(batch_size, dtype=torch.bool, device=device)
        mask = batch.get(f"{key}_mask")
        if mask is None:
            return torch.ones(batch_size, dtype=torch.bool, device=device)
        return mask.to(device=device, dtype=torch.bool)

    # ------------------------------------------------------------------ history tokenizer check
    def check_history_tokenizer(self, tokenizer: Any) -> None:
        """Raise ``ValueError`` if the data side's history tokenizer does not match the compressor.

        ``tokenizer`` is the data module's :class:`~multimood.data.history.HistoryTokenizer` (or
        anything with ``mem_token_id``). A ``<MEM>`` id that differs from the compressor's would make
        every history read as zero turns. Call it where data and model meet (a training script's
        setup); batches can also carry ``history_mem_token_id`` (checked on every forward).
        """
        compressor = self.history_compressor
        if compressor is None:
            raise ValueError(
                "the data side gives compressor history ids, but this MultiMoodModel has no history_compressor"
            )
        check = getattr(compressor, "check_history_tokenizer", None)
        if callable(check):
            check(tokenizer)
            return
        theirs = getattr(tokenizer, "mem_token_id", None)
        if theirs != compressor.mem_token_id:
            raise ValueError(
                f"history tokenizer <MEM> id {theirs} differs from the history_compressor's "
                f"({type(compressor).__name__}.mem_token_id = {compressor.mem_token_id})"
            )

    def _check_batch_history_tokenizer(self, batch: Mapping[str, Any]) -> None:
        theirs = batch.get("history_mem_token_id")
        if theirs is None or batch.get("history_ids") is None or self.history_compressor is None:
            return
        ours = self.history_compressor.mem_token_id
        if int(theirs) != ours:
            name = batch.get("history_tokenizer_name", "the data module's history tokenizer")
            ours_name = getattr(getattr(self.history_compressor, "history_tokenizer", None), "name", None)
            raise ValueError(
                f"batch history ids use <MEM> id {int(theirs)} ({name}), the history_compressor expects "
                f"{ours}" + (f" ({ours_name})" if ours_name else "") + ": give the data module the "
                "compressor's history tokenizer (same name and max_tokens)"
            )

    # ------------------------------------------------------------------ splicing
    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        blocks: Mapping[str, list[torch.Tensor | None]],
        labels: torch.Tensor | None = None,
        padding_side: str = "right",
    ) -> SplicedInputs:
        """Replace each placeholder with its feature block and re-pad the batch.

        input_ids/attention_mask/labels: (B, L), either padding side. Returns (B, S) tensors with
        ``padding_side`` padding (right for training, left for generation). A block with rows needs
        its placeholder in the sample's prompt; a zero-row block (a part kept in the graph, see
        :meth:`feature_blocks`) is joined at the end of the sample when there is none.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        placeholder = torch.zeros_like(input_ids, dtype=torch.bool)
        for tid in self.token_ids.values():
            placeholder |= input_ids == tid
        # Placeholder ids are masked to padding before the lookup: their rows are never used.
        text_embeds = self.llm.embed(input_ids.masked_fill(placeholder, self.pad_token_id))
        dtype = text_embeds.dtype
        token_by_id = {v: k for k, v in self.token_ids.items()}

        sequences, label_seqs, spans = [], [], []
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            ids, emb = input_ids[b][keep], text_embeds[b][keep]
            lab = labels[b][keep] if labels is not None else None
            pieces, lab_pieces, sample_spans = [], [], {}
            cursor, length = 0, 0
            for pos in placeholder[b][keep].nonzero().flatten().tolist():
                token = token_by_id[int(ids[pos])]
                if token in sample_spans:
                    raise ValueError(f"sample {b}: placeholder {token} appears more than once in the prompt")
                block = blocks.get(token, [None] * input_ids.shape[0])[b]
                block = emb.new_zeros(0, emb.shape[-1]) if block is None else block.to(dtype)
                pieces += [emb[cursor:pos], block]
                if lab is not None:
                    lab_pieces += [lab[cursor:pos], lab.new_full((block.shape[0],), IGNORE_INDEX)]
                length += pos - cursor
                sample_spans[token] = (length, length + block.shape[0])
                length += block.shape[0]
                cursor = pos + 1
            pieces.append(emb[cursor:])
            for token, per_sample in blocks.items():
                block = per_sample[b]
                if block is None or token in sample_spans:
                    continue
                if block.shape[0]:
                    raise ValueError(
                        f"sample {b} has {token} features but no {token} placeholder in its prompt"
                    )
                # A zero-row block only keeps a part in the graph (see feature_blocks): join it anyway.
                pieces.append(block.to(dtype))
            if lab is not None:
                lab_pieces.append(lab[cursor:])
            sequences.append(torch.cat(pieces))
            label_seqs.append(torch.cat(lab_pieces) if lab is not None else None)
            spans.append(sample_spans)

        max_len = max(s.shape[0] for s in sequences)
        batch_size, hidden = len(sequences), text_embeds.shape[-1]
        device = text_embeds.device
        embeds = text_embeds.new_zeros(batch_size, max_len, hidden)
        mask = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
        out_labels = (
            None
            if labels is None
            else torch.full((batch_size, max_len), IGNORE_INDEX, dtype=labels.dtype, device=device)
        )
        for b, seq in enumerate(sequences):
            n = seq.shape[0]
            sl = slice(max_len - n, max_len) if padding_side == "left" else slice(0, n)
            embeds[b, sl] = seq
            mask[b, sl] = 1
            if out_labels is not None:
                out_labels[b, sl] = label_seqs[b]
            if padding_side == "left":
                spans[b] = {k: (s + max_len - n, e + max_len - n) for k, (s, e) in spans[b].items()}
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return SplicedInputs(embeds, mask, position_ids, out_labels, spans)

    # ------------------------------------------------------------------ model API
    def prepare_inputs(self, batch: Mapping[str, Any], padding_side: str = "right") -> SplicedInputs:
        """Encode every present modality and splice it into the prompt embeddings."""
        return self.splice(
            batch["input_ids"],
            batch["attention_mask"],
            self.feature_blocks(batch),
            labels=batch.get("labels"),
            padding_side=padding_side,
        )

    def forward(self, batch: Mapping[str, Any], all_logits: bool = False) -> Any:
        """Teacher-forced pass; ``.loss`` is the cross-entropy over the supervised (answer) tokens.

        With labels, the LM head runs only at the positions that predict a supervised token
        (transformers' boolean ``logits_to_keep``): ``.logits`` is then ``(N, vocab)``, one row per
        supervised token of the batch in row-major order, and ``.loss`` their mean cross-entropy
        (float32), the value transformers computes from every position's logits. Neither the
        prompt's positions nor a short sample's right padding reach the LM head: with a 152k
        vocabulary, a 4k-token prompt's logits alone would take 2.5 GB in float32, and in a batch
        of unequal lengths a window "from the first answer token on" is mostly other samples'
        prompts. ``all_logits=True`` keeps every position's logits, ``(B, S, vocab)``, and
        transformers' own loss.
        """
        inputs = self.prepare_inputs(batch, padding_side="right")
        common = {
            "inputs_embeds": inputs.inputs_embeds,
            "attention_mask": inputs.attention_mask,
            "position_ids": inputs.position_ids,
        }
        labels = inputs.labels
        if labels is None or all_logits:
            return self.llm(**common, labels=labels)
        targets = labels[:, 1:]
        supervised = targets != IGNORE_INDEX  # position p predicts the label at p + 1
        if not bool(supervised.any()):  # nothing to learn: transformers' answer (a NaN mean)
            return self.llm(**common, labels=labels)
        keep = F.pad(supervised, (0, 1), value=False)
        out = self.llm(**common, logits_to_keep=keep)
        out["loss"] = F.cross_entropy(out.logits.float(), targets[supervised])
        return out

    @torch.no_grad()
    def generate(self, batch: Mapping[str, Any], **generate_kwargs: Any) -> list[str]:
        """Answers as text, from the same batches as training.

        The prompt is ``prompt_ids``/``prompt_attention_mask`` when the batch has them (the data
        modules provide both: training ids end with the answer, these stop where the assistant
        turn opens), else ``input_ids``/``attention_mask``. ``labels`` are ignored.
        ``generate_kwargs`` go to transformers' ``generate`` (default ``max_new_tokens=128``).

        Runs in eval mode whatever the model's mode (and restores every part's mode after), so
        rollouts generated inside a training step (RL) equal those of an evaluation: no dropout, and
        the KV cache stays on even with gradient checkpointing (see :mod:`multimood.models.modes`).
        """
        out = self.generate_ids(batch, **generate_kwargs)
        return self.tokenizer.batch_decode(getattr(out, "sequences", out), skip_special_tokens=True)

    @torch.no_grad()
    def generate_ids(self, batch: Mapping[str, Any], **generate_kwargs: Any) -> Any:
        """What :meth:`generate` decodes: the new token ids (B, N), or transformers' output object
        when ``return_dict_in_generate=True`` (with ``scores``/``logits`` when asked for)."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if "prompt_ids" in batch:
            inputs["input_ids"], inputs["attention_mask"] = (
                batch["prompt_ids"],
                batch["prompt_attention_mask"],
            )
        generate_kwargs.setdefault("max_new_tokens", 128)
        with evaluating(self):
            spliced = self.prepare_inputs(inputs, padding_side="left")
            return self.llm.generate(
                inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, **generate_kwargs
            )
