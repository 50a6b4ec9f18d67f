"""Move a pretrained language model's embedding rows to a new vocabulary.

Shared words keep their trained rows; words the pretrained model never saw start at the mean
embedding (and the mean decoder bias), as fastai's `match_embeds` does (ULMFiT §3.1: the target
vocabulary differs from the general-domain one).
"""
from __future__ import annotations

import torch


def transfer_vocab(state: dict, old_itos: list[str], new_itos: list[str],
                   embedding_keys: tuple[str, ...], bias_keys: tuple[str, ...] = ()) -> tuple[dict, int]:
    """Return (new state dict, number of new-vocabulary tokens found in the old vocabulary)."""
    old_index = {w: i for i, w in enumerate(old_itos)}
    src = torch.tensor([old_index.get(w, -1) for w in new_itos])
    found = src >= 0
    state = dict(state)
    for key in embedding_keys + bias_keys:
        if key not in state:
            continue
        old = state[key]
        mean = old.mean(0)
        new = mean.expand(len(new_itos), *old.shape[1:]).clone()
        new[found] = old[src[found]]
        state[key] = new
    return state, int(found.sum())
