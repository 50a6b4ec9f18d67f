"""Issue 17, twenty-sixth session: where does the all-label student fall short of its teacher? On the validation
texts, grouped by how many of a text's tokens the student's vocabulary lacks (its out-of-vocabulary words: the
teacher reads every word through word pieces, the student maps them to one unknown token) and by the text's length
in tokens, the student's and the teacher's accuracy against gold and their agreement.

If the missing words were what the student lacks, its shortfall would grow with their number; a larger vocabulary
(a lower `lm.min_freq`, or keeping the rare words the pretrained LM knows) would then be the lever.

The teacher's probabilities come from the run's own cache (`teacher/`, through `teacher_probabilities`), the student's are
the folder's own (`predict_proba_raw`: fwd+bwd averaged, as fit_gap.py). One JSON line per group on stdout.

Usage: where_short.py RUN TRAIN.csv VALID.csv"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "src")]
import ulmfit  # noqa: E402
from ulmfit.recipes.config import DataConfig  # noqa: E402
from ulmfit.recipes.model_dir import load_text_pipeline  # noqa: E402
from ulmfit.recipes.prepare import load_fit_data  # noqa: E402
from ulmfit.recipes.teacher import teacher_probabilities  # noqa: E402

run, train, valid = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = json.loads((run / "config.json").read_text())
data = load_fit_data(train, valid, DataConfig(), cfg["seed"], lambda m: None)
classes, n = data.classes, len(data.train.texts)
d = cfg["distill"]  # the run's teacher cache, read and checked as `ulmfit distill` reads it
p_teacher = np.asarray(teacher_probabilities(d["teacher"], data.train.texts + data.valid.texts, run / "teacher", classes,
                                             chunk_size=d["chunk_size"], progress=False,
                                             log=lambda m: print(m, file=sys.stderr)))[n:]
student = ulmfit.load(run)
cols = [student.classes.index(c) for c in classes]  # the student's columns in the run's class order
p_student = np.asarray(student.predict_proba_raw(data.valid.texts))[:, cols]

tokenizer, vocab = load_text_pipeline(run)
known = set(vocab.itos)
tokens = [tokenizer(t) for t in data.valid.texts]
missing = np.array([sum(w not in known for w in ts) for ts in tokens])
length = np.array([len(ts) for ts in tokens])
gold = np.asarray(data.valid.labels)
s_right, t_right = p_student.argmax(1) == gold, p_teacher.argmax(1) == gold
agree = p_student.argmax(1) == p_teacher.argmax(1)


def group(by: str, lo: int, hi: int, values: np.ndarray) -> None:
    m = (values >= lo) & (values <= hi)
    print(json.dumps({"run": str(run), "by": by, "from": lo, "to": hi, "n": int(m.sum()),
                      "student_accuracy": round(float(s_right[m].mean()), 4),
                      "teacher_accuracy": round(float(t_right[m].mean()), 4),
                      "teacher_minus_student": round(float(t_right[m].mean() - s_right[m].mean()), 4),
                      "agreement": round(float(agree[m].mean()), 4)}))


print(json.dumps({"run": str(run), "vocab": len(known), "valid_tokens": int(length.sum()),
                  "out_of_vocabulary_tokens": round(float(missing.sum() / length.sum()), 4),
                  "texts_with_one_or_more": round(float((missing > 0).mean()), 4)}))
for lo, hi in [(0, 0), (1, 1), (2, 2), (3, 10**6)]:
    group("out-of-vocabulary tokens", lo, hi, missing)
for lo, hi in [(0, 10), (11, 20), (21, 30), (31, 10**6)]:
    group("tokens", lo, hi, length)
