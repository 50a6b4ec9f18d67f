import json
import os

import pytest
import torch
from torch import nn

from ulmfit.errors import UlmfitError
from ulmfit.fileio import append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text
from ulmfit.train.checkpoint import (
    load_state,
    load_weights,
    read_weights_metadata,
    save_state,
    save_weights,
)


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def _no_temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_writes_round_trip(tmp_path):
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2], "p": tmp_path})
    text = (tmp_path / "c.json").read_text()
    assert json.loads(text)["x"] == [1, 2] and '\n  "x"' in text
    save_state({"w": torch.arange(3)}, tmp_path / "d.safetensors")
    assert torch.equal(load_state(tmp_path / "d.safetensors")["w"], torch.arange(3))
    assert _no_temp_files(tmp_path)


def test_failed_state_save_keeps_previous_file(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_state({"step": 1}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot store"):
        save_state({"step": 2, "bad": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert load_state(path) == {"step": 1}
    assert _no_temp_files(tmp_path)


def test_state_round_trip_keeps_types(tmp_path):
    """Optimizer state (int keys), tuples, RNG bytes, NaN/inf and nested tensors come back as they were."""
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "running": (1.5, 2, 3, float("inf")),
             "task": {"state": [(torch.ones(1, 2), torch.zeros(1, 2))]}, "best": None, "history": [{"a": float("nan")}]}
    save_state(state, tmp_path / "s.safetensors")
    back = load_state(tmp_path / "s.safetensors")
    assert back["running"] == (1.5, 2, 3, float("inf")) and back["best"] is None
    assert torch.equal(back["rng"], state["rng"]) and back["rng"].dtype == torch.uint8
    assert isinstance(back["task"]["state"][0], tuple) and torch.equal(back["task"]["state"][0][0], torch.ones(1, 2))
    opt2 = torch.optim.AdamW(nn.Linear(3, 2).parameters(), lr=0.5)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.99) and set(opt2.state_dict()["state"]) == {0, 1}


def test_planted_pickle_is_refused_without_running(tmp_path):
    """A pickle whose __reduce__ would create a file, put where a resume checkpoint goes."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "lm-last.safetensors"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    torch.save({"model": Evil()}, tmp_path / "zip.safetensors")  # torch's zip format too
    for p in (path, tmp_path / "zip.safetensors"):
        with pytest.raises(UlmfitError, match="not a ulmfit resume-state file"):
            load_state(p)
    assert not marker.exists()


def test_failed_json_keeps_previous_file(tmp_path):
    path = tmp_path / "cfg.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}


def test_append_jsonl(tmp_path):
    path = tmp_path / "log" / "metrics.jsonl"
    append_jsonl(path, {"epoch": 0, "loss": 1.5})
    append_jsonl(path, {"epoch": 1, "loss": torch.tensor(1.25)})
    lines = path.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 1.25}]


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.rnn = nn.LSTM(4, 4)
        self.dec = nn.Linear(4, 7)
        self.dec.weight = self.emb.weight


def test_safetensors_round_trip_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    path = tmp_path / "weights.safetensors"
    save_weights(model.state_dict(), path, metadata={"arch": "tied"})
    loaded = load_weights(path)
    assert set(loaded) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded[k], v), k
    assert loaded["dec.weight"] is loaded["emb.weight"] or loaded["emb.weight"] is loaded["dec.weight"]
    assert read_weights_metadata(path) == {"arch": "tied"}
    fresh = TiedLM()
    fresh.load_state_dict(loaded)
    assert fresh.dec.weight is fresh.emb.weight
    assert torch.equal(fresh.dec.weight, model.emb.weight)


def test_save_weights_dtype_and_views(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    sd = {"a": base.view(3, 4), "b": base[4:8], "steps": torch.tensor(5)}  # overlapping views
    save_weights(sd, tmp_path / "w.safetensors", dtype=torch.float16)
    loaded = load_weights(tmp_path / "w.safetensors")
    assert loaded["a"].dtype == torch.float16 and loaded["steps"].dtype == torch.int64
    assert torch.equal(loaded["b"].float(), base[4:8])


def test_load_weights_missing_or_corrupt(tmp_path):
    with pytest.raises(UlmfitError, match="nope.safetensors"):
        load_weights(tmp_path / "nope.safetensors")
    path = tmp_path / "w.safetensors"
    save_weights({"x": torch.ones(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UlmfitError, match="w.safetensors"):
        load_weights(path)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UlmfitError, match="corrupt"):
        load_weights(path)


def test_atomic_file_permissions(tmp_path):
    atomic_write_text(tmp_path / "p.txt", "x")
    mode = os.stat(tmp_path / "p.txt").st_mode & 0o777
    assert mode & 0o044  # readable by others under a usual umask, not mkstemp's 0600
