"""The accuracy harness's own logic: seed parsing, and that it draws the same label samples as
`ulmfit fit --max-labels` (benchmarks/transfer.py's cells are merged into its tables on that basis)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
accuracy = pytest.importorskip("accuracy")

from ulmfit.data.subset import stratified_subset  # noqa: E402


def test_seeds_count_list_and_errors():
    assert accuracy.parse_seeds("3") == [0, 1, 2]
    assert accuracy.parse_seeds("0,2") == [0, 2]
    assert accuracy.parse_seeds("2,") == [2]
    for bad in ("0", "x", ","):
        with pytest.raises(SystemExit, match="--seeds"):
            accuracy.parse_seeds(bad)


@pytest.mark.parametrize("n,seed", [(100, 0), (500, 1), (7, 2)])
def test_sample_matches_ulmfit_max_labels(n, seed):
    rng = np.random.default_rng(0)
    labels = rng.choice(["negative", "neutral", "positive"], size=3000, p=[0.4, 0.55, 0.05])
    ours = accuracy.stratified_sample(labels, n, seed)
    classes = sorted(set(labels))
    theirs, _ = stratified_subset(np.array([classes.index(x) for x in labels]), total=n, seed=seed)
    assert len(ours) == n
    assert sorted(ours.tolist()) == sorted(np.asarray(theirs).tolist())
    assert set(labels[ours]) == set(classes)  # every class at least once, the 5% one included
