"""AWD-LSTM sizes by name, apart from models/awd_lstm.py so the configuration can check a preset
name without importing torch."""

# Sizes per preset. "paper": Merity et al. 2017 §5 (400-d embeddings, 3 layers of 1150 units),
# also ULMFiT's (Howard & Ruder 2018 §4). "small" and "tiny" are sized for a 2-core CPU. Measured
# LM training (forward + backward + clip + Adam, bs=64, bptt=70, vocab 10k, fp32, 2 threads):
# "paper" ~860 tokens/s, "small" ~5,000-6,000 tokens/s, "tiny" ~10,000 tokens/s (where the
# 10k-word softmax dominates). "tiny" is for tests and smoke runs.
PRESETS: dict[str, dict[str, int]] = {
    "paper": dict(emb_size=400, hidden_size=1150, n_layers=3),
    "small": dict(emb_size=128, hidden_size=256, n_layers=3),
    "tiny": dict(emb_size=16, hidden_size=32, n_layers=2),
}
