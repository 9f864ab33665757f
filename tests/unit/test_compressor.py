"""ConvCompressor (paper 3.2): history ids with <MEM>, memory embeddings, padding, training setups."""

from __future__ import annotations

import pickle

import pytest
import torch

from multimood.constants import MEM_TOKEN
from multimood.data.history import HistoryTokenizer, build_history_ids, pad_history_batch
from multimood.models.compressor import MambaHistoryCompressor, paper_backbone_config

LLM_HIDDEN = 24
# Turns as multimood.data.mesc.format_history_turn writes them.
TURNS = [
    "Client (emotion: sadness): I could not sleep again last night.",
    "Therapist (emotion: neutral; strategy: Open question): What kept you awake?",
    "Client (emotion: anger): Work, mostly. And my sister.",
    "Therapist (emotion: neutral; strategy: Restatement): Tell me about your sister.",
]


# Tiny tensors: intra-op threads only contend on a busy 2-core machine (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def compressor() -> MambaHistoryCompressor:
    torch.manual_seed(0)
    return MambaHistoryCompressor(backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN).eval()


def _batch(compressor: MambaHistoryCompressor, histories: list[list[str]]):
    encoded = [compressor.tokenize(turns) for turns in histories]
    return encoded, *compressor.history_tokenizer.collate(encoded)


# ---- text -> ids ---------------------------------------------------------------------------------


def test_build_history_ids_drops_whole_oldest_turns() -> None:
    mem = 99
    turns = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    full = build_history_ids(turns, mem, max_tokens=100)
    assert full.input_ids == [1, 2, 3, mem, 4, 5, mem, 6, 7, 8, 9, mem]
    assert (full.num_turns, full.num_kept) == (3, 3)

    # 8 ids fit the two newest turns (3 + 5) but not the oldest: it goes whole, never in part.
    for budget in (8, 9, 11):
        cut = build_history_ids(turns, mem, max_tokens=budget)
        assert cut.input_ids == [4, 5, mem, 6, 7, 8, 9, mem]
        assert (cut.num_kept, cut.num_dropped) == (2, 1)
    assert build_history_ids(turns, mem, max_tokens=12).num_kept == 3
    only_newest = build_history_ids(turns, mem, max_tokens=7)
    assert only_newest.input_ids == [6, 7, 8, 9, mem]
    # The newest turn alone does not fit: nothing is kept (and the caller can see it).
    nothing = build_history_ids(turns, mem, max_tokens=4)
    assert (nothing.input_ids, nothing.num_kept, nothing.num_turns) == ([], 0, 3)
    assert build_history_ids([], mem, max_tokens=4).input_ids == []
    with pytest.raises(ValueError, match="<MEM>"):
        build_history_ids([[1, mem]], mem, max_tokens=10)


def test_history_tokenizer_works_without_a_model_and_keeps_mem_unforgeable() -> None:
    tok = HistoryTokenizer("tiny:mamba", max_tokens=4096)
    tok = pickle.loads(pickle.dumps(tok))  # DataLoader workers receive it pickled
    forged = [*TURNS, f"Client (emotion: joy): I typed {MEM_TOKEN} here <|endoftext|>"]
    history = tok(forged)
    ids = history.input_ids
    assert history.num_kept == len(forged)
    # Exactly one <MEM> per turn, each closing its turn: the literal "<MEM>" in the text stayed text.
    mem_positions = [i for i, t in enumerate(ids) if t == tok.mem_token_id]
    assert len(mem_positions) == len(forged) and mem_positions[-1] == len(ids) - 1
    per_turn = [len(t) for t in tok.tokenize_turns(forged)]
    assert mem_positions == [sum(per_turn[: k + 1]) + k for k in range(len(forged))]
    assert tok.tokenizer.decode(ids[: mem_positions[0] + 1]) == TURNS[0] + MEM_TOKEN

    small = HistoryTokenizer("tiny:mamba", max_tokens=per_turn[-1] + per_turn[-2] + 2)
    assert small(forged).num_kept == 2


def test_history_tokenizer_registers_mem_in_a_tokenizer_without_it(tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        ["client therapist feel sad <MEM> work"] * 5,
        trainers.BpeTrainer(vocab_size=80, special_tokens=["[PAD]", "[UNK]"], show_progress=False),
    )
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        tmp_path
    )
    vocab_size = raw.get_vocab_size()

    tok = HistoryTokenizer(str(tmp_path), max_tokens=64)
    assert tok.mem_token_id == vocab_size and tok.pad_token_id == 0
    ids = tok(["client feel sad <MEM>", "therapist work"]).input_ids
    assert ids.count(vocab_size) == 2 and ids[-1] == vocab_size


def test_pad_history_batch_right_pads() -> None:
    ids, mask = pad_history_batch([[5, 6, 7], [], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 0], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 0], [1, 0, 0]]
    empty_ids, empty_mask = pad_history_batch([[], []], pad_token_id=0)
    assert empty_ids.shape == empty_mask.shape == (2, 0)


# ---- ids -> memory -------------------------------------------------------------------------------


def test_forward_shapes_masks_and_zero_turn_rows(compressor) -> None:
    _, ids, mask = _batch(compressor, [TURNS, TURNS[:1], []])
    with torch.no_grad():
        memory, memory_mask = compressor(ids, mask)
    assert memory.shape == (3, len(TURNS), LLM_HIDDEN)
    assert memory_mask.tolist() == [[True] * 4, [True, False, False, False], [False] * 4]
    assert memory.dtype == torch.float32 and memory_mask.dtype == torch.bool
    assert torch.all(memory[~memory_mask] == 0)
    assert torch.all(memory[memory_mask].abs().sum(-1) > 0)

    # A batch of empty histories has no tokens at all.
    ids0, mask0 = pad_history_batch([[], []], compressor.history_tokenizer.pad_token_id)
    memory0, memory_mask0 = compressor(ids0, mask0)
    assert memory0.shape == (2, 0, LLM_HIDDEN) and memory_mask0.shape == (2, 0)


def test_memory_is_taken_exactly_at_mem_positions(compressor) -> None:
    encoded, ids, mask = _batch(compressor, [TURNS])
    seq = encoded[0].input_ids
    positions = [i for i, t in enumerate(seq) if t == compressor.history_tokenizer.mem_token_id]
    with torch.no_grad():
        memory, _ = compressor(ids, mask)
        # Manual pass: the backbone's own table for text ids, the learned vector at <MEM>.
        table = compressor.base_backbone.get_input_embeddings().weight
        embeds = torch.stack(
            [compressor.mem_embedding if i in positions else table[t] for i, t in enumerate(seq)]
        )[None]
        hidden = compressor.base_backbone(inputs_embeds=embeds, use_cache=False).last_hidden_state[0]
        expected = compressor.projector(hidden[positions])
        shifted = compressor.projector(hidden[[p - 1 for p in positions]])
    torch.testing.assert_close(memory[0], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(memory[0], shifted, atol=1e-3)


def test_padded_batch_equals_each_sample_alone(compressor) -> None:
    histories = [TURNS, TURNS[2:3], [], TURNS[1:]]
    _, ids, mask = _batch(compressor, histories)
    assert (mask == 0).any()  # the batch really is padded
    with torch.no_grad():
        memory, memory_mask = compressor(ids, mask)
        for row, turns in enumerate(histories):
            _, ids1, mask1 = _batch(compressor, [turns])
            alone, alone_mask = compressor(ids1, mask1)
            n = len(turns)
            assert memory_mask[row].sum() == n and alone_mask.sum() == n
            torch.testing.assert_close(memory[row, :n], alone[0, :n], rtol=1e-5, atol=1e-5)


def test_left_padding_is_refused(compressor) -> None:
    _, ids, mask = _batch(compressor, [TURNS[:1], TURNS[:2]])
    with pytest.raises(ValueError, match="right-padded"):
        compressor(ids.flip(1), mask.flip(1))


# ---- training setups -----------------------------------------------------------------------------


def _backward(model: MambaHistoryCompressor) -> None:
    _, ids, mask = _batch(model, [TURNS, TURNS[:2]])
    memory, memory_mask = model(ids, mask)
    (memory[memory_mask] ** 2).mean().backward()


def _has_grad(p: torch.nn.Parameter) -> bool:
    return p.grad is not None and bool(p.grad.abs().sum() > 0)


def test_frozen_backbone_gets_no_gradients_while_projector_and_mem_do() -> None:
    model = MambaHistoryCompressor(
        backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN, backbone_trainable="frozen"
    ).train()
    _backward(model)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(_has_grad(p) for p in model.projector.parameters())
    assert _has_grad(model.mem_embedding)
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["projector"] + counts["mem_embedding"]


def test_full_training_reaches_the_backbone_and_a_frozen_projector_stops_p_h() -> None:
    model = MambaHistoryCompressor(
        backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN, projector_trainable="frozen"
    ).train()
    _backward(model)
    mixer = model.base_backbone.layers[0].mixer
    assert _has_grad(mixer.in_proj.weight) and _has_grad(mixer.dt_proj.weight)
    assert all(p.grad is None for p in model.projector.parameters()) and model.mem_embedding.grad is None


def test_lora_trains_adapters_only_and_keeps_mixers_off_the_fused_kernel() -> None:
    model = MambaHistoryCompressor(
        backbone="tiny:mamba",
        llm_hidden_size=LLM_HIDDEN,
        backbone_trainable="lora",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.1,
    ).train()
    _backward(model)
    mixer = model.base_backbone.layers[0].mixer
    assert not mixer.training and mixer.in_proj.lora_dropout["default"].training
    assert _has_grad(mixer.in_proj.lora_B["default"].weight) and _has_grad(
        mixer.x_proj.lora_B["default"].weight
    )
    assert mixer.in_proj.base_layer.weight.grad is None and mixer.dt_proj.weight.grad is None
    assert _has_grad(model.mem_embedding) and all(_has_grad(p) for p in model.projector.parameters())
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["lora"] + counts["projector"] + counts["mem_embedding"]
    # Full-rank-free adapters: r * (in + out) per target per layer (tiny: hidden 64, inner 128, dt rank 4, state 16).
    assert counts["lora"] == 2 * 4 * ((64 + 256) + (128 + 4 + 32))


def test_4bit_nf4_with_lora_trains_on_cpu_and_base_stays_4bit() -> None:
    from bitsandbytes.nn import Params4bit

    model = MambaHistoryCompressor(
        backbone="tiny:mamba",
        llm_hidden_size=LLM_HIDDEN,
        load_in_4bit=True,
        backbone_trainable="lora",
        lora_r=4,
        lora_alpha=8,
    ).train()
    mixer = model.base_backbone.layers[0].mixer
    lora_b = mixer.in_proj.lora_B["default"].weight
    before = lora_b.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    _backward(model)
    assert _has_grad(lora_b) and _has_grad(model.projector.weight)
    optimizer.step()
    assert not torch.equal(before, lora_b)
    for layer in (mixer.in_proj, mixer.x_proj, mixer.out_proj):
        weight = getattr(layer, "base_layer", layer).weight
        assert isinstance(weight, Params4bit) and weight.dtype == torch.uint8 and weight.grad is None
    assert mixer.dt_proj.weight.dtype == torch.float32  # read directly by the mixer: kept unquantised
    assert (
        model.parameter_counts()["backbone"]
        == MambaHistoryCompressor(backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN).parameter_counts()[
            "backbone"
        ]
    )


def test_bf16_4bit_lora_compressor_keeps_one_dtype_and_trains() -> None:
    from bitsandbytes.nn import Params4bit

    model = MambaHistoryCompressor(
        backbone="tiny:mamba",
        llm_hidden_size=LLM_HIDDEN,
        load_in_4bit=True,
        backbone_trainable="lora",
        lora_r=4,
        lora_alpha=8,
        dtype="bfloat16",
        use_mambapy=False,  # transformers' mambapy scan fails in bf16: see the next test
    ).train()
    quantized = [p for p in model.parameters() if isinstance(p, Params4bit)]
    assert quantized and {p.dtype for p in quantized} == {torch.uint8}  # packed 4-bit codes
    dtypes = {n: p.dtype for n, p in model.named_parameters() if not isinstance(p, Params4bit)}
    assert set(dtypes.values()) == {torch.bfloat16}
    assert model.mem_embedding.dtype == model.projector.weight.dtype == torch.bfloat16
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and "mem_embedding" in trainable
    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    _, ids, mask = _batch(model, [TURNS, TURNS[:2]])
    memory, memory_mask = model(ids, mask)
    assert memory.dtype == torch.bfloat16
    (memory[memory_mask].float() ** 2).mean().backward()
    assert _has_grad(model.projector.weight) and _has_grad(model.mem_embedding)
    optimizer.step()
    moved = {n for n, p in trainable.items() if not torch.equal(p, before[n])}
    assert {"projector.weight", "mem_embedding"} <= moved and any("lora_B" in n for n in moved)
    assert {p.dtype for n, p in model.named_parameters() if n in dtypes} == {torch.bfloat16}


def test_low_precision_with_the_mambapy_scan_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="dtype=bfloat16 cannot run with mambapy's scan"):
        MambaHistoryCompressor(
            backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN, dtype="bfloat16", use_mambapy=True
        )


def test_bad_training_setups_are_refused() -> None:
    with pytest.raises(ValueError, match="4-bit"):
        MambaHistoryCompressor(backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN, load_in_4bit=True)
    with pytest.raises(ValueError, match="dt_proj"):
        MambaHistoryCompressor(
            backbone="tiny:mamba",
            llm_hidden_size=LLM_HIDDEN,
            backbone_trainable="lora",
            lora_r=4,
            lora_target_modules=["dt_proj"],
        )
    with pytest.raises(ValueError, match="dtype"):
        MambaHistoryCompressor(backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN, dtype="fp8")
    with pytest.raises(ValueError, match="projector"):
        MambaHistoryCompressor(backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN, projector="conv")


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MambaHistoryCompressor(
            backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN, gradient_checkpointing=checkpointing
        ).train()
        assert model.base_backbone.gradient_checkpointing is checkpointing
        _backward(model)
        grads.append(model.base_backbone.layers[0].mixer.in_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_cpu_uses_the_mambapy_scan_and_it_matches_the_sequential_scan(monkeypatch) -> None:
    import mambapy.pscan

    calls = []
    real_pscan = mambapy.pscan.pscan

    def counting_pscan(*args):
        calls.append(1)
        return real_pscan(*args)

    monkeypatch.setattr(mambapy.pscan, "pscan", counting_pscan)
    outputs = []
    for use_mambapy in (None, False):  # None = auto: on, as no CUDA kernels are available here
        torch.manual_seed(0)
        model = MambaHistoryCompressor(
            backbone="tiny:mamba", llm_hidden_size=LLM_HIDDEN, use_mambapy=use_mambapy
        ).eval()
        assert model.base_backbone.config.use_mambapy is (use_mambapy is None)
        calls.clear()
        _, ids, mask = _batch(model, [TURNS, TURNS[:1]])
        with torch.no_grad():
            outputs.append(model(ids, mask)[0])
        assert len(calls) == (model.base_backbone.config.num_hidden_layers if use_mambapy is None else 0)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


# ---- the paper's configuration -------------------------------------------------------------------


def test_paper_configuration_builds_on_meta_with_370m_backbone() -> None:
    config = paper_backbone_config()
    assert (config.hidden_size, config.num_hidden_layers, config.state_size, config.expand) == (
        1024,
        48,
        16,
        2,
    )
    assert (config.vocab_size, config.intermediate_size, config.time_step_rank) == (50280, 2048, 64)

    model = MambaHistoryCompressor.paper_config_on_meta(llm_hidden_size=3584)
    assert model.mem_embedding.device.type == "meta"
    counts = model.parameter_counts()
    # Per layer: in_proj 1024*4096, conv 2048*4 + 2048, x_proj 2048*(64+32), dt_proj 64*2048 + 2048,
    # A_log 2048*16, D 2048, out_proj 2048*1024, norm 1024; plus the 50,280-row table and final norm.
    per_layer = 1024 * 4096 + 2048 * 5 + 2048 * 96 + 64 * 2048 + 2048 + 2048 * 16 + 2048 + 2048 * 1024 + 1024
    assert counts["backbone"] == 48 * per_layer + 50280 * 1024 + 1024 == 371_516_416
    assert counts["projector"] == 1024 * 3584 + 3584
    assert counts["lora"] == 0 and counts["mem_embedding"] == 1024

    mlp = MambaHistoryCompressor.paper_config_on_meta(llm_hidden_size=3584, projector="mlp2x_gelu")
    assert mlp.parameter_counts()["projector"] == 1024 * 3584 + 3584 + 3584 * 3584 + 3584
    lora = MambaHistoryCompressor.paper_config_on_meta(
        llm_hidden_size=3584, lora_r=64, backbone_trainable="lora"
    ).parameter_counts()
    assert lora["lora"] == 48 * 64 * ((1024 + 4096) + (2048 + 96)) == 22_315_008
    assert lora["trainable"] == lora["lora"] + lora["projector"] + lora["mem_embedding"]
