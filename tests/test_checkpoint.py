import json
import os

import pytest
import torch
from torch import nn

from ulmfit.errors import UlmfitError
from ulmfit.train.checkpoint import (
    append_jsonl,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_weights,
    read_weights_metadata,
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
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "d.pt")
    assert torch.equal(torch.load(tmp_path / "d.pt")["w"], torch.arange(3))
    assert _no_temp_files(tmp_path)


def test_failed_torch_save_keeps_previous_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"step": 1}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"step": 2, "bad": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert torch.load(path) == {"step": 1}
    assert _no_temp_files(tmp_path)


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
