"""Classifier re-training (cRT) on kept MiniLM model folders: does a class-balanced linear head,
re-fitted on the fine-tuned encoder's pooled features, find the rare class better? (issue 21)

cRT is Kang et al., ICLR 2020, "Decoupling representation and classifier for long-tailed
recognition": keep the representation learned end to end, re-train only the classifier with the
classes balanced. Here the head is a logistic regression with class_weight "balanced" (the frozen
MiniLM peer's head, benchmarks/peers/minilm.py) on the folder's own pooled features (the pooling the
folder was trained with), C chosen by validation macro-F1 over a grid, as the peer does. Also scored:
the average of the folder's calibrated probabilities and the re-fitted head's. The folder's own
figures are its real `predict` (calibration and decision rule applied).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src .venv/bin/python benchmarks/crt.py --data ~/.cache/ulmfit/tweets-40-55-5/v1 \\
        --out R.json FOLDER/model:SAMPLE/train.csv ...

Not a speed benchmark: no timings.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from ulmfit import load
from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.recipes.transformer import PREDICT_BATCH_PIECES, TransformerMember

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import read_csv_rows, write_json  # noqa: E402

CS = [0.01, 0.03, 0.1, 0.3, 1, 3, 10]  # the frozen peer's grid


def pooled(member: TransformerMember, texts: list[str]) -> np.ndarray:
    """The folder's pooled encoder features [N, F] (what its head reads)."""
    docs = member.tokenizer.encode_many(member.tokenizer.tokenize_many(texts))
    index, feats = [], []
    member.model.eval()
    with torch.inference_mode():
        for b in ClassificationLoader(docs, None, bs=128, shuffle=False, pad_idx=member.tokenizer.pad_id,
                                      max_batch_pieces=PREDICT_BATCH_PIECES):
            index.append(b.index.numpy())
            feats.append(member.model.features(b.ids, b.lengths).float().numpy())
    return np.concatenate(feats)[np.argsort(np.concatenate(index))]


def scores(y: np.ndarray, pred: np.ndarray, rare: int) -> dict:
    return {"macro_f1": float(f1_score(y, pred, average="macro")),
            "rare_f1": float(f1_score(y, pred, average=None, labels=[rare])[0])}


def one(folder: Path, train: Path, data: Path, seed: int) -> dict:
    clf = load(folder)
    member = TransformerMember.load(folder)
    classes = list(clf.classes)
    splits = {"train": read_csv_rows(train), "valid": read_csv_rows(data / "valid.csv"), "test": read_csv_rows(data / "test.csv")}
    y = {k: np.array([classes.index(l.strip()) for l in labels]) for k, (_, labels) in splits.items()}
    rare = int(np.bincount(y["test"], minlength=len(classes)).argmin())
    feats = {k: pooled(member, texts) for k, (texts, _) in splits.items()}
    own = {k: clf.predict_proba(splits[k][0]) for k in ("valid", "test")}
    best = None
    for c in CS:
        lr = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed).fit(feats["train"], y["train"])
        v = scores(y["valid"], lr.predict(feats["valid"]), rare)["macro_f1"]
        if best is None or v > best[0]:
            best = (v, c, lr)
    _, c, lr = best
    row = {"folder": str(folder), "rare_class": classes[rare], "C": c}
    for k in ("valid", "test"):
        head = lr.predict_proba(feats[k])
        row[k] = {"own": scores(y[k], clf.label_ids(own[k]), rare), "crt": scores(y[k], head.argmax(1), rare),
                  "average": scores(y[k], ((own[k] + head) / 2).argmax(1), rare)}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cells", nargs="+", help="FOLDER:TRAIN_CSV pairs (a kept MiniLM folder and its labelled sample)")
    p.add_argument("--data", type=Path, required=True, help="the data set's folder with valid.csv and test.csv")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    rows = []
    for cell in a.cells:
        folder, train = cell.rsplit(":", 1)
        rows.append(one(Path(folder), Path(train), a.data.expanduser(), a.seed))
        r = rows[-1]
        print(" | ".join([Path(folder).parent.name, f"C {r['C']}"] + [
            f"{k} {w}: {r[k][w]['macro_f1']:.4f} / rare {r[k][w]['rare_f1']:.4f}"
            for k in ("valid", "test") for w in ("own", "crt", "average")]), flush=True)
        write_json(a.out, rows)


if __name__ == "__main__":
    main()
