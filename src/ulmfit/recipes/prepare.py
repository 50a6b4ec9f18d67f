"""From the user's files to labelled token arrays: reading, checking, splitting, numericalising."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ulmfit.data.readers import TextTable, read_table, read_texts
from ulmfit.data.subset import stratified_subset
from ulmfit.errors import UlmfitError
from ulmfit.recipes.config import DataConfig
from ulmfit.text.token_docs import TokenDocs
from ulmfit.text.tokenize import Tokenizer
from ulmfit.text.vocab import Vocab


@dataclass
class Labelled:
    texts: list[str]
    labels: np.ndarray  # int64 class ids
    source: str


@dataclass
class FitData:
    """Everything `fit` trains on, read and checked."""

    train: Labelled
    valid: Labelled
    classes: list[str]
    unlabeled: list[str]  # LM-only text: the rest of a low-resource sample, then the --unlabeled files


def load_fit_data(train, valid, d: DataConfig, seed: int, log: Callable[[str], None]) -> FitData:
    """Tables -> classes, validation (a stratified split of the FULL training table when no file is
    given), the low-resource sample of the remaining training rows, and the unlabelled texts."""
    train_table = as_table(train, d.text_col, d.label_col, d.encoding)
    classes = class_names_from(train_table)
    if valid is None:
        train_table, valid_table = split_train_valid(train_table, d.valid_frac, seed)
        log(f"no validation file: holding out a stratified {d.valid_frac:.0%} of {train_table.source} "
            f"({len(valid_table.texts)} rows)")
    else:
        valid_table = as_table(valid, d.text_col, d.label_col, d.encoding)
    train_set = Labelled(train_table.texts, encode_labels(train_table, classes, "training"), train_table.source)
    valid_set = Labelled(valid_table.texts, encode_labels(valid_table, classes), valid_table.source)
    train_set, rest = sample_labels(train_set, classes, d, seed, log)
    return FitData(train_set, valid_set, classes, rest + read_unlabeled(d.unlabeled, d.text_col, d.encoding))


def sample_labels(train: Labelled, classes: list[str], d: DataConfig, seed: int,
                  log: Callable[[str], None]) -> tuple[Labelled, list[str]]:
    """Low-resource mode: (the sampled labelled rows, the texts of the other rows)."""
    if d.labels_per_class is None and d.max_labels is None:
        return train, []
    keep, rest = stratified_subset(train.labels, per_class=d.labels_per_class, total=d.max_labels, seed=seed)
    kept = Labelled([train.texts[i] for i in keep], train.labels[keep], train.source)
    have = np.bincount(train.labels, minlength=len(classes))
    got = np.bincount(kept.labels, minlength=len(classes))
    if d.labels_per_class is not None:
        short = [f"{c} ({n})" for c, n in zip(classes, have) if 0 < n < d.labels_per_class]
        if short:
            log(f"low-resource: fewer than {d.labels_per_class} training rows in {', '.join(short)}: all of them kept")
    log(f"low-resource: {len(keep):,} labelled training texts ({' / '.join(f'{c} {n}' for c, n in zip(classes, got))}) "
        f"sampled with seed {seed}; the other {len(rest):,} join the LM text")
    return kept, [train.texts[i] for i in rest]


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
