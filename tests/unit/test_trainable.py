"""One training vocabulary (frozen / lora / full) for every component.

For each component and each mode it accepts: exactly the intended parameters require grad, and an
optimizer step over *all* parameters changes exactly those. The intended sets are computed from
the module's own structure (its submodules, peft's ``lora_`` names), not from ``requires_grad``.
Refused modes name the component; the tiny fused model's table matches its YAML.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from multimood.data.fbank import BEATS_MEL_BINS
from multimood.models.audio import AudioTower
from multimood.models.compressor import MambaHistoryCompressor
from multimood.models.llm import LanguageModel
from multimood.models.modes import eval_frozen_parts
from multimood.models.projectors import AudioProjector
from multimood.models.stc import STCConnector
from multimood.models.trainable import (
    check_trainable,
    format_trainable_table,
    set_requires_grad,
    trainable_table,
)
from multimood.models.vision import VisionTower

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
TURNS = [
    "Client (emotion: sadness): I could not sleep again last night.",
    "Therapist (emotion: neutral; strategy: Open question): What kept you awake?",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def _requires_grad(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def _names(module: nn.Module, keep: Callable[[str], bool] = lambda n: True) -> set[str]:
    return {n for n, _ in module.named_parameters() if keep(n)}


def _changed_by_a_step(module: nn.Module, forward: Callable[[nn.Module], torch.Tensor]) -> set[str]:
    """Names of the parameters one AdamW step over *every* parameter of ``module`` changes.

    The optimizer gets all parameters, frozen ones included: a frozen parameter that received a
    gradient would move, so the set shows what really trains, not what was handed to the optimizer.
    LoRA B matrices start at zero, which zeroes the gradient of A; they are first set to non-zero
    values (as a trained stage leaves them) so that every adapter gets a gradient.
    """
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    module.train()
    anchor = torch.zeros((), requires_grad=True)  # a graph to call backward on when nothing trains
    loss = forward(module).float().pow(2).mean() + anchor
    loss.backward()
    optimizer.step()
    return {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}


# ---- the helpers ---------------------------------------------------------------------------------


def test_check_trainable_names_the_component_the_option_and_the_choices() -> None:
    assert check_trainable("LanguageModel", "lora") == "lora"
    with pytest.raises(ValueError, match=r"^Thing: trainable='partial' is not a training mode; use one of"):
        check_trainable("Thing", "partial")
    with pytest.raises(
        ValueError,
        match=r"^Thing: head_trainable='lora' is not supported \(no adapters here\); use one of 'frozen', 'full'$",
    ):
        check_trainable(
            "Thing", "lora", allowed=("frozen", "full"), option="head_trainable", why="no adapters here"
        )


def test_set_requires_grad_freezes_and_unfreezes_every_parameter() -> None:
    module = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    set_requires_grad(module, "frozen")
    assert _requires_grad(module) == set()
    set_requires_grad(module, "full")
    assert _requires_grad(module) == _names(module) and len(_names(module)) == 4
    with pytest.raises(ValueError, match="'frozen' or 'full'"):
        set_requires_grad(module, "lora")


# ---- each component, each mode -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_vision_tower(mode: str) -> None:
    tower = VisionTower("tiny:siglip", trainable=mode)
    assert tower.trainable == mode
    expected = _names(tower) if mode == "full" else set()
    assert len(_names(tower)) > 10
    assert _requires_grad(tower) == expected
    size = tower.image_size[0]
    assert _changed_by_a_step(tower, lambda m: m(torch.randn(1, 2, 3, size, size))) == expected
    assert tower.model.training == (mode == "full")  # a frozen tower stays in eval mode


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_audio_tower(mode: str) -> None:
    tower = AudioTower("tiny:beats", trainable=mode)
    assert tower.trainable == mode
    expected = _names(tower) if mode == "full" else set()
    assert len(_names(tower)) > 10
    assert _requires_grad(tower) == expected
    fbank = torch.randn(1, 100, BEATS_MEL_BINS)
    assert _changed_by_a_step(tower, lambda m: m(fbank)[0]) == expected
    assert tower.encoder.training == (mode == "full")


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_stc_connector(mode: str) -> None:
    stc = STCConnector(in_dim=8, out_dim=12, hidden_dim=8, depth=1, trainable=mode)
    assert stc.trainable == mode
    # Every submodule with weights: the RegStages, the Conv3d sampler and the readout MLP.
    every = set().union(
        *({f"{part}.{n}" for n in _names(getattr(stc, part))} for part in ("s1", "sampler", "s2", "readout"))
    )
    assert every == _names(stc)
    expected = every if mode == "full" else set()
    assert _requires_grad(stc) == expected
    assert _changed_by_a_step(stc, lambda m: m(torch.randn(1, 2, 16, 8))) == expected


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_audio_projector(mode: str) -> None:
    projector = AudioProjector(8, 12, kind="mlp2x_gelu", trainable=mode)
    assert projector.trainable == mode
    expected = {"proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias"} if mode == "full" else set()
    assert _requires_grad(projector) == expected
    assert _changed_by_a_step(projector, lambda m: m(torch.randn(1, 3, 8))) == expected


def _llm_loss(llm: LanguageModel) -> torch.Tensor:
    ids = llm.tokenizer(["I feel tired today", "hello"], return_tensors="pt", padding=True)
    return llm(
        inputs_embeds=llm.embed(ids["input_ids"]),
        attention_mask=ids["attention_mask"],
        labels=ids["input_ids"],
    ).loss


@pytest.mark.parametrize("mode", ["frozen", "lora", "full"])
def test_language_model(mode: str) -> None:
    llm = LanguageModel("tiny:qwen2", trainable=mode, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    assert llm.trainable == mode
    lora = _names(llm, lambda n: "lora_" in n)
    assert bool(lora) == (mode == "lora")  # adapters exist in the lora mode only
    expected = {"frozen": set(), "lora": lora, "full": _names(llm)}[mode]
    assert _requires_grad(llm) == expected
    assert _changed_by_a_step(llm, _llm_loss) == expected


def _compressor_loss(model: MambaHistoryCompressor) -> torch.Tensor:
    tok = model.history_tokenizer
    ids, mask = tok.collate([tok(TURNS), tok(TURNS[:1])])
    memory, valid = model(ids, mask)
    return memory[valid]


@pytest.mark.parametrize(
    ("backbone", "projector", "lora_r"),
    [
        ("full", "full", 0),
        ("full", "frozen", 0),
        ("lora", "full", 4),  # paper stage A
        ("lora", "frozen", 4),
        ("frozen", "full", 0),  # configs/model/paper.yaml
        ("frozen", "frozen", 4),  # paper stage C after a LoRA stage A: adapters kept, frozen
        ("frozen", "frozen", 0),
    ],
)
def test_history_compressor(backbone: str, projector: str, lora_r: int) -> None:
    model = MambaHistoryCompressor(
        backbone="tiny:mamba",
        llm_hidden_size=24,
        backbone_trainable=backbone,
        projector_trainable=projector,
        lora_r=lora_r,
        lora_alpha=8,
        lora_dropout=0.0,
    )
    assert (model.backbone_trainable, model.projector_trainable) == (backbone, projector)
    in_backbone = _names(model, lambda n: n.startswith("backbone."))
    adapters = {n for n in in_backbone if "lora_" in n}
    assert bool(adapters) == (lora_r > 0)
    # The learned <MEM> vector goes with P_H.
    head = {f"projector.{n}" for n in _names(model.projector)} | {"mem_embedding"}
    assert in_backbone | head == _names(model)
    expected = {"full": in_backbone, "lora": adapters, "frozen": set()}[backbone]
    expected = expected | (head if projector == "full" else set())
    assert _requires_grad(model) == expected
    assert _changed_by_a_step(model, _compressor_loss) == expected


# ---- refused modes -------------------------------------------------------------------------------


def test_refused_modes_name_the_component_before_anything_loads() -> None:
    # Names that do not exist: the mode is checked first, so the error is about the mode.
    with pytest.raises(
        ValueError, match=r"^VisionTower: trainable='lora' is not supported \(the encoder towers"
    ):
        VisionTower("/no/such/tower", trainable="lora")
    with pytest.raises(ValueError, match=r"^AudioTower: trainable='lora' is not supported"):
        AudioTower("/no/such/beats.pt", trainable="lora")
    with pytest.raises(ValueError, match=r"^AudioTower: trainable=True is not a training mode"):
        AudioTower("/no/such/beats.pt", trainable=True)  # type: ignore[arg-type]  # the old bool
    with pytest.raises(ValueError, match=r"^STCConnector: trainable='lora' is not supported"):
        STCConnector(8, 12, trainable="lora")
    with pytest.raises(ValueError, match=r"^AudioProjector: trainable='half' is not a training mode"):
        AudioProjector(8, 12, trainable="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^LanguageModel: trainable='qlora' is not a training mode"):
        LanguageModel("/no/such/llm", trainable="qlora")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^LanguageModel: trainable='lora' needs lora_r >= 1"):
        LanguageModel("/no/such/llm", trainable="lora", lora_r=0)
    with pytest.raises(ValueError, match=r"^LanguageModel: load_in_4bit=True cannot take trainable='full'"):
        LanguageModel("/no/such/llm", trainable="full", load_in_4bit=True)

    def compressor(**kwargs) -> MambaHistoryCompressor:
        return MambaHistoryCompressor(backbone="/no/such/mamba", llm_hidden_size=8, **kwargs)

    with pytest.raises(
        ValueError, match=r"^MambaHistoryCompressor: backbone_trainable='some' is not a training"
    ):
        compressor(backbone_trainable="some")
    with pytest.raises(
        ValueError, match=r"^MambaHistoryCompressor: projector_trainable='lora' is not supported"
    ):
        compressor(projector_trainable="lora")
    with pytest.raises(
        ValueError, match=r"^MambaHistoryCompressor: backbone_trainable='lora' needs lora_r > 0"
    ):
        compressor(backbone_trainable="lora")
    with pytest.raises(
        ValueError, match=r"^MambaHistoryCompressor: backbone_trainable='full' trains the backbone"
    ):
        compressor(lora_r=4)  # lora_r alone no longer switches LoRA on
    with pytest.raises(ValueError, match=r"^MambaHistoryCompressor: load_in_4bit=True cannot take"):
        compressor(load_in_4bit=True)
    with pytest.raises(ValueError, match=r"backbone_trainable='lora' needs lora_r > 0"):
        MambaHistoryCompressor.paper_config_on_meta(backbone_trainable="lora")


# ---- the table -----------------------------------------------------------------------------------


def _declared_in_yaml(part: dict) -> dict[str, str]:
    """The modes a YAML part asks for: its trainable options, else the constructor defaults."""
    module, _, name = part["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    args = part.get("init_args") or {}
    return {
        key: args.get(key, param.default)
        for key, param in inspect.signature(cls.__init__).parameters.items()
        if key == "trainable" or key.endswith("_trainable")
    }


def test_the_tiny_models_table_matches_its_yaml() -> None:
    from jsonargparse import ArgumentParser

    from multimood.models.multimood import MultiMoodModel

    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())["init_args"]
    parser = ArgumentParser()
    parser.add_subclass_arguments(MultiMoodModel, "model")
    model = parser.instantiate(parser.parse_args(["--model", str(CONFIGS / "tiny.yaml")])).model
    table = model.trainable_table()
    assert list(table) == list(config)  # every part, in the YAML's order
    for part, row in table.items():
        declared = _declared_in_yaml(config[part])
        assert declared, part
        assert {k: v for k, v in row.items() if k.endswith("trainable")} == declared, part

    # What the YAML says, counted from the parts' structure: LoRA only in the LLM, both towers and
    # the compressor backbone frozen, connector and projectors whole.
    def size(module: nn.Module, keep: Callable[[str], bool] = lambda n: True) -> int:
        return sum(p.numel() for n, p in module.named_parameters() if keep(n))

    compressor = model.history_compressor
    expected_trainable = {
        "llm": size(model.llm, lambda n: "lora_" in n),
        "vision_tower": 0,
        "video_connector": size(model.video_connector),
        "audio_tower": 0,
        "audio_projector": size(model.audio_projector),
        "history_compressor": size(compressor.projector) + compressor.mem_embedding.numel(),
    }
    assert {k: row["trainable_params"] for k, row in table.items()} == expected_trainable
    assert all(row["total_params"] == size(getattr(model, k)) for k, row in table.items())
    assert expected_trainable["llm"] > 0
    text = format_trainable_table(table)
    assert "backbone_trainable=frozen, projector_trainable=full" in text and "trainable=lora" in text


def test_a_4bit_weight_counts_with_its_logical_size() -> None:
    quantized = LanguageModel("tiny:qwen2", trainable="frozen", load_in_4bit=True)
    plain = LanguageModel("tiny:qwen2", trainable="frozen")
    holder = nn.ModuleDict({"q": quantized, "p": plain})
    table = trainable_table(holder)
    assert sum(p.numel() for p in quantized.parameters()) < sum(p.numel() for p in plain.parameters())
    assert (
        table["q"]
        == table["p"]
        == {
            "trainable": "frozen",
            "trainable_params": 0,
            "total_params": sum(p.numel() for p in plain.parameters()),
        }
    )


def test_a_plug_in_part_without_modes_has_counts_only() -> None:
    holder = nn.ModuleDict({"mine": nn.Linear(3, 2), "stc": STCConnector(8, 12, depth=0, trainable="frozen")})
    holder["mine"].bias.requires_grad_(False)
    table = trainable_table(holder)
    assert table["mine"] == {"trainable_params": 6, "total_params": 8}
    assert table["stc"]["trainable"] == "frozen" and table["stc"]["trainable_params"] == 0


def test_a_frozen_connector_stays_in_eval_mode_in_a_training_model() -> None:
    model = nn.ModuleDict(
        {
            "frozen": STCConnector(8, 12, hidden_dim=8, depth=1, trainable="frozen"),
            "full": AudioProjector(8, 12, trainable="full"),
        }
    )
    model.train()
    assert eval_frozen_parts(model) == ["frozen"]
    assert not any(m.training for m in model["frozen"].modules())
    assert all(m.training for m in model["full"].modules())
