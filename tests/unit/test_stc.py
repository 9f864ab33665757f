"""The STC connector: VideoLLaMA2's geometry, its checkpoint layout, frame-count policy, gradients."""

from __future__ import annotations

import pytest
import torch

from multimood.models.stc import STCConnector, videollama2_projector_state_dict


def _tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def videollama2_v35_shapes(c_in: int, d: int) -> dict[str, tuple[int, ...]]:
    """The state dict of VideoLLaMA2's ``STCConnectorV35`` with ``mm_hidden_size=c_in``, ``hidden_size=d``.

    Derived by reading ``videollama2/model/projector.py`` (STCConnector / STCConnectorV35, depth 4,
    mlp_depth 2, downsample (2, 2, 2)) and timm's ``regnet.Bottleneck`` defaults it relies on
    (bottle_ratio 1, group_size 1 -> depthwise 3x3, se_ratio 0.25 of the block's *input* channels,
    1x1 conv + norm shortcut only where channels change; ``ConvNormAct`` names ``conv`` and ``bn``,
    convolutions without bias, LayerNorm2d with weight and bias).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for stage, first_in in (("s1", c_in), ("s2", d)):
        for i in range(1, 5):
            block_in = first_in if i == 1 else d
            se = round(block_in * 0.25)
            p = f"{stage}.b{i}."
            shapes[p + "conv1.conv.weight"] = (d, block_in, 1, 1)
            shapes[p + "conv2.conv.weight"] = (d, 1, 3, 3)
            shapes[p + "se.fc1.weight"] = (se, d, 1, 1)
            shapes[p + "se.fc1.bias"] = (se,)
            shapes[p + "se.fc2.weight"] = (d, se, 1, 1)
            shapes[p + "se.fc2.bias"] = (d,)
            shapes[p + "conv3.conv.weight"] = (d, d, 1, 1)
            for conv in ("conv1", "conv2", "conv3"):
                shapes[p + f"{conv}.bn.weight"] = (d,)
                shapes[p + f"{conv}.bn.bias"] = (d,)
            if block_in != d:
                shapes[p + "downsample.conv.weight"] = (d, block_in, 1, 1)
                shapes[p + "downsample.bn.weight"] = (d,)
                shapes[p + "downsample.bn.bias"] = (d,)
    shapes["sampler.0.weight"] = (d, d, 2, 2, 2)
    shapes["sampler.0.bias"] = (d,)
    for i in (0, 2):
        shapes[f"readout.{i}.weight"] = (d, d)
        shapes[f"readout.{i}.bias"] = (d,)
    return shapes


def test_paper_geometry_gives_1352_tokens() -> None:
    stc = STCConnector(in_dim=16, out_dim=24, hidden_dim=8)
    out = stc(_tokens(1, 16, 27 * 27, 16))  # 16 frames of 27x27 SigLIP patches
    assert out.shape == (1, 8 * 13 * 13, 24) == (1, 1352, 24)
    assert stc.num_tokens(16, (27, 27)) == 1352
    assert stc.output_grid(16, (27, 27)) == (8, 13, 13)


def test_grid_input_equals_flat_input() -> None:
    stc = STCConnector(in_dim=8, out_dim=12, hidden_dim=8, depth=1).eval()
    grid = _tokens(2, 4, 5, 5, 8)
    torch.testing.assert_close(stc(grid), stc(grid.flatten(2, 3)))


def test_real_size_keys_and_shapes_match_videollama2() -> None:
    with torch.device("meta"):
        stc = STCConnector(in_dim=1152, out_dim=3584)  # SigLIP-So400M -> Qwen2-7B
    got = {k: tuple(v.shape) for k, v in stc.state_dict().items()}
    expected = videollama2_v35_shapes(1152, 3584)
    assert got == expected
    assert len(got) == 113
    assert sum(v.numel() for v in stc.state_dict().values()) == 376_889_248


def test_videollama2_checkpoint_loads_strictly() -> None:
    shapes = videollama2_v35_shapes(12, 8)
    gen = torch.Generator().manual_seed(0)
    checkpoint = {f"model.mm_projector.{k}": torch.randn(s, generator=gen) for k, s in shapes.items()}
    checkpoint["model.mm_projector_a.0.weight"] = torch.zeros(8, 4)  # the audio projector is not taken
    checkpoint["model.layers.0.mlp.up_proj.weight"] = torch.zeros(2, 2)
    stc = STCConnector(in_dim=12, out_dim=8)
    result = stc.load_state_dict(videollama2_projector_state_dict(checkpoint), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(stc.sampler[0].weight, checkpoint["model.mm_projector.sampler.0.weight"])
    with pytest.raises(KeyError, match="mm_projector"):
        videollama2_projector_state_dict({"model.layers.0.weight": torch.zeros(1)})


def test_gradients_reach_every_parameter_and_the_input() -> None:
    stc = STCConnector(in_dim=8, out_dim=12, hidden_dim=8)
    x = _tokens(2, 4, 16, 8).requires_grad_(True)
    stc(x).pow(2).mean().backward()
    for name, p in stc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_tokens_are_ordered_time_major() -> None:
    stc = STCConnector(in_dim=8, out_dim=12, hidden_dim=8, depth=1).eval()
    x = _tokens(1, 4, 16, 8)
    changed = x.clone()
    changed[:, 2:] += 1.0  # only the second pair of frames -> only the second time step
    a, b = stc(x), stc(changed)
    assert a.shape == (1, 2 * 2 * 2, 12)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_odd_frame_counts_repeat_the_last_frame_by_default() -> None:
    stc = STCConnector(in_dim=8, out_dim=12, hidden_dim=8, depth=1).eval()
    image = _tokens(2, 1, 16, 8)
    torch.testing.assert_close(stc(image), stc(image.expand(-1, 2, -1, -1)))  # a still image = 2 equal frames
    three = _tokens(1, 3, 16, 8)
    torch.testing.assert_close(stc(three), stc(torch.cat([three, three[:, -1:]], dim=1)))
    assert stc.num_tokens(1, (4, 4)) == 4 and stc.num_tokens(3, (4, 4)) == 8


def test_odd_frame_policies_drop_last_and_error() -> None:
    drop = STCConnector(in_dim=8, out_dim=12, hidden_dim=8, depth=1, odd_frames="drop_last").eval()
    three = _tokens(1, 3, 16, 8)
    torch.testing.assert_close(drop(three), drop(three[:, :2]))  # VideoLLaMA2's Conv3d drops frame 3
    with pytest.raises(ValueError, match="1 frames"):
        drop(_tokens(1, 1, 16, 8))
    strict = STCConnector(in_dim=8, out_dim=12, hidden_dim=8, depth=1, odd_frames="error")
    with pytest.raises(ValueError, match="3 frames"):
        strict(three)
    with pytest.raises(ValueError, match="odd_frames"):
        STCConnector(in_dim=8, out_dim=12, odd_frames="pad")  # type: ignore[arg-type]


def test_bad_inputs_are_clear_errors() -> None:
    stc = STCConnector(in_dim=8, out_dim=12, hidden_dim=8, depth=1)
    with pytest.raises(ValueError, match="square"):
        stc(_tokens(1, 2, 15, 8))
    with pytest.raises(ValueError, match=r"in_dim=8\) got tokens with 7 channels"):
        stc(_tokens(1, 2, 16, 7))
    with pytest.raises(ValueError, match="smaller than"):
        stc(_tokens(1, 2, 1, 8))
    with pytest.raises(ValueError, match=r"\(B, T, N, C\)"):
        stc(_tokens(2, 16, 8))


def test_output_norm_gives_every_token_unit_rms_and_adds_one_gain() -> None:
    torch.manual_seed(0)
    plain = STCConnector(in_dim=8, out_dim=12, hidden_dim=8, depth=1).eval()
    torch.manual_seed(0)
    normed = STCConnector(in_dim=8, out_dim=12, hidden_dim=8, depth=1, output_norm=True).eval()
    assert set(normed.state_dict()) - set(plain.state_dict()) == {"output_norm.weight"}
    x = _tokens(2, 4, 16, 8)
    with torch.no_grad():
        raw, out = plain(x), normed(x)
        # by hand: each token divided by its root-mean-square over the 12 channels (gain 1 at init)
        torch.testing.assert_close(out, raw / raw.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt())
        torch.testing.assert_close(out.pow(2).mean(-1), torch.ones(2, 8), atol=1e-4, rtol=0)
        normed.output_norm.weight.fill_(3.0)
        torch.testing.assert_close(normed(x), 3.0 * out)
