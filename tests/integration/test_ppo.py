"""The PPO baseline on the tiny multimodal model (stage D', SPEC section 6): reward pairs from the
train split only, a reward model whose LoRA and head train, and PPO steps that move exactly the
policy's LoRA adapters and the value head, with every logged metric present and finite."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import MESCDataModule
from datamodules.common import epoch_loader
from lit_modules.ppo import PPOModule
from lit_modules.reward_model import RewardModelModule
from multimood.models import (
    LanguageModel,
    MultiMoodModel,
)
from multimood.rewards.base import RewardOutput
from multimood.rl.pairs import RewardPairs, build_reward_pairs, rouge_l, write_pairs
from tests.tiny_stages import changed, cpu_trainer, fused_model, mesc_data, sgd, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def _fused(seed: int = 0) -> MultiMoodModel:
    return fused_model(seed=seed, lora_b=True)


def _train_batches(data: MESCDataModule, model: MultiMoodModel) -> list[dict]:
    data.connect(model)
    data.setup("fit")
    loader = epoch_loader(
        data.datasets["train"], batch_size=2, shuffle=False, seed=0, num_workers=0,
        collate_fn=data.collator(), pad=False,
    )  # fmt: skip
    return list(loader)


class _EchoEveryOther:
    """A stand-in SFT model: the reference answer for even samples, garbage for odd ones."""

    def __init__(self, echo: bool = True) -> None:
        self.calls = 0
        self.echo = echo

    def generate(self, batch: dict, **kwargs) -> list[str]:
        out = []
        for answer in batch["answers"]:
            echo = self.echo and self.calls % 2 == 0
            out.append(answer if echo else "Therapist's response: zebra quantum")
            self.calls += 1
        return out


def test_rouge_l_matches_rouge_score_with_stemming() -> None:
    # "cats" stems to "cat": the whole reference is matched.
    assert rouge_l("the cats sat", "the cat sat") == pytest.approx(1.0)
    # LCS "the sat" (2 of 3 tokens each side): F1 = 2/3.
    assert rouge_l("the dog sat", "the cat sat") == pytest.approx(2 / 3)
    assert rouge_l(None, "the cat sat") == 0.0


def test_pairs_keep_poor_answers_of_the_train_split_and_refuse_val_and_test(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    model = _fused()
    batches = _train_batches(mesc_data(synthetic_mesc), model)
    samples = [
        (sid, answer) for b in batches for sid, answer in zip(b["sample_ids"], b["answers"], strict=True)
    ]
    assert len(samples) == 4

    # Exact bookkeeping with a stand-in generator: echoed answers (ROUGE-L 1) are not pairs.
    pairs, counts = build_reward_pairs(_EchoEveryOther(), batches, split="train", threshold=0.3)
    assert counts == {"samples": 4, "pairs": 2, "unparsed": 0, "above_threshold": 2}
    assert [p.sample_id for p in pairs] == [samples[1][0], samples[3][0]]
    assert all(p.chosen == dict(samples)[p.sample_id] and p.rouge_l < 0.3 for p in pairs)
    assert all(p.split == "train" and "zebra" in p.rejected for p in pairs)

    # The tiny SFT model itself (random weights: every answer is poor, so every sample pairs).
    pairs, counts = build_reward_pairs(model, batches, max_new_tokens=6, max_samples=3)
    assert counts["samples"] == 3 and counts["pairs"] == len(pairs) == 3
    path = write_pairs(pairs, tmp_path / "pairs.jsonl")
    loaded = RewardPairs(path)
    assert set(loaded) == {p.sample_id for p in pairs}
    assert loaded[pairs[0].sample_id] == pairs[0]

    with pytest.raises(ValueError, match="val selects models"):
        build_reward_pairs(model, batches, split="val")
    with pytest.raises(ValueError, match=r"test\.jsonl"):
        build_reward_pairs(model, batches, split="test", for_selection=True)
    # A train-pairs reader refuses a file of val pairs.
    val_pairs, _ = build_reward_pairs(_EchoEveryOther(), batches[:1], split="val", for_selection=True)
    write_pairs(val_pairs, tmp_path / "val.jsonl")
    with pytest.raises(ValueError, match="split 'val'"):
        RewardPairs(tmp_path / "val.jsonl", split="train")


def _pairs_file(tmp_path: Path, synthetic_mesc: Path, model: MultiMoodModel, skip: int = 1) -> Path:
    """Pairs for all train samples but the last ``skip`` (those exercise the unpaired count)."""
    batches = _train_batches(mesc_data(synthetic_mesc), model)
    pairs, _ = build_reward_pairs(_EchoEveryOther(echo=False), batches)
    return write_pairs(pairs[: len(pairs) - skip], tmp_path / "pairs.jsonl")


def _finite_metrics(trainer: L.Trainer, names: set[str]) -> dict[str, float]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert names <= set(metrics), sorted(names - set(metrics))
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    assert not bad
    return metrics


def _reward_model_checkpoint(tmp_path: Path, synthetic_mesc: Path) -> tuple[Path, RewardModelModule]:
    model = _fused(seed=1)
    pairs = _pairs_file(tmp_path, synthetic_mesc, model)
    module = RewardModelModule(model, pairs=str(pairs), optimizer=sgd, lr_schedule="constant")
    trainer = cpu_trainer(tmp_path / "rm", steps=2, enable_checkpointing=True)
    trainer.fit(module, datamodule=mesc_data(synthetic_mesc))
    (ckpt,) = (tmp_path / "rm").rglob("*.ckpt")
    return ckpt, module


def test_reward_model_trains_its_adapters_and_head_only(tmp_path: Path, synthetic_mesc: Path) -> None:
    model = _fused(seed=1)
    pairs = _pairs_file(tmp_path, synthetic_mesc, model)
    module = RewardModelModule(model, pairs=str(pairs), optimizer=sgd, lr_schedule="constant")
    lora = {f"model.{n}" for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    before = snapshot(module)
    trainer = cpu_trainer(tmp_path / "rm", steps=2, enable_checkpointing=True)
    trainer.fit(module, datamodule=mesc_data(synthetic_mesc))
    assert changed(before, module) == lora | {"head.weight"}
    metrics = _finite_metrics(trainer, {"train/loss", "train/accuracy", "train/margin", "train/unpaired"})
    assert 0 <= metrics["train/accuracy"] <= 1
    assert metrics["train/unpaired"] >= 1  # one train sample has no pair and was skipped
    (ckpt,) = (tmp_path / "rm").rglob("*.ckpt")
    keys = set(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    assert keys == lora | {"head.weight"}


def _ppo_metrics() -> set[str]:
    names = ["reward", "kl", "returns", "values", "loss", "policy_loss", "value_loss", "clip_fraction"]
    names += [
        "approx_kl",
        "value_clip_fraction",
        "completion_length",
        "missing_rewards",
        "ratio_first_update",
    ]
    return {f"train/{n}" for n in names}


def test_ppo_moves_the_policy_adapters_and_value_head_only(tmp_path: Path, synthetic_mesc: Path) -> None:
    ckpt, trained_rm = _reward_model_checkpoint(tmp_path, synthetic_mesc)
    policy = _fused()
    module = PPOModule(
        policy,
        reward_model=_fused(seed=1),
        reward_model_ckpt=str(ckpt),
        optimizer=sgd,
        max_new_tokens=6,
        ppo_epochs=2,
    )
    expected = {f"model.{n}" for n, p in policy.named_parameters() if p.requires_grad}
    expected |= {"value_head.weight", "value_head.bias"}
    assert all("lora_" in n for n in expected if n.startswith("model."))
    before = snapshot(module)
    trainer = cpu_trainer(tmp_path / "ppo", steps=2, enable_checkpointing=True)
    trainer.fit(module, datamodule=mesc_data(synthetic_mesc))
    # Towers, projectors, compressor and the LLM base stay as they were.
    moved = changed(before, module)
    assert {n for n in moved if not n.startswith("reward_model.")} == expected
    # The reward model is the trained one (its adapters and head came from the checkpoint; built
    # with the same seed, so its frozen parts match too), and PPO did not move it.
    trained = dict(trained_rm.named_parameters())
    for name, param in module.reward_model.named_parameters():
        assert not param.requires_grad and torch.equal(param, trained[name]), name
    assert any(n.startswith("reward_model.") for n in moved)  # the load did change it
    metrics = _finite_metrics(trainer, _ppo_metrics())
    assert metrics["train/missing_rewards"] == 0
    assert metrics["train/ratio_first_update"] == pytest.approx(1.0, abs=1e-5)  # dropout off, same pass
    assert 1 <= metrics["train/completion_length"] <= 6
    (saved,) = (tmp_path / "ppo").rglob("*.ckpt")
    keys = set(torch.load(saved, map_location="cpu", weights_only=True)["state_dict"])
    assert keys == expected  # no reward model, no frozen part


class _HalfMissing:
    """A reward component whose second completion of each call has no reward."""

    name = "half_missing"

    def __call__(self, completions, references) -> RewardOutput:
        n = len(completions)
        present = torch.tensor([i % 2 == 0 for i in range(n)])
        return RewardOutput(torch.full((n,), 0.5), present, {"calls": 1.0})


def test_ppo_on_a_reward_component_drops_completions_without_a_reward(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    policy = _fused()
    module = PPOModule(policy, reward=_HalfMissing(), optimizer=sgd, max_new_tokens=4, ppo_epochs=1)
    trainer = cpu_trainer(tmp_path, steps=2)
    trainer.fit(module, datamodule=mesc_data(synthetic_mesc))
    metrics = _finite_metrics(trainer, _ppo_metrics() | {"train/reward_stats/calls"})
    assert metrics["train/missing_rewards"] == 2  # one per batch of two, two steps, summed
    assert metrics["train/reward"] == pytest.approx(0.5)


def test_ppo_refuses_ambiguous_rewards_and_a_policy_without_lora() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        PPOModule(_fused())
    with pytest.raises(ValueError, match="reward_model_ckpt"):
        PPOModule(_fused(), reward_model=_fused())
    full = MultiMoodModel(LanguageModel("tiny:qwen2", trainable="full"))
    with pytest.raises(ValueError, match="needs LoRA"):
        PPOModule(full, reward=_HalfMissing())


def test_reward_pairs_script_refuses_test_before_loading(tmp_path: Path, capsys) -> None:
    import reward_pairs

    config = Path(__file__).resolve().parents[2] / "configs" / "sft" / "tiny.yaml"
    with pytest.raises(ValueError, match=r"test\.jsonl"):
        reward_pairs.main(
            [
                "--config",
                str(config),
                "--ckpt_path",
                "x.ckpt",
                "--out",
                str(tmp_path / "p.jsonl"),
                "--split",
                "test",
            ]
        )
    assert not (tmp_path / "p.jsonl").exists()


def test_the_tiny_configs_chain_sft_pairs_reward_model_and_ppo(tmp_path: Path, synthetic_mesc: Path) -> None:
    # The documented commands in their order, each a config of configs/ with small overrides.
    import fit
    import reward_pairs

    configs = Path(__file__).resolve().parents[2] / "configs"
    small = [
        f"--data.init_args.data_dir={synthetic_mesc}",
        "--data.init_args.limit_samples=4",
        "--data.init_args.num_frames=2",
        "--data.init_args.batch_size=2",
        "--trainer.max_steps=1",
        "--trainer.enable_progress_bar=false",
    ]

    def run(stage: str, *extra: str) -> Path:
        root = tmp_path / stage
        fit.main(
            [
                "--config",
                str(configs / stage / "tiny.yaml"),
                *small,
                f"--trainer.default_root_dir={root}",
                *extra,
            ]
        )
        (last,) = root.rglob("checkpoints/last.ckpt")
        return last

    sft = run("sft", "--test_after_fit=false")
    counts = reward_pairs.main(
        [
            "--config",
            str(sft.parents[1] / "config.yaml"),
            f"--ckpt_path={sft}",
            f"--out={tmp_path / 'pairs.jsonl'}",
            "--max_new_tokens=4",
        ]
    )
    assert counts["samples"] == 4 and counts["pairs"] >= 1  # random tiny weights: poor answers
    init_from = f"--model.init_args.init_from=[{{path: {sft}, components: [llm]}}]"
    rm = run("reward_model", f"--model.init_args.pairs={tmp_path / 'pairs.jsonl'}", init_from)
    assert "head.weight" in torch.load(rm, map_location="cpu", weights_only=True)["state_dict"]
    ppo = run(
        "ppo",
        f"--model.init_args.reward_model_ckpt={rm}",
        init_from,
        "--model.init_args.max_new_tokens=4",
        "--trainer.limit_val_batches=0",
    )
    keys = set(torch.load(ppo, map_location="cpu", weights_only=True)["state_dict"])
    assert {"value_head.weight", "value_head.bias"} <= keys
    assert all(k.startswith("value_head.") or "lora_" in k for k in keys)


def test_scores_and_values_read_the_right_positions(synthetic_mesc: Path) -> None:
    from multimood.rl.reward_model import answer_completions, sequence_scores
    from multimood.rl.rollout import completion_logprobs_and_hidden, encode_prompts

    model = _fused().eval()
    (batch, _) = _train_batches(mesc_data(synthetic_mesc), model)
    blocks = encode_prompts(model, batch)
    texts = ["Therapist's response: a much longer answer than the other one here.", "Short."]
    ids, mask = answer_completions(model.tokenizer, texts)
    assert mask.sum(1).tolist() == [
        len(model.tokenizer(t + model.tokenizer.eos_token)["input_ids"]) for t in texts
    ]
    head = torch.nn.Linear(model.llm.hidden_size, 1, bias=False)
    with torch.no_grad():
        both = sequence_scores(
            model, head, batch["prompt_ids"], batch["prompt_attention_mask"], blocks, ids, mask
        )
        # Each sample alone (no padding anywhere) gives the same score as in the padded batch.
        for i in range(2):
            one = {k: v[i : i + 1] for k, v in blocks.items()}
            n = int(mask[i].sum())
            p = batch["prompt_attention_mask"][i].bool()
            alone = sequence_scores(
                model, head, batch["prompt_ids"][i : i + 1, p], batch["prompt_attention_mask"][i : i + 1, p],
                one, ids[i : i + 1, :n], mask[i : i + 1, :n],
            )  # fmt: skip
            torch.testing.assert_close(alone, both[i : i + 1], atol=1e-5, rtol=1e-5)
        # The hidden states a value head reads are those the LM head turns into the token logits.
        logps, hidden = completion_logprobs_and_hidden(
            model, batch["prompt_ids"], batch["prompt_attention_mask"], blocks, ids
        )
        logits = model.llm.model.get_output_embeddings()(hidden)
        expected = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None]).squeeze(-1)
        torch.testing.assert_close(logps, expected, atol=1e-5, rtol=1e-5)


class _WholeTextSimilarity:
    """The real BGE-M3 scoring (tiny weights, through FlagEmbedding) on whole completions: the
    tiny random policy never writes a response that parses, which SimilarityReward would leave
    missing."""

    name = "similarity"

    def __init__(self) -> None:
        from multimood.rewards.similarity import SimilarityReward

        self.similarity = SimilarityReward("tiny:bge-m3")  # built before the data, as fit.py does

    def __call__(self, completions, references) -> RewardOutput:
        combined = self.similarity.scores(list(references), list(completions))["combined"]
        return RewardOutput(combined.clamp(0, 1).float(), torch.ones(len(completions), dtype=torch.bool))


def test_ppo_on_the_bge_m3_similarity_trains_with_finite_rewards(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    policy = _fused()
    module = PPOModule(policy, reward=_WholeTextSimilarity(), optimizer=sgd, max_new_tokens=6, ppo_epochs=1)
    before = snapshot(module)
    trainer = cpu_trainer(tmp_path, steps=2)
    trainer.fit(module, datamodule=mesc_data(synthetic_mesc))
    metrics = _finite_metrics(trainer, _ppo_metrics())
    assert metrics["train/missing_rewards"] == 0
    assert 0.0 <= metrics["train/reward"] <= 1.0
    assert changed(before, module)  # the policy's adapters (and value head) moved
