"""Names shared by the data pipeline and the model: placeholder tokens and the ignore label."""

VIDEO_TOKEN = "<video>"
AUDIO_TOKEN = "<audio>"
HISTORY_TOKEN = "<history>"
MEM_TOKEN = "<MEM>"

# Placeholders the LLM tokenizer carries; the fused model replaces each with projected features.
PLACEHOLDER_TOKENS = (VIDEO_TOKEN, AUDIO_TOKEN, HISTORY_TOKEN)
# Every token the project adds to a tokenizer (the compressor's tokenizer needs <MEM>).
MULTIMOOD_SPECIAL_TOKENS = (*PLACEHOLDER_TOKENS, MEM_TOKEN)

# Label value ignored by the cross-entropy loss (torch and transformers default).
IGNORE_INDEX = -100
