"""r_sim: BGE-M3 similarity of a generated response to the reference response (paper eq. 5).

BGE-M3 gives three scores for a (query, passage) pair; FlagEmbedding's ``compute_score`` combines
them as ``(w_d * dense + w_s * sparse + w_c * colbert) / (w_d + w_s + w_c)`` and the paper (and the
authors' released GRPO code) uses weights ``(1, 0.3, 1)``, so the weight sum is 2.3:

- dense: cosine of the normalised CLS embeddings, in [-1, 1];
- sparse (lexical): the sum over the token ids both texts share of the product of their weights
  (ReLU outputs, so >= 0, and unbounded: long identical texts exceed 1);
- ColBERT: for each query token, the best cosine against any passage token, averaged over the query
  tokens, in [-1, 1].

Scaling to [0, 1]: the combined score is clamped to [0, 1]. With the real BGE-M3 two responses
score inside that range almost always (cosines of natural sentences are positive and the sparse
term is small), so the clamp is a no-op there and the reward *is* FlagEmbedding's number; it only
bites on near-identical long texts (sparse above 1) and on random tiny models (negative cosines).
``stats["clamped_fraction"]`` says how often it bit. GRPO normalises rewards within each group, so
an affine rescaling would change nothing; the clamp keeps the [0, 1] contract of
:mod:`multimood.rewards.base` and the paper's equal-weight mean with r_trust meaningful.

Query and passage: ColBERT is asymmetric. The query is the *reference* response and the passage
the generated one ("how much of the reference does the answer cover"), as in the authors' reward
service (``GRPO/reward_service_bgem3.py``, ``sentence_1 = ground_truth``, which their
``train_base.py`` imports). Their scores were the raw combined number (no scaling) on the whole
generation of a text-only model that wrote only the response; ours reads the response field of the
four-line answer (SPEC section 6). A completion whose response does not parse is missing.

Batching: every text of a call (unique references and responses) goes through one
``BGEM3FlagModel.encode`` call, and the pair scores are computed from its outputs; FlagEmbedding's
own ``compute_score`` would encode each reference once per completion. (Its ColBERT term also
depends on padding within a batch: zeroed padding vectors take part in the max, which raises a
negative best match to 0; encoding each text alone, as here, has no such effect.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from multimood.rewards.base import RewardOutput, check_lengths, responses

DEFAULT_WEIGHTS: tuple[float, float, float] = (1.0, 0.3, 1.0)  # dense, sparse, ColBERT (paper eq. 5)


def _default_device() -> str:
    """The current CUDA device when there is one (each DDP rank has its own), else the CPU.

    FlagEmbedding given no device takes *every* visible GPU and starts a process pool, which a
    training process must not do; so a device is always named.
    """
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


class SimilarityReward:
    """BGE-M3 similarity of each completion's response to its reference's response, in [0, 1].

    Args:
        model_name_or_path: hub id, local folder, or built-in name (``tiny:bge-m3`` in tests).
        weights: (dense, sparse, ColBERT) weights; the score is their weighted mean (paper: 1, 0.3, 1).
        batch_size: texts per forward pass inside the one encode call.
        max_length: tokens kept per text (query and passage alike).
        device: ``"cpu"``, ``"cuda:1"``...; None takes the current CUDA device, else the CPU.
            :meth:`to` changes it later (the model moves on its next call).
        use_fp16: half precision on GPU (FlagEmbedding always runs float32 on the CPU).
        name: the component's name in the combination and in logged metrics.

    The model loads on the first call, so building the object (from a config, in hparams) is cheap.
    """

    def __init__(
        self,
        model_name_or_path: str = "BAAI/bge-m3",
        weights: tuple[float, float, float] = DEFAULT_WEIGHTS,
        batch_size: int = 64,
        max_length: int = 512,
        device: str | None = None,
        use_fp16: bool = False,
        name: str = "similarity",
    ) -> None:
        weights = tuple(float(w) for w in weights)
        if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"SimilarityReward weights must be three non-negative numbers (dense, sparse, colbert) "
                f"with a positive sum, got {weights!r}"
            )
        if batch_size < 1 or max_length < 2:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        self.model_name_or_path = model_name_or_path
        self.weights = weights
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.use_fp16 = use_fp16
        self.name = name
        self._model: Any = None

    # ----------------------------------------------------------------------------------------
    # Model

    @property
    def model(self) -> Any:
        """The ``BGEM3FlagModel``, loaded on first use."""
        if self._model is None:
            from FlagEmbedding import BGEM3FlagModel

            from multimood import hub

            path = self.model_name_or_path
            if hub.is_builtin(path):
                path = hub.resolve(path)
            self._model = BGEM3FlagModel(
                path,
                use_fp16=self.use_fp16,
                devices=self.device or _default_device(),
                batch_size=self.batch_size,
                query_max_length=self.max_length,
                passage_max_length=self.max_length,
            )
        return self._model

    def to(self, device: str | torch.device) -> SimilarityReward:
        """Run on ``device`` from now on (FlagEmbedding moves the weights at the next encode)."""
        self.device = str(device)
        if self._model is not None:
            self._model.target_devices = [self.device]
        return self

    # ----------------------------------------------------------------------------------------
    # Scores

    def scores(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        """Unscaled BGE-M3 scores of each (query, passage) pair, all texts in one encode call.

        Returns float64 tensors (N,): ``dense``, ``sparse``, ``colbert`` and ``combined``, the
        weighted mean FlagEmbedding's ``compute_score`` calls ``colbert+sparse+dense``.
        """
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        n = len(queries)
        if n == 0:
            empty = torch.zeros(0, dtype=torch.float64)
            return {"dense": empty, "sparse": empty, "colbert": empty, "combined": empty}
        unique = list(dict.fromkeys([*queries, *passages]))
        position = {text: i for i, text in enumerate(unique)}
        encoded = self.model.encode(
            unique,
            batch_size=self.batch_size,
            max_length=self.max_length,
            return_dense=True,
            return_sparse=True,
            return_colbert_vecs=True,
        )
        dense_vecs = np.asarray(encoded["dense_vecs"], dtype=np.float64)  # (U, D), unit length
        lexical = encoded["lexical_weights"]  # U dicts: token id -> weight
        colbert = [np.asarray(v, dtype=np.float64) for v in encoded["colbert_vecs"]]  # U x (T_u, D)
        dense, sparse, late = np.zeros(n), np.zeros(n), np.zeros(n)
        for k, (query, passage) in enumerate(zip(queries, passages, strict=True)):
            q, p = position[query], position[passage]
            dense[k] = float(dense_vecs[q] @ dense_vecs[p])
            sparse[k] = float(sum(w * lexical[p][t] for t, w in lexical[q].items() if t in lexical[p]))
            late[k] = float((colbert[q] @ colbert[p].T).max(axis=1).mean())  # (T_q, T_p) -> mean best match
        w_dense, w_sparse, w_colbert = self.weights
        combined = (w_dense * dense + w_sparse * sparse + w_colbert * late) / sum(self.weights)
        return {
            name: torch.from_numpy(values)
            for name, values in (
                ("dense", dense),
                ("sparse", sparse),
                ("colbert", late),
                ("combined", combined),
            )
        }

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput:
        """Score each completion's response against its reference's response (module docstring)."""
        check_lengths(self.name, completions, references)
        n = len(completions)
        generated, wanted = responses(completions), responses(references)
        bad_references = [i for i, r in enumerate(wanted) if r is None]
        if bad_references:
            raise ValueError(
                f"reward {self.name!r}: the reference answers at positions {bad_references[:10]} have no "
                "parsable 'Therapist's response:' line; references must be four-line answers (SPEC section 3)"
            )
        rows = [i for i, r in enumerate(generated) if r is not None]
        stats: dict[str, float] = {"unparsed_fraction": (n - len(rows)) / n if n else 0.0}
        if not rows:
            return RewardOutput.missing(n, stats)
        start = time.perf_counter()
        parts = self.scores([wanted[i] for i in rows], [generated[i] for i in rows])
        stats["seconds"] = time.perf_counter() - start
        combined = parts["combined"]
        stats["clamped_fraction"] = float(((combined < 0) | (combined > 1)).double().mean())
        for part in ("dense", "sparse", "colbert"):
            stats[part] = float(parts[part].mean())
        stats["unscaled"] = float(combined.mean())
        values = torch.zeros(n)
        present = torch.zeros(n, dtype=torch.bool)
        index = torch.tensor(rows)
        values[index] = combined.clamp(0.0, 1.0).float()
        present[index] = True
        return RewardOutput(values, present, stats)
