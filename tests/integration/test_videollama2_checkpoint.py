"""Loading a VideoLLaMA2.1-AV style folder (LLM + mm_projector + audio tower + mm_projector_a) by key
mapping. The folder is written from an independent list of the release's key names and shapes (at
the tiny sizes), in bf16 as the release stores them; our modules only receive it."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from multimood.hub import resolve
from multimood.models.audio import AudioTower
from multimood.models.checkpoints import CheckpointMismatchError, load_videollama2_av
from multimood.models.llm import LanguageModel
from multimood.models.multimood import MultiMoodModel
from multimood.models.projectors import AudioProjector
from multimood.models.stc import STCConnector
from multimood.models.vision import VisionTower
from multimood.tiny.beats import TINY_BEATS_CFG

# Tiny sizes of the parts below: tiny:siglip width, tiny:qwen2 width, STC blocks per RegStage.
VISION, LLM, STC_DEPTH = 32, 64, 2
# The release's audio tower is a fine-tuned BEATs (VideoLLaMA2 README: "Fine-tuned BEATs_iter3+
# (AS2M)(cpt2)"), so its keys include the AudioSet predictor; 5 classes stand in for 527.
PREDICTOR_CLASSES = 5


def videollama2_av_keys(vision: int, llm: int, stc_depth: int, beats: dict) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the non-LLM tensors of a VideoLLaMA2.1-7B-AV folder at the given sizes.

    Written from the reference code, not from our modules: VideoLLaMA2 (audio_visual branch)
    ``projector.py`` (``STCConnectorV35``: timm ``RegStage(depth, stride=1, act_layer=SiLU,
    norm_layer=LayerNorm2d)`` -> ``Conv3d(kernel=stride=2, padding=0)`` + SiLU -> ``RegStage`` ->
    ``build_mlp(2)``; ``build_audio_projector`` ``mlp2x_gelu``), timm's ``Bottleneck`` (bottle ratio 1,
    group size 1 = depthwise 3x3, SE on a quarter of the block's input width, ``conv1x1`` shortcut
    when the width changes; ``ConvNormAct`` names ``conv``/``bn``), and microsoft/unilm
    ``BEATs.py``/``backbone.py`` (the legacy weight norm's ``weight_g``/``weight_v``, which
    VideoLLaMA2's ``weight_norm_fix`` keeps; the shared relative position table listed by every layer).
    """
    keys: dict[str, tuple[int, ...]] = {}

    def conv_norm(prefix: str, out: int, inp: int, kernel: int, groups: int = 1) -> None:
        keys[f"{prefix}.conv.weight"] = (out, inp // groups, kernel, kernel)  # no conv bias
        keys[f"{prefix}.bn.weight"] = keys[f"{prefix}.bn.bias"] = (out,)  # LayerNorm2d

    def reg_stage(prefix: str, inp: int, out: int) -> None:
        for i in range(stc_depth):
            block, block_in = f"{prefix}.b{i + 1}", inp if i == 0 else out
            conv_norm(f"{block}.conv1", out, block_in, 1)
            conv_norm(f"{block}.conv2", out, out, 3, groups=out)
            se = round(block_in * 0.25)
            keys[f"{block}.se.fc1.weight"], keys[f"{block}.se.fc1.bias"] = (se, out, 1, 1), (se,)
            keys[f"{block}.se.fc2.weight"], keys[f"{block}.se.fc2.bias"] = (out, se, 1, 1), (out,)
            conv_norm(f"{block}.conv3", out, out, 1)
            if block_in != out:
                conv_norm(f"{block}.downsample", out, block_in, 1)

    stc = "model.mm_projector"
    reg_stage(f"{stc}.s1", vision, llm)
    keys[f"{stc}.sampler.0.weight"], keys[f"{stc}.sampler.0.bias"] = (llm, llm, 2, 2, 2), (llm,)
    reg_stage(f"{stc}.s2", llm, llm)
    for i, inp in ((0, llm), (2, llm)):
        keys[f"{stc}.readout.{i}.weight"], keys[f"{stc}.readout.{i}.bias"] = (llm, inp), (llm,)

    d, e, p = beats["encoder_embed_dim"], beats["embed_dim"], beats["input_patch_size"]
    heads, ffn = beats["encoder_attention_heads"], beats["encoder_ffn_embed_dim"]
    audio_proj = "model.mm_projector_a"
    keys[f"{audio_proj}.0.weight"], keys[f"{audio_proj}.0.bias"] = (llm, d), (llm,)
    keys[f"{audio_proj}.2.weight"], keys[f"{audio_proj}.2.bias"] = (llm, llm), (llm,)

    tower = "model.audio_tower"
    keys[f"{tower}.post_extract_proj.weight"], keys[f"{tower}.post_extract_proj.bias"] = (d, e), (d,)
    keys[f"{tower}.patch_embedding.weight"] = (e, 1, p, p)  # conv_bias False
    keys[f"{tower}.encoder.pos_conv.0.weight_g"] = (1, 1, beats["conv_pos"])
    keys[f"{tower}.encoder.pos_conv.0.weight_v"] = (d, d // beats["conv_pos_groups"], beats["conv_pos"])
    keys[f"{tower}.encoder.pos_conv.0.bias"] = (d,)
    for i in range(beats["encoder_layers"]):
        layer = f"{tower}.encoder.layers.{i}"
        keys[f"{layer}.self_attn.relative_attention_bias.weight"] = (beats["num_buckets"], heads)
        keys[f"{layer}.self_attn.grep_a"] = (1, heads, 1, 1)
        keys[f"{layer}.self_attn.grep_linear.weight"] = (8, d // heads)
        keys[f"{layer}.self_attn.grep_linear.bias"] = (8,)
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            keys[f"{layer}.self_attn.{proj}.weight"], keys[f"{layer}.self_attn.{proj}.bias"] = (d, d), (d,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            keys[f"{layer}.{norm}.weight"] = keys[f"{layer}.{norm}.bias"] = (d,)
        keys[f"{layer}.fc1.weight"], keys[f"{layer}.fc1.bias"] = (ffn, d), (ffn,)
        keys[f"{layer}.fc2.weight"], keys[f"{layer}.fc2.bias"] = (d, ffn), (d,)
    keys[f"{tower}.encoder.layer_norm.weight"] = keys[f"{tower}.encoder.layer_norm.bias"] = (d,)
    keys[f"{tower}.layer_norm.weight"] = keys[f"{tower}.layer_norm.bias"] = (e,)
    keys[f"{tower}.predictor.weight"] = (PREDICTOR_CLASSES, d)
    keys[f"{tower}.predictor.bias"] = (PREDICTOR_CLASSES,)
    return keys


RELEASE_KEYS = videollama2_av_keys(VISION, LLM, STC_DEPTH, TINY_BEATS_CFG)
VISION_TOWER_KEY = "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"


def _model(llm_path: str, audio_kind: str = "mlp2x_gelu", **llm_kwargs) -> MultiMoodModel:
    return MultiMoodModel(
        llm=LanguageModel(
            llm_path, model_class="transformers.Qwen2ForCausalLM", **{"trainable": "frozen", **llm_kwargs}
        ),
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=functools.partial(STCConnector, depth=STC_DEPTH),
        audio_tower=AudioTower("tiny:beats"),
        audio_projector=functools.partial(AudioProjector, kind=audio_kind),
    )


def _write_folder(folder: Path, parts: dict[str, torch.Tensor]) -> None:
    """LLM shard + component shard + index, config naming VideoLLaMA2's architecture, in bf16."""
    tiny = Path(resolve("tiny:qwen2"))
    config = json.loads((tiny / "config.json").read_text())
    config.update(
        model_type="videollama2_qwen2", architectures=["Videollama2Qwen2ForCausalLM"], dtype="bfloat16"
    )
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny / name).exists():
            (folder / name).write_bytes((tiny / name).read_bytes())
    shard_a = {k: v.to(torch.bfloat16) for k, v in load_file(tiny / "model.safetensors").items()}
    shard_b = {k: v.contiguous() for k, v in parts.items()}
    save_file(shard_a, folder / "model-00001-of-00002.safetensors")
    save_file(shard_b, folder / "model-00002-of-00002.safetensors")
    weight_map = {k: "model-00001-of-00002.safetensors" for k in shard_a}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in shard_b})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


@pytest.fixture(scope="module")
def videollama2_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A folder laid out like DAMO-NLP-SG/VideoLLaMA2.1-7B-AV, at tiny size, in two bf16 shards."""
    folder = tmp_path_factory.mktemp("videollama2-av")
    generator = torch.Generator().manual_seed(3)
    parts = {
        key: torch.randn(shape, generator=generator).to(torch.bfloat16) for key, shape in RELEASE_KEYS.items()
    }
    # BEATs stores its one relative-position table once per layer: the copies agree.
    tables = sorted(k for k in parts if k.endswith("relative_attention_bias.weight"))
    for key in tables[1:]:
        parts[key] = parts[tables[0]].clone()
    parts[VISION_TOWER_KEY] = torch.zeros(2, 3, dtype=torch.bfloat16)
    _write_folder(folder, parts)
    return folder, parts


def test_every_part_lands_where_it_belongs_in_its_own_dtype_and_device(videollama2_folder) -> None:
    folder, parts = videollama2_folder
    model = _model(str(folder))
    components = {
        "model.mm_projector.": model.video_connector,
        "model.audio_tower.": model.audio_tower.encoder,
        "model.mm_projector_a.": model.audio_projector.proj,
    }
    placement = {
        prefix: {n: (p.dtype, p.device) for n, p in module.named_parameters()}
        for prefix, module in components.items()
    }
    report = load_videollama2_av(model, str(folder))
    assert set(report.loaded) == {"video_connector", "audio_tower.encoder", "audio_projector.proj"}
    assert report.skipped == {"model.vision_tower.": 1}
    assert report.llm_keys > 0
    for prefix, module in components.items():
        state = module.state_dict()
        expected = {k[len(prefix) :] for k in RELEASE_KEYS if k.startswith(prefix)}
        if prefix == "model.audio_tower.":
            expected -= {"predictor.weight", "predictor.bias"}  # the feature tower has no head
        assert set(state) == expected, prefix
        for key, value in state.items():
            # Copied, not assigned: float32 parameters hold the bf16 values exactly.
            assert value.dtype == torch.float32 and torch.equal(value, parts[prefix + key].float()), key
        assert {n: (p.dtype, p.device) for n, p in module.named_parameters()} == placement[prefix]

    # Audio features compute outside autocast: BEATs and its projector agree on dtype and device.
    fbank = torch.randn(2, 200, 128, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(2, 200, dtype=torch.bool)
    valid[1, 150:] = False
    assert not torch.is_autocast_enabled("cpu")
    with torch.no_grad():
        features, mask = model.encode_audio(fbank, valid)
    assert features.dtype == torch.float32 and features.shape[-1] == LLM and mask[0].all()

    # The LLM was read by transformers from the same folder, despite its custom architecture name;
    # dtype="auto" took the folder config's bf16.
    tiny = load_file(Path(resolve("tiny:qwen2")) / "model.safetensors")
    own = model.llm.model.state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert own[name].dtype == torch.bfloat16
    assert torch.equal(own[name], tiny[name].to(torch.bfloat16))


def test_a_bf16_model_stays_bf16(videollama2_folder) -> None:
    folder, parts = videollama2_folder
    model = MultiMoodModel(
        llm=LanguageModel(str(folder), model_class="transformers.Qwen2ForCausalLM", trainable="frozen"),
        audio_tower=AudioTower("tiny:beats", dtype="bfloat16"),
        audio_projector=functools.partial(AudioProjector, kind="mlp2x_gelu"),
    ).to(torch.bfloat16)
    load_videollama2_av(model, str(folder), strict=False)  # no video connector to fill
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    key = "encoder.layers.1.fc1.weight"
    assert torch.equal(model.audio_tower.encoder.state_dict()[key], parts[f"model.audio_tower.{key}"])


def test_a_misnamed_release_key_is_reported(videollama2_folder, tmp_path: Path) -> None:
    """What the independent key list is for: a release name our modules do not produce fails loudly."""
    _, parts = videollama2_folder
    renamed = dict(parts)
    renamed["model.mm_projector.s1.b1.conv1.norm.weight"] = renamed.pop(
        "model.mm_projector.s1.b1.conv1.bn.weight"
    )
    _write_folder(tmp_path, renamed)
    with pytest.raises(CheckpointMismatchError, match=r"missing \['s1\.b1\.conv1\.bn\.weight'\]"):
        load_videollama2_av(_model(str(tmp_path)), str(tmp_path))


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
    model = _model(str(folder), load_in_4bit=True, trainable="lora", lora_r=4, lora_alpha=8)
    report = load_videollama2_av(model, str(folder))
    assert report.loaded["video_connector"] > 0
    assert any("lora_" in n for n, _ in model.named_parameters())
    # dtype="auto" read bf16 from the folder's config, so compute and storage follow it.
    assert model.llm.config.quantization_config.bnb_4bit_compute_dtype == torch.bfloat16
    assert model.llm.config.quantization_config.bnb_4bit_quant_storage == torch.bfloat16
