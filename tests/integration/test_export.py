"""Exported folders reproduce the trained model outside this repo's code.

Oracles: the live adapted model's logits (the merged folder through ``AutoModelForCausalLM``, the
adapter folder through ``PeftModel`` over a freshly loaded base), the live parts' tensors, the
checkpoint's tensors, and each 4-bit layer's own forward pass on an identity matrix.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from multimood.constants import PLACEHOLDER_TOKENS
from multimood.hub import resolve
from multimood.models import (
    AudioProjector,
    AudioTower,
    LanguageModel,
    MambaHistoryCompressor,
    MultiMoodModel,
    STCConnector,
    VisionTower,
)
from multimood.models.export import export_adapter, export_merged, export_parts, load_parts

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
LORA = {"trainable": "lora", "lora_r": 4, "lora_alpha": 8}


def _perturb_lora_b(llm: LanguageModel, seed: int = 0) -> None:
    """peft starts B at zero (adapters are then a no-op); give them values so they change the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in llm.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def _ids(llm: LanguageModel) -> torch.Tensor:
    return torch.randint(0, len(llm.tokenizer), (2, 11), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def adapted() -> LanguageModel:
    llm = LanguageModel("tiny:qwen2", **LORA).eval()
    _perturb_lora_b(llm)
    return llm


@torch.no_grad()
def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits.float()


def _base(**kwargs) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(resolve("tiny:qwen2"), **kwargs).eval()


def _assert_same_tokenizer(folder: Path, llm: LanguageModel) -> None:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == len(llm.tokenizer)
    for token in PLACEHOLDER_TOKENS:  # our placeholders, with the ids the model was trained with
        assert tokenizer.convert_tokens_to_ids(token) == llm.placeholder_ids[token]


# ----------------------------------------------------------------------------------- LLM, fp32
def test_merged_folder_loads_without_peft_and_gives_the_adapted_logits(
    adapted: LanguageModel, tmp_path: Path
) -> None:
    ids = _ids(adapted)
    expected = _logits(adapted, ids)
    assert (expected - _logits(_base(), ids)).abs().max() > 0.1  # the adapters matter
    before = {k: v.clone() for k, v in adapted.state_dict().items()}

    export_merged(adapted, tmp_path / "merged")

    names = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    weights = load_file(tmp_path / "merged" / "model.safetensors")
    assert not [k for k in weights if "lora" in k or "base_layer" in k]
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert merged.dtype == torch.float32
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, ids), expected, atol=1e-5, rtol=0)
    _assert_same_tokenizer(tmp_path / "merged", adapted)
    # The live model is untouched: same tensors, adapters still separate, same output.
    after = adapted.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    torch.testing.assert_close(_logits(adapted, ids), expected, atol=0, rtol=0)


def test_merged_folder_takes_the_dtype_asked_for(adapted: LanguageModel, tmp_path: Path) -> None:
    export_merged(adapted, tmp_path / "bf16", dtype="bfloat16")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert merged.dtype == torch.bfloat16
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        export_merged(adapted, tmp_path / "bad", dtype="fp8")


def test_adapter_folder_loads_with_peft_over_the_base(adapted: LanguageModel, tmp_path: Path) -> None:
    from peft import PeftModel

    ids = _ids(adapted)
    export_adapter(adapted, tmp_path / "adapter")

    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (4, 8, "LORA")
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert weights and all("lora_A" in k or "lora_B" in k for k in weights)  # adapters only, no base
    reloaded = PeftModel.from_pretrained(_base(), tmp_path / "adapter").eval()
    torch.testing.assert_close(_logits(reloaded, ids), _logits(adapted, ids), atol=1e-5, rtol=0)
    _assert_same_tokenizer(tmp_path / "adapter", adapted)


def test_adapter_export_refuses_an_llm_without_adapters(tmp_path: Path) -> None:
    frozen = LanguageModel("tiny:qwen2", trainable="frozen")
    with pytest.raises(ValueError, match=r"no LoRA adapters \(trainable='frozen'\).*export_merged"):
        export_adapter(frozen, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
    # Without adapters, the merged folder is the model as it is.
    export_merged(frozen, tmp_path / "plain")
    ids = _ids(frozen)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    torch.testing.assert_close(_logits(plain, ids), _logits(frozen.eval(), ids), atol=0, rtol=0)


def test_a_resized_vocabulary_travels_with_the_adapter(tmp_path: Path) -> None:
    """A base whose table is smaller than the tokenizer is resized for the placeholders; the new
    rows are not in the base, so the adapter folder must carry the embedding and output tables."""
    from peft import PeftModel
    from transformers import Qwen2ForCausalLM

    source = AutoModelForCausalLM.from_pretrained(resolve("tiny:qwen2"))
    tokenizer = AutoTokenizer.from_pretrained(resolve("tiny:qwen2"))
    config = source.config
    config.vocab_size = len(tokenizer) - 8  # too small for the tokenizer
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "small")
    tokenizer.save_pretrained(tmp_path / "small")

    llm = LanguageModel(str(tmp_path / "small"), **LORA).eval()
    assert llm.model.get_input_embeddings().num_embeddings == len(llm.tokenizer)
    _perturb_lora_b(llm)
    export_adapter(llm, tmp_path / "adapter")
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("embed_tokens" in k for k in weights)

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "small")
    base.resize_token_embeddings(len(llm.tokenizer), mean_resizing=False)  # as docs/design/export.md says
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    ids = torch.tensor([[*range(5), len(llm.tokenizer) - 1]])  # a row that exists only after resizing
    torch.testing.assert_close(_logits(reloaded, ids), _logits(llm, ids), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------- LLM, 4-bit
def test_a_4bit_base_is_merged_only_when_dequantising_is_asked_for(tmp_path: Path) -> None:
    """The paper's setting (bf16 weights, NF4 base): refused by default; dequantised on request,
    each merged weight equals what the live 4-bit layer computes (its output on an identity matrix)."""
    llm = LanguageModel("tiny:qwen2", dtype="bfloat16", load_in_4bit=True, **LORA).eval()
    _perturb_lora_b(llm)
    with pytest.raises(ValueError, match="dequantize_4bit=True"):
        export_merged(llm, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

    export_merged(llm, tmp_path / "merged", dequantize_4bit=True)
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    weights = load_file(tmp_path / "merged" / "model.safetensors")
    layers = {n: m for n, m in llm.model.get_base_model().named_modules() if hasattr(m, "lora_A")}
    assert len(layers) == 14  # 7 linear layers x 2 blocks
    for name, layer in layers.items():
        eye = torch.eye(layer.in_features, dtype=torch.bfloat16)
        with torch.no_grad():
            live = layer(eye).float().T  # (out, in): column j is W[:, j] + bias
        if layer.get_base_layer().bias is not None:
            live = live - weights[f"{name}.bias"].float()[:, None]
        merged = weights[f"{name}.weight"].float()
        torch.testing.assert_close(merged, live, atol=0.02 * float(live.abs().max()), rtol=0.02, msg=name)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert plain.dtype == torch.bfloat16
    assert not any(type(p).__name__ == "Params4bit" for p in plain.parameters())


def test_a_float32_4bit_base_merges_to_the_same_logits(tmp_path: Path) -> None:
    """With float32 compute the 4-bit model's own logits are a tight oracle for both folders."""
    from peft import PeftModel

    llm = LanguageModel("tiny:qwen2", dtype="float32", load_in_4bit=True, **LORA).eval()
    _perturb_lora_b(llm)
    ids = _ids(llm)
    expected = _logits(llm, ids)
    export_merged(llm, tmp_path / "merged", dequantize_4bit=True)
    export_adapter(llm, tmp_path / "adapter")

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(_logits(merged, ids), expected, atol=1e-5, rtol=0)
    nf4 = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
        bnb_4bit_quant_storage=torch.float32,
    )
    reloaded = PeftModel.from_pretrained(
        _base(dtype=torch.float32, quantization_config=nf4), tmp_path / "adapter"
    )
    torch.testing.assert_close(_logits(reloaded.eval(), ids), expected, atol=1e-5, rtol=0)
    # The unquantised base plus the same adapters is a different model: NF4's error is in the merge.
    assert (
        _logits(merged, ids) - _logits(PeftModel.from_pretrained(_base(), tmp_path / "adapter"), ids)
    ).abs().max() > 1e-3


# ----------------------------------------------------------------------------------- parts
def _fused(seed: int, compressor_4bit: bool = False) -> MultiMoodModel:
    torch.manual_seed(seed)
    compressor = {"load_in_4bit": True, "dtype": "bfloat16", "use_mambapy": False} if compressor_4bit else {}
    return MultiMoodModel(
        llm=LanguageModel("tiny:qwen2", **LORA),
        vision_tower=VisionTower("tiny:siglip", trainable="frozen"),
        video_connector=functools.partial(STCConnector, depth=1, trainable="frozen"),
        audio_tower=AudioTower("tiny:beats", trainable="frozen"),
        audio_projector=functools.partial(AudioProjector, trainable="frozen"),
        history_compressor=functools.partial(
            MambaHistoryCompressor,
            backbone="tiny:mamba",
            backbone_trainable="frozen",
            projector_trainable="frozen",
            lora_r=4,
            **compressor,
        ),
    )


def test_parts_reload_by_value_into_a_model_built_the_same_way(tmp_path: Path) -> None:
    trained, fresh = _fused(seed=0), _fused(seed=1)
    config = {"class_path": "multimood.models.MultiMoodModel", "init_args": {"stand_ins": "trainable"}}
    manifest = export_parts(trained, tmp_path / "parts", config=config)

    assert set(manifest["components"]) == {"video_connector", "audio_projector", "history_compressor"}
    on_disk = json.loads((tmp_path / "parts" / "manifest.json").read_text())
    assert on_disk == manifest and on_disk["source_config"] == config
    weights = load_file(tmp_path / "parts" / "parts.safetensors")
    listed = {k: v for part in manifest["components"].values() for k, v in part["tensors"].items()}
    assert listed.keys() == weights.keys()
    assert all(list(weights[k].shape) == v["shape"] for k, v in listed.items())
    own = trained.state_dict()
    expected = {k for k in own if k.split(".", 1)[0] in manifest["components"]}
    assert (
        set(weights) == expected
    )  # every tensor of those parts, the compressor's backbone and LoRA included
    assert any("lora_A" in k for k in weights) and "history_compressor.mem_embedding" in weights

    differs = [k for k in weights if not torch.equal(fresh.state_dict()[k], weights[k])]
    assert differs  # the two builds start apart, so the load below has something to do
    loaded = load_parts(fresh, tmp_path / "parts")
    assert sum(loaded.values()) == len(weights)
    after = fresh.state_dict()
    assert all(torch.equal(after[k], own[k]) for k in weights)


def test_parts_refuse_a_model_built_differently(tmp_path: Path) -> None:
    export_parts(_fused(seed=0), tmp_path / "parts")
    other = _fused(seed=0)
    other.video_connector = STCConnector(other.vision_tower.hidden_size, other.llm.hidden_size, depth=2)
    with pytest.raises(ValueError, match=r"lacks \d+ tensors of video_connector"):
        load_parts(other, tmp_path / "parts")
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        load_parts(other, tmp_path)
    with pytest.raises(ValueError, match=r"\['llm'\] is not a non-LLM part"):
        export_parts(other, tmp_path / "x", components=["llm"])


def test_4bit_compressor_weights_are_listed_not_written(tmp_path: Path) -> None:
    model = _fused(seed=0, compressor_4bit=True)
    manifest = export_parts(model, tmp_path / "parts")
    left_out = manifest["components"]["history_compressor"]["not_exported"]
    assert left_out and all("in_proj" in k or "x_proj" in k or "out_proj" in k for k in left_out)
    weights = load_file(tmp_path / "parts" / "parts.safetensors")
    assert not set(left_out) & set(weights) and "history_compressor.projector.weight" in weights
    fresh = _fused(seed=1, compressor_4bit=True)
    load_parts(fresh, tmp_path / "parts")
    assert torch.equal(fresh.history_compressor.projector.weight, model.history_compressor.projector.weight)


# ----------------------------------------------------------------------------------- fit.py
def test_fit_py_exports_a_tiny_sft_checkpoint(tmp_path: Path, synthetic_mesc: Path, monkeypatch) -> None:
    from peft import PeftModel

    import fit

    monkeypatch.chdir(tmp_path)  # nothing the config names relative to the working directory leaks out
    common = [
        "--config",
        str(REPO / "configs" / "sft" / "tiny.yaml"),
        f"--data.init_args.data_dir={synthetic_mesc}",
        "--data.init_args.limit_samples=4",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]
    fit.main(
        [
            *common,
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--test_after_fit=false",
            "--model.init_args.generate_on_validation=false",
        ]
    )
    (ckpt,) = (tmp_path / "run").rglob("checkpoints/last.ckpt")  # the logger's version folder
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]

    command = [sys.executable, str(REPO / "fit.py"), *common, "--run=export", f"--ckpt_path={ckpt}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*command, f"--export_dir={tmp_path / 'out'}", "--export_merged=true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"

    # adapter/: exactly the checkpoint's LoRA tensors, and trained ones (B moved off zero)
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    from_ckpt = {
        k.removeprefix("model.llm.model.").replace(".default.", "."): v
        for k, v in state.items()
        if "lora_" in k
    }
    assert adapter.keys() == from_ckpt.keys()
    assert all(torch.equal(adapter[k], from_ckpt[k]) for k in adapter)
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)
    # merged/ and adapter/ over the base agree
    ids = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    over_base = PeftModel.from_pretrained(_base(), out / "adapter").eval()
    torch.testing.assert_close(_logits(merged, ids), _logits(over_base, ids), atol=1e-5, rtol=0)
    # parts/: the frozen parts with the source config
    manifest = json.loads((out / "parts" / "manifest.json").read_text())
    assert set(manifest["components"]) == {"video_connector", "audio_projector", "history_compressor"}
    llm_config = manifest["source_config"]["init_args"]["llm"]["init_args"]
    assert (llm_config["name_or_path"], llm_config["lora_r"]) == ("tiny:qwen2", 8)

    # init_from is applied before exporting: a stage-B-like checkpoint's projector comes out.
    parts = load_file(out / "parts" / "parts.safetensors")
    projector = {k: torch.full_like(v, 0.25) for k, v in parts.items() if k.startswith("audio_projector.")}
    torch.save({"state_dict": {f"model.{k}": v for k, v in projector.items()}}, tmp_path / "stage_b.ckpt")
    fit.main(
        [
            *common,
            "--run=export",
            f"--ckpt_path={ckpt}",
            f"--export_dir={tmp_path / 'out2'}",
            f"--model.init_args.init_from=[{{path: {tmp_path / 'stage_b.ckpt'}, components: [audio_projector]}}]",
        ]
    )
    again = load_file(tmp_path / "out2" / "parts" / "parts.safetensors")
    assert all(torch.equal(again[k], projector[k]) for k in projector)
    assert not (tmp_path / "out2" / "merged").exists()


def test_fit_py_export_needs_its_paths(synthetic_mesc: Path) -> None:
    import fit

    args = [
        "--config",
        str(REPO / "configs" / "sft" / "tiny.yaml"),
        f"--data.init_args.data_dir={synthetic_mesc}",
    ]
    with pytest.raises(SystemExit, match="--export_dir"):
        fit.main([*args, "--run=export", "--ckpt_path=x.ckpt"])
