"""From the user's files to labelled token arrays: reading, checking, splitting, numericalising."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ulmfit.data.readers import TextTable, read_table, read_texts
from ulmfit.errors import UlmfitError
from ulmfit.text.token_docs import TokenDocs
from ulmfit.text.tokenize import Tokenizer
from ulmfit.text.vocab import Vocab


@dataclass
class Labelled:
    texts: list[str]
    labels: np.ndarray  # int64 class ids
    source: str


def as_table(data, text_col: str, label_col: str | None, encoding: str = "utf-8") -> TextTable:
    """Accept a path, a pandas DataFrame or a TextTable."""
    if isinstance(data, TextTable):
        return data
    if isinstance(data, pd.DataFrame):
        for col in [text_col] + ([label_col] if label_col else []):
            if col not in data.columns:
                raise UlmfitError(f"DataFrame has no column '{col}' (columns: {list(data.columns)})")
        texts = data[text_col].astype(str).tolist()
        labels = data[label_col].astype(str).str.strip().tolist() if label_col else None
        return TextTable(texts=texts, labels=labels, source="<DataFrame>")
    return read_table(Path(data), text_col=text_col, label_col=label_col, encoding=encoding)


def class_names_from(table: TextTable) -> list[str]:
    classes = sorted(set(table.labels))
    if len(classes) < 2:
        only = classes[0] if classes else "nothing"
        raise UlmfitError(f"{table.source}: the label column has only one class ({only!r}); a classifier needs at least two")
    return classes


def encode_labels(table: TextTable, classes: list[str], what: str = "validation") -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unseen = sorted(set(table.labels) - set(index))
    if unseen:
        raise UlmfitError(f"{table.source}: {what} labels {unseen[:5]} never occur in the training data "
                          f"(known: {classes[:10]}); fix the labels or add training examples for them")
    return np.array([index[l] for l in table.labels], dtype=np.int64)


def split_train_valid(table: TextTable, frac: float, seed: int) -> tuple[TextTable, TextTable]:
    """Hold out a stratified `frac` of the training table as validation."""
    idx = np.arange(len(table.texts))
    labels = np.array(table.labels)
    counts = pd.Series(labels).value_counts()
    stratify = labels if counts.min() >= 2 else None
    n_valid = max(int(round(frac * len(idx))), len(counts))
    if n_valid >= len(idx):
        raise UlmfitError(f"{table.source}: only {len(idx)} labelled rows; too few to hold out a validation split — pass --valid")
    tr, va = train_test_split(idx, test_size=n_valid, random_state=seed, stratify=stratify)
    pick = lambda ii, tag: TextTable([table.texts[i] for i in ii], [table.labels[i] for i in ii], f"{table.source} ({tag})")
    return pick(np.sort(tr), "train part"), pick(np.sort(va), "held-out validation part")


def read_unlabeled(paths: list[str], text_col: str, encoding: str) -> list[str]:
    texts = []
    for p in paths:
        texts.extend(read_texts(Path(p), text_col=text_col, encoding=encoding))
    return texts


def numericalize(tokenizer: Tokenizer, vocab: Vocab, texts: list[str]) -> TokenDocs:
    return vocab.encode_many(tokenizer.tokenize_many(texts))
