"""Text generation from a language model: sample one token at a time, carrying the LSTM state."""
from __future__ import annotations

import torch

from ulmfit.text.tokenize import SPECIAL_TOKENS, detokenize

# Never sample these: padding, unknown words and the vocabulary's filler entries read badly.
_BANNED = {"xxpad", "xxunk", "xxfake"}


@torch.inference_mode()
def generate(lm, tokenizer, vocab, prompt: str, n_words: int = 50, temperature: float = 0.8,
             seed: int | None = None, top_k: int | None = None) -> str:
    """Continue `prompt` by `n_words` sampled words; returns prompt + continuation as readable text."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use a small value such as 0.1 for near-greedy output)")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    lm.eval()
    tokens = tokenizer(prompt)
    ids = torch.from_numpy(vocab.numericalize(tokens)).long()[None]
    logits, state, _, _ = lm(ids)
    banned = torch.tensor([i for i, w in enumerate(vocab.itos) if w in _BANNED or w.startswith("xxfake")])
    specials = set(SPECIAL_TOKENS)
    out, words = [], 0
    while words < n_words:
        scores = logits[0, -1].float() / temperature
        scores[banned] = -float("inf")
        if top_k:
            kth = torch.topk(scores, min(top_k, scores.numel())).values[-1]
            scores[scores < kth] = -float("inf")
        nxt = int(torch.multinomial(torch.softmax(scores, -1), 1, generator=gen))
        word = vocab.itos[nxt]
        out.append(word)
        words += word not in specials
        logits, state, _, _ = lm(torch.tensor([[nxt]]), state)
    return detokenize(tokens + out)
