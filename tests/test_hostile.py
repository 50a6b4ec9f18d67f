"""Hostile input: every case runs the CLI in-process and must exit 2 with exactly one `error:` line
that names the thing (file, field, option, row) and says the fix, print no traceback, run no
planted code, leave every file that existed before byte-identical and leave no new file or folder.

Classes (issue 15): unwritable output, planted pickles, hand-edited or mismatched model folders,
odd input files, option values, resume edge cases, two writers. The session summary prints
"hostile input: N of N clean".
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import pytest
import torch

from conftest import HOSTILE, small_run
from ulmfit.cli import main
from ulmfit.train.checkpoint import load_weights

FIX_WORDS = ("pass", "use", "choose", "give", "remove", "fill", "fix", "restore", "retrain", "delete", "wait",
             "add", "quote", "start", "write", "free", "pick", "point", "check", "train", "name", "rename")


class Evil:
    """Unpickling this would create the file `path`: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Data, a fast config and one trained classifier, shared read-only (cases work on copies)."""
    d = tmp_path_factory.mktemp("hostile")
    code = main([str(a) for a in ["fit", *small_run(d, 60, 1, (1, 0, 0, 1)), "--out", d / "model"]])
    assert code == 0
    return d


def snapshot(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def model_copy(env, tmp_path, name="model"):
    shutil.copytree(env / "model", tmp_path / name)
    return tmp_path / name


def edit_json(path, fn):
    d = json.loads(path.read_text())
    path.write_text(json.dumps(fn(d)))


def interrupted(env, tmp_path):
    """A copy of the model as an interrupted run: no ulmfit.json, checkpoints present."""
    m = model_copy(env, tmp_path)
    (m / "ulmfit.json").unlink()
    (m / "checkpoints").mkdir()
    return m


# --- the cases: each returns (argv, words the error line must contain) ----------------------------

def out_under_a_file(env, t, mp):
    (t / "f").write_text("x")
    return ["fit", "--train", env / "train.csv", "--out", t / "f" / "m"], ["f", "not a folder"]


def out_is_a_file(env, t, mp):
    (t / "f").write_text("x")
    return ["fit", "--train", env / "train.csv", "--out", t / "f"], ["f", "is a file"]


def out_dangling_symlink(env, t, mp):
    os.symlink(t / "nowhere", t / "link")
    return ["fit", "--train", env / "train.csv", "--out", t / "link" / "m"], ["link", "does not exist"]


def predict_out_is_a_folder(env, t, mp):
    (t / "dir").mkdir()
    (t / "texts.txt").write_text("hello\n")
    return ["predict", env / "model", "--data", t / "texts.txt", "--out", t / "dir"], ["dir", "is a folder"]


def predict_out_under_a_file(env, t, mp):
    (t / "f").write_text("x")
    (t / "texts.txt").write_text("hello\n")
    return ["predict", env / "model", "--data", t / "texts.txt", "--out", t / "f" / "p.csv"], ["p.csv", "f is a file"]


def _fail(mp, name, code):
    real = getattr(os, name)

    def failing(*a, **k):
        raise OSError(code, os.strerror(code))

    mp.setattr(os, name, failing)
    return real


def read_only_disk(env, t, mp):
    (t / "texts.txt").write_text("hello\n")
    mp.setattr("ulmfit.fileio.tempfile.mkstemp", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "ro")))
    return ["predict", env / "model", "--data", t / "texts.txt", "--out", t / "p.csv"], ["p.csv", "read-only"]


def full_disk(env, t, mp):
    (t / "texts.txt").write_text("hello\n")
    (t / "p.csv").write_text("old predictions\n")  # must survive
    _fail(mp, "fsync", errno.ENOSPC)
    return ["predict", env / "model", "--data", t / "texts.txt", "--out", t / "p.csv"], ["p.csv", "no space"]


def permission_denied(env, t, mp):
    (t / "texts.txt").write_text("hello\n")
    _fail(mp, "replace", errno.EACCES)
    return ["predict", env / "model", "--data", t / "texts.txt", "--out", t / "p.csv"], ["p.csv", "permission"]


def pickle_as_resume_state(env, t, mp):
    m = interrupted(env, t)
    for name in ("lm-last.safetensors", "classifier-last.safetensors"):
        (m / "checkpoints" / name).write_bytes(pickle.dumps({"model": Evil(t / "pwned")}))
    return ["fit", "--out", m, "--resume"], ["lm-last.safetensors", "not a ulmfit resume-state file"]


def torch_zip_as_resume_state(env, t, mp):
    m = interrupted(env, t)
    for name in ("lm-last.safetensors", "classifier-last.safetensors"):
        torch.save({"model": Evil(t / "pwned")}, m / "checkpoints" / name)
    return ["fit", "--out", m, "--resume"], ["lm-last.safetensors", "not a ulmfit resume-state file"]


def pickle_as_weights(env, t, mp):
    m = model_copy(env, t)
    (m / "classifier.safetensors").write_bytes(pickle.dumps(Evil(t / "pwned")))
    return ["predict", m], ["classifier.safetensors", "not a safetensors file"]


def pickle_as_fastai_itos(env, t, mp):
    lm = load_weights(env / "model" / "lm.safetensors")
    torch.save({k: v for k, v in lm.items()}, t / "lstm_fwd.pth")
    (t / "itos.pkl").write_bytes(pickle.dumps([Evil(t / "pwned")]))
    return ["import-fastai", t / "lstm_fwd.pth", "--itos", t / "itos.pkl", "--out", t / "imp"], ["itos.pkl"]


def malformed_fastai_itos(env, t, mp):
    torch.save({"w": torch.zeros(2)}, t / "lstm_fwd.pth")
    (t / "itos.pkl").write_bytes(b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\x7f")  # a frame longer than memory
    return ["import-fastai", t / "lstm_fwd.pth", "--itos", t / "itos.pkl", "--out", t / "imp"], ["itos.pkl"]


def pickle_as_fastai_weights(env, t, mp):
    (t / "lstm_fwd.pth").write_bytes(pickle.dumps({"model": Evil(t / "pwned")}))
    (t / "itos.pkl").write_bytes(pickle.dumps(["a", "b"]))
    return ["import-fastai", t / "lstm_fwd.pth", "--itos", t / "itos.pkl", "--out", t / "imp"], ["lstm_fwd.pth"]


def marker_is_a_list(env, t, mp):
    m = model_copy(env, t)
    (m / "ulmfit.json").write_text("[]")
    return ["predict", m], ["ulmfit.json", "not an object"]


def marker_without_classes(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "ulmfit.json", lambda d: {k: v for k, v in d.items() if k != "classes"})
    return ["predict", m], ["ulmfit.json", "classes"]


def classes_disagree_with_head(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "ulmfit.json", lambda d: {**d, "classes": d["classes"] + ["extra"]})
    return ["predict", m], ["ulmfit.json", "classes", "n_classes"]


def head_config_edited(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "classifier_config.json", lambda d: {**d, "head": {**d["head"], "lin_sizes": [7]}})
    return ["predict", m], ["classifier.safetensors", "classifier_config.json"]


def lm_config_disagrees_with_weights(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "lm_config.json", lambda d: {**d, "hidden_size": d["hidden_size"] + 8})
    return ["generate", m, "--words", "3"], ["lm.safetensors", "lm_config.json"]


def vocab_longer_than_embedding(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "vocab.json", lambda d: {**d, "itos": d["itos"] + ["zzextra1", "zzextra2"]})
    return ["predict", m], ["vocab.json", "vocab_size"]


def vocab_shorter_than_embedding(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "vocab.json", lambda d: {**d, "itos": d["itos"][:-3]})
    return ["generate", m, "--words", "3"], ["vocab.json", "vocab_size"]


def another_models_classifier(env, t, mp):
    m = model_copy(env, t)
    shutil.copy(m / "lm.safetensors", m / "classifier.safetensors")  # weights of another model
    return ["predict", m], ["classifier.safetensors", "another model"]


def truncated_weights(env, t, mp):
    m = model_copy(env, t)
    data = (m / "classifier.safetensors").read_bytes()
    (m / "classifier.safetensors").write_bytes(data[: len(data) // 2])
    return ["predict", m], ["classifier.safetensors", "corrupt"]


def tokenizer_unknown_field(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "tokenizer.json", lambda d: {**d, "bogus": 1})
    return ["predict", m], ["tokenizer.json", "TokenizerConfig"]


def directions_garbage(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "ulmfit.json", lambda d: {**d, "directions": [{"x": 1}]})
    return ["predict", m], ["ulmfit.json", "directions"]


def _fit_on(env, t, name, content, extra=()):
    p = t / name
    (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    return ["fit", "--train", p, "--out", t / "m", "--config", env / "tiny.json", *extra]


def header_equal_after_trimming(env, t, mp):
    return _fit_on(env, t, "d.csv", "text, text ,label\na,b,pos\nc,d,neg\n"), ["d.csv", "line 1", "'text'"]


def duplicate_header(env, t, mp):
    return _fit_on(env, t, "d.csv", "text,label,label\na,pos,neg\n"), ["d.csv", "'label'"]


def row_with_extra_field(env, t, mp):
    return _fit_on(env, t, "d.csv", "text,label\ngood one,pos\nbad, one,neg\nfine,neg\n"), ["d.csv", "line 3", "row 2"]


def first_row_with_extra_field(env, t, mp):
    return _fit_on(env, t, "d.csv", "text,label\nbad, one,neg\nfine,neg\n"), ["d.csv", "line 2", "row 1"]


def jsonl_nested_deep(env, t, mp):
    deep = "[" * 5000 + "]" * 5000
    return _fit_on(env, t, "d.jsonl", '{"text": "a", "label": "pos"}\n{"text": ' + deep + ', "label": "x"}\n'), \
        ["d.jsonl", "line 2", "nested"]


def jsonl_text_is_a_list(env, t, mp):
    """A list of tokens where the text belongs: refused, not read as its JSON source '["a", "b"]'."""
    return _fit_on(env, t, "d.jsonl", '{"text": "a", "label": "pos"}\n{"text": ["b", "c"], "label": "neg"}\n'), \
        ["d.jsonl", "line 2", "'text'", "nested JSON array"]


def nan_label_csv(env, t, mp):
    return _fit_on(env, t, "d.csv", "text,label\na,pos\nb,NaN\nc,neg\n"), ["d.csv", "line 3", "missing label"]


def nan_label_jsonl(env, t, mp):
    return _fit_on(env, t, "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": NaN}\n'), \
        ["d.jsonl", "line 2", "missing label"]


def empty_class_folder(env, t, mp):
    for c in ("pos", "neg", "neu"):
        (t / "docs" / c).mkdir(parents=True)
    for c in ("pos", "neg"):
        (t / "docs" / c / "1.txt").write_text(f"a {c} text")
    return ["fit", "--train", t / "docs", "--out", t / "m"], ["neu", "no .txt"]


def byte_ff_in_csv(env, t, mp):
    return _fit_on(env, t, "d.csv", b"text,label\nab\xffc,pos\n"), ["d.csv", "0xff", "--encoding"]


def byte_ff_in_pretraining_shard(env, t, mp):
    (t / "corpus" / "shards").mkdir(parents=True)
    (t / "corpus" / "shards" / "a-000.txt").write_bytes(b"one document\nbad \xff byte\n")
    return ["pretrain", "--corpus", t / "corpus", "--out", t / "lm", "--preset", "tiny"], \
        ["a-000.txt", "0xff", "encoding"]


def bad_csv_quoting(env, t, mp):
    return _fit_on(env, t, "d.csv", 'text,label\n"unclosed "quote" here,pos\n'), ["d.csv"]


def device_setting_garbage(env, t, mp):
    mp.setenv("ULMFIT_DEVICE", "gpu")
    return _fit_on(env, t, "d.csv", "text,label\na,pos\nb,neg\n"), ["ULMFIT_DEVICE='gpu'", "auto, cpu, cuda"]


def device_cuda_without_a_gpu(env, t, mp):
    import torch

    mp.setenv("ULMFIT_DEVICE", "auto")  # recorded, so the CLI's `--device cuda` is undone after the case
    mp.setattr(torch.cuda, "is_available", lambda: False)
    return _fit_on(env, t, "d.csv", "text,label\na,pos\nb,neg\n", ["--device", "cuda"]), ["--device cuda", "no CUDA GPU"]


def unknown_encoding(env, t, mp):
    return _fit_on(env, t, "d.csv", "text,label\na,pos\n", ["--encoding", "klingon"]), ["d.csv", "klingon"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_temperature(env, tmp_path, capsys, value):
    check(["generate", env / "model", "--temperature", value], ["--temperature"], tmp_path, env, capsys)


def words_zero(env, t, mp):
    return ["generate", env / "model", "--words", "0"], ["--words"]


def samples_zero(env, t, mp):
    return ["generate", env / "model", "--n", "-2"], ["--n"]


def labels_per_class_zero(env, t, mp):
    return ["fit", "--train", env / "train.csv", "--out", t / "m", "--labels-per-class", "0"], ["--labels-per-class"]


def lr_find_iters_zero(env, t, mp):
    return ["lr-find", "--train", env / "train.csv", "--out", t / "lr", "--iters", "0"], ["--iters"]


def resume_finished_model(env, t, mp):
    return ["fit", "--out", model_copy(env, t), "--resume"], ["model", "finished"]


def resume_nothing_written(env, t, mp):
    (t / "m").mkdir()
    return ["fit", "--out", t / "m", "--resume"], ["nothing to resume"]


def resume_missing_folder(env, t, mp):
    return ["fit", "--out", t / "never", "--resume"], ["never", "nothing to resume"]


def resume_before_config(env, t, mp):
    (t / "m" / "checkpoints").mkdir(parents=True)
    return ["fit", "--out", t / "m", "--resume"], ["nothing to resume", "config.json"]


def second_writer(env, t, mp):
    from ulmfit.fileio import lock_path

    m = interrupted(env, t)
    lock_path(m).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "since": "earlier"}))
    return ["fit", "--out", m, "--resume"], ["being written", f"pid {os.getppid()}"]


def second_writer_overwrite(env, t, mp):
    from ulmfit.fileio import lock_path

    m = model_copy(env, t)
    lock_path(m).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "since": "earlier"}))
    return ["fit", "--train", env / "train.csv", "--out", m, "--overwrite"], ["being written"]


def overwrite_with_bad_data(env, t, mp):
    """The old model stays as it was and no staging folder is left behind."""
    (t / "bad.csv").write_text("text,label\na,pos,extra\n")
    return ["fit", "--train", t / "bad.csv", "--out", model_copy(env, t), "--overwrite"], ["bad.csv", "line 2"]


def refit_without_overwrite(env, t, mp):
    return ["fit", "--train", env / "train.csv", "--out", model_copy(env, t)], ["already holds", "--overwrite"]


def import_fastai_into_interrupted_run(env, t, mp):
    m = interrupted(env, t)
    lm = load_weights(env / "model" / "lm.safetensors")
    torch.save(lm, t / "lstm_fwd.pth")
    (t / "itos.pkl").write_bytes(pickle.dumps(["a"]))
    return ["import-fastai", t / "lstm_fwd.pth", "--itos", t / "itos.pkl", "--out", m], ["not empty", "--overwrite"]


CASES = [out_under_a_file, out_is_a_file, out_dangling_symlink, predict_out_is_a_folder, predict_out_under_a_file,
         read_only_disk, full_disk, permission_denied,
         pickle_as_resume_state, torch_zip_as_resume_state, pickle_as_weights, pickle_as_fastai_itos,
         malformed_fastai_itos, pickle_as_fastai_weights,
         marker_is_a_list, marker_without_classes, classes_disagree_with_head, head_config_edited,
         lm_config_disagrees_with_weights, vocab_longer_than_embedding, vocab_shorter_than_embedding,
         another_models_classifier, truncated_weights, tokenizer_unknown_field, directions_garbage,
         header_equal_after_trimming, duplicate_header, row_with_extra_field, first_row_with_extra_field,
         jsonl_nested_deep, jsonl_text_is_a_list, nan_label_csv, nan_label_jsonl, empty_class_folder, byte_ff_in_csv,
         byte_ff_in_pretraining_shard, bad_csv_quoting, unknown_encoding, device_setting_garbage,
         device_cuda_without_a_gpu,
         words_zero, samples_zero, labels_per_class_zero, lr_find_iters_zero,
         resume_finished_model, resume_nothing_written, resume_missing_folder, resume_before_config,
         second_writer, second_writer_overwrite, overwrite_with_bad_data, refit_without_overwrite, import_fastai_into_interrupted_run]


# --- classes beyond the list ---------------------------------------------------------------

def weights_file_as_resume_state(env, t, mp):
    """A valid safetensors file, but not resume state (no JSON skeleton)."""
    m = interrupted(env, t)
    for name in ("lm-last.safetensors", "classifier-last.safetensors"):
        shutil.copy(m / "lm.safetensors", m / "checkpoints" / name)
    return ["fit", "--out", m, "--resume"], ["lm-last.safetensors", "not a ulmfit resume-state file"]


def resume_state_of_another_model(env, t, mp):
    from ulmfit.train.checkpoint import save_state

    m = interrupted(env, t)
    for name in ("lm-last.safetensors", "classifier-last.safetensors"):
        save_state({"model": {"w": torch.zeros(3)}, "optimizer": {}, "early": {}, "history": []},
                   m / "checkpoints" / name)
    return ["fit", "--out", m, "--resume"], ["lm-last.safetensors", "does not fit this run"]


def model_folder_is_a_file(env, t, mp):
    (t / "model").write_text("x")
    return ["predict", t / "model"], ["model", "not found"]


def lm_folder_for_predict(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "ulmfit.json", lambda d: {**d, "kind": "lm"})
    return ["predict", m], ["lm model, not a classifier"]


def unknown_kind(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "ulmfit.json", lambda d: {**d, "kind": "teapot"})
    return ["predict", m], ["ulmfit.json", "kind"]


def marker_version_is_a_string(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "ulmfit.json", lambda d: {**d, "version": "1"})
    return ["predict", m], ["format version '1'"]


def marker_not_utf8(env, t, mp):
    m = model_copy(env, t)
    (m / "ulmfit.json").write_bytes(b"\xff\xfe\x00")
    return ["predict", m], ["ulmfit.json", "corrupt"]


def lm_config_wrong_type(env, t, mp):
    m = model_copy(env, t)
    edit_json(m / "lm_config.json", lambda d: {**d, "emb_size": "abc"})
    return ["generate", m, "--words", "2"], ["lm_config.json", "AWDLSTMConfig"]


def student_on_without_unlabelled_text(env, t, mp):
    """`--student on` with nothing to distil over: refused once the data is read, before anything trains."""
    return ["fit", "--train", env / "train.csv", "--valid", env / "valid.csv", "--out", t / "m", "--student", "on",
            "--backbone", "awd_lstm", "--pretrained", "none"], ["student=on", "unlabelled text", "--student off"]


CASES += [student_on_without_unlabelled_text, marker_version_is_a_string, marker_not_utf8, lm_config_wrong_type, weights_file_as_resume_state, resume_state_of_another_model, model_folder_is_a_file, lm_folder_for_predict,
          unknown_kind]


def check(argv, names, tmp_path, env, capsys):
    HOSTILE["total"] += 1
    before = {**snapshot(tmp_path), **snapshot(env)}
    dirs_before = sorted(p for p in tmp_path.rglob("*") if p.is_dir())
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err, err
    assert code == 2 and len(errors) == 1, f"exit {code}, stderr:\n{err}"
    line = errors[0]
    for word in names:
        assert str(word) in line, f"{word!r} not in {line!r}"
    assert any(w in line for w in FIX_WORDS), f"no fix in {line!r}"
    assert not (tmp_path / "pwned").exists(), "planted code ran"
    after = {**snapshot(tmp_path), **snapshot(env)}
    assert [p for p in before if before[p] != after.get(p)] == [], "a file that existed before was changed"
    assert sorted(set(after) - set(before)) == [], "a refused command left files behind"
    assert sorted(p for p in tmp_path.rglob("*") if p.is_dir()) == dirs_before, "a refused command left folders behind"
    HOSTILE["clean"] += 1


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile(case, env, tmp_path, capsys, monkeypatch):
    argv, names = case(env, tmp_path, monkeypatch)
    check(argv, names, tmp_path, env, capsys)


def test_both_with_pretrained_none_starts_the_backward_model_from_scratch_too():
    """`--direction both --pretrained none`: the help says the backward model follows (was general-en-bwd)."""
    from ulmfit.recipes.config import FitConfig

    for none in ("none", "None", None):
        assert FitConfig(direction="both", pretrained=none).pretrained_for("bwd") is None
    assert FitConfig(direction="both", pretrained="none", pretrained_bwd="x").pretrained_for("bwd") == "x"
