"""A trained classifier loaded from its folder: `ulmfit.load(path).predict(texts)`."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.errors import UlmfitError
from ulmfit.recipes import model_dir
from ulmfit.train.metrics import classification_metrics


class Classifier:
    """Predicts labels and class probabilities for raw texts."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = model_dir.read_marker(self.folder)
        if self.meta.get("kind") != "classifier":
            raise UlmfitError(f"{self.folder}: holds a {self.meta.get('kind')} model, not a classifier; "
                              f"use `ulmfit generate` with it, or train a classifier with `ulmfit fit`")
        self.classes: list[str] = list(self.meta["classes"])
        self.tokenizer, self.vocab = model_dir.load_text_pipeline(self.folder)
        self.model = model_dir.load_classifier_model(self.folder)

    def predict_proba(self, texts: Sequence[str], bs: int = 128) -> np.ndarray:
        """Class probabilities, shape [len(texts), n_classes], columns in `self.classes` order."""
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        docs = self.vocab.encode_many(self.tokenizer.tokenize_many(texts))
        probs = np.zeros((len(texts), len(self.classes)), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            for batch in ClassificationLoader(docs, None, bs=bs, shuffle=False):
                logits = self.model(batch.ids, batch.lengths)
                probs[batch.index.numpy()] = torch.softmax(logits.float(), -1).numpy()
        return probs

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(texts).argmax(1)]

    def evaluate(self, texts: Sequence[str], labels: Sequence[str], source: str = "data") -> dict:
        labels = [str(l).strip() for l in labels]
        unseen = sorted(set(labels) - set(self.classes))
        if unseen:
            raise UlmfitError(f"{source}: labels {unseen[:5]} were never seen in training (model classes: "
                              f"{self.classes}); map them to known classes or drop those rows")
        index = {c: i for i, c in enumerate(self.classes)}
        y_true = np.array([index[l] for l in labels])
        return classification_metrics(y_true, self.predict_proba(texts).argmax(1), self.classes)


def load(folder: str | Path) -> Classifier:
    return Classifier(folder)
