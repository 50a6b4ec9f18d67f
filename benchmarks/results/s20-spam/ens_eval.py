"""Issue 16, twentieth session: the e-mail ensembles of one label sample (2,000 labels, seed S), built and
scored with each member's probabilities computed once per file (`ulmfit ensemble` + `ulmfit evaluate` per
variant would run the MiniLM member again for every build and every evaluation: ~2 min per pass on the
test split, ~10 on the rest below).

Members (the harness's kept folders, `accuracy.py --keep-models`): A the AWD-LSTM fwd+bwd (`ulmfit-both`),
M ULMFiT on MiniLM (`ulmfit-minilm`), T the TF-IDF model (`tfidf-model`). Variants am (A+M) and amt (A+M+T),
each with the validated rule (`ulmfit ensemble`'s default) and with `--weights equal`, exactly as
`build_ensemble` builds them (benchmarks/results/s19-spam/ensembles.sh is the CLI form).

Scored on two labelled files: the test split (589 e-mails) and "rest": the 2,708 training e-mails outside
the seed's 2,000-label sample, with their labels, which no model trained on (the harness passed their text
as unlabelled: the AWD-LSTM's language model read it, MiniLM and TF-IDF did not). One JSON line per
(folder, file) to results.jsonl; each folder's right/wrong per row to heldout/<file>-s<S>.npz (paired.py).

Usage: ens_eval.py SEED CELLS_ROOT   (CELLS_ROOT: an --out of accuracy.py, e.g. benchmarks/results/s20-spam)"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]
from accuracy import read_split, split_sample  # noqa: E402
from ulmfit.recipes import predictor  # noqa: E402
from ulmfit.fileio import staging_path  # noqa: E402
from ulmfit.recipes.ensemble import MEMBERS_DIR, build_ensemble  # noqa: E402

seed, cells = int(sys.argv[1]), Path(sys.argv[2])
B = 2000
V = Path.home() / ".cache/ulmfit/spam/v1"
W = cells / "work/accuracy"
members = {"A": W / f"spam__ulmfit-both__{B}__s{seed}/model", "M": W / f"spam__ulmfit-minilm__{B}__s{seed}/model",
           "T": W / f"spam__tfidf-model__{B}__s{seed}/model"}

# the rest of the training split, labelled: the rows accuracy.budget_files passed as --unlabeled
train = read_split(V / "train.csv")
rest = split_sample(train, B, seed)[1]
unlabelled = pd.read_csv(cells / f"work/spam/samples/n{B}-s{seed}/unlabeled.csv")
assert list(unlabelled["text"]) == list(rest["text"]), "the rest does not match the harness's unlabelled file"
files = {"valid": read_split(V / "valid.csv"), "test": read_split(V / "test.csv"), "rest": rest}

source_of: dict[str, str] = {}  # a member copy inside an ensemble folder -> the folder it was copied from
cache: dict[tuple, dict] = {}
plain = predictor.Classifier.predict_proba_by_direction


def cached(self, texts, bs=128, every_member=False):
    if self.weights is not None:  # an ensemble: its parts come through here one by one
        return plain(self, texts, bs, every_member)
    here = str(self.folder.resolve())
    key = (source_of.get(here, here), len(texts), hash(tuple(texts)))
    if key not in cache:
        t0 = time.time()
        cache[key] = plain(self, texts, bs, every_member)
        print(f"# {key[0]}: {len(texts)} texts in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return cache[key]


predictor.Classifier.predict_proba_by_direction = cached
folders = dict(members)
for v, keys in {"am": "AM", "amt": "AMT"}.items():
    for w in ("rule", "equal"):
        out = cells / f"work/ens/{B}-s{seed}-{v}-{w}"
        for i, k in enumerate(keys):  # the build reads its members from their copies in the staging folder
            source_of[str((staging_path(out) / MEMBERS_DIR / f"m{i}").resolve())] = str(members[k].resolve())
        build_ensemble([members[k] for k in keys], V / "valid.csv", out, overwrite=True,
                       fixed="equal" if w == "equal" else None)
        for e in json.loads((out / "ulmfit.json").read_text())["members"]:
            source_of[str((out / e["path"]).resolve())] = str(Path(e["source"]).resolve())
        folders[f"{v}-{w}"] = out

for name in ("test", "rest"):
    df = files[name]
    texts, labels = df["text"].astype(str).tolist(), df["label"].astype(str).str.strip().tolist()
    right = {}
    for tag, f in folders.items():
        clf = predictor.load(f)
        m = clf.evaluate(texts, labels, source=name)
        right[tag] = np.array(clf.predict(texts)) == np.array(labels)
        line = {"seed": seed, "file": name, "n": len(texts), "model": tag, "macro_f1": round(m["macro_f1"], 4),
                "accuracy": round(m["accuracy"], 4), "errors": int((~right[tag]).sum())}
        if clf.weights is not None:
            vm = json.loads((f / "valid_metrics.json").read_text())
            line.update(weights=vm["weights"], valid_macro_f1=round(vm["macro_f1"], 4))
        print(json.dumps(line), flush=True)
        with open(HERE / "results.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
    (HERE / "heldout").mkdir(exist_ok=True)
    np.savez(HERE / "heldout" / f"{name}-s{seed}.npz", **right)
