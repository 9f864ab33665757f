"""Per-token log-probabilities of chosen tokens, without a full log-softmax copy of the logits.

``log p(id) = logit[id] / T - logsumexp(logits / T)``. The naive ``logits.log_softmax(-1).gather(...)``
materialises a second ``(B, L, V)`` tensor (in float32 for bf16 logits, twice the logits' own size)
and autograd keeps it for the backward pass. With a 150k vocabulary, G=4 completions and a few
hundred tokens, that copy is gigabytes. Here the forward works on row chunks in float32 and keeps
only the ``(B, L)`` log-normaliser; the backward recomputes ``softmax`` chunk by chunk and writes
the gradient straight into a tensor of the logits' dtype.
"""

from __future__ import annotations

import torch

__all__ = ["token_logprobs"]

# Rows (positions) per chunk: 1024 rows of a 152k-vocabulary float32 softmax are ~0.6 GB transient.
_CHUNK_ROWS = 1024


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types (their log-softmax loses digits), else the logits' own dtype (float64 stays)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _TokenLogprobs(torch.autograd.Function):
    """Chunked ``log_softmax(logits / T)[id]`` with a recomputing backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ids: torch.Tensor, temperature: float, chunk_rows: int):  # type: ignore[override]
        # logits (B, T, V), ids (B, T) -> (B, T) in the compute dtype. Iterating over B then over
        # chunks of T keeps a slice such as ``logits[:, P - 1 : -1]`` a view (no copy of it).
        dtype = _compute_dtype(logits.dtype)
        out = torch.empty(ids.shape, dtype=dtype, device=logits.device)
        lse = torch.empty_like(out)
        for b, start in _chunks(ids.shape, chunk_rows):
            rows = slice(start, start + chunk_rows)
            scaled = logits[b, rows].to(dtype) / temperature
            lse[b, rows] = torch.logsumexp(scaled, dim=-1)
            out[b, rows] = scaled.gather(-1, ids[b, rows, None]).squeeze(-1) - lse[b, rows]
        ctx.save_for_backward(logits, ids, lse)
        ctx.temperature = temperature
        ctx.chunk_rows = chunk_rows
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        logits, ids, lse = ctx.saved_tensors
        temperature, chunk_rows = ctx.temperature, ctx.chunk_rows
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for b, start in _chunks(ids.shape, chunk_rows):
            rows = slice(start, start + chunk_rows)
            g = grad_out[b, rows].to(lse.dtype)
            # d/dz_j [z_id/T - logsumexp(z/T)] = (1[j = id] - softmax(z/T)_j) / T
            chunk = torch.exp(logits[b, rows].to(lse.dtype) / temperature - lse[b, rows, None])
            chunk.mul_(-g[:, None])
            chunk.scatter_add_(-1, ids[b, rows, None], g[:, None])
            grad[b, rows] = (chunk / temperature).to(grad.dtype)
        return grad, None, None, None


def _chunks(shape: torch.Size, chunk_rows: int):
    """``(b, start)`` for every chunk of ``chunk_rows`` positions of every row of a ``(B, T)`` shape."""
    for b in range(shape[0]):
        for start in range(0, shape[1], chunk_rows):
            yield b, start


def token_logprobs(
    logits: torch.Tensor,
    ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_rows: int = _CHUNK_ROWS,
) -> torch.Tensor:
    """``log softmax(logits / temperature)`` at ``ids``, computed in float32 (float64 stays float64).

    Args:
        logits: ``(..., V)`` scores, any float dtype (bf16 / fp16 are read chunk by chunk in float32).
        ids: ``(...)`` integer token ids, the same leading shape as ``logits``. For a causal LM the
            caller aligns them: the logits at position ``t`` score token ``t + 1``.
        temperature: the sampling temperature the tokens were drawn with; GRPO scores completions under
            the same distribution that generated them (TRL divides the logits the same way).
        chunk_rows: positions per chunk; bounds the float32 transient at ``chunk_rows x V``.

    Returns:
        ``(...)`` log-probabilities (float32, or float64 for float64 logits), differentiable with
        respect to ``logits``. Only first derivatives are supported.
    """
    if logits.ndim < 1 or logits.shape[:-1] != ids.shape:
        raise ValueError(
            f"token_logprobs: logits {tuple(logits.shape)} must be ids {tuple(ids.shape)} plus a vocabulary axis"
        )
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"token_logprobs: ids must be integer token ids, got {ids.dtype}")
    if not temperature > 0:
        raise ValueError(f"token_logprobs: temperature must be positive, got {temperature}")
    vocab = logits.shape[-1]
    flat_ids = ids.reshape(-1).long()
    if flat_ids.numel() and (int(flat_ids.min()) < 0 or int(flat_ids.max()) >= vocab):
        raise ValueError(
            f"token_logprobs: ids must lie in [0, {vocab}) (the vocabulary of the logits); "
            f"got min {int(flat_ids.min())}, max {int(flat_ids.max())}"
        )
    if chunk_rows < 1:
        raise ValueError(f"token_logprobs: chunk_rows must be >= 1, got {chunk_rows}")
    # (B, T, V) views: a 3-D slice of a larger logits tensor stays a view, other ranks are reshaped.
    if logits.ndim == 3:
        logits3, ids2 = logits, ids.long()
    else:
        logits3, ids2 = logits.reshape(1, -1, vocab), flat_ids.reshape(1, -1)
    out = _TokenLogprobs.apply(logits3, ids2, float(temperature), int(chunk_rows))
    return out.reshape(ids.shape)
