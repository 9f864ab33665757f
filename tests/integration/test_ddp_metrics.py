"""Metrics under two-process CPU DDP (gloo): the union of unequal shards gives the one-process values.

Rank 0 gets 13 samples in three updates, rank 1 gets 4 in one; some predictions do not parse.
Every rank's ``compute()`` must equal one process fed all 17 samples, to 1e-6, for every key of
:class:`MESCMetrics` (BERTScore included), its confusion matrices, and :class:`DFEWClassification`.
"""

from __future__ import annotations

import datetime
import os
import random
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from multimood.data.answer import MISSING, format_answer
from multimood.data.labels import EMOTIONS, STRATEGIES
from multimood.metrics import DFEWClassification, MESCMetrics
from tests.unit.test_metrics_text import minilm_path

WORDS = [
    "i",
    "hear",
    "you",
    "that",
    "sounds",
    "hard",
    "tell",
    "me",
    "more",
    "about",
    "how",
    "it",
    "felt",
    "when",
    "she",
    "left",
    "we",
    "can",
    "talk",
]
SHARDS = (slice(0, 5), slice(5, 6), slice(6, 13)), (slice(13, 17),)  # rank 0: three updates; rank 1: one


def make_data() -> tuple[list[str], list[str], list[int], list[int]]:
    """17 (prediction, reference) answer pairs, every 4th prediction unparsable, and DFEW indices."""
    rng = random.Random(3)

    def answer() -> str:
        response = " ".join(rng.choices(WORDS, k=rng.randint(3, 12))).capitalize() + "."
        return format_answer(rng.choice(EMOTIONS), rng.choice(EMOTIONS[:2]), rng.choice(STRATEGIES), response)

    references = [answer() for _ in range(17)]
    predictions = [answer() if i % 4 else "No idea." for i in range(17)]
    dfew_target = [rng.randrange(7) for _ in range(17)]
    dfew_preds = [t if rng.random() < 0.5 else rng.choice([MISSING, *range(7)]) for t in dfew_target]
    return predictions, references, dfew_preds, dfew_target


def run_metrics(parts: tuple[slice, ...], model: str) -> dict:
    predictions, references, dfew_preds, dfew_target = make_data()
    mesc = MESCMetrics(bertscore_model=model, bertscore_layers=6)
    dfew = DFEWClassification()
    for part in parts:
        mesc.update(predictions[part], references[part])
        dfew.update(dfew_preds[part], dfew_target[part])
    return {
        "mesc": {k: v.item() for k, v in mesc.compute().items()},
        "confusion": mesc.confusion_matrices(),
        "dfew": {k: v.item() for k, v in dfew.compute().items()},
    }


def _worker(rank: int, world_size: int, init_file: str, out_dir: str, model: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        torch.save(run_metrics(SHARDS[rank], model), Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_metrics_over_unequal_shards_equal_one_process(tmp_path: Path) -> None:
    model = minilm_path()
    single = run_metrics((slice(0, 17),), model)
    assert 0 < single["mesc"]["parse_failure_rate"] < 1 and single["mesc"]["num_samples"] == 17
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), model), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"{rank}.pt")
        assert result["mesc"].keys() == single["mesc"].keys()
        assert result["mesc"] == pytest.approx(single["mesc"], abs=1e-6), f"rank {rank}"
        assert result["dfew"] == pytest.approx(single["dfew"], abs=1e-6, nan_ok=True), f"rank {rank}"
        for task, counts in single["confusion"].items():
            assert torch.equal(result["confusion"][task], counts), f"rank {rank} {task}"
    # one shard alone gives different numbers, so the equality above is the synchronisation's doing
    alone = run_metrics(SHARDS[1], model)["mesc"]
    assert alone["response/bleu2"] != pytest.approx(single["mesc"]["response/bleu2"], abs=1e-3)
