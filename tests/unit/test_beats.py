"""BEATs encoder: official checkpoint layout, token geometry, padding, gradients, the tiny builder."""

from __future__ import annotations

import math
import warnings
import zlib
from pathlib import Path

import pytest
import torch

from multimood.data.fbank import beats_fbank, fbank_num_frames
from multimood.hub import resolve
from multimood.models.beats import (
    BEATsConfig,
    BEATsEncoder,
    _WeightNormConv1d,
    relative_position_buckets,
)
from multimood.tiny.beats import CHECKPOINT_NAME, TINY_BEATS_CFG, build_tiny_beats

# State-dict names of microsoft/unilm beats/BEATs.py + backbone.py for a 2-layer model with
# relative position bias, gated (gru_rel_pos) and embed_dim != encoder_embed_dim. The shared
# relative position table is listed once per layer, as torch does for a module shared by name.
OFFICIAL_LAYER_KEYS = [
    "self_attn.relative_attention_bias.weight",
    "self_attn.grep_a",
    *(
        f"self_attn.{proj}.{p}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj")
        for p in ("weight", "bias")
    ),
    "self_attn.grep_linear.weight",
    "self_attn.grep_linear.bias",
    *(
        f"{name}.{p}"
        for name in ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
        for p in ("weight", "bias")
    ),
]
OFFICIAL_KEYS = {
    "post_extract_proj.weight",
    "post_extract_proj.bias",
    "patch_embedding.weight",
    "encoder.pos_conv.0.weight_g",
    "encoder.pos_conv.0.weight_v",
    "encoder.pos_conv.0.bias",
    *(f"encoder.layers.{i}.{key}" for i in range(2) for key in OFFICIAL_LAYER_KEYS),
    "encoder.layer_norm.weight",
    "encoder.layer_norm.bias",
    "layer_norm.weight",
    "layer_norm.bias",
}


@pytest.fixture(scope="module")
def tiny_path() -> str:
    return resolve("tiny:beats")


@pytest.fixture(scope="module")
def model(tiny_path: str) -> BEATsEncoder:
    return BEATsEncoder.from_checkpoint(tiny_path).eval()


def _noise(num_samples: int, seed: int) -> torch.Tensor:
    return torch.randn(num_samples, generator=torch.Generator().manual_seed(seed)) * 0.1


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


# ---- the tiny builder ---------------------------------------------------------------------------


def test_tiny_beats_is_deterministic_in_the_official_layout(tmp_path: Path, tiny_path: str) -> None:
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        build_tiny_beats(tmp_path / name, {"seed": seed})
    a, b, c = (_load(tmp_path / name / CHECKPOINT_NAME) for name in "abc")
    assert set(a) == {"cfg", "model"}
    assert a["cfg"] == TINY_BEATS_CFG
    assert set(a["model"]) == OFFICIAL_KEYS
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in OFFICIAL_KEYS)
    assert not torch.equal(
        a["model"]["encoder.layers.0.fc1.weight"], c["model"]["encoder.layers.0.fc1.weight"]
    )
    # resolve() builds the same default (seed 0) into a folder holding one checkpoint.
    files = [p.name for p in Path(tiny_path).iterdir() if p.suffix == ".pt"]
    assert files == [CHECKPOINT_NAME]
    resolved = _load(Path(tiny_path) / CHECKPOINT_NAME)
    assert all(torch.equal(a["model"][k], resolved["model"][k]) for k in OFFICIAL_KEYS)


def test_tiny_beats_rejects_unknown_overrides(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['encoder_width'\]"):
        build_tiny_beats(tmp_path, {"encoder_width": 64})


def test_tiny_beats_keeps_the_real_patch_geometry(model: BEATsEncoder) -> None:
    assert model.config.input_patch_size == 16
    assert model.patch_embedding.weight.shape[-2:] == (16, 16)
    assert model.output_dim == TINY_BEATS_CFG["encoder_embed_dim"]


# ---- cfg ----------------------------------------------------------------------------------------


def test_cfg_missing_keys_are_all_listed() -> None:
    cfg = {k: v for k, v in TINY_BEATS_CFG.items() if k not in ("max_distance", "deep_norm")}
    with pytest.raises(ValueError, match=r"missing required key\(s\): deep_norm, max_distance") as info:
        BEATsConfig.from_dict(cfg, source="x.pt")
    assert str(info.value).startswith("x.pt:")
    finetuned = {k: v for k, v in TINY_BEATS_CFG.items() if k != "predictor_class"} | {
        "finetuned_model": True
    }
    with pytest.raises(ValueError, match=r"missing required key\(s\): predictor_class"):
        BEATsConfig.from_dict(finetuned)
    # A pretrained (not fine-tuned) cfg needs no predictor keys, as in the released files.
    pretrained = {k: v for k, v in TINY_BEATS_CFG.items() if not k.startswith("predictor_")}
    assert BEATsConfig.from_dict(pretrained).to_dict() == pretrained


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activation_fn": "glu"}, "activation_fn"),
        ({"encoder_attention_heads": 5}, "divisible by encoder_attention_heads"),
        ({"layer_norm_first": True}, "deep_norm and layer_norm_first"),
        ({"gru_rel_pos": "yes"}, "gru_rel_pos"),
        ({"encoder_layers": 0}, "encoder_layers"),
    ],
)
def test_cfg_rejects_bad_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BEATsConfig.from_dict(TINY_BEATS_CFG | change)


def test_cfg_unknown_keys_warn_and_are_written_back(tmp_path: Path, tiny_path: str) -> None:
    checkpoint = _load(Path(tiny_path) / CHECKPOINT_NAME)
    checkpoint["cfg"]["future_option"] = 3
    torch.save(checkpoint, tmp_path / "x.pt")
    with pytest.warns(UserWarning, match="future_option"):
        model = BEATsEncoder.from_checkpoint(tmp_path / "x.pt")
    model.to_checkpoint(tmp_path / "y.pt")
    assert _load(tmp_path / "y.pt")["cfg"] == checkpoint["cfg"]


# ---- checkpoints --------------------------------------------------------------------------------


def test_checkpoint_round_trip_keeps_keys_and_outputs(
    tmp_path: Path, tiny_path: str, model: BEATsEncoder
) -> None:
    saved = model.to_checkpoint(tmp_path / "again.pt")
    original, written = _load(Path(tiny_path) / CHECKPOINT_NAME), _load(saved)
    assert set(written) == {"cfg", "model"} and written["cfg"] == original["cfg"]
    assert set(written["model"]) == set(original["model"]) == OFFICIAL_KEYS
    assert all(torch.equal(written["model"][k], original["model"][k]) for k in OFFICIAL_KEYS)
    again = BEATsEncoder.from_checkpoint(saved).eval()
    waveform = _noise(16_000, seed=0)[None]
    with torch.no_grad():
        assert torch.equal(model(waveform)[0], again(waveform)[0])


def test_missing_and_unexpected_weight_keys_are_listed(tmp_path: Path, tiny_path: str) -> None:
    checkpoint = _load(Path(tiny_path) / CHECKPOINT_NAME)
    del checkpoint["model"]["encoder.layers.1.fc2.bias"]
    del checkpoint["model"]["layer_norm.weight"]
    checkpoint["model"]["predictor.weight"] = torch.zeros(5, 32)
    torch.save(checkpoint, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt") as info:
        BEATsEncoder.from_checkpoint(tmp_path / "bad.pt")
    text = str(info.value)
    assert "missing keys: ['encoder.layers.1.fc2.bias', 'layer_norm.weight']" in text
    assert "unexpected keys: ['predictor.weight']" in text


def test_shared_relative_position_table_copies_must_agree(tmp_path: Path, tiny_path: str) -> None:
    checkpoint = _load(Path(tiny_path) / CHECKPOINT_NAME)
    key = "encoder.layers.1.self_attn.relative_attention_bias.weight"
    checkpoint["model"][key] = checkpoint["model"][key] + 1
    torch.save(checkpoint, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=f"{key} differs"):
        BEATsEncoder.from_checkpoint(tmp_path / "bad.pt")


def test_checkpoint_folder_must_hold_exactly_one_file(tmp_path: Path, tiny_path: str) -> None:
    with pytest.raises(ValueError, match="found none"):
        BEATsEncoder.from_checkpoint(tmp_path)
    for name in ("a.pt", "b.pth"):
        (tmp_path / name).write_bytes((Path(tiny_path) / CHECKPOINT_NAME).read_bytes())
    with pytest.raises(ValueError, match=r"found \['a.pt', 'b.pth'\]"):
        BEATsEncoder.from_checkpoint(tmp_path)
    torch.save({"model": {}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="need 'cfg' and 'model'"):
        BEATsEncoder.from_checkpoint(tmp_path / "c.pt")


def test_weight_norm_matches_torch_and_loads_parametrization_names(tmp_path: Path, tiny_path: str) -> None:
    from torch.nn.utils.parametrizations import weight_norm

    ours = _WeightNormConv1d(channels=8, kernel_size=6, groups=2)
    reference = weight_norm(torch.nn.Conv1d(8, 8, 6, padding=3, groups=2), dim=2)
    with torch.no_grad():
        ours.weight_g.mul_(torch.rand_like(ours.weight_g) + 0.5)
        reference.parametrizations.weight.original0.copy_(ours.weight_g)
        reference.parametrizations.weight.original1.copy_(ours.weight_v)
        reference.bias.copy_(torch.randn(8))
        ours.bias.copy_(reference.bias)
        torch.testing.assert_close(ours.weight(), reference.weight)
        x = torch.randn(2, 8, 20)
        torch.testing.assert_close(ours(x), reference(x))
    # A checkpoint re-saved with torch's parametrization names loads into the official names.
    checkpoint = _load(Path(tiny_path) / CHECKPOINT_NAME)
    weights = checkpoint["model"]
    weights["encoder.pos_conv.0.parametrizations.weight.original0"] = weights.pop(
        "encoder.pos_conv.0.weight_g"
    )
    weights["encoder.pos_conv.0.parametrizations.weight.original1"] = weights.pop(
        "encoder.pos_conv.0.weight_v"
    )
    torch.save(checkpoint, tmp_path / "renamed.pt")
    loaded = BEATsEncoder.from_checkpoint(tmp_path / "renamed.pt")
    assert set(loaded.state_dict()) == OFFICIAL_KEYS


# ---- geometry and padding -----------------------------------------------------------------------


def test_token_geometry_follows_the_paper(model: BEATsEncoder) -> None:
    # 10 s at 16 kHz -> 998 frames of 25 ms every 10 ms -> 62 whole 16-frame steps x 8 mel patches.
    assert fbank_num_frames(160_000) == 998 and model.num_tokens(998) == 496
    with torch.no_grad():
        features, mask = model.extract_features(_noise(160_000, seed=1)[None])
    assert features.shape == (1, 496, model.output_dim) and mask.shape == (1, 496) and not mask.any()
    # 30 s -> 2998 frames -> 187 x 8 = 1,496 tokens, what VideoLLaMA2-AV's 30 s window gives; the
    # fbank values do not matter here.
    assert fbank_num_frames(480_000) == 2998 and model.num_tokens(2998) == 1496
    with torch.no_grad():
        features, _ = model.forward_fbank(torch.randn(1, 2998, 128))
    assert features.shape == (1, 1496, model.output_dim)
    assert torch.isfinite(features).all()


def test_padded_batch_gives_each_clip_its_own_features(model: BEATsEncoder) -> None:
    lengths = [32_000, 20_837, 9_100]  # 2 s, an odd length, and one that does not fill a whole patch
    clips = [_noise(n, seed=i) for i, n in enumerate(lengths)]
    waveforms = torch.zeros(len(clips), max(lengths))
    padding = torch.ones(len(clips), max(lengths), dtype=torch.bool)
    for i, clip in enumerate(clips):
        waveforms[i, : clip.numel()] = clip
        padding[i, : clip.numel()] = False
    with torch.no_grad():
        features, mask = model.extract_features(waveforms, padding)
        for i, clip in enumerate(clips):
            alone, _ = model.extract_features(clip[None])
            valid = model.num_tokens(fbank_num_frames(clip.numel()))
            assert alone.shape[1] == valid
            assert mask[i].tolist() == [False] * valid + [True] * (mask.shape[1] - valid)
            torch.testing.assert_close(features[i, :valid], alone[0], atol=1e-5, rtol=1e-4)


def test_official_padding_rule_matches_hand_computed_mask(tiny_path: str) -> None:
    """3 s batch (48,000 samples, 298 frames, 18 x 8 = 144 tokens), one clip of 32,000 samples.

    exact: 198 whole frames -> 12 whole 16-frame steps -> 96 tokens.
    official: 48,000 % 298 = 22 samples dropped, chunks of 161 samples: chunk i is all padding from
    i = 199 on, so 199 frames; 298 % 144 = 10 frames dropped, chunks of 2 frames: 2k >= 199 from
    k = 100 on, so 100 "valid" tokens, 4 of them from a half-padding 16-frame step.
    """
    padding = torch.zeros(2, 48_000, dtype=torch.bool)
    padding[1, 32_000:] = True
    waveforms = torch.stack([_noise(48_000, seed=3), _noise(48_000, seed=4)]).masked_fill(padding, 0.0)
    valid = {}
    for rule in ("exact", "official"):
        encoder = BEATsEncoder.from_checkpoint(tiny_path, padding_rule=rule).eval()
        with torch.no_grad():
            _, mask = encoder.extract_features(waveforms, padding)
        assert not mask[0].any()
        valid[rule] = (~mask[1]).sum().item()
        assert not mask[1, : valid[rule]].any()  # a prefix
    assert valid == {"exact": 96, "official": 100}


def test_forward_fbank_equals_extract_features(model: BEATsEncoder) -> None:
    lengths = [24_000, 17_000]
    clips = [_noise(n, seed=10 + i) for i, n in enumerate(lengths)]
    waveforms = torch.zeros(2, max(lengths))
    padding = torch.ones(2, max(lengths), dtype=torch.bool)
    for i, clip in enumerate(clips):
        waveforms[i, : clip.numel()], padding[i, : clip.numel()] = clip, False
    # What a DataLoader does: one fbank per clip, padded to the longest with a frame mask.
    fbanks = [beats_fbank(clip) for clip in clips]
    frames = max(f.shape[0] for f in fbanks)
    batch = torch.zeros(2, frames, 128)
    frame_padding = torch.ones(2, frames, dtype=torch.bool)
    for i, fbank in enumerate(fbanks):
        batch[i, : fbank.shape[0]], frame_padding[i, : fbank.shape[0]] = fbank, False
    with torch.no_grad():
        from_waveforms, mask = model.extract_features(waveforms, padding)
        from_fbanks, fbank_mask = model.forward_fbank(batch, frame_padding)
        assert torch.equal(mask, fbank_mask)
        torch.testing.assert_close(from_fbanks[~mask], from_waveforms[~mask], atol=1e-5, rtol=1e-4)
        # Unpadded: the same computation, so identical.
        single, _ = model.forward_fbank(fbanks[0][None])
        assert torch.equal(single, model.extract_features(clips[0][None])[0])


def test_bad_inputs_are_named(model: BEATsEncoder) -> None:
    padding = torch.zeros(2, 16_000, dtype=torch.bool)
    padding[1, 2_000:] = True  # 0.125 s of audio: no whole 16-frame patch
    with pytest.raises(ValueError, match=r"clip\(s\) \[1\] of the batch"):
        model.extract_features(torch.zeros(2, 16_000), padding)
    with pytest.raises(ValueError, match="fbank must be"):
        model.forward_fbank(torch.zeros(1, 100, 64))
    with pytest.raises(ValueError, match="padding_mask must be a bool tensor"):
        model.extract_features(torch.zeros(1, 16_000), torch.zeros(1, 16_000))


# ---- the relative-position bucket cache ---------------------------------------------------------


def test_position_buckets_are_computed_once_and_equal_the_uncached_table(
    monkeypatch: pytest.MonkeyPatch, tiny_path: str
) -> None:
    import multimood.models.beats as beats_module

    uncached = beats_module.relative_position_buckets
    calls: list[int] = []

    def counting(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
        calls.append(length)
        return uncached(length, num_buckets, max_distance)

    monkeypatch.setattr(beats_module, "relative_position_buckets", counting)
    encoder = BEATsEncoder.from_checkpoint(tiny_path).eval()
    short = beats_fbank(_noise(16_000, seed=11))[None]  # 98 frames -> 6 x 8 = 48 tokens
    long = beats_fbank(_noise(32_000, seed=12))[None]  # 198 frames -> 12 x 8 = 96 tokens
    with torch.no_grad():
        first, _ = encoder.forward_fbank(short)
        second, _ = encoder.forward_fbank(short)
        assert calls == [48] and torch.equal(first, second)
        encoder.forward_fbank(long)  # a longer input rebuilds the table once ...
        third, _ = encoder.forward_fbank(short)  # ... and a shorter one reads its corner
    assert calls == [48, 96] and torch.equal(third, first)

    config, layers = encoder.config, encoder.encoder
    table = layers.layers[0].self_attn.relative_attention_bias
    with torch.no_grad():
        for length in (1, 7, 48, 95, 96):
            expected = table(uncached(length, config.num_buckets, config.max_distance)).permute(2, 0, 1)
            assert torch.equal(layers.position_bias(length), expected), length
    assert calls == [48, 96]
    assert set(encoder.state_dict()) == OFFICIAL_KEYS  # the cache is no checkpoint entry

    # Moved to another device (meta stands in for a GPU here), the table is rebuilt there once.
    encoder.to("meta")
    assert layers.position_bias(96).device.type == "meta" and calls == [48, 96, 96]
    assert layers.position_bias(50).device.type == "meta" and calls == [48, 96, 96]


def test_bucket_table_of_a_shorter_input_is_the_corner_of_a_longer_one() -> None:
    """What the cache relies on, at the released model's sizes (320 buckets, max distance 800),
    up to the 1,496 tokens of 30 s, across the exact, log-spaced and clamped bucket ranges."""
    full = relative_position_buckets(1496, 320, 800)
    assert full.min() == 0 and full.max() == 319
    for length in (1, 79, 81, 801, 1200):
        assert torch.equal(full[:length, :length], relative_position_buckets(length, 320, 800)), length


# ---- numerical agreement with microsoft/unilm ---------------------------------------------------


def formula_weights(model: torch.nn.Module) -> None:
    """Overwrite every parameter with a fixed function of its name and index (no RNG involved), so
    that the official implementation can be given exactly the same weights."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            phase = zlib.crc32(name.encode()) % 1000 / 100
            wave = torch.sin(0.37 * torch.arange(param.numel(), dtype=torch.float64) + phase).view(
                param.shape
            )
            if name.endswith(("layer_norm.weight", "grep_a")):
                param.copy_(1 + 0.1 * wave)
            else:
                fan_in = param.numel() // param.shape[0] if param.dim() > 1 else 4
                param.copy_(wave / math.sqrt(fan_in))


def formula_fbank() -> tuple[torch.Tensor, torch.Tensor]:
    """Two fbanks of 200 frames, the second padded from frame 144 (a multiple of 16, where the
    official and the exact padding rules agree)."""
    t = torch.arange(200, dtype=torch.float64)[:, None]
    m = torch.arange(128, dtype=torch.float64)[None, :]
    fbank = torch.stack([torch.sin(0.05 * t + 0.1 * m), torch.cos(0.013 * t * m) - 0.3]).float()
    padding = torch.zeros(2, 200, dtype=torch.bool)
    padding[1, 144:] = True
    return fbank, padding


# Computed by microsoft/unilm beats/BEATs.py (commit 768a3c8) with formula_weights on the tiny cfg,
# its fbank step bypassed to read formula_fbank: features[b, ::12, :3] per clip, and the mean of
# |features| over valid tokens. tests/reference/make_beats_reference.py recomputes them (it needs a
# checkout of unilm's beats/ folder; see its docstring).
OFFICIAL_SLICES = [
    [
        [1.348317, 1.682978, -1.368967],
        [1.262796, 1.678236, -1.300068],
        [2.533199, 0.2732895, -0.4401831],
        [2.557464, 0.4645014, -0.7319159],
        [2.296718, 0.9238893, -1.166672],
        [1.451962, 1.641982, -1.413228],
        [1.262729, 1.676423, -1.298118],
        [1.182251, 1.270639, -0.7157706],
    ],
    [
        [1.29426, 1.69164, -1.328171],
        [2.403345, 0.7679386, -1.040936],
        [1.490675, 1.627127, -1.432694],
        [1.307908, 1.672902, -1.325893],
        [1.164994, 1.615321, -1.135089],
        [1.374558, 1.672211, -1.38713],
        [1.738368, 1.217499, -0.4675112],
        [1.674681, 1.295663, -0.3666296],
    ],
]
OFFICIAL_ABS_MEAN = [0.8331267, 0.8358649]


def test_matches_numbers_from_the_official_implementation() -> None:
    encoder = BEATsEncoder(TINY_BEATS_CFG | {"layer_wise_gradient_decay_ratio": 1.0}).eval()
    formula_weights(encoder)
    fbank, padding = formula_fbank()
    with torch.no_grad():
        features, mask = encoder.forward_fbank(fbank, padding)
    assert mask.sum(1).tolist() == [0, 3 * 8]  # 12 time steps, 9 of them valid in clip 1
    torch.testing.assert_close(features[:, ::12, :3], torch.tensor(OFFICIAL_SLICES), atol=2e-5, rtol=1e-4)
    valid_mean = torch.stack([features[b][~mask[b]].abs().mean() for b in range(2)])
    torch.testing.assert_close(valid_mean, torch.tensor(OFFICIAL_ABS_MEAN), atol=2e-6, rtol=1e-5)


# ---- training and inference modes ---------------------------------------------------------------


def test_gradients_reach_every_weight_when_trainable(tiny_path: str) -> None:
    encoder = BEATsEncoder.from_checkpoint(tiny_path).train()
    fbank = beats_fbank(_noise(8_000, seed=5))[None]
    features, _ = encoder.forward_fbank(fbank)
    features.pow(2).mean().backward()
    no_gradient = [n for n, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_gradient == []
    # Frozen use: eval() + no_grad() gives a graph-free, repeatable result.
    encoder.eval()
    with torch.no_grad():
        first, _ = encoder.forward_fbank(fbank)
        second, _ = encoder.forward_fbank(fbank)
    assert first.grad_fn is None and torch.equal(first, second)


def test_bfloat16_runs_close_to_float32(model: BEATsEncoder) -> None:
    fbank = beats_fbank(_noise(8_000, seed=6))[None]
    with torch.no_grad():
        reference, _ = model.forward_fbank(fbank)
        low, _ = BEATsEncoder.from_checkpoint(resolve("tiny:beats")).eval().bfloat16().forward_fbank(fbank)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, atol=0.15, rtol=0.05)


def test_loading_official_weights_copies_into_the_existing_dtype_unless_assigned(tiny_path: str) -> None:
    weights = {k: v.to(torch.bfloat16) for k, v in _load(Path(tiny_path) / CHECKPOINT_NAME)["model"].items()}
    copied = BEATsEncoder.from_checkpoint(tiny_path)
    copied.load_official_state_dict(weights)
    assert {p.dtype for p in copied.parameters()} == {torch.float32}
    assert torch.equal(
        copied.state_dict()["encoder.layers.1.fc1.weight"], weights["encoder.layers.1.fc1.weight"].float()
    )
    assigned = BEATsEncoder.from_checkpoint(tiny_path)
    assigned.load_official_state_dict(weights, assign=True)
    assert {p.dtype for p in assigned.parameters()} == {torch.bfloat16}
    # The device is kept too: a model on another device (meta stands in for a GPU) stays there,
    # while assigning would have put the checkpoint's CPU tensors in it.
    elsewhere = BEATsEncoder.from_checkpoint(tiny_path).to("meta")
    with pytest.warns(UserWarning, match="copying from a non-meta parameter"):  # torch: copy, no-op on meta
        elsewhere.load_official_state_dict(weights)
    assert {p.device.type for p in elsewhere.parameters()} == {"meta"}


def test_audio_tower_dtype_casts_beats_and_returns_the_fbank_dtype() -> None:
    from multimood.models.audio import AudioTower

    full, low = AudioTower("tiny:beats"), AudioTower("tiny:beats", dtype="bfloat16")
    assert {p.dtype for p in low.parameters()} == {torch.bfloat16}
    fbank = beats_fbank(_noise(16_000, seed=13))[None]
    with torch.no_grad():
        reference, _ = full(fbank)
        features, mask = low(fbank)
    assert features.dtype == torch.float32 and mask.shape == features.shape[:2]
    assert not torch.equal(features, reference)
    assert (features - reference).norm() / reference.norm() < 0.05
    with pytest.raises(ValueError, match="dtype must be one of"):
        AudioTower("tiny:beats", dtype="float64")  # type: ignore[arg-type]


# ---- fine-tuned checkpoints ---------------------------------------------------------------------


def test_finetuned_checkpoint_keeps_or_drops_its_predictor(tmp_path: Path) -> None:
    path = resolve("tiny:beats?finetuned_model=true")
    original = _load(Path(path) / CHECKPOINT_NAME)
    assert set(original["model"]) == OFFICIAL_KEYS | {"predictor.weight", "predictor.bias"}
    assert original["label_dict"] == {i: f"tiny_label_{i}" for i in range(5)}
    encoder = BEATsEncoder.from_checkpoint(path).eval()
    padding = torch.zeros(2, 8_000, dtype=torch.bool)
    padding[1, 5_000:] = True
    with torch.no_grad():
        features, mask = encoder.extract_features(torch.stack([_noise(8_000, 7), _noise(8_000, 8)]), padding)
        probabilities = encoder.classify(features, mask)
    assert features.shape[-1] == encoder.output_dim  # features, never class scores
    assert probabilities.shape == (2, 5) and ((probabilities > 0) & (probabilities < 1)).all()
    written = _load(encoder.to_checkpoint(tmp_path / "kept.pt"))
    assert written["cfg"] == original["cfg"] and written["label_dict"] == original["label_dict"]
    assert set(written["model"]) == set(original["model"])

    dropped = BEATsEncoder.from_checkpoint(path, drop_predictor=True)
    assert dropped.predictor is None and set(dropped.state_dict()) == OFFICIAL_KEYS
    with pytest.raises(ValueError, match="no predictor head"):
        dropped.classify(features)
    written = _load(dropped.to_checkpoint(tmp_path / "dropped.pt"))
    assert written["cfg"]["finetuned_model"] is False and "label_dict" not in written
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BEATsEncoder.from_checkpoint(tmp_path / "dropped.pt")
