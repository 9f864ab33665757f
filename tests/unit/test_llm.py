"""The LLM wrapper: QLoRA (4-bit NF4 + LoRA) really trains on CPU, in one dtype; precision traps are
refused before loading; placeholders are ensured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from multimood.constants import PLACEHOLDER_TOKENS
from multimood.hub import resolve
from multimood.models.llm import LanguageModel


def _step(llm: LanguageModel) -> torch.Tensor:
    ids = llm.tokenizer(["I feel tired today", "hello"], return_tensors="pt", padding=True)
    out = llm(
        inputs_embeds=llm.embed(ids["input_ids"]),
        attention_mask=ids["attention_mask"],
        labels=ids["input_ids"],
    )
    out.loss.backward()
    return out.loss


def test_qlora_trains_lora_only_on_a_4bit_base() -> None:
    import bitsandbytes as bnb

    llm = LanguageModel(
        "tiny:qwen2", load_in_4bit=True, trainable="lora", lora_r=4, lora_alpha=8, gradient_checkpointing=True
    )
    linears = [m for m in llm.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linears, "base linear layers should be 4-bit"
    assert all(m.weight.quant_type == "nf4" for m in linears)
    lora = {n: p for n, p in llm.named_parameters() if "lora_" in n}
    before = {n: p.detach().clone() for n, p in lora.items()}
    optim = torch.optim.AdamW(lora.values(), lr=1e-2)
    loss = _step(llm)
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in lora.values())
    trainable = {n for n, p in llm.named_parameters() if p.requires_grad}
    assert trainable == set(lora)
    optim.step()
    changed = [n for n, p in lora.items() if not torch.equal(p, before[n])]
    assert changed, "LoRA weights should move after one step"
    assert all(isinstance(m, bnb.nn.Linear4bit) for m in linears)  # base stays 4-bit
    out = llm.generate(
        input_ids=llm.tokenizer(["hi"], return_tensors="pt")["input_ids"], max_new_tokens=3, do_sample=False
    )
    assert out.shape[-1] >= 1


def test_lora_defaults_follow_the_paper() -> None:
    llm = LanguageModel("tiny:qwen2?hidden_size=256&intermediate_size=256", trainable="lora")
    config = llm.model.peft_config["default"]
    assert (config.r, config.lora_alpha) == (128, 256)
    adapted = {n.split(".")[-4] for n, _ in llm.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_full_finetuning_when_nothing_is_frozen() -> None:
    llm = LanguageModel("tiny:qwen2", trainable="full")
    assert all(p.requires_grad for p in llm.parameters())
    _step(llm)
    assert all(p.grad is not None for n, p in llm.named_parameters() if "embed_tokens" in n)


def test_missing_placeholders_are_added_to_a_foreign_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        ["hello world"] * 5, trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]", "[EOS]"])
    )
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", eos_token="[EOS]").save_pretrained(
        tmp_path
    )

    llm = LanguageModel("tiny:qwen2", tokenizer=str(tmp_path), trainable="frozen")
    tok = llm.tokenizer
    for token in PLACEHOLDER_TOKENS:
        assert tok.convert_tokens_to_ids(token) == llm.placeholder_ids[token] != tok.unk_token_id
        assert tok.convert_tokens_to_ids(token) < llm.input_embeddings().num_embeddings
    assert tok.pad_token == "[EOS]"


def test_bad_names_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        LanguageModel("tiny:qwen2", dtype="float8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="import path"):
        LanguageModel("tiny:qwen2", model_class="Qwen2ForCausalLM")


# ---- precision: one dtype for everything that is not 4-bit ----------------------------------------


def _quantized(llm: LanguageModel) -> dict[str, torch.Tensor]:
    return {n: p for n, p in llm.named_parameters() if type(p).__name__ == "Params4bit"}


def test_bf16_qlora_keeps_every_unquantised_parameter_in_bf16_and_trains() -> None:
    kwargs = {"dtype": "bfloat16", "load_in_4bit": True, "trainable": "lora", "lora_r": 4, "lora_alpha": 8}
    torch.manual_seed(0)
    llm = LanguageModel("tiny:qwen2", gradient_checkpointing=True, **kwargs)
    torch.manual_seed(0)
    packed_in_uint8 = LanguageModel("tiny:qwen2", bnb_4bit_quant_storage="uint8", **kwargs).eval()

    quantized = _quantized(llm)
    assert quantized and all(p.dtype == torch.bfloat16 for p in quantized.values())  # quant storage
    assert all(p.quant_state.dtype == torch.bfloat16 for p in quantized.values())  # compute dtype
    assert llm.config.quantization_config.bnb_4bit_quant_storage == torch.bfloat16
    others = {n: p.dtype for n, p in llm.named_parameters() if n not in quantized}
    assert any("lora_A" in n for n in others) and any("embed_tokens" in n for n in others)
    assert {n: d for n, d in others.items() if d != torch.bfloat16} == {}
    assert {n for n, p in llm.named_parameters() if p.requires_grad} == {n for n in others if "lora_" in n}

    # The storage dtype only packs the same 4-bit codes: uint8 storage gives the same outputs.
    assert {p.dtype for p in _quantized(packed_in_uint8).values()} == {torch.uint8}
    ids = llm.tokenizer(["I feel tired today", "hello"], return_tensors="pt", padding=True)
    with torch.no_grad():
        reference = packed_in_uint8(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
        assert torch.equal(llm.eval()(**ids).logits, reference)

    # A training step: the residual stream stays bf16, checkpointing recomputes, LoRA moves.
    llm.train()
    mlp = llm.model.get_base_model().model.layers[0].mlp
    mlp_calls, mlp_forward = [], mlp.forward

    def counted_forward(*args, **kwargs):  # module hooks do not fire in the recomputation
        mlp_calls.append(torch.is_grad_enabled())
        return mlp_forward(*args, **kwargs)

    mlp.forward = counted_forward
    lora = {n: p for n, p in llm.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in lora.items()}
    optimizer = torch.optim.AdamW(lora.values(), lr=1e-2)
    out = llm(
        inputs_embeds=llm.embed(ids["input_ids"]),
        attention_mask=ids["attention_mask"],
        labels=ids["input_ids"],
        output_hidden_states=True,
    )
    assert {h.dtype for h in out.hidden_states} == {torch.bfloat16} and out.logits.dtype == torch.bfloat16
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert len(mlp_calls) == 2  # forward + recomputation in backward
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in lora.values())
    optimizer.step()
    unchanged = [n for n, p in lora.items() if "lora_B" in n and torch.equal(p, before[n])]
    assert unchanged == [], "every LoRA B matrix gets a gradient at the first step and must move"
    assert all(p.dtype == torch.bfloat16 for p in lora.values())
    assert all(p.dtype == torch.bfloat16 for p in _quantized(llm).values())  # base stays 4-bit, packed

    # A module-wide cast would convert the packed codes as numbers: refused, before anything changes.
    with torch.no_grad():
        trained = llm.eval()(**ids).logits
    for cast in (lambda m: m.float(), lambda m: m.half(), lambda m: torch.nn.Sequential(m).to(torch.float16)):
        with pytest.raises(TypeError, match=r"4-bit codes packed in bnb_4bit_quant_storage"):
            cast(llm)
    llm.to(torch.bfloat16)  # the storage dtype itself: harmless
    with torch.no_grad():
        assert torch.equal(llm(**ids).logits, trained)
    packed_in_uint8.float()  # uint8 codes are not floating point: casts leave them alone
    assert {p.dtype for p in _quantized(packed_in_uint8).values()} == {torch.uint8}


def test_float32_lora_inside_a_bf16_model() -> None:
    llm = LanguageModel(
        "tiny:qwen2", dtype="bfloat16", trainable="lora", lora_r=4, lora_alpha=8, lora_dtype="float32"
    )
    dtypes = {n: p.dtype for n, p in llm.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    ids = llm.tokenizer(["hello there"], return_tensors="pt")["input_ids"]
    out = llm(input_ids=ids, labels=ids, output_hidden_states=True)
    assert {h.dtype for h in out.hidden_states} == {torch.bfloat16}  # peft casts the adapters' output
    out.loss.backward()
    assert all(p.grad.dtype == torch.float32 for n, p in llm.named_parameters() if "lora_" in n)


class _Loaded(Exception):
    """Raised by a stand-in for from_pretrained: the settings got as far as loading weights."""


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def refuse(*args, **kwargs):
        raise _Loaded

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def test_precision_traps_are_refused_before_any_weight_loads(no_loading, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"load_in_4bit=True cannot take trainable='full'"):
        LanguageModel("tiny:qwen2", load_in_4bit=True, trainable="full")
    with pytest.raises(ValueError, match=r"bnb_4bit_compute_dtype=float32 with dtype=bfloat16"):
        LanguageModel("tiny:qwen2", dtype="bfloat16", load_in_4bit=True, bnb_4bit_compute_dtype="float32")
    # dtype="auto" is resolved from the checkpoint's config before loading, and named in the error.
    config = json.loads((Path(resolve("tiny:qwen2")) / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    with pytest.raises(ValueError, match=r"dtype=auto \(bfloat16, from the checkpoint's config\)"):
        LanguageModel(str(tmp_path), load_in_4bit=True, bnb_4bit_compute_dtype="float32")
    with pytest.raises(ValueError, match="unknown bnb_4bit_quant_storage 'int4'"):
        LanguageModel("tiny:qwen2", load_in_4bit=True, bnb_4bit_quant_storage="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown lora_dtype 'float8'"):
        LanguageModel("tiny:qwen2", trainable="lora", lora_dtype="float8")  # type: ignore[arg-type]
    # Allowed: a frozen 4-bit base without adapters (stage B, inference) gets as far as loading.
    with pytest.raises(_Loaded):
        LanguageModel("tiny:qwen2", load_in_4bit=True, trainable="frozen")
    # Options that cannot act warn, and loading goes on.
    with (
        pytest.warns(UserWarning, match="bnb_4bit_compute_dtype, bnb_4bit_quant_storage ignored"),
        pytest.raises(_Loaded),
    ):
        LanguageModel("tiny:qwen2", bnb_4bit_compute_dtype="bfloat16", bnb_4bit_quant_storage="bfloat16")
    with (
        pytest.warns(UserWarning, match="lora_dtype ignored: trainable='frozen' adds no LoRA adapters"),
        pytest.raises(_Loaded),
    ):
        LanguageModel("tiny:qwen2", trainable="frozen", lora_dtype="float32")


def test_auto_dtype_is_the_one_the_checkpoint_config_names(tmp_path: Path) -> None:
    import shutil

    assert (
        LanguageModel("tiny:qwen2", trainable="frozen").weights_dtype == torch.float32
    )  # its config.json says float32
    # Without a dtype transformers would load float32; "auto" must read the config's bfloat16.
    shutil.copytree(resolve("tiny:qwen2"), tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    llm = LanguageModel(str(tmp_path), trainable="frozen")
    assert llm.weights_dtype == torch.bfloat16 and {p.dtype for p in llm.parameters()} == {torch.bfloat16}


def test_the_head_input_is_the_last_hidden_state_of_the_kept_positions() -> None:
    llm = LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        full = llm(input_ids=ids, output_hidden_states=True)
        out, head_input = llm.forward_with_head_input(input_ids=ids, logits_to_keep=2)
    assert torch.equal(head_input, full.hidden_states[-1][:, -2:])
    assert torch.allclose(out.logits, full.logits[:, -2:], atol=1e-6)
    assert not llm.model.get_output_embeddings()._forward_pre_hooks  # the hook is gone again
