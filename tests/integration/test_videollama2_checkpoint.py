"""Loading a VideoLLaMA2.1-AV style folder (LLM + mm_projector + audio tower + mm_projector_a) by key
mapping, with random tensors under the real key names and the tiny components' shapes."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from multimood.hub import resolve
from multimood.models.audio import AudioTower
from multimood.models.checkpoints import CheckpointMismatchError, load_videollama2_av
from multimood.models.llm import LanguageModel
from multimood.models.multimood import MultiMoodModel
from multimood.models.projectors import AudioProjector
from multimood.models.stc import STCConnector
from multimood.models.vision import VisionTower


def _model(llm_path: str, audio_kind: str = "mlp2x_gelu", **llm_kwargs) -> MultiMoodModel:
    return MultiMoodModel(
        llm=LanguageModel(llm_path, model_class="transformers.Qwen2ForCausalLM", **llm_kwargs),
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=functools.partial(STCConnector, depth=1),
        audio_tower=AudioTower("tiny:beats"),
        audio_projector=functools.partial(AudioProjector, kind=audio_kind),
    )


@pytest.fixture(scope="module")
def videollama2_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A folder laid out like DAMO-NLP-SG/VideoLLaMA2.1-7B-AV, at tiny size, in two shards."""
    folder = tmp_path_factory.mktemp("videollama2-av")
    tiny = Path(resolve("tiny:qwen2"))
    config = json.loads((tiny / "config.json").read_text())
    config.update(model_type="videollama2_qwen2", architectures=["Videollama2Qwen2ForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny / name).exists():
            (folder / name).write_bytes((tiny / name).read_bytes())
    from safetensors.torch import load_file

    llm_state = load_file(tiny / "model.safetensors")
    reference = _model(str(tiny))  # shapes of every part at tiny size
    torch.manual_seed(3)
    parts = {}
    for prefix, module in (
        ("model.mm_projector.", reference.video_connector),
        ("model.audio_tower.", reference.audio_tower.encoder),
        ("model.mm_projector_a.", reference.audio_projector.proj),
    ):
        for key, value in module.state_dict().items():
            parts[prefix + key] = torch.randn_like(value.float()).to(value.dtype)
    # BEATs stores its one relative-position table once per layer: the copies must agree.
    tables = sorted(k for k in parts if k.endswith("relative_attention_bias.weight"))
    for key in tables[1:]:
        parts[key] = parts[tables[0]].clone()
    parts["model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"] = torch.zeros(
        2, 3
    )
    shard_a = dict(llm_state)
    shard_b = {k: v.contiguous() for k, v in parts.items()}
    save_file(shard_a, folder / "model-00001-of-00002.safetensors")
    save_file(shard_b, folder / "model-00002-of-00002.safetensors")
    weight_map = {k: "model-00001-of-00002.safetensors" for k in shard_a}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in shard_b})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return folder, parts


def test_every_part_lands_where_it_belongs(videollama2_folder) -> None:
    folder, parts = videollama2_folder
    model = _model(str(folder))
    report = load_videollama2_av(model, str(folder))
    assert set(report.loaded) == {"video_connector", "audio_tower.encoder", "audio_projector.proj"}
    assert report.skipped == {"model.vision_tower.": 1}
    assert report.llm_keys > 0
    for prefix, module in (
        ("model.mm_projector.", model.video_connector),
        ("model.audio_tower.", model.audio_tower.encoder),
        ("model.mm_projector_a.", model.audio_projector.proj),
    ):
        state = module.state_dict()
        for key, value in state.items():
            assert torch.equal(value, parts[prefix + key]), prefix + key
    # The LLM was read by transformers from the same folder, despite its custom architecture name.
    from safetensors.torch import load_file

    tiny = load_file(Path(resolve("tiny:qwen2")) / "model.safetensors")
    own = model.llm.model.state_dict()
    assert torch.equal(
        own["model.layers.0.self_attn.q_proj.weight"], tiny["model.layers.0.self_attn.q_proj.weight"]
    )


def test_paper_projector_against_the_mlp_checkpoint_is_a_clear_error(videollama2_folder) -> None:
    folder, _ = videollama2_folder
    model = _model(str(folder), audio_kind="linear")
    with pytest.raises(CheckpointMismatchError, match=r"mm_projector_a.*missing \['bias', 'weight'\]"):
        load_videollama2_av(model, str(folder))


def test_unknown_keys_and_missing_folders_fail(videollama2_folder, tmp_path: Path) -> None:
    folder, _ = videollama2_folder
    extra = tmp_path / "extra"
    extra.mkdir()
    for f in folder.iterdir():
        (extra / f.name).write_bytes(f.read_bytes())
    save_file({"model.something_else.weight": torch.zeros(1)}, extra / "model-00003-of-00003.safetensors")
    index = json.loads((extra / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.something_else.weight"] = "model-00003-of-00003.safetensors"
    (extra / "model.safetensors.index.json").write_text(json.dumps(index))
    model = _model(str(folder))
    with pytest.raises(CheckpointMismatchError, match="something_else"):
        load_videollama2_av(model, str(extra))
    assert load_videollama2_av(model, str(extra), strict=False).loaded
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        load_videollama2_av(model, str(tmp_path / "nope"))


def test_the_llm_loads_4bit_with_lora_from_the_same_folder(videollama2_folder) -> None:
    folder, _ = videollama2_folder
    model = _model(str(folder), load_in_4bit=True, lora=True, lora_r=4, lora_alpha=8)
    report = load_videollama2_av(model, str(folder))
    assert report.loaded["video_connector"] > 0
    assert any("lora_" in n for n, _ in model.named_parameters())
