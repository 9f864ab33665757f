"""Vision tower, STC connector, BEATs, ConvCompressor, LLM wrapper and the fused model (plain nn.Modules)."""
