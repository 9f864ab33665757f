"""Labels, prompt, answer parsing, media decoding, MESC/DFEW readers and synthetic data."""
