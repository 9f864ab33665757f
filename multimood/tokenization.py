"""The LLM tokenizer, as both the data pipeline and the model must see it."""

from __future__ import annotations

import logging
from typing import Any

from multimood.constants import PLACEHOLDER_TOKENS
from multimood.hub import resolve

log = logging.getLogger(__name__)


def load_llm_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer and make sure it carries ``<video>``, ``<audio>``, ``<history>`` and a pad token.

    Placeholders missing from the vocabulary are added as special tokens (a real Qwen2 tokenizer
    from the hub has none of them); the pad token falls back to the end-of-sequence token. The
    data module and :class:`~multimood.models.llm.LanguageModel` both load through here, so their
    token ids agree.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
    missing = [t for t in PLACEHOLDER_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
        log.info("added %s to the tokenizer of %s", missing, name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
