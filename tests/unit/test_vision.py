"""The vision tower: tiny SigLIP through open_clip, the layer it selects, freezing, other backends."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from multimood.hub import resolve
from multimood.models.vision import VisionTower
from multimood.tiny.siglip import build_tiny_siglip
from tests.conftest import NetworkBlocked


@pytest.fixture(scope="module")
def tower() -> VisionTower:
    return VisionTower("tiny:siglip")


def _frames(b: int, t: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _block_outputs(blocks: torch.nn.Module, run) -> list[torch.Tensor]:
    """Outputs of every block in ``blocks`` while ``run()`` executes (forward hooks)."""
    seen: list[torch.Tensor] = []
    handles = [blk.register_forward_hook(lambda _m, _i, out: seen.append(out.detach())) for blk in blocks]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def test_tiny_siglip_is_an_open_clip_folder_with_the_real_structure() -> None:
    path = Path(resolve("tiny:siglip"))
    config = json.loads((path / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["timm_pool"] == "map"
    assert "siglip" not in config["model_cfg"]["vision_cfg"]["timm_model_name"]
    model = open_clip.create_model(f"local-dir:{path}")  # loads the folder's weights, offline
    trunk = model.visual.trunk
    assert type(trunk).__name__ == "VisionTransformer"
    assert trunk.patch_embed.patch_size == (14, 14) and trunk.patch_embed.grid_size == (4, 4)
    assert trunk.num_prefix_tokens == 0 and trunk.global_pool == "map" and trunk.attn_pool is not None
    assert model.visual.preprocess_cfg["mean"] == [0.5, 0.5, 0.5]
    saved = load_file(str(path / "open_clip_model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert open_clip.get_tokenizer(f"local-dir:{path}")(["hi"]).shape == (1, 16)


def test_tiny_siglip_is_deterministic_by_seed_and_checks_options(tmp_path: Path) -> None:
    build_tiny_siglip(tmp_path / "again", {"seed": 0})
    build_tiny_siglip(tmp_path / "other", {"seed": 1})
    reference = load_file(str(Path(resolve("tiny:siglip")) / "open_clip_model.safetensors"))
    again = load_file(str(tmp_path / "again" / "open_clip_model.safetensors"))
    other = load_file(str(tmp_path / "other" / "open_clip_model.safetensors"))
    assert all(torch.equal(reference[k], again[k]) for k in reference)
    assert not torch.equal(
        reference["visual.trunk.blocks.0.attn.qkv.weight"], other["visual.trunk.blocks.0.attn.qkv.weight"]
    )
    with pytest.raises(ValueError, match="unknown option"):
        build_tiny_siglip(tmp_path / "bad", {"hidden_size": 8})


def test_tower_returns_patch_tokens_per_frame(tower: VisionTower) -> None:
    assert tower.patch_grid == (4, 4) and tower.num_patches == 16
    assert tower.hidden_size == 32 and tower.image_size == (56, 56)
    assert tower.image_mean == (0.5, 0.5, 0.5) and tower.image_std == (0.5, 0.5, 0.5)
    assert tower.interpolation == "bicubic"
    out = tower(_frames(2, 3, 56))
    assert out.shape == (2, 3, 16, 32) and out.dtype == torch.float32
    # Frames are encoded independently: one frame alone gives the same tokens.
    alone = tower(_frames(2, 3, 56)[:1, 1:2])
    torch.testing.assert_close(alone[0, 0], out[0, 1], rtol=1e-5, atol=1e-5)


def test_tiny_sizes_can_be_overridden() -> None:
    tower = VisionTower("tiny:siglip?image_size=70&width=48&depth=2&heads=3")
    assert tower.patch_grid == (5, 5) and tower.hidden_size == 48 and tower.num_blocks == 2
    assert tower(_frames(1, 2, 70)).shape == (1, 2, 25, 48)


@pytest.mark.parametrize(("select_layer", "block"), [(-2, 1), (-1, 2), (1, 0)])
def test_select_layer_is_a_block_output_before_the_final_norm(select_layer: int, block: int) -> None:
    tower = VisionTower("tiny:siglip", select_layer=select_layer)
    reference = open_clip.create_model(f"local-dir:{resolve('tiny:siglip')}").eval()
    x = _frames(1, 2, 56)
    outputs = _block_outputs(reference.visual.trunk.blocks, lambda: reference.encode_image(x[0]))
    assert len(outputs) == 3  # the tiny trunk has 3 blocks
    got = tower(x)[0]
    torch.testing.assert_close(got, outputs[block], rtol=1e-5, atol=1e-5)
    for other in set(range(3)) - {block}:
        assert not torch.allclose(got, outputs[other], atol=1e-3)
    # The final norm is not applied (SigLIP's post-layernorm / timm's `norm`).
    if block == 2:
        assert not torch.allclose(got, reference.visual.trunk.norm(outputs[2]), atol=1e-3)


def test_default_is_the_second_to_last_layer_and_unused_parts_are_dropped(tower: VisionTower) -> None:
    assert tower.select_layer == -2 and tower.block_index == tower.num_blocks - 2
    names = [n for n, _ in tower.named_parameters()]
    assert not any(n.startswith("model.trunk.blocks.2.") for n in names)  # after the selected block
    assert not any("attn_pool" in n for n in names)  # SigLIP's MAP head
    assert not any(n.startswith(("text", "model.text", "model.transformer.")) for n in names)


@pytest.mark.parametrize("select_layer", [0, 4, -4])
def test_select_layer_out_of_range_is_an_error(select_layer: int) -> None:
    with pytest.raises(ValueError, match=f"select_layer={select_layer}"):
        VisionTower("tiny:siglip", select_layer=select_layer)


def test_frozen_tower_has_no_gradients_and_stays_in_eval(tower: VisionTower) -> None:
    assert all(not p.requires_grad for p in tower.parameters())
    parent = torch.nn.ModuleDict({"tower": tower, "head": torch.nn.Linear(32, 1)})
    parent.train()
    assert parent["head"].training and not tower.model.training
    assert not any(m.training for m in tower.model.modules())
    pixels = _frames(1, 2, 56).requires_grad_(True)
    out = tower(pixels)
    assert not out.requires_grad
    parent["head"](out).sum().backward()
    assert all(p.grad is None for p in tower.parameters()) and pixels.grad is None
    parent.eval()
    parent.train()
    assert not tower.model.training


def test_unfrozen_tower_trains() -> None:
    tower = VisionTower("tiny:siglip", trainable="full")
    tower.train()
    assert tower.model.training and all(p.requires_grad for p in tower.parameters())
    tower(_frames(1, 2, 56)).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())


def test_bad_inputs_are_clear_errors(tower: VisionTower) -> None:
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        tower(torch.zeros(2, 3, 56, 56))
    with pytest.raises(ValueError, match="expects 56x56 frames"):
        tower(torch.zeros(1, 1, 3, 64, 64))
    with pytest.raises(ValueError, match="built-in architecture"):
        VisionTower("ViT-B-16-SigLIP")
    with pytest.raises(ValueError, match="open_clip cannot load"):
        VisionTower("/no/such/folder")
    with pytest.raises(FileNotFoundError, match="open_clip folder"):
        VisionTower("tiny:siglip", backend="transformers")


def test_open_clip_native_vision_transformer(tmp_path: Path) -> None:
    """A non-timm open_clip tower (class token, ln_pre) goes through the same path."""
    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}})
    )
    torch.manual_seed(0)
    save_file(open_clip.CLIP(**model_cfg).state_dict(), str(tmp_path / "open_clip_model.safetensors"))

    tower = VisionTower(str(tmp_path))
    reference = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    assert tower.patch_grid == (4, 4) and tower.hidden_size == 32
    assert tower.image_mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    x = _frames(2, 1, 32)
    outputs = _block_outputs(reference.visual.transformer.resblocks, lambda: reference.encode_image(x[:, 0]))
    got = tower(x)[:, 0]
    assert got.shape == (2, 16, 32)
    torch.testing.assert_close(got, outputs[1][:, 1:], rtol=1e-5, atol=1e-5)  # class token dropped


def test_open_clip_folder_without_weights_is_an_error(tmp_path: Path) -> None:
    config = json.loads((Path(resolve("tiny:siglip")) / "open_clip_config.json").read_text())
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="could not be loaded"):
        VisionTower(str(tmp_path))


def test_the_paper_hub_id_fails_fast_offline_without_network() -> None:
    """Tests run offline: the real tower is looked up in the local hub cache only, never fetched."""
    with pytest.raises(RuntimeError) as info:
        VisionTower()  # hf-hub:timm/ViT-SO400M-14-SigLIP-384
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert not any(isinstance(e, NetworkBlocked) for e in chain)
    assert "ViT-SO400M-14-SigLIP-384" in str(info.value)


def _save_hf(model: torch.nn.Module, folder: Path, image_size: int, with_processor: bool = True) -> Path:
    model.save_pretrained(folder)
    if with_processor:
        SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def _siglip_vision_config() -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
    )


def test_transformers_siglip_vision_model_by_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = _save_hf(SiglipVisionModel(_siglip_vision_config()), tmp_path / "siglip", 56)
    tower = VisionTower(str(folder), backend="transformers")
    assert tower.patch_grid == (4, 4) and tower.hidden_size == 32 and tower.image_size == (56, 56)
    assert tower.image_mean == (0.5, 0.5, 0.5) and tower.interpolation == "bicubic"
    x = _frames(2, 2, 56)
    reference = SiglipVisionModel.from_pretrained(folder).eval()
    expected = reference(pixel_values=x.flatten(0, 1), output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(tower(x), expected.reshape(2, 2, 16, 32), rtol=1e-5, atol=1e-5)
    assert all(not p.requires_grad for p in tower.parameters()) and not tower.model.training
    names = [n for n, _ in tower.named_parameters()]
    assert not any(n.startswith(("encoder.layers.2.", "post_layernorm", "head")) for n in names)
    unfrozen = VisionTower(str(folder), backend="transformers", trainable="full")
    unfrozen(x).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unfrozen.parameters())


def test_transformers_dual_encoder_checkpoint_uses_its_vision_half(tmp_path: Path) -> None:
    """VideoLLaMA2 loads google/siglip-so400m-patch14-384 (a full SigLIP) with SiglipVisionModel."""
    config = SiglipConfig(
        vision_config=_siglip_vision_config().to_dict(),
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 64,
        },
    )
    torch.manual_seed(0)
    full = SiglipModel(config).eval()
    folder = _save_hf(full, tmp_path / "full", 56)
    tower = VisionTower(str(folder), backend="transformers", select_layer=-1)
    assert type(tower.model).__name__ == "SiglipVisionModel"
    x = _frames(1, 1, 56)
    expected = full.vision_model(pixel_values=x[0], output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(tower(x)[0], expected, rtol=1e-5, atol=1e-5)


def test_transformers_clip_drops_the_class_token(tmp_path: Path) -> None:
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
    )
    torch.manual_seed(0)
    folder = _save_hf(CLIPVisionModel(config), tmp_path / "clip", 56)
    tower = VisionTower(str(folder), backend="transformers")
    x = _frames(1, 1, 56)
    expected = CLIPVisionModel.from_pretrained(folder)(
        pixel_values=x[0], output_hidden_states=True
    ).hidden_states[-2]
    got = tower(x)[0]
    assert got.shape == (1, 16, 32)
    torch.testing.assert_close(got, expected[:, 1:], rtol=1e-5, atol=1e-5)


def test_transformers_without_image_processor_is_an_error(tmp_path: Path) -> None:
    folder = _save_hf(SiglipVisionModel(_siglip_vision_config()), tmp_path / "bare", 56, with_processor=False)
    with pytest.raises(FileNotFoundError, match=r"preprocessor_config\.json"):
        VisionTower(str(folder), backend="transformers")


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_dtype_casts_every_weight_and_features_come_back_in_the_frames_dtype(
    backend: str, tmp_path: Path
) -> None:
    name = "tiny:siglip"
    if backend == "transformers":
        torch.manual_seed(0)
        name = str(_save_hf(SiglipVisionModel(_siglip_vision_config()), tmp_path / "siglip", 56))
    full = VisionTower(name, backend=backend)
    low = VisionTower(name, backend=backend, dtype="bfloat16")
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    assert {p.dtype for p in low.parameters()} == {torch.bfloat16}
    x = _frames(2, 2, 56)
    reference, out = full(x), low(x)
    assert out.dtype == torch.float32 and low(x.bfloat16()).dtype == torch.bfloat16
    # Computed in bf16 (not identical), yet the same features up to bf16 rounding.
    assert not torch.equal(out, reference)
    assert (out - reference).norm() / reference.norm() < 0.02
    with pytest.raises(ValueError, match="dtype must be one of"):
        VisionTower(name, backend=backend, dtype="float64")  # type: ignore[arg-type]
