import math

import pytest

from ulmfit.errors import UlmfitError
from ulmfit.train.metrics import (
    EarlyStopping,
    better,
    classification_metrics,
    format_report,
    perplexity,
)
from ulmfit.train.plots import plot_history

CLASSES = ["a", "b", "c", "d"]  # "d" never occurs
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


def test_classification_metrics_by_hand():
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    pc = m["per_class"]
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert pc["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert pc["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3 + 0) / 4)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_classification_metrics_empty_and_mismatch():
    m = classification_metrics([], [], ["x", "y"])
    assert m["n"] == 0 and m["confusion"] == [[0, 0], [0, 0]]
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0], ["x", "y"])


def test_format_report_has_all_parts():
    text = format_report(classification_metrics(Y_TRUE, Y_PRED, CLASSES), CLASSES)
    assert "accuracy     0.6667" in text
    assert "macro F1" in text and "weighted F1" in text
    lines = text.splitlines()
    row_b = next(line for line in lines if line.startswith("b ") and "1.0000" in line)
    assert row_b.split() == ["b", "0.6667", "1.0000", "0.8000", "2"]
    conf_c = [line for line in lines if line.split()[:1] == ["c"]][-1]
    assert conf_c.split() == ["c", "1", "0", "1", "0"]
    assert "true \\ pred" in text


def test_perplexity_and_better():
    assert perplexity(math.log(50.0)) == pytest.approx(50.0)
    assert math.isfinite(perplexity(1e6))
    assert math.isnan(perplexity(float("nan")))
    assert better("valid_loss") == "min" and better("perplexity") == "min"
    assert better("accuracy") == "max" and better("macro_f1") == "max"
    assert better("valid_accuracy") == "max"
    with pytest.raises(ValueError, match="accuracy"):
        better("bleu")


def test_early_stopping_max_with_patience():
    es = EarlyStopping("accuracy", patience=2)
    results = [es.step(v) for v in [0.5, 0.6, 0.6, 0.55]]
    assert results == [True, True, False, False]
    assert es.should_stop and es.best == 0.6 and es.best_epoch == 1


def test_early_stopping_min_delta_and_min_mode():
    es = EarlyStopping("valid_loss", patience=2, min_delta=0.1)
    assert es.step(1.0)
    assert not es.step(0.95)  # not better by more than 0.1
    assert not es.should_stop
    assert es.step(0.8)  # resets the counter
    assert not es.step(float("nan"))
    assert not es.should_stop
    assert not es.step(0.79)
    assert es.should_stop and es.best == 0.8 and es.best_epoch == 2


def test_early_stopping_none_never_stops():
    es = EarlyStopping("macro_f1", patience=None)
    for v in [0.9, 0.1, 0.1, 0.1, 0.1]:
        es.step(v)
    assert not es.should_stop and es.best_epoch == 0


def test_early_stopping_state_round_trip():
    es = EarlyStopping("accuracy", patience=3)
    for v in [0.5, 0.7, 0.6]:
        es.step(v)
    resumed = EarlyStopping("accuracy", patience=3)
    resumed.load_state_dict(es.state_dict())
    assert (resumed.best, resumed.best_epoch, resumed.bad_epochs) == (0.7, 1, 1)
    resumed.step(0.6)
    assert not resumed.should_stop
    resumed.step(0.6)
    assert resumed.should_stop
    assert not resumed.step(0.65, epoch=5)
    assert resumed.step(0.8, epoch=6) and resumed.best_epoch == 6
    with pytest.raises(UlmfitError, match="accuracy"):
        EarlyStopping("valid_loss").load_state_dict(es.state_dict())


def test_plot_history_writes_png(tmp_path):
    records = [
        {"stage": "lm", "epoch": 0, "train_loss": 4.0, "valid_loss": 3.9, "perplexity": 49.4, "time_s": 3.0},
        {"stage": "lm", "epoch": 1, "train_loss": 3.5, "valid_loss": 3.6, "perplexity": 36.6},
        {"stage": "cls-1", "epoch": 0, "train_loss": 0.7, "valid_loss": 0.6, "accuracy": 0.7, "macro_f1": 0.65},
        {"stage": "cls-2", "epoch": 0, "train_loss": 0.5, "valid_loss": 0.5, "accuracy": 0.8, "macro_f1": 0.78},
        {"event": "done"},
    ]
    out = tmp_path / "plots" / "history.png"
    plot_history(records, out, title="run")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    plot_history([], tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes().startswith(b"\x89PNG")
