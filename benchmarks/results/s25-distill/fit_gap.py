"""Issue 17, twenty-fifth session: does the all-label student fall short of its teacher because it cannot fit the
teacher (capacity) or because what it fits does not carry to new texts (generalisation)?

For a finished `ulmfit distill` run (all labels, perturbed copies, no unlabelled text): the student's
agreement with the teacher's argmax, the soft-target cross-entropy and KL at the run's temperature, and
macro-F1 against gold where there is gold, on
- the gold training texts and a seeded sample of the perturbed copies (what the student trained on), and
- the validation texts (held out from both).
The teacher's probabilities come from the run's own caches (`teacher/`, `teacher/augment/`), read through
`teacher_probabilities` as the run read them (the teacher, texts, classes and chunking checked; the texts rebuilt
here with `load_fit_data` and `augment` and the run's settings).
Student probabilities are the finished folder's own (`predict_proba_raw`: fwd+bwd averaged, before the
temperature scaling fitted after training; what the distillation loss trained), agreement on their argmax. One
JSON object on stdout.

Usage: fit_gap.py RUN TRAIN.csv VALID.csv [SAMPLE=30000]"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "src")]
import ulmfit  # noqa: E402
from ulmfit.data.augment import augment  # noqa: E402
from ulmfit.recipes.config import DataConfig  # noqa: E402
from ulmfit.recipes.prepare import load_fit_data  # noqa: E402
from ulmfit.recipes.teacher import teacher_probabilities  # noqa: E402
from ulmfit.train.distill import PROB_FLOOR, teacher_at_temperature  # noqa: E402
from ulmfit.train.metrics import classification_metrics  # noqa: E402

run, train, valid = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
sample = int(sys.argv[4]) if len(sys.argv) > 4 else 30000
cfg = json.loads((run / "config.json").read_text())
seed, d = cfg["seed"], cfg["distill"]
data = load_fit_data(train, valid, DataConfig(), seed, lambda m: None)
classes = data.classes


def cached(folder: Path, texts: list[str]) -> np.ndarray:  # the run's cache, checked as `ulmfit distill` checks it
    return np.asarray(teacher_probabilities(d["teacher"], texts, folder, classes, chunk_size=d["chunk_size"],
                                            progress=False, log=lambda m: print(m, file=sys.stderr)))


gold_and_valid = data.train.texts + data.valid.texts
p_teacher = cached(run / "teacher", gold_and_valid)
n = len(data.train.texts)
copies, _ = augment(data.train.texts, d["augment"], seed)
p_copies = cached(run / "teacher" / "augment", copies)
pick = np.sort(np.random.default_rng([seed, 25]).choice(len(copies), size=min(sample, len(copies)), replace=False))
student = ulmfit.load(run)
cols = [student.classes.index(c) for c in classes]  # the student's columns in the run's class order
T = d["temperature"]


def soft(p: np.ndarray) -> np.ndarray:  # probabilities at T, as the distillation loss softens the teacher's
    return teacher_at_temperature(torch.from_numpy(np.asarray(p, np.float32)), T).double().numpy()


def row(name: str, texts: list[str], p_t: np.ndarray, gold: np.ndarray | None) -> dict:
    p_s = np.asarray(student.predict_proba_raw(texts))[:, cols]
    st, tt = soft(p_s), soft(p_t)
    log_s, log_t = np.log(np.clip(st, PROB_FLOOR, 1)), np.log(np.clip(tt, PROB_FLOOR, 1))
    out = {"set": name, "n": len(texts), "agreement": round(float((p_s.argmax(1) == p_t.argmax(1)).mean()), 4),
           "soft_ce": round(float(-(tt * log_s).sum(1).mean()), 4),
           "soft_kl": round(float((tt * (log_t - log_s)).sum(1).mean()), 4)}
    if gold is not None:
        out["student_macro_f1"] = round(classification_metrics(gold, p_s.argmax(1), classes)["macro_f1"], 4)
        out["teacher_macro_f1"] = round(classification_metrics(gold, p_t.argmax(1), classes)["macro_f1"], 4)
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


rows = [row("gold training texts", data.train.texts, p_teacher[:n], data.train.labels),
        row(f"perturbed copies (a sample of {len(pick):,} of {len(copies):,})", [copies[i] for i in pick],
            p_copies[pick], None),
        row("validation texts", data.valid.texts, p_teacher[n:], data.valid.labels)]
print(json.dumps({"run": str(run), "augment": d["augment"], "seed": seed, "temperature": T, "rows": rows}))
