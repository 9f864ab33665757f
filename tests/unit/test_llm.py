"""The LLM wrapper: QLoRA (4-bit NF4 + LoRA) really trains on CPU; placeholders are ensured."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multimood.constants import PLACEHOLDER_TOKENS
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
        "tiny:qwen2", load_in_4bit=True, lora=True, lora_r=4, lora_alpha=8, gradient_checkpointing=True
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
    llm = LanguageModel("tiny:qwen2?hidden_size=256&intermediate_size=256", lora=True)
    config = llm.model.peft_config["default"]
    assert (config.r, config.lora_alpha) == (128, 256)
    adapted = {n.split(".")[-4] for n, _ in llm.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_full_finetuning_when_nothing_is_frozen() -> None:
    llm = LanguageModel("tiny:qwen2", freeze_base=False)
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

    llm = LanguageModel("tiny:qwen2", tokenizer=str(tmp_path))
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
