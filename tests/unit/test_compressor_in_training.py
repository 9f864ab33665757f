"""The ConvCompressor inside a training run: frozen parts deterministic, every trainable parameter in
every step (also without history turns), and ids from another history tokenizer refused."""

from __future__ import annotations

import pytest
import torch

from multimood.data.history import HistoryTokenizer
from multimood.models.compressor import MambaHistoryCompressor

LLM_HIDDEN = 24
TURNS = [
    "Client (emotion: sadness): I could not sleep again last night.",
    "Therapist (emotion: neutral; strategy: Open question): What kept you awake?",
]


# Tiny tensors: intra-op threads only contend on a busy 2-core machine (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def _compressor(**kwargs) -> MambaHistoryCompressor:
    torch.manual_seed(0)
    model = MambaHistoryCompressor(backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN, **kwargs)
    # Stage A leaves trained adapters: give lora_B non-zero values, or dropout on the LoRA path
    # would be multiplied by zero and never show.
    for name, p in model.backbone.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    return model


def _histories(model: MambaHistoryCompressor) -> tuple[torch.Tensor, torch.Tensor]:
    tok = model.history_tokenizer
    return tok.collate([tok(TURNS), tok(TURNS[:1])])


@pytest.mark.parametrize(
    ("frozen", "deterministic"),
    [
        (
            {"backbone_trainable": "frozen", "projector_trainable": "frozen"},
            True,
        ),  # paper stage C: all of ConvCom frozen
        ({"backbone_trainable": "frozen"}, True),  # backbone (and its adapters) frozen, P_H trains
        ({"backbone_trainable": "lora"}, False),  # adapters train: their dropout is wanted
    ],
)
def test_a_frozen_backbone_with_lora_dropout_is_deterministic_in_train_mode(
    frozen: dict, deterministic: bool
) -> None:
    model = _compressor(lora_r=4, lora_alpha=8, lora_dropout=0.5, **frozen).train()
    ids, mask = _histories(model)
    with torch.no_grad():
        first, valid = model(ids, mask)
        second, _ = model(ids, mask)
        model.eval()
        reference, _ = model(ids, mask)
    if deterministic:
        assert torch.equal(first, second)
        assert torch.equal(first, reference)  # the same as evaluation: no dropout at all
    else:
        assert (first[valid] - second[valid]).abs().max() > 1e-3


def test_freezing_after_construction_counts_at_the_next_train_call() -> None:
    model = _compressor(backbone_trainable="lora", lora_r=4, lora_alpha=8, lora_dropout=0.5).train()
    lora_dropout = model.base_backbone.layers[0].mixer.in_proj.lora_dropout["default"]
    assert lora_dropout.training
    model.requires_grad_(False)
    model.train()
    assert not lora_dropout.training and not model.training


def test_without_turns_every_trainable_parameter_gets_a_zero_gradient() -> None:
    model = _compressor(backbone_trainable="lora", lora_r=4, lora_alpha=8).train()
    tok = model.history_tokenizer
    ids, mask = tok.collate([tok([]), tok([])])
    memory, valid = model(ids, mask)
    assert memory.shape == (2, 0, LLM_HIDDEN) and valid.shape == (2, 0)
    assert memory.requires_grad
    memory.sum().backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and "mem_embedding" in trainable
    for name, p in trainable.items():
        assert p.grad is not None, f"{name} took no part"
        assert not p.grad.any(), name

    calls: list[int] = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        memory, _ = model(ids, mask)
    assert calls == [] and not memory.requires_grad  # nothing to take part in: nothing runs
    frozen = _compressor(backbone_trainable="frozen", projector_trainable="frozen").train()
    frozen.backbone.register_forward_hook(lambda *args: calls.append(1))
    assert not frozen(ids, mask)[0].requires_grad and calls == []


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> HistoryTokenizer:
    """A history tokenizer over another (small, local) vocabulary: <MEM> gets another id there."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        [" ".join(TURNS)] * 5,
        trainers.BpeTrainer(vocab_size=120, special_tokens=["[PAD]", "[UNK]"], show_progress=False),
    )
    folder = tmp_path_factory.mktemp("other-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        folder
    )
    return HistoryTokenizer(str(folder))


def test_ids_from_another_history_tokenizer_are_refused(other_tokenizer: HistoryTokenizer) -> None:
    model = _compressor()
    other = other_tokenizer
    assert other.mem_token_id != model.mem_token_id
    model.check_history_tokenizer(HistoryTokenizer("tiny:mamba"))  # the compressor's own: fine
    with pytest.raises(
        ValueError, match=rf"uses <MEM> id {other.mem_token_id}, this compressor expects {model.mem_token_id}"
    ):
        model.check_history_tokenizer(other)
    ids, mask = other.collate([other([]), other(TURNS)])
    with pytest.raises(
        ValueError, match=rf"history row 1 ends with id {other.mem_token_id}, not this compressor's <MEM>"
    ):
        model(ids, mask)


def test_a_tokenizer_with_the_same_mem_id_but_another_vocabulary_is_refused(
    other_tokenizer: HistoryTokenizer,
) -> None:
    model = _compressor()

    class Impostor:
        name = "impostor"
        mem_token_id = model.mem_token_id
        tokenizer = other_tokenizer.tokenizer

    with pytest.raises(ValueError, match=r"'impostor' has another vocabulary"):
        model.check_history_tokenizer(Impostor())
