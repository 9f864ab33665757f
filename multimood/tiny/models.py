"""Tiny transformers models with random weights: a Qwen2 causal LM, a Mamba, a BGE-M3-style encoder.

Each builder writes a folder that the real loaders read unchanged (``AutoModelForCausalLM``,
``MambaModel``, FlagEmbedding's ``BGEM3FlagModel``), so tests exercise the same loading code as
paper-scale runs. Weights are deterministic: they are drawn under ``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from multimood.seeding import seeded
from multimood.tiny import take_options
from multimood.tiny.tokenizer import ENDOFTEXT, IM_END


def _load_tokenizer(which: str):
    from transformers import AutoTokenizer

    from multimood.hub import resolve

    names = {"tiny": "tiny:tokenizer", "qwen2": "packaged:qwen2-tokenizer"}
    if which not in names:
        raise ValueError(f"tokenizer must be one of {sorted(names)}, got {which!r}")
    return AutoTokenizer.from_pretrained(resolve(names[which]))


def _save_model(model, out_dir: Path) -> None:
    """Write ``model`` as ``save_pretrained`` lays it out (config, generation config, one safetensors
    file with tied weights stored once under their first name), on every process.

    ``save_pretrained`` writes nothing on ranks other than 0 once ``torch.distributed`` is
    initialised. Under DDP every rank resolving a tiny name builds it in a temporary folder and the
    first to finish wins the rename (see :mod:`multimood.hub`), so that would leave a folder with
    no weights.
    """
    from safetensors.torch import save_file

    seen: set[tuple[int, int]] = set()
    tensors = {}
    for key, tensor in model.state_dict().items():
        storage = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if storage in seen:  # a tied copy (lm_head <- embeddings)
            continue
        seen.add(storage)
        tensors[key] = tensor.detach().contiguous().clone()
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out_dir)
    if model.can_generate():
        model.generation_config.save_pretrained(out_dir)
    save_file(tensors, str(Path(out_dir) / "model.safetensors"), metadata={"format": "pt"})


def _padded_vocab(n: int, multiple: int = 64) -> int:
    return int(math.ceil(n / multiple) * multiple)


def build_tiny_qwen2(out_dir: Path, overrides: dict[str, Any]) -> None:
    """A 2-layer Qwen2ForCausalLM (hidden 64, GQA 4/2 heads) saved with its tokenizer.

    ``initializer_range`` (default 0.02, Qwen2's) is the standard deviation of every weight matrix
    and of the embeddings. At 64 wide, 0.02 makes a near-silent model (embeddings of norm ~0.16,
    attention logits ~0): from there the demo's SFT takes well over 1,000 steps to learn to read
    8 video tokens in a ~450-token prompt. ``?initializer_range=0.1`` (about 1/sqrt(64)) learns it
    in ~100 steps (docs/design/demo.md).
    """
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    defaults = {
        "tokenizer": "tiny",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "initializer_range": 0.02,
    }
    seed, cfg = take_options("tiny:qwen2", overrides, defaults)
    tokenizer = _load_tokenizer(cfg.pop("tokenizer"))
    config = Qwen2Config(
        vocab_size=_padded_vocab(len(tokenizer)),
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        **cfg,
    )
    with seeded(seed):
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, do_sample=False
    )
    _save_model(model, out_dir)
    tokenizer.save_pretrained(out_dir)


def build_tiny_mamba(out_dir: Path, overrides: dict[str, Any]) -> None:
    """A 2-layer Mamba (hidden 64, state 16, expand 2) in the layout of ``state-spaces/mamba-*-hf``.

    Saved as ``MambaForCausalLM`` like the real checkpoints, so ``MambaModel.from_pretrained``
    (the compressor's backbone) loads it too. ``use_mambapy`` is on: on CPU the parallel scan from
    ``mambapy`` trains ~50x faster than transformers' sequential fallback.
    """
    from transformers import MambaConfig, MambaForCausalLM

    defaults = {
        "tokenizer": "tiny",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "state_size": 16,
        "expand": 2,
        "conv_kernel": 4,
        "use_mambapy": True,
    }
    seed, cfg = take_options("tiny:mamba", overrides, defaults)
    tokenizer = _load_tokenizer(cfg.pop("tokenizer"))
    pad_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = MambaConfig(
        vocab_size=_padded_vocab(len(tokenizer)),
        pad_token_id=pad_id,
        eos_token_id=pad_id,
        bos_token_id=pad_id,
        **cfg,
    )
    with seeded(seed):
        model = MambaForCausalLM(config)
    _save_model(model, out_dir)
    tokenizer.save_pretrained(out_dir)


def _train_xlmr_tokenizer(vocab_size: int):
    """A Unigram tokenizer with XLM-RoBERTa's special tokens and ``<s> A </s>`` template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizerFast

    from multimood.tiny.corpus import tokenizer_corpus

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )


def build_tiny_bge_m3(out_dir: Path, overrides: dict[str, Any]) -> None:
    """A tiny XLM-RoBERTa folder in BGE-M3's layout: encoder + ``colbert_linear.pt`` + ``sparse_linear.pt``."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    defaults = {
        "vocab_size": 1000,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 514,
    }
    seed, cfg = take_options("tiny:bge-m3", overrides, defaults)
    vocab_size = int(cfg.pop("vocab_size"))
    tokenizer = _train_xlmr_tokenizer(vocab_size)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **cfg,
    )
    with seeded(seed):
        model = XLMRobertaModel(config)
        colbert = torch.nn.Linear(config.hidden_size, config.hidden_size)
        sparse = torch.nn.Linear(config.hidden_size, 1)
    _save_model(model, out_dir)
    tokenizer.save_pretrained(out_dir)
    torch.save(colbert.state_dict(), out_dir / "colbert_linear.pt")
    torch.save(sparse.state_dict(), out_dir / "sparse_linear.pt")
