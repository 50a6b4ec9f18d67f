"""The masked-word task for the training loop (`loop.run_phase`): a transformer backbone's own
language-model objective (BERT §3.1), for target-task LM fine-tuning (ULMFiT §3.2) on an encoder.

Batches are `ClsBatch`es of word-piece documents (`ClassificationLoader` without labels). Training
draws the masks from torch's global generator, which the loop re-seeds every epoch (and restores
when resuming inside one), so a resumed run masks the same positions. Validation masks with its own
generator seeded by `valid_seed`, so every epoch is scored on the same masked positions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class MaskedLMTask:
    """loss: `model.backbone.lm_loss(ids, lengths)`; evaluate: masked-word loss, accuracy, perplexity."""

    def __init__(self, valid_seed: int = 0):
        self.valid_seed = valid_seed

    def loss(self, model, batch) -> torch.Tensor:
        return model.backbone.lm_loss(batch.ids, batch.lengths)

    @torch.no_grad()
    def evaluate(self, model, loader) -> dict:
        model.eval()
        backbone = model.backbone
        gen = torch.Generator(next(model.parameters()).device).manual_seed(self.valid_seed)  # the masks' device
        total_loss, correct, total = 0.0, 0, 0
        for batch in loader:
            inputs, targets = backbone.mask_tokens(batch.ids, batch.lengths, gen)
            feats, _ = backbone.encode(inputs, batch.lengths)
            at = targets != -100
            logits = backbone.mlm_head(feats[at]).float()
            total_loss += F.cross_entropy(logits, targets[at], reduction="sum").item()
            correct += int((logits.argmax(-1) == targets[at]).sum())
            total += int(at.sum())
        loss = total_loss / max(total, 1)
        return {"valid_loss": loss, "accuracy": correct / max(total, 1), "perplexity": math.exp(min(loss, 50.0))}
