"""torchmetrics metrics for the four MESC tasks and DFEW."""
