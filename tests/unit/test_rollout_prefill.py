"""TransformersRollout prefills each distinct prompt once and copies its KV cache to the G rows of the
prompt: the sampled completions equal those of prefilling every row, with the same seed; only the
distinct prompts go through the prefix pass; and ``min_new_tokens`` forces full-length completions."""

from __future__ import annotations

import pytest
import torch

from multimood.models import LanguageModel, MultiMoodModel
from multimood.rl.rollout import TransformersRollout, encode_prompts, prompt_runs, repeat_blocks

pytestmark = pytest.mark.usefixtures("one_thread")

G = 3


@pytest.fixture(scope="module")
def model() -> MultiMoodModel:
    torch.manual_seed(0)
    return MultiMoodModel(
        LanguageModel("tiny:qwen2", dtype="float32", trainable="lora", lora_r=4, lora_alpha=8)
    )


def _rows(model: MultiMoodModel):
    tok = model.tokenizer
    texts = ["how was your day today", "I could not sleep at all"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, ids))
    prompt_ids = torch.tensor([[model.pad_token_id] * (width - len(i)) + i for i in ids])  # left padding
    prompt_mask = (
        torch.arange(width)[None, :] >= torch.tensor([width - len(i) for i in ids])[:, None]
    ).long()
    assert prompt_mask[0].sum() != prompt_mask[1].sum()  # one prompt is padded
    batch = {"input_ids": prompt_ids, "attention_mask": prompt_mask}
    blocks = repeat_blocks(encode_prompts(model, batch), G)
    return prompt_ids.repeat_interleave(G, 0), prompt_mask.repeat_interleave(G, 0), blocks


def test_prompt_runs_group_repeated_rows(model: MultiMoodModel) -> None:
    ids, mask, blocks = _rows(model)
    assert prompt_runs(ids, mask, blocks).tolist() == [0, 0, 0, 1, 1, 1]
    changed = ids.clone()
    changed[1, -1] += 1  # row 1 no longer repeats row 0
    assert prompt_runs(changed, mask, blocks).tolist() == [0, 1, 2, 3, 3, 3]


def test_shared_prefill_samples_the_same_completions(model: MultiMoodModel) -> None:
    ids, mask, blocks = _rows(model)
    first_layer = model.llm.model.get_base_model().model.layers[0]
    seen: list[tuple[int, int]] = []
    hook = first_layer.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[:2])))
    outputs = {}
    try:
        for share in (True, False):
            seen.clear()
            torch.manual_seed(7)
            outputs[share] = TransformersRollout(max_new_tokens=6, share_prompt_prefill=share)(
                model, ids, mask, blocks
            )
            if share:
                # the prefix pass: 2 distinct prompts, all but the last position; then all 6 rows, one position
                assert seen[0] == (2, ids.shape[1] - 1) and seen[1] == (6, 1)
            else:
                assert seen[0] == (6, ids.shape[1])
    finally:
        hook.remove()
    assert torch.equal(outputs[True].completion_ids, outputs[False].completion_ids)
    assert torch.equal(outputs[True].completion_mask, outputs[False].completion_mask)
    # sampling: the G completions of a prompt differ
    assert not torch.equal(outputs[True].completion_ids[0], outputs[True].completion_ids[1])


def test_min_new_tokens_forces_full_length(model: MultiMoodModel) -> None:
    """Every id but 10..19 ends a completion: without a floor each completion is its first token;
    with ``min_new_tokens=5`` the first 4 tokens must be from 10..19 and each completion is 5 long."""
    ids, mask, blocks = _rows(model)
    config = model.llm.model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [i for i in range(model.llm.config.vocab_size) if not 10 <= i < 20]
    try:
        free = TransformersRollout(max_new_tokens=5)(model, ids, mask, blocks)
        forced = TransformersRollout(max_new_tokens=5, min_new_tokens=5)(model, ids, mask, blocks)
    finally:
        config.eos_token_id = saved
    assert free.completion_mask.sum(dim=1).tolist() == [1] * 6
    assert forced.completion_mask.sum(dim=1).tolist() == [5] * 6
    assert ((forced.completion_ids[:, :4] >= 10) & (forced.completion_ids[:, :4] < 20)).all()
    with pytest.raises(ValueError, match="min_new_tokens"):
        TransformersRollout(max_new_tokens=4, min_new_tokens=5)
