"""Where training runs (train/device.py): the setting, batches moved with their host-side index kept on
the CPU, and -- on a machine with a CUDA GPU -- every recipe trained there, resumed there exactly, and
handed back on the CPU. The GPU tests are skipped without one; docs/BENCHMARKS.md names the run that
passed them (the `device` machine)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import ulmfit
from conftest import make_rows, tiny_fit_config
from ulmfit.cli import main
from ulmfit.data.cls_loader import ClsBatch
from ulmfit.errors import UlmfitError
from ulmfit.train import device as D

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")


@pytest.fixture
def setting(monkeypatch):
    """Set ULMFIT_DEVICE for one test; unset afterwards, whatever `D.use` wrote (setenv first, so that
    monkeypatch records the variable's absence and restores it)."""
    monkeypatch.setenv(D.ENV, "auto")
    monkeypatch.delenv(D.ENV)
    yield lambda value: monkeypatch.setenv(D.ENV, value)


def test_auto_is_the_gpu_when_torch_sees_one_and_the_cpu_otherwise(setting, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.training_device() == torch.device("cpu")  # unset: auto
    setting("auto")
    assert D.training_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert D.training_device() == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this machine: the second GPU
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert D.training_device() == torch.device("cuda", 1)
    setting("cpu")
    assert D.training_device() == torch.device("cpu")  # a GPU present, the CPU chosen


def test_more_processes_than_gpus_train_on_the_cpu_or_are_refused(setting, monkeypatch):
    """NCCL allows no two ranks on one GPU (seen: `set_device(1)` on a one-GPU machine, "invalid device
    ordinal"): with fewer GPUs than torchrun's processes on the machine, auto is the CPU on every rank."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert D.training_device() == torch.device("cpu")
    setting("cuda")
    with pytest.raises(UlmfitError, match=r"torchrun runs 2 processes on this machine and torch sees 1 GPU\(s\), "
                                          r"one per process; pass --nproc_per_node 1, or --device cpu"):
        D.training_device()


def test_cuda_without_a_gpu_and_unknown_values_are_one_line_errors(setting, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    setting("cuda")
    with pytest.raises(UlmfitError, match="torch sees no CUDA GPU"):
        D.training_device()
    setting("gpu")
    with pytest.raises(UlmfitError, match="ULMFIT_DEVICE='gpu'.*auto, cpu, cuda"):
        D.training_device()


def test_cli_device_flag_is_checked_before_any_work_and_reaches_child_processes(setting, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = tmp_path / "nothing.csv"  # never read: the device is refused first
    assert main(["fit", "--train", str(missing), "--out", str(tmp_path / "m"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda: torch sees no CUDA GPU" in err and "nothing.csv" not in err
    assert main(["finetune-lm", "--train", str(missing), "--out", str(tmp_path / "lm"), "--device", "cpu"]) == 2
    import os

    assert os.environ[D.ENV] == "cpu"  # the environment: a "both" run's direction processes inherit it
    assert "nothing.csv" in capsys.readouterr().err


def test_a_batch_moves_its_inputs_and_keeps_its_row_index_on_the_host():
    meta = torch.device("meta")  # a device that exists on every machine: tensors move there without data
    b = ClsBatch(ids=torch.ones(2, 3, dtype=torch.long), lengths=torch.tensor([3, 2]), labels=torch.tensor([0, 1]),
                 index=torch.tensor([5, 4]))
    moved = D.to_device(b, meta)
    assert moved.ids.is_meta and moved.lengths.is_meta and moved.labels.is_meta
    assert moved.index.device.type == "cpu" and moved.index.tolist() == [5, 4]
    assert b.ids.device.type == "cpu"  # the loader's batch itself is untouched
    unlabelled = D.to_device(replace(b, labels=None), meta)
    assert unlabelled.labels is None
    x, y = D.to_device((torch.zeros(2), torch.zeros(2)), meta)  # an LM batch
    assert x.is_meta and y.is_meta
    state = D.to_device({"state": [(torch.zeros(1), torch.zeros(1))], "n": 3}, meta)  # a task's carried state
    assert state["state"][0][1].is_meta and state["n"] == 3
    assert D.to_device({"state": None}, meta) == {"state": None}


def test_a_loader_on_a_device_is_the_same_loader_otherwise():
    class Loader:
        docs, epoch = "the docs", 0

        def set_epoch(self, e):
            self.epoch = e

        def __len__(self):
            return 2

        def __iter__(self):
            return iter([(torch.zeros(1), torch.ones(1))] * 2)

    loader = Loader()
    assert D.on_device(loader, torch.device("cpu")) is loader and D.on_device(None, torch.device("meta")) is None
    wrapped = D.on_device(loader, torch.device("meta"))
    wrapped.set_epoch(4)
    assert loader.epoch == 4 and len(wrapped) == 2 and wrapped.docs == "the docs"
    assert all(x.is_meta and y.is_meta for x, y in wrapped)


def test_rng_state_is_saved_only_for_a_gpu():
    assert D.rng_state(torch.device("cpu")) is None
    D.set_rng_state(None, torch.device("cpu"))  # a CPU run's checkpoint: nothing to restore


# ------------------------------------------------------------------------------------------ on a GPU
@cuda
def test_lm_phase_on_the_gpu_resumes_inside_an_epoch_like_an_uninterrupted_run(setting, tmp_path, monkeypatch):
    """test_loop's bit-exact resume, on the GPU: the LSTM state carried between batches comes back to
    the GPU and the GPU's dropout RNG is restored; the model is handed back on the CPU."""
    from test_loop import _lm_docs, _lm_run

    from ulmfit.data.lm_loader import LMLoader
    from ulmfit.train.tasks import LMTask

    setting("cuda")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    docs = _lm_docs()
    seen, real_loss, calls = set(), LMTask.loss, {"n": 0}

    def watched(self, model, batch):
        seen.add(batch[0].device.type)
        return real_loss(self, model, batch)

    monkeypatch.setattr(LMTask, "loss", watched)
    full, full_res = _lm_run(docs, tmp_path / "full", 2)
    assert seen == {"cuda"} and all(p.device.type == "cpu" for p in full.parameters())
    n_steps = len(LMLoader(docs, bs=4, bptt=8, seed=1))

    def crashing(self, model, batch):
        calls["n"] += 1
        if calls["n"] == n_steps + 3:  # step 3 of the second epoch: after the checkpoint of step 2
            raise KeyboardInterrupt
        return real_loss(self, model, batch)

    monkeypatch.setattr(LMTask, "loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        _lm_run(docs, tmp_path / "cut", 2)
    monkeypatch.setattr(LMTask, "loss", real_loss)
    resumed, res = _lm_run(docs, tmp_path / "cut", 2, resume=True)
    assert res.resumed_from == "stage 0 epoch 1 batch 2"
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    assert res.history[-1]["train_loss"] == pytest.approx(full_res.history[-1]["train_loss"], abs=1e-6)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu")
    make_rows(90, 0).to_csv(d / "train.csv", index=False)
    make_rows(30, 1).to_csv(d / "valid.csv", index=False)
    make_rows(60, 7)[["text"]].to_csv(d / "unl.csv", index=False)
    return d


def _gpu_config(recipe: str, tmp_path):
    cfg = tiny_fit_config()
    cfg.lm = replace(cfg.lm, epochs=1)
    cfg.clf = replace(cfg.clf, epochs=(1, 1, 1, 2))
    if recipe == "both":
        cfg.direction = "both"
    elif recipe == "siatl":
        cfg.recipe = "siatl"
        cfg.siatl = replace(cfg.siatl, task_hidden=8, bs=16, epochs=2, max_doc_tokens=16, min_steps_per_epoch=0)
    elif recipe == "transformer":  # test_transformer's tiny MiniLM stand-in and its settings
        from test_transformer import fit_config
        from tiny_bert import make_tiny_bert

        cfg = fit_config(make_tiny_bert(tmp_path / "bert"))
    return cfg


@cuda
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["both", "siatl", "transformer"])
def test_every_recipe_trains_on_the_gpu_and_its_folder_predicts_on_the_cpu(recipe, data, setting, tmp_path):
    if recipe == "transformer":
        pytest.importorskip("transformers")
    setting("cuda")
    torch.cuda.reset_peak_memory_stats()
    logs = []
    model = ulmfit.fit(data / "train.csv", data / "valid.csv", out=tmp_path / "m", unlabeled=[data / "unl.csv"],
                       config=_gpu_config(recipe, tmp_path), log=logs.append)
    assert torch.cuda.max_memory_allocated() > 0
    assert any(line.startswith("device: cuda") for line in logs), logs[:5]
    texts = pd.read_csv(data / "valid.csv").text.tolist()
    probs = ulmfit.load(tmp_path / "m").predict_proba(texts)
    assert probs.shape == (30, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(model.predict_proba(texts), probs, atol=1e-6)


@cuda
@pytest.mark.slow
def test_distillation_trains_its_student_on_the_gpu(data, setting, tmp_path):
    setting("cpu")
    cfg = _gpu_config("fwd", tmp_path)
    ulmfit.fit(data / "train.csv", data / "valid.csv", out=tmp_path / "teacher", config=cfg)
    setting("cuda")
    logs = []
    student = ulmfit.distill(tmp_path / "teacher", data / "train.csv", data / "valid.csv", out=tmp_path / "student",
                             unlabeled=[data / "unl.csv"], config=cfg, log=logs.append)
    assert any(line.startswith("device: cuda") for line in logs), logs[:5]
    texts = pd.read_csv(data / "valid.csv").text.tolist()
    assert student.predict_proba(texts).shape == (30, 3)


@cuda
def test_lr_find_sweeps_on_the_gpu_and_leaves_the_model_as_it_was_on_the_cpu(setting, monkeypatch):
    from test_loop import _lm_docs

    from ulmfit.data.lm_loader import LMLoader
    from ulmfit.models.awd_lstm import PRESETS, AWDLSTMConfig, LanguageModel
    from ulmfit.train.lr_find import lr_find
    from ulmfit.train.optim import make_optimizer, param_groups
    from ulmfit.train.tasks import LMTask

    setting("cuda")
    seen, real_loss = set(), LMTask.loss

    def watched(self, model, batch):
        seen.add(batch[0].device.type)
        return real_loss(self, model, batch)

    monkeypatch.setattr(LMTask, "loss", watched)
    torch.manual_seed(0)
    lm = LanguageModel(AWDLSTMConfig(vocab_size=40, **PRESETS["tiny"]))
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    groups = lm.layer_groups()
    result = lr_find(lm, LMLoader(_lm_docs(), bs=4, bptt=8, seed=1), LMTask().loss,
                     lambda: make_optimizer(param_groups(groups, 1e-3), "adamw"), num_it=20, clip=0.25)
    assert seen == {"cuda"} and len(result.lrs) > 5
    assert all(v.device.type == "cpu" and torch.equal(v, before[k]) for k, v in lm.state_dict().items())
