"""MESCDataModule on the real annotations (text only) and on synthetic media."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from jsonargparse import ArgumentParser

from datamodules import MESCDataModule
from multimood.constants import AUDIO_TOKEN, HISTORY_TOKEN, IGNORE_INDEX, VIDEO_TOKEN
from multimood.data.answer import parse_answer
from multimood.data.labels import EMOTIONS, STRATEGIES
from multimood.data.mesc import PER_UTTERANCE_WARNING, MESCContextError

REAL_TOKENIZER = "packaged:qwen2-tokenizer"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _decode(tok, ids: torch.Tensor, mask: torch.Tensor | None = None) -> str:
    if mask is not None:
        ids = ids[mask.bool()]
    return tok.decode(ids, skip_special_tokens=False)


@pytest.mark.real_data
def test_text_only_batches_on_the_real_annotations(real_mesc_dir: Path) -> None:
    # modality_probs is irrelevant without clips and must not get in the way.
    dm = MESCDataModule(
        str(real_mesc_dir),
        tokenizer=REAL_TOKENIZER,
        history_mode="text",
        batch_size=4,
        modality_probs=(0.2, 0.2, 0.6),
    )
    dm.setup("fit")
    counts = dm.data.report.counts
    assert [counts[s].samples for s in ("train", "val", "test")] == [3721, 445, 454]  # therapist turns
    assert "video" not in next(iter(dm.train_dataloader()))
    batch = next(iter(dm.val_dataloader()))
    tok = dm.tokenizer
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert "video" not in batch
    assert "audio" not in batch
    assert "history_ids" not in batch  # text mode: the history is in the prompt
    samples = dm.datasets["val"].samples[:4]
    for b, sample in enumerate(samples):
        text = _decode(tok, batch["input_ids"][b], batch["attention_mask"][b])
        # The chat: system turn, the user's figure-4 prompt, the assistant's answer.
        assert text.startswith("<|im_start|>system\n")
        user = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
        for section in ("[CONTEXT]", "Problem:", "Situation:", "[CURRENT CONTEXT]", "[OUTPUT FORMAT]"):
            assert section in user
        assert f"Video: {VIDEO_TOKEN}" in user
        assert f"Audio: {AUDIO_TOKEN}" in user
        assert HISTORY_TOKEN not in user  # replaced by the turns themselves
        assert f"Client utterance: {sample.client_text}" in user
        for turn in sample.history[-2:]:
            assert all(u.text in user for u in turn.utterances)
        assert int(batch["history_turns"][b]) == len(sample.history)  # nothing over the budget here
        assert int(batch["history_turns_dropped"][b]) == int(batch["client_tokens_dropped"][b]) == 0
        # Exactly the answer (and the end of the turn) is supervised.
        supervised = batch["labels"][b][batch["labels"][b] != IGNORE_INDEX]
        answer = tok.decode(supervised)
        assert answer.endswith("<|im_end|>")
        assert text.endswith(answer)
        assert text[: -len(answer)].endswith("<|im_start|>assistant\n")
        parsed = parse_answer(answer.removesuffix("<|im_end|>"))
        assert parsed.ok
        assert parsed.client_emotion == sample.client_emotion
        assert parsed.strategy == sample.strategy
        assert parsed.response == sample.response
        assert batch["targets"]["client_emotion"][b] == EMOTIONS.index(sample.client_emotion)
        assert batch["targets"]["strategy"][b] == STRATEGIES.index(sample.strategy)
        # The generation prompt is the training sequence minus the answer (left padded).
        prompt = _decode(tok, batch["prompt_ids"][b], batch["prompt_attention_mask"][b])
        assert prompt + answer == text
    assert batch["prompt_attention_mask"][:, -1].all()  # left padding: every prompt ends at the right edge


@pytest.mark.real_data
def test_compressor_history_on_the_real_annotations(real_mesc_dir: Path) -> None:
    dm = MESCDataModule(
        str(real_mesc_dir),
        tokenizer=REAL_TOKENIZER,
        history_tokenizer="tiny:mamba",
        history_length=5,
        batch_size=3,
    )
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    mem = dm.history_tokenizer.mem_token_id
    for b, sample in enumerate(dm.datasets["test"].samples[:3]):
        assert len(sample.history) <= 10  # 5 client/therapist exchanges
        ids = batch["history_ids"][b][batch["history_attention_mask"][b].bool()]
        assert int((ids == mem).sum()) == len(sample.history) == int(batch["history_turns"][b])
        prompt = _decode(dm.tokenizer, batch["input_ids"][b], batch["attention_mask"][b])
        assert f"Chat history: {HISTORY_TOKEN}" in prompt


def _sections(message: str) -> tuple:
    """What a prompt is made of, without its content: each line's label (up to the first colon)
    and whether it has a value, and whether any generated description is in it."""
    lines = tuple(
        (line.split(":", 1)[0], bool(line.split(":", 1)[1].strip()) if ":" in line else None)
        for line in message.split("\n")
    )
    return lines, "[Description:" in message


@pytest.mark.real_data
def test_default_config_gives_train_and_test_prompts_the_same_sections(real_mesc_dir: Path) -> None:
    """No train.json: the shipped config (as YAML, parsed like the configs test) must not give
    val/test prompts sections that train prompts lack."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    cfg = parser.parse_args(
        [
            "--data",
            str(CONFIGS / "data" / "mesc.yaml"),
            f"--data.init_args.data_dir={real_mesc_dir}",
            "--data.init_args.clips_dir=null",  # text only: no clips here
            f"--data.init_args.tokenizer={REAL_TOKENIZER}",  # the config's hub id is offline here
            "--data.init_args.history_tokenizer=tiny:mamba",
            "--data.init_args.num_workers=0",
        ]
    )
    dm = parser.instantiate(cfg).data
    assert (dm.hparams.descriptions, dm.hparams.problem_situation) == ("auto", "auto")  # from the YAML
    assert (dm.hparams.sample_unit, dm.hparams.history_unit) == ("turn", "exchanges")
    dm.setup("fit")
    found = {}
    loaders = {"train": dm.train_dataloader(), "test": dm.test_dataloader()}
    for split in ("train", "test"):
        dataset = dm.datasets[split]
        found[split] = {
            _sections(dataset.prompt_builder.message(s, [], s.client_text)) for s in dataset.samples
        }
        # What the batches carry is one of those shapes.
        batch = next(iter(loaders[split]))
        text = dm.tokenizer.decode(batch["prompt_ids"][0][batch["prompt_attention_mask"][0].bool()])
        user = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
        assert _sections(user) in found[split]
    assert found["train"] == found["test"]
    ((lines, described),) = found["test"]  # one shape for every sample
    assert not described
    assert ("Problem", False) in lines and ("Situation", False) in lines


@pytest.mark.real_data
def test_asking_for_descriptions_without_train_descriptions_fails_at_construction(
    real_mesc_dir: Path,
) -> None:
    with pytest.raises(MESCContextError) as caught:
        MESCDataModule(str(real_mesc_dir), tokenizer=REAL_TOKENIZER, history_mode="text", descriptions=True)
    message = str(caught.value)
    assert re.search(re.escape(str(real_mesc_dir / "train.json")) + " is missing", message)
    assert "allow_eval_only_context=true" in message
    dm = MESCDataModule(
        str(real_mesc_dir),
        tokenizer=REAL_TOKENIZER,
        history_mode="text",
        descriptions=True,
        allow_eval_only_context=True,
        limit_samples=2,
    )
    dm.setup("fit")
    assert "[Description:" in dm.datasets["val"].prompt_builder(dm.datasets["val"].samples[0]).message
    assert "[Description:" not in dm.datasets["train"].prompt_builder(dm.datasets["train"].samples[0]).message


# `synthetic_mesc` is the session fixture of tests/conftest.py (read-only).


def test_media_tensors_have_the_documented_shapes(synthetic_mesc: Path) -> None:
    dm = MESCDataModule(
        str(synthetic_mesc),
        clips_dir="clips",
        tokenizer="tiny:qwen2",
        history_tokenizer="tiny:mamba",
        num_frames=4,
        image_size=56,
        batch_size=3,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (3, 4, 3, 56, 56)
    assert batch["video_mask"].all()
    assert batch["video"].min() >= -1.0
    assert batch["video"].max() <= 1.0
    assert batch["audio"].shape[0] == 3
    assert batch["audio"].shape[2] == 128
    assert batch["audio_frame_mask"].shape == batch["audio"].shape[:2]
    valid = batch["audio_frame_mask"].sum(-1)
    assert (valid >= 16).all()
    assert valid.max() == batch["audio"].shape[1]  # padded to the longest in the batch
    assert batch["media_issues"] == []


def test_random_modality_selection_is_seeded_per_sample(synthetic_mesc: Path) -> None:
    def draws(seed: int, epoch: int) -> dict[str, tuple[str, ...]]:
        dm = MESCDataModule(
            str(synthetic_mesc),
            clips_dir="clips",
            tokenizer="tiny:qwen2",
            history_mode="none",
            modality_probs=(0.3, 0.3, 0.4),
            num_frames=2,
            image_size=28,
            batch_size=4,
            seed=seed,
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        out = {}
        for batch in loader:
            for b, (sid, chosen) in enumerate(zip(batch["sample_ids"], batch["modalities"], strict=True)):
                out[sid] = tuple(sorted(chosen))
                assert (
                    bool(batch["video_mask"][b]) == ("video" in chosen)
                    if "video_mask" in batch
                    else "video" not in chosen
                )
                assert (
                    bool(batch["audio_mask"][b]) == ("audio" in chosen)
                    if "audio_mask" in batch
                    else "audio" not in chosen
                )
        return out

    first = draws(seed=0, epoch=0)
    assert first == draws(seed=0, epoch=0)  # same seed and epoch: same draws, whatever the order
    assert set(first.values()) == {("audio",), ("video",), ("audio", "video")}
    assert first != draws(seed=0, epoch=1)
    assert dict(sorted(first.items())) != dict(sorted(draws(seed=5, epoch=0).items()))


def test_bad_settings_fail_before_loading(synthetic_mesc: Path) -> None:
    # Without a model to take it from, compressor history needs its tokenizer named.
    dm = MESCDataModule(str(synthetic_mesc), tokenizer="tiny:qwen2", history_tokenizer=None)
    with pytest.raises(ValueError, match="history_tokenizer"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="no tokenizer"):
        MESCDataModule(str(synthetic_mesc), history_mode="none").setup("fit")
    dm = MESCDataModule(str(synthetic_mesc), clips_dir="nope", tokenizer="tiny:qwen2", history_mode="none")
    with pytest.raises(FileNotFoundError, match="clips_dir"):
        dm.setup("fit")
    dm = MESCDataModule(
        str(synthetic_mesc),
        clips_dir="clips",
        tokenizer="tiny:qwen2",
        history_mode="none",
        modality_probs=(0.5, 0.5, 0.5),
    )
    with pytest.raises(ValueError, match="summing to 1"):
        dm.setup("fit")
    with pytest.raises(ValueError, match=r"rationale .* needs target: answer"):
        MESCDataModule(str(synthetic_mesc), target="descriptions", rationale=True)


def test_generation_reads_the_prompt_of_a_training_batch(synthetic_mesc: Path) -> None:
    from multimood.models.llm import LanguageModel
    from multimood.models.multimood import MultiMoodModel

    dm = MESCDataModule(str(synthetic_mesc), tokenizer="tiny:qwen2", history_mode="text", batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    model = MultiMoodModel(LanguageModel("tiny:qwen2", trainable="frozen")).eval()
    seen = {}
    real_prepare = model.prepare_inputs

    def spy(inputs, padding_side="right"):
        seen.update(inputs)
        return real_prepare(inputs, padding_side)

    model.prepare_inputs = spy
    texts = model.generate(batch, max_new_tokens=3, do_sample=False)
    assert len(texts) == 2
    assert torch.equal(seen["input_ids"], batch["prompt_ids"])  # the answer is not in the generation input
    assert "labels" not in seen


def test_per_utterance_samples_are_flagged(synthetic_mesc: Path, caplog: pytest.LogCaptureFixture) -> None:
    turn = MESCDataModule(str(synthetic_mesc), tokenizer="tiny:qwen2", history_mode="none")
    utterance = MESCDataModule(
        str(synthetic_mesc), tokenizer="tiny:qwen2", history_mode="none", sample_unit="utterance"
    )
    with caplog.at_level(logging.WARNING):
        turn.setup("fit")
    assert PER_UTTERANCE_WARNING not in caplog.text
    with caplog.at_level(logging.WARNING):
        utterance.setup("fit")
    assert PER_UTTERANCE_WARNING in caplog.text
    counts = utterance.data.report.counts["train"]
    assert len(utterance.datasets["train"]) == counts.therapist_utterances - counts.dropped
    assert (
        len(turn.datasets["train"])
        == turn.data.report.counts["train"].therapist_turns - turn.data.report.counts["train"].dropped
    )
    with pytest.raises(ValueError, match="history_unit='utterances'"):
        MESCDataModule(str(synthetic_mesc), tokenizer="tiny:qwen2", sample_unit="utterance", history_length=3)


def test_text_mode_prompts_stay_within_the_budget(synthetic_mesc: Path) -> None:
    """A small budget: every prompt fits, the newest history turns are the ones kept, and the
    batch counts what was dropped."""
    budget = 560
    dm = MESCDataModule(
        str(synthetic_mesc),
        tokenizer="tiny:qwen2",
        history_mode="text",
        prompt_max_tokens=budget,
        batch_size=4,
    )
    free = MESCDataModule(
        str(synthetic_mesc), tokenizer="tiny:qwen2", history_mode="text", prompt_max_tokens=None
    )
    dm.setup("fit")
    free.setup("fit")
    dropped_somewhere = 0
    seen = 0
    for batch in dm.train_dataloader():
        lengths = batch["prompt_attention_mask"].sum(-1)
        assert (lengths <= budget).all()
        for b, sid in enumerate(batch["sample_ids"]):
            index = [s.sample_id for s in dm.datasets["train"].samples].index(sid)
            sample = dm.datasets["train"].samples[index]
            kept, dropped = int(batch["history_turns"][b]), int(batch["history_turns_dropped"][b])
            assert kept + dropped == len(sample.history)
            full = free.datasets["train"][index]
            assert (len(full["prompt_ids"]) > budget) == bool(dropped or batch["client_tokens_dropped"][b])
            dropped_somewhere += dropped
            seen += 1
    assert seen == len(dm.datasets["train"])
    assert dropped_somewhere > 0  # the budget was small enough to matter


@pytest.mark.real_data
def test_descriptions_target_needs_train_descriptions(real_mesc_dir: Path) -> None:
    # The released MESC has no train.json: stage B cannot train on descriptions there.
    with pytest.raises(MESCContextError, match=re.escape(str(real_mesc_dir / "train.json"))):
        MESCDataModule(str(real_mesc_dir), tokenizer=REAL_TOKENIZER, target="descriptions")
    with pytest.raises(MESCContextError):  # allowing eval-only context does not help a training target
        MESCDataModule(
            str(real_mesc_dir), tokenizer=REAL_TOKENIZER, target="descriptions", allow_eval_only_context=True
        )


def test_descriptions_target_teaches_the_clip_descriptions(synthetic_mesc: Path) -> None:
    dm = MESCDataModule(
        str(synthetic_mesc),
        clips_dir="clips",
        tokenizer="tiny:qwen2",
        history_tokenizer="tiny:mamba",  # ignored: the descriptions prompt has no history
        target="descriptions",
        descriptions=False,  # the answer target's prompt option; the descriptions target reads them anyway
        num_frames=2,
        image_size=56,
        max_client_clips=2,
        batch_size=3,
        limit_samples=6,
    )
    dm.setup("fit")
    dataset = dm.datasets["train"]
    batch = next(iter(dm.train_dataloader()))
    tok = dm.tokenizer
    assert "history_ids" not in batch
    assert batch["video"].shape[:2] == (3, 2)
    for b, sample_id in enumerate(batch["sample_ids"]):
        sample = next(s for s in dataset.samples if s.sample_id == sample_id)
        expected = " ".join(u.description for u in sample.client_turn.utterances[-2:] if u.description)
        assert expected and batch["answers"][b] == expected
        user = _decode(tok, batch["prompt_ids"][b], batch["prompt_attention_mask"][b])
        assert VIDEO_TOKEN in user and AUDIO_TOKEN in user and HISTORY_TOKEN not in user
        assert sample.client_utterance not in user  # no client words: the media must carry it
        assert "Describe the client's facial expression and voice" in user
        supervised = batch["labels"][b][batch["labels"][b] != IGNORE_INDEX]
        assert tok.decode(supervised, skip_special_tokens=True).strip() == expected


def test_descriptions_target_leaves_out_and_counts_undescribed_samples(synthetic_mesc: Path) -> None:
    from multimood.data.datasets import ChatEncoder, MESCDataset
    from multimood.data.mesc import load_mesc

    samples = load_mesc(synthetic_mesc, descriptions=True).samples["train"][:5]
    assert len(samples) == 5
    # Strip the descriptions of two samples' client turns (a split file that lacks them).
    stripped = []
    for i, sample in enumerate(samples):
        if i in (1, 3):
            utterances = tuple(
                dataclasses.replace(u, description=None) for u in sample.client_turn.utterances
            )
            sample = dataclasses.replace(
                sample, client_turn=dataclasses.replace(sample.client_turn, utterances=utterances)
            )
        stripped.append(sample)
    from multimood.tokenization import load_llm_tokenizer

    encoder = ChatEncoder(load_llm_tokenizer("tiny:qwen2"))
    dataset = MESCDataset(stripped, encoder, history_mode="none", target="descriptions")
    assert dataset.without_description == 2
    assert [s.sample_id for s in dataset.samples] == [stripped[i].sample_id for i in (0, 2, 4)]
    with pytest.raises(ValueError, match="target must be"):
        MESCDataset(stripped, encoder, history_mode="none", target="caption")
    with pytest.raises(ValueError, match="clips_dir"):  # a description with no media to read it from
        MESCDataModule(str(synthetic_mesc), tokenizer="tiny:qwen2", target="descriptions")
