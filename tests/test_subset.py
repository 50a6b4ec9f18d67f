"""Low-resource mode: the stratified sampler, and what `fit` does with the sampled and the other rows."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ulmfit.data.subset import stratified_subset
from ulmfit.errors import UlmfitError

from conftest import make_rows, tiny_fit_config


def labels_of(counts: dict) -> np.ndarray:
    labels = np.concatenate([[k] * n for k, n in counts.items()])
    return np.random.default_rng(1).permutation(labels)  # classes interleaved, as in a real file


def per_class(labels, kept) -> dict:
    values, counts = np.unique(labels[kept], return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def test_per_class_is_stratified_and_a_partition():
    labels = labels_of({"a": 50, "b": 30, "c": 20})
    kept, rest = stratified_subset(labels, per_class=7, seed=0)
    assert per_class(labels, kept) == {"a": 7, "b": 7, "c": 7}
    assert (np.diff(kept) > 0).all() and (np.diff(rest) > 0).all()  # sorted, no repeats
    assert sorted(np.r_[kept, rest].tolist()) == list(range(100))


def test_total_is_exact_and_proportional_by_largest_remainder():
    labels = labels_of({"a": 60, "b": 30, "c": 10})
    kept, _ = stratified_subset(labels, total=10)
    assert per_class(labels, kept) == {"a": 6, "b": 3, "c": 1}
    labels = labels_of({"a": 5, "b": 3, "c": 2})  # exact shares 2.5 / 1.5 / 1.0: one extra row, first class wins the tie
    kept, _ = stratified_subset(labels, total=5)
    assert per_class(labels, kept) == {"a": 3, "b": 1, "c": 1}
    for total in range(3, 101):
        kept, rest = stratified_subset(labels_of({"a": 60, "b": 30, "c": 10}), total=total, seed=total)
        assert len(kept) == total and len(rest) == 100 - total


def test_total_keeps_at_least_one_row_per_class():
    labels = labels_of({"a": 98, "b": 1, "c": 1})
    kept, _ = stratified_subset(labels, total=5)
    assert per_class(labels, kept) == {"a": 3, "b": 1, "c": 1}


def test_deterministic_for_a_seed_different_across_seeds():
    labels = labels_of({0: 40, 1: 40, 2: 40})
    a, _ = stratified_subset(labels, total=30, seed=3)
    b, _ = stratified_subset(labels, total=30, seed=3)
    c, _ = stratified_subset(labels, total=30, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert per_class(labels, c) == {0: 10, 1: 10, 2: 10}


def test_per_class_larger_than_a_class_keeps_that_class_whole():
    labels = labels_of({"a": 20, "b": 3})
    kept, rest = stratified_subset(labels, per_class=5)
    assert per_class(labels, kept) == {"a": 5, "b": 3} and len(rest) == 15


def test_no_setting_keeps_everything():
    kept, rest = stratified_subset(np.array([0, 1, 0]))
    assert kept.tolist() == [0, 1, 2] and rest.tolist() == []


@pytest.mark.parametrize("kw, words", [
    (dict(per_class=2, total=4), ["--labels-per-class", "--max-labels"]),
    (dict(total=101), ["101", "100", "at most"]),
    (dict(total=2), ["3 classes", "at least 3"]),
    (dict(per_class=0), ["at least 1"]),
])
def test_bad_settings_fail_with_one_clear_line(kw, words):
    with pytest.raises(UlmfitError) as e:
        stratified_subset(labels_of({"a": 60, "b": 30, "c": 10}), **kw)
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


# ----------------------------------------------------------------------------- in fit

def test_sampled_rows_train_and_the_rest_join_the_lm_text():
    from ulmfit.recipes.config import DataConfig
    from ulmfit.recipes.prepare import load_fit_data

    train, valid = make_rows(90, 0), make_rows(30, 1)
    logs = []
    data = load_fit_data(train, valid, DataConfig(max_labels=12, unlabeled=[]), seed=0, log=logs.append)
    assert len(data.train.texts) == 12 and np.bincount(data.train.labels).tolist() == [4, 4, 4]
    assert sorted(data.train.texts + data.unlabeled) == sorted(train["text"])  # every training text is used once
    assert data.valid.texts == valid["text"].tolist()  # the validation file is untouched
    assert "12 labelled training texts (neg 4 / neu 4 / pos 4) sampled with seed 0; the other 78 join the LM text" in logs[-1]


def test_without_a_validation_file_the_split_comes_first():
    from ulmfit.recipes.config import DataConfig
    from ulmfit.recipes.prepare import load_fit_data

    train = make_rows(100, 0)
    data = load_fit_data(train, None, DataConfig(labels_per_class=50, valid_frac=0.1), seed=0, log=lambda m: None)
    assert len(data.valid.texts) == 10  # 10% of the FULL table
    assert len(data.train.texts) + len(data.unlabeled) == 90  # sampled from the rest: nothing left out
    assert not set(data.valid.texts) & set(data.train.texts + data.unlabeled)


def test_more_per_class_than_a_class_has_is_logged():
    from ulmfit.recipes.config import DataConfig
    from ulmfit.recipes.prepare import load_fit_data

    train = pd.concat([make_rows(30, 0), pd.DataFrame({"text": ["rare one", "rare two"], "label": ["odd", "odd"]})])
    logs = []
    data = load_fit_data(train, make_rows(9, 1), DataConfig(labels_per_class=5), seed=0, log=logs.append)
    assert len(data.train.texts) == 17
    assert any("fewer than 5" in m and "odd (2)" in m and "all of them kept" in m for m in logs)


def test_cli_low_resource_run_records_its_sample(tmp_path, capsys, monkeypatch):
    from ulmfit.cli import main
    from ulmfit.fileio import atomic_write_json
    from ulmfit.recipes import fit as fit_module

    monkeypatch.setattr(fit_module, "plot_history", lambda *a, **k: None)  # plots are tested elsewhere; keep this fast
    make_rows(90, 0).to_csv(tmp_path / "train.csv", index=False)
    make_rows(30, 1).to_csv(tmp_path / "valid.csv", index=False)
    cfg = tiny_fit_config()
    cfg.lm.epochs, cfg.clf.epochs, cfg.clf.lrs = 1, (1, 1), (3e-2, 2e-2)
    atomic_write_json(tmp_path / "tiny.json", cfg.to_dict())
    base = ["fit", "--train", tmp_path / "train.csv", "--valid", tmp_path / "valid.csv", "--config", tmp_path / "tiny.json"]
    code = main([str(a) for a in base + ["--out", tmp_path / "m", "--labels-per-class", "5"]])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "15 labelled training texts (neg 5 / neu 5 / pos 5)" in err and "the other 75 join the LM text" in err
    assert "tokenized 90 documents for the language model" in err  # 15 labelled + 75 others, no validation rows
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["data"]
    assert saved["labels_per_class"] == 5 and saved["max_labels"] is None
    code = main([str(a) for a in base + ["--out", tmp_path / "m2", "--set", "data.max_labels=7"]])
    err = capsys.readouterr().err
    assert code == 0 and "7 labelled training texts" in err
    assert json.loads((tmp_path / "m2" / "config.json").read_text())["data"]["max_labels"] == 7
    code = main([str(a) for a in base + ["--out", tmp_path / "m3", "--max-labels", "500"]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--max-labels" in err and "500" in err
