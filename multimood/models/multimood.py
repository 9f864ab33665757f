"""The fused MultiMood model (paper section 3.1, eq. 1; appendix A.1).

    E'_V = STC(VisionTower(video))        (eqs. 2-3)
    E'_A = P_A(BEATs(audio))              (eq. 4)
    E'_H = P_H(Mamba(H' at <MEM>))        (ConvCompressor, section 3.2)

The prompt carries one ``<video>``, ``<audio>`` and ``<history>`` placeholder; each is replaced by
its block of projected features, forming X_LLM. Any block may be absent for a sample (a missing
clip, the paper's random modality selection, no history): its placeholder is then replaced by
nothing. Inserted positions are never supervised (label -100); only the answer is.

Components are plain modules. Those whose width depends on another part are given as factories
(a class or ``functools.partial``; from YAML, a ``class_path`` without the sizes), called with the
sizes once the LLM and encoders exist:

    video_connector(vision_hidden_size, llm_hidden_size)
    audio_projector(audio_feature_size, llm_hidden_size)
    history_compressor(llm_hidden_size)

A ready-made ``nn.Module`` is accepted too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from multimood.constants import AUDIO_TOKEN, HISTORY_TOKEN, IGNORE_INDEX, VIDEO_TOKEN
from multimood.models.llm import LanguageModel

# A factory receives the sizes it needs as leading positional arguments.
SizedFactory = Callable[[int, int], nn.Module]  # (input width, LLM width) -> module
LLMSizedFactory = Callable[[int], nn.Module]  # (LLM width) -> module


def _build(component: nn.Module | Callable[..., nn.Module] | None, *sizes: int) -> nn.Module | None:
    if component is None or isinstance(component, nn.Module):
        return component
    return component(*sizes)


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
    """

    def __init__(
        self,
        llm: LanguageModel,
        vision_tower: nn.Module | None = None,
        video_connector: SizedFactory | nn.Module | None = None,
        audio_tower: nn.Module | None = None,
        audio_projector: SizedFactory | nn.Module | None = None,
        history_compressor: LLMSizedFactory | nn.Module | None = None,
    ) -> None:
        super().__init__()
        if (vision_tower is None) != (video_connector is None):
            raise ValueError("vision_tower and video_connector go together: give both or neither")
        if (audio_tower is None) != (audio_projector is None):
            raise ValueError("audio_tower and audio_projector go together: give both or neither")
        self.llm = llm
        d = llm.hidden_size
        self.vision_tower = vision_tower
        self.video_connector = _build(video_connector, getattr(vision_tower, "hidden_size", 0), d)
        self.audio_tower = audio_tower
        self.audio_projector = _build(audio_projector, getattr(audio_tower, "output_dim", 0), d)
        self.history_compressor = _build(history_compressor, d)
        self.token_ids = dict(llm.placeholder_ids)  # <video>, <audio>, <history> -> token id
        self.pad_token_id = llm.tokenizer.pad_token_id

    @property
    def tokenizer(self) -> Any:
        return self.llm.tokenizer

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
        """Per placeholder, one (n_i, hidden) block per sample, or None where the modality is absent."""
        batch_size = batch["input_ids"].shape[0]
        blocks: dict[str, list[torch.Tensor | None]] = {t: [None] * batch_size for t in self.token_ids}

        video = batch.get("video")
        if video is not None and self.vision_tower is not None:
            present = self._present(batch, "video_mask", batch_size, video.device)
            if present.any():
                encoded = self.encode_video(video[present])
                for i, b in enumerate(present.nonzero().flatten().tolist()):
                    blocks[VIDEO_TOKEN][b] = encoded[i]

        audio = batch.get("audio")
        if audio is not None and self.audio_tower is not None:
            present = self._present(batch, "audio_mask", batch_size, audio.device)
            if present.any():
                frame_mask = batch.get("audio_frame_mask")
                encoded, valid = self.encode_audio(
                    audio[present], None if frame_mask is None else frame_mask[present]
                )
                for i, b in enumerate(present.nonzero().flatten().tolist()):
                    blocks[AUDIO_TOKEN][b] = encoded[i][valid[i]]

        history = batch.get("history_ids")
        if history is not None and self.history_compressor is not None:
            memory, valid = self.encode_history(history, batch["history_attention_mask"])
            for b in range(batch_size):
                if valid[b].any():
                    blocks[HISTORY_TOKEN][b] = memory[b][valid[b]]
        return blocks

    @staticmethod
    def _present(batch: Mapping[str, Any], key: str, batch_size: int, device: torch.device) -> torch.Tensor:
        mask = batch.get(key)
        if mask is None:
            return torch.ones(batch_size, dtype=torch.bool, device=device)
        return mask.to(device=device, dtype=torch.bool)

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
        ``padding_side`` padding (right for training, left for generation).
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
            for token, per_sample in blocks.items():
                if per_sample[b] is not None and token not in sample_spans:
                    raise ValueError(
                        f"sample {b} has {token} features but no {token} placeholder in its prompt"
                    )
            pieces.append(emb[cursor:])
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

    def forward(self, batch: Mapping[str, Any]) -> Any:
        """Teacher-forced pass; ``.loss`` is the cross-entropy over the supervised (answer) tokens."""
        inputs = self.prepare_inputs(batch, padding_side="right")
        return self.llm(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            position_ids=inputs.position_ids,
            labels=inputs.labels,
        )

    @torch.no_grad()
    def generate(self, batch: Mapping[str, Any], **generate_kwargs: Any) -> list[str]:
        """Answers as text, from the same batches as training.

        The prompt is ``prompt_ids``/``prompt_attention_mask`` when the batch has them (the data
        modules provide both: training ids end with the answer, these stop where the assistant
        turn opens), else ``input_ids``/``attention_mask``. ``labels`` are ignored.
        ``generate_kwargs`` go to transformers' ``generate`` (default ``max_new_tokens=128``).
        """
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if "prompt_ids" in batch:
            inputs["input_ids"], inputs["attention_mask"] = (
                batch["prompt_ids"],
                batch["prompt_attention_mask"],
            )
        spliced = self.prepare_inputs(inputs, padding_side="left")
        generate_kwargs.setdefault("max_new_tokens", 128)
        new_tokens = self.llm.generate(
            inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, **generate_kwargs
        )
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
