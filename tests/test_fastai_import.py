"""Importing fastai's pretrained AWD-LSTM: a tiny checkpoint with fastai's key names and shapes is
built here, imported, and our LanguageModel is compared with an independent reference forward
(embedding -> torch.nn.LSTM layers -> tied decoder) computed straight from the fastai weights."""
from __future__ import annotations

import functools
import http.server
import json
import pickle
import socket
import tarfile
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ulmfit.errors import UlmfitError
from ulmfit.recipes import model_dir
from ulmfit.recipes.fastai_import import download_fastai_wt103, import_fastai
from ulmfit.text.tokenize import SPECIAL_TOKENS

V, EMB, HID, LAYERS = 40, 8, 12, 3
V2_SPECIALS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]
V1_SPECIALS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxmaj", "xxup", "xxrep", "xxwrep"]
WORDS = ["the", ",", ".", "of", "and", "in", "to", "a", "was", "'s", "on", "for", "as", "with", "by",
         "he", "at", "from", "his", "that", "it", "is", "an", "film", "season"]


def fastai_itos(specials=V2_SPECIALS) -> list[str]:
    itos = list(specials) + WORDS
    return itos + ["xxfake"] * (V - len(itos))


def fastai_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A fastai v2 AWD-LSTM LM state dict: SequentialRNN(AWD_LSTM, LinearDecoder), tied weights."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.rand(*shape, generator=g) * 0.8 - 0.4  # noqa: E731
    emb = r(V, EMB)
    sd = {"0.encoder.weight": emb, "0.encoder_dp.emb.weight": emb.clone()}
    sizes = [EMB] + [HID] * (LAYERS - 1) + [EMB]
    for i in range(LAYERS):
        n_in, n_out = sizes[i], sizes[i + 1]
        sd[f"0.rnns.{i}.weight_hh_l0_raw"] = r(4 * n_out, n_out)
        sd[f"0.rnns.{i}.module.weight_ih_l0"] = r(4 * n_out, n_in)
        sd[f"0.rnns.{i}.module.bias_ih_l0"] = r(4 * n_out)
        sd[f"0.rnns.{i}.module.bias_hh_l0"] = r(4 * n_out)
        sd[f"0.rnns.{i}.module.weight_hh_l0"] = r(4 * n_out, n_out)  # a stale dropped copy: must be ignored
    sd["1.decoder.weight"] = emb.clone()
    sd["1.decoder.bias"] = r(V)
    return sd


def reference_logits(sd: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Independent eval-mode forward of a fastai AWD-LSTM LM: ids [B, T] (fastai ids) -> [B, T, V]."""
    x = F.embedding(ids, sd["0.encoder.weight"])
    i = 0
    with torch.no_grad():
        while f"0.rnns.{i}.weight_hh_l0_raw" in sd:
            hh = sd[f"0.rnns.{i}.weight_hh_l0_raw"]
            ih = sd[f"0.rnns.{i}.module.weight_ih_l0"]
            lstm = torch.nn.LSTM(ih.shape[1], hh.shape[1], batch_first=True)
            lstm.weight_ih_l0.copy_(ih)
            lstm.weight_hh_l0.copy_(hh)
            lstm.bias_ih_l0.copy_(sd[f"0.rnns.{i}.module.bias_ih_l0"])
            lstm.bias_hh_l0.copy_(sd[f"0.rnns.{i}.module.bias_hh_l0"])
            x, _ = lstm(x)
            i += 1
        return x @ sd["1.decoder.weight"].T + sd["1.decoder.bias"]


SEQS = [[2, 9, 10, 11, 12, 13, 14], [2, 20, 5, 5, 33, 8, 7], [2, 0, 18, 17, 16, 15, 30]]


def check_against_reference(out: Path, sd: dict, fa_itos: list[str]) -> None:
    lm, _, vocab = model_dir.load_lm(out)
    assert not lm.training
    ids = torch.tensor(SEQS)
    ref = reference_logits(sd, ids)
    # our ids for the same tokens, and our logit columns in fastai's row order
    ours_ids = torch.tensor([[vocab.stoi[vocab_name(fa_itos, vocab, i)] for i in row] for row in SEQS])
    cols = torch.tensor([vocab.stoi[vocab_name(fa_itos, vocab, i)] for i in range(len(fa_itos))])
    with torch.no_grad():
        logits, state, _, _ = lm(ours_ids)
        # and in two chunks, carrying the state
        a, st, _, _ = lm(ours_ids[:, :3])
        b, _, _, _ = lm(ours_ids[:, 3:], st)
    torch.testing.assert_close(logits[..., cols], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([a, b], 1)[..., cols], ref, atol=1e-5, rtol=0)
    assert len(state) == LAYERS


def vocab_name(fa_itos: list[str], vocab, fa_id: int) -> str:
    """Our name of fastai's row `fa_id`: the same string, except the renamed 'xxfake' duplicates."""
    tok = fa_itos[fa_id]
    if tok != "xxfake":
        return tok
    return vocab.itos[fa_id]  # fakes keep their rows when no reordering happened


def save_pair(folder: Path, sd: dict, itos: list[str], name: str = "lstm_fwd.pth", wrap: bool = False) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pth, pkl = folder / name, folder / "itos_wt103.pkl"
    torch.save({"model": sd, "opt": {"state": {}, "param_groups": [{"lr": 0.01}]}} if wrap else sd, pth)
    with open(pkl, "wb") as f:
        pickle.dump(itos, f)
    return pth, pkl


def make_archive(tmp: Path, sd: dict, itos: list[str], direction: str = "fwd") -> Path:
    inner = tmp / "build" / f"wt103-{direction}"
    save_pair(inner, sd, itos, name=f"lstm_{direction}.pth")
    tgz = tmp / f"wt103-{direction}.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(inner, arcname=f"wt103-{direction}")
    return tgz


# ----------------------------------------------------------------------------------------- tests


def test_pth_and_itos_match_reference_forward(tmp_path):
    sd, itos = fastai_state(), fastai_itos()
    pth, pkl = save_pair(tmp_path / "src", sd, itos)
    logs = []
    out = import_fastai(pth, tmp_path / "lm", itos=pkl, log=logs.append)
    assert out == tmp_path / "lm"

    lm, tok, vocab = model_dir.load_lm(out)
    assert vocab.itos[:9] == SPECIAL_TOKENS and vocab.itos[9:9 + len(WORDS)] == WORDS
    assert vocab.itos[9 + len(WORDS):] == [f"xxfake{i}" for i in range(V - 9 - len(WORDS))]
    assert len(vocab) == V
    cfg = lm.cfg
    assert (cfg.vocab_size, cfg.emb_size, cfg.hidden_size, cfg.n_layers, cfg.tie_weights) == (V, EMB, HID, 3, True)
    assert lm.decoder.weight is lm.encoder.embedding.weight
    torch.testing.assert_close(lm.encoder.rnns[1].weight_hh_l0_raw.detach(), sd["0.rnns.1.weight_hh_l0_raw"])
    check_against_reference(out, sd, itos)

    meta = json.loads((out / "ulmfit.json").read_text())
    assert meta["kind"] == "lm" and meta["source"] == "fastai" and meta["direction"] == "fwd"
    assert model_dir.read_marker(out)["source_file"] == "lstm_fwd.pth"
    assert tok("Hello world")[:2] == ["xxbos", "xxmaj"]
    assert any("duplicate" in m for m in logs) and not any("reordered" in m for m in logs)


def test_v1_special_order_is_reordered(tmp_path):
    """fastai v1 put xxmaj, xxup before xxrep, xxwrep: rows move so our ids 0..8 are right."""
    sd, itos = fastai_state(seed=1), fastai_itos(V1_SPECIALS)
    pth, pkl = save_pair(tmp_path / "src", sd, itos, wrap=True)  # also the {'model': ..., 'opt': ...} wrapping
    logs = []
    out = import_fastai(pth, tmp_path / "lm", itos=pkl, log=logs.append)
    lm, _, vocab = model_dir.load_lm(out)
    assert vocab.itos[:9] == SPECIAL_TOKENS
    assert any("reordered" in m for m in logs)
    # xxmaj was fastai row 5, it is our row 8; its embedding and bias moved with it
    torch.testing.assert_close(lm.encoder.embedding.weight[8].detach(), sd["0.encoder.weight"][5])
    torch.testing.assert_close(lm.decoder.bias[5].detach(), sd["1.decoder.bias"][7])  # xxrep: 7 -> 5
    check_against_reference(out, sd, itos)


def test_old_spellings_and_missing_special(tmp_path):
    """fastai 0.7 spelled _unk_/_pad_ and had no xxeos: aliases are used, xxeos gets a mean row."""
    specials = ["_unk_", "_pad_", "xxbos", "xxfld", "xxmaj", "xxup", "xxrep", "xxwrep"]
    itos = specials + WORDS
    itos += ["xxfake"] * (V - len(itos))
    sd = fastai_state(seed=2)
    pth, pkl = save_pair(tmp_path / "src", sd, itos)
    logs = []
    lm_dir = import_fastai(pth, tmp_path / "lm", itos=pkl, log=logs.append)
    lm, _, vocab = model_dir.load_lm(lm_dir)
    assert vocab.itos[:9] == SPECIAL_TOKENS and len(vocab) == V + 1
    assert vocab.stoi["the"] == 9
    torch.testing.assert_close(lm.encoder.embedding.weight[3].detach(), sd["0.encoder.weight"].mean(0))
    torch.testing.assert_close(lm.encoder.embedding.weight[0].detach(), sd["0.encoder.weight"][0])
    assert any("xxeos" in m and "new row" in m for m in logs)
    assert any("'_unk_'" in m for m in logs)
    # same predictions for the words (fastai ids 8.. are our 9..)
    ids = torch.tensor([[2, 8, 9, 10, 11]])
    with torch.no_grad():
        ours = lm(torch.tensor([[2, 9, 10, 11, 12]]))[0]
    ref = reference_logits(sd, ids)
    torch.testing.assert_close(ours[..., 9:9 + len(WORDS)], ref[..., 8:8 + len(WORDS)], atol=1e-5, rtol=0)


def test_archive_and_folder(tmp_path):
    sd, itos = fastai_state(seed=3), fastai_itos()
    tgz = make_archive(tmp_path, sd, itos)
    out = import_fastai(tgz, tmp_path / "from_tgz", log=lambda m: None)
    check_against_reference(out, sd, itos)
    assert model_dir.read_marker(out)["source_file"] == "wt103-fwd.tgz"

    out2 = import_fastai(tmp_path / "build", tmp_path / "from_dir", log=lambda m: None)  # the folder form
    check_against_reference(out2, sd, itos)

    with pytest.raises(UlmfitError, match="already holds a model"):
        import_fastai(tgz, out, log=lambda m: None)
    import_fastai(tgz, out, overwrite=True, log=lambda m: None)

    bwd = make_archive(tmp_path, fastai_state(seed=4), itos, direction="bwd")
    with pytest.raises(UlmfitError, match="lstm_bwd.pth.*direction='bwd'"):
        import_fastai(bwd, tmp_path / "wrong", log=lambda m: None)
    out3 = import_fastai(bwd, tmp_path / "bwd", direction="bwd", log=lambda m: None)
    assert model_dir.read_marker(out3)["direction"] == "bwd"
    check_against_reference(out3, fastai_state(seed=4), itos)


def test_errors_name_the_file(tmp_path):
    sd, itos = fastai_state(), fastai_itos()
    pth, pkl = save_pair(tmp_path / "src", sd, itos)
    pkl.unlink()
    with pytest.raises(UlmfitError, match="lstm_fwd.pth: no itos given"):
        import_fastai(pth, tmp_path / "a", log=lambda m: None)
    with pytest.raises(UlmfitError, match="itos file not found"):
        import_fastai(pth, tmp_path / "a", itos=tmp_path / "nope.pkl", log=lambda m: None)

    # a state dict that is not an AWD-LSTM LM
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(4)}, other)
    with pytest.raises(UlmfitError, match="resnet.pth: not a fastai AWD-LSTM"):
        import_fastai(other, tmp_path / "b", itos=itos, log=lambda m: None)
    # not a torch file at all
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(UlmfitError, match="junk.pth: cannot read"):
        import_fastai(junk, tmp_path / "c", itos=itos, log=lambda m: None)
    # an LSTM layer of the wrong size
    bad = dict(sd)
    bad["0.rnns.1.module.weight_ih_l0"] = torch.zeros(4 * HID, HID + 1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UlmfitError, match="bad.pth: .*layer 1"):
        import_fastai(tmp_path / "bad.pth", tmp_path / "d", itos=itos, log=lambda m: None)
    # itos of another model
    with pytest.raises(UlmfitError, match="10 tokens but lstm_fwd.pth has 40"):
        import_fastai(pth, tmp_path / "e", itos=itos[:10], log=lambda m: None)
    # an itos pickle that would run code is refused
    evil = tmp_path / "itos_evil.pkl"
    evil.write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(UlmfitError, match="itos_evil.pkl: not a pickled list"):
        import_fastai(pth, tmp_path / "f", itos=evil, log=lambda m: None)
    for name in "abcdef":
        assert not (tmp_path / name / "ulmfit.json").exists()


# -------------------------------------------------------------------------------------- download


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_from_local_server(tmp_path):
    tgz = make_archive(tmp_path / "served", fastai_state(seed=5), fastai_itos())
    handler = functools.partial(_Quiet, directory=str(tgz.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        got = download_fastai_wt103("fwd", cache=tmp_path / "cache", url=f"{base}/{tgz.name}", timeout=5)
        assert got == tmp_path / "cache" / "fastai" / "wt103-fwd.tgz"
        assert got.read_bytes() == tgz.read_bytes()
        assert [p.name for p in got.parent.iterdir()] == ["wt103-fwd.tgz"]  # no temp file left
        with pytest.raises(UlmfitError, match=r"could not download .*/missing.tgz \(HTTP Error 404"):
            download_fastai_wt103("bwd", cache=tmp_path / "cache", url=f"{base}/missing.tgz", timeout=5)
        assert not (tmp_path / "cache" / "fastai" / "wt103-bwd.tgz").exists()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    # cached: no server needed any more
    assert download_fastai_wt103("fwd", cache=tmp_path / "cache", url=f"{base}/{tgz.name}", timeout=1) == got
    out = import_fastai(got, tmp_path / "lm", log=lambda m: None)
    check_against_reference(out, fastai_state(seed=5), fastai_itos())


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    url = f"http://127.0.0.1:{port}/wt103-fwd.tgz"
    with pytest.raises(UlmfitError) as e:
        download_fastai_wt103("fwd", cache=tmp_path, url=url, timeout=5)
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "by hand" in msg and "no internet" in msg
    assert list((tmp_path / "fastai").iterdir()) == []

    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "envcache"))
    with pytest.raises(UlmfitError, match="direction must be"):
        download_fastai_wt103("sideways")
    with pytest.raises(UlmfitError):
        download_fastai_wt103("bwd", url=url, timeout=5)
    assert (tmp_path / "envcache" / "fastai").is_dir()


def test_archive_errors_name_the_member(tmp_path):
    tgz = make_archive(tmp_path, fastai_state(), fastai_itos()[:20] + ["x"])  # itos too short for the weights
    with pytest.raises(UlmfitError, match="itos_wt103.pkl has 21 tokens but lstm_fwd.pth has 40"):
        import_fastai(tgz, tmp_path / "a", log=lambda m: None)
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(tgz.read_bytes()[:200])
    with pytest.raises(UlmfitError, match="broken.tgz"):
        import_fastai(broken, tmp_path / "b", log=lambda m: None)
