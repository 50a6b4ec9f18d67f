"""SiATL: gamma schedule, sequential unfreezing, the two optimizers, masked attention, the LM loss,
early stopping, resume, save/load. Tiny synthetic data and the `tiny` preset: each test is seconds."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import make_rows

from ulmfit.errors import UlmfitError
from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
from ulmfit.models.siatl import SiatlClassifier, SiatlHeadConfig, next_token_loss
from ulmfit.recipes import siatl as siatl_recipe
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.prepare import Labelled
from ulmfit.recipes.siatl import build_model, load_siatl_model, train_siatl
from ulmfit.recipes.siatl_config import SiatlConfig
from ulmfit.recipes.ulmfit import LMResult
from ulmfit.text.tokenize import Tokenizer
from ulmfit.text.vocab import Vocab
from ulmfit.train.checkpoint import load_state
from ulmfit.train.siatl_optim import make_optimizers
from ulmfit.train.siatl_schedule import gamma_at, trainable_parts

CLASSES = ["neg", "neu", "pos"]


# ------------------------------------------------------------------------------------ fixtures
def _labelled(n: int, seed: int) -> Labelled:
    df = make_rows(n, seed)
    return Labelled(df.text.tolist(), np.array([CLASSES.index(l) for l in df.label], dtype=np.int64), f"rows{seed}")


@pytest.fixture(scope="module")
def data():
    train, valid = _labelled(60, 0), _labelled(30, 1)
    tok = Tokenizer()
    vocab = Vocab.build(tok.tokenize_many(train.texts + valid.texts), min_freq=1)
    torch.manual_seed(0)
    cfg = AWDLSTMConfig.preset("tiny", vocab_size=len(vocab))
    base = LMResult(LanguageModel(cfg), cfg, tok, vocab, [])
    unlabeled = vocab.encode_many(tok.tokenize_many(_labelled(40, 5).texts))
    return base, train, valid, unlabeled


def small_cfg(**kw) -> SiatlConfig:
    d = dict(task_hidden=16, bs=16, epochs=3, max_doc_tokens=32, unfreeze_lstm_epoch=2, unfreeze_embedding_epoch=3,
             patience=None, new_lr=1e-2, pretrained_lr=0.1, gamma_start=0.2, gamma_end=0.1, gamma_epochs=3,
             min_steps_per_epoch=0)
    return SiatlConfig(**{**d, **kw})


def run(data, out, cfg, **kw):
    base, train, valid, unlabeled = data
    kw.setdefault("unlabeled_docs", unlabeled)
    return train_siatl(base, train, valid, CLASSES, out, cfg, **kw)


def snapshots(out):
    """A `log` callback that records the model state from the epoch checkpoint after each epoch."""
    states = {}

    def log(msg):
        if msg.startswith("siatl epoch"):
            ckpt = load_state(out / "checkpoints" / "siatl-last.safetensors")
            states[ckpt["epoch"]] = {k: v.clone() for k, v in ckpt["model"].items()}

    return states, log


def tiny_model(n_classes=3, max_len=64, **head) -> SiatlClassifier:
    torch.manual_seed(0)
    return SiatlClassifier(AWDLSTMConfig.preset("tiny", vocab_size=50),
                           SiatlHeadConfig(n_classes=n_classes, task_hidden=8, max_len=max_len, **head)).eval()


# ------------------------------------------------------------------------------------ schedules
def test_gamma_schedule_values():
    assert gamma_at(1, 0.2, 0.1, 15) == pytest.approx(0.2)
    assert gamma_at(15, 0.2, 0.1, 15) == pytest.approx(0.1)
    assert gamma_at(16, 0.2, 0.1, 15) == gamma_at(40, 0.2, 0.1, 15) == pytest.approx(0.1)
    assert gamma_at(8, 0.2, 0.1, 15) == pytest.approx(math.sqrt(0.02))  # geometric midpoint
    # the authors' code: exp(linspace(-1.6, -2.3, 15)) indexed by epoch
    theirs = np.exp(np.linspace(-1.6, -2.3, num=15))
    ours = [gamma_at(e, math.exp(-1.6), math.exp(-2.3), 15) for e in range(1, 16)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert all(a > b for a, b in zip(ours, ours[1:]))
    assert gamma_at(3, 0.0, 0.0, 15) == 0.0
    assert gamma_at(1, 0.3, 0.1, 1) == pytest.approx(0.1)


def test_trainable_parts():
    assert [trainable_parts(e, 2, 5) for e in (1, 2, 4, 5, 9)] == [
        ("new",), ("new", "lstm"), ("new", "lstm"), ("new", "lstm", "embedding"), ("new", "lstm", "embedding")]
    assert trainable_parts(1, 1, 1) == ("new", "lstm", "embedding")


@pytest.mark.parametrize("field,value", [("gamma_end", 0.0), ("unfreeze_embedding_epoch", 1), ("bs", 0),
                                         ("pretrained_optimizer", "adamw"), ("metric", "f2"), ("clip", -1.0),
                                         ("min_steps_per_epoch", -1)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(UlmfitError, match=field):
        SiatlConfig(**{field: value})
    with pytest.raises(UlmfitError, match=field):
        FitConfig.from_dict({"siatl": {field: value}})


# ------------------------------------------------------------------------------------ model
def test_optimizers_own_disjoint_complete_partitions(data):
    model = build_model(data[0], 3, small_cfg())
    parts = model.partitions()
    opts = make_optimizers(parts, "sgd", 0.1, 1e-4, 1e-3)
    ids = {name: {id(p) for g in o.param_groups for p in g["params"]} for name, o in opts.items()}
    assert not ids["pretrained"] & ids["new"]
    assert ids["pretrained"] | ids["new"] == {id(p) for p in model.parameters()}
    assert ids["new"] == {id(p) for m in (model.task_rnn, model.attention, model.classifier) for p in m.parameters()}
    assert {id(p) for rnn in model.encoder.rnns for p in rnn.parameters()} <= ids["pretrained"]
    assert id(model.encoder.embedding.weight) in ids["pretrained"]
    lrs = {g["part"]: g["lr"] for g in opts["pretrained"].param_groups}
    assert lrs == {"lstm": 0.1, "embedding": 1e-4}
    assert isinstance(opts["new"], torch.optim.Adam)
    assert isinstance(make_optimizers(parts, "asgd")["pretrained"], torch.optim.ASGD)


def test_model_starts_from_the_language_model_with_tied_decoder(data):
    base = data[0]
    model = build_model(base, 3, small_cfg())
    assert model.decoder.weight is model.encoder.embedding.weight
    for k, v in base.lm.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_attention_gives_padding_zero_weight_and_padding_changes_nothing():
    model = tiny_model()
    torch.manual_seed(1)
    a, b = torch.randint(9, 50, (5,)), torch.randint(9, 50, (9,))
    alone = model(a[None], torch.tensor([5]))
    batch = torch.full((2, 12), 1)  # pad id 1, wider than both documents
    batch[0, :9], batch[1, :5] = b, a
    lengths = torch.tensor([9, 5])
    together = model(batch, lengths)
    torch.testing.assert_close(together[1:], alone, rtol=0, atol=1e-6)
    weights = model.attention_weights(batch, lengths)
    assert weights.shape == (2, 9)  # columns past the longest document are dropped
    assert torch.all(weights[1, 5:] == 0) and torch.all(weights[1, :5] > 0)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    # padding with a different id still changes nothing
    batch[1, 5:] = 7
    torch.testing.assert_close(model(batch, lengths)[1:], alone, rtol=0, atol=1e-6)


def test_documents_are_truncated_to_max_len():
    model = tiny_model(max_len=6)
    ids = torch.randint(9, 50, (2, 10))
    logits, lm_logits = model.forward_with_lm(ids, torch.tensor([10, 8]))
    assert lm_logits.shape[1] == 6
    torch.testing.assert_close(logits, model(ids[:, :6], torch.tensor([6, 6])))


def test_bad_lengths_are_user_errors():
    model = tiny_model()
    with pytest.raises(UlmfitError, match="lengths"):
        model(torch.randint(9, 50, (2, 4)), torch.tensor([4, 0]))
    with pytest.raises(UlmfitError, match="lengths"):
        model(torch.randint(9, 50, (2, 4)), torch.tensor([5, 2]))


def test_lm_loss_ignores_padding():
    torch.manual_seed(0)
    V = 11
    ids = torch.tensor([[2, 5, 6, 7, 8], [2, 9, 10, 1, 1]])
    lengths = torch.tensor([5, 3])
    logits = torch.randn(2, 5, V, requires_grad=True)
    loss = next_token_loss(logits, ids, lengths)
    expected = torch.cat([torch.nn.functional.cross_entropy(logits[0, :4], ids[0, 1:], reduction="none"),
                          torch.nn.functional.cross_entropy(logits[1, :2], ids[1, 1:3], reduction="none")]).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[1, 2:] == 0)  # the last real token and the padding predict nothing
    assert torch.all(logits.grad[0, 4] == 0)
    other = ids.clone()
    other[1, 3:] = 4  # another padding id
    torch.testing.assert_close(next_token_loss(logits, other, lengths), loss)
    assert next_token_loss(logits, ids, torch.tensor([1, 1])) == 0


def test_save_load_gives_identical_logits(tmp_path):
    model = tiny_model(n_classes=2)
    from ulmfit.recipes.siatl import save_siatl_model

    save_siatl_model(tmp_path, model)
    loaded = load_siatl_model(tmp_path)
    assert loaded.decoder.weight is loaded.encoder.embedding.weight
    ids = torch.randint(9, 50, (3, 7))
    lengths = torch.tensor([7, 4, 2])
    torch.testing.assert_close(loaded(ids, lengths), model(ids, lengths), rtol=0, atol=0)
    (tmp_path / "siatl_model.json").unlink()
    with pytest.raises(UlmfitError, match="siatl_model.json"):
        load_siatl_model(tmp_path)


# ------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("optimizer", ["sgd", "asgd", "adam"])
def test_sequential_unfreezing_moves_only_unfrozen_parameters(data, tmp_path, optimizer):
    base = data[0]
    states, log = snapshots(tmp_path)
    model, _ = run(data, tmp_path, small_cfg(pretrained_optimizer=optimizer, embedding_lr=1e-2), log=log)
    parts = model.partitions()
    names = {id(p): n for n, p in model.named_parameters()}
    emb, lstm, new = ([names[id(p)] for p in parts[k]] for k in ("embedding", "lstm", "new"))
    init = build_model(base, 3, small_cfg()).state_dict()

    def same(a, b, keys):
        return {k: torch.equal(a[k], b[k]) for k in keys}

    # epoch 1: only the new layers move
    assert all(same(states[1], init, emb + lstm).values())
    assert not any(same(states[1], init, new).values())
    # epoch 2: + the pretrained LSTM (and the decoder bias); the embedding stays bit-identical
    assert all(same(states[2], init, emb).values())
    assert not any(same(states[2], states[1], lstm + new).values())
    # epoch 3: + the embedding
    assert not any(same(states[3], states[2], emb + lstm + new).values())
    # the tie survives training and the saved state
    assert model.decoder.weight is model.encoder.embedding.weight
    assert torch.equal(states[3]["decoder.weight"], states[3]["encoder.embedding.weight"])


def test_log_records_and_saved_model(data, tmp_path):
    model, metrics = run(data, tmp_path, small_cfg())
    records = [json.loads(l) for l in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["stage"] for r in records] == ["new", "new+lstm", "new+lstm+embedding"]
    assert [r["gamma"] for r in records] == pytest.approx([0.2, math.sqrt(0.02), 0.1], abs=1e-6)
    for r in records:
        assert r["phase"] == "siatl"
        assert {"train_loss", "train_task_loss", "train_lm_loss", "valid_loss", "valid_lm_loss", "macro_f1",
                "accuracy", "seconds", "best"} <= set(r)
    assert "train_unlabeled_lm_loss" not in records[0]  # the LSTM is frozen in epoch 1: no unlabelled batches
    assert records[1]["train_unlabeled_lm_loss"] > 0
    assert set(metrics) >= {"accuracy", "macro_f1", "per_class", "confusion"}
    assert not model.training
    loaded = load_siatl_model(tmp_path)
    ids, lengths = torch.randint(9, 40, (4, 10)), torch.tensor([10, 9, 5, 1])
    torch.testing.assert_close(loaded(ids, lengths), model(ids, lengths), rtol=0, atol=0)
    assert not (tmp_path / "ulmfit.json").exists() and not (tmp_path / "vocab.json").exists()


def test_unlabeled_switch(data, tmp_path):
    run(data, tmp_path / "on", small_cfg(epochs=2))
    run(data, tmp_path / "off", small_cfg(epochs=2, unlabeled_lm=False))
    records = [json.loads(l) for l in (tmp_path / "off" / "history.jsonl").read_text().splitlines()]
    assert all("train_unlabeled_lm_loss" not in r for r in records)
    last = {k: load_state(tmp_path / k / "checkpoints" / "siatl-last.safetensors")["model"]
            for k in ("on", "off")}  # the last epoch's weights (the best may be epoch 1, before the LSTM trains)
    key = "encoder.rnns.0.weight_hh_l0_raw"
    assert not torch.equal(last["on"][key], last["off"][key])


def test_early_stopping_restores_the_best_epoch(data, tmp_path, monkeypatch):
    scripted = iter([0.3, 0.5, 0.4, 0.45, 0.9, 0.9])  # best at epoch 2, then 2 epochs without progress
    real = siatl_recipe.evaluate

    def fake(*a, **k):
        metrics, probs = real(*a, **k)
        return {**metrics, "macro_f1": next(scripted)}, probs

    monkeypatch.setattr(siatl_recipe, "evaluate", fake)
    states, log = snapshots(tmp_path)
    model, _ = run(data, tmp_path, small_cfg(epochs=10, patience=2), log=log)
    records = [json.loads(l) for l in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["best"] for r in records] == [True, True, False, False]
    final = model.state_dict()
    assert all(torch.equal(final[k], states[2][k]) for k in final)
    assert not all(torch.equal(final[k], states[4][k]) for k in final)


def test_resume_equals_uninterrupted(data, tmp_path):
    cfg = small_cfg(epochs=4, pretrained_optimizer="asgd")
    full, full_metrics = run(data, tmp_path / "full", cfg)

    class Interrupt(Exception):
        pass

    def crash_after_epoch_2(msg):
        if msg.startswith("siatl epoch 2/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        run(data, tmp_path / "part", cfg, log=crash_after_epoch_2)
    messages = []
    resumed, resumed_metrics = run(data, tmp_path / "part", cfg, resume=True, log=messages.append)
    assert any("resuming after epoch 2" in m for m in messages)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed_metrics == full_metrics

    def lines(folder):
        return [{k: v for k, v in json.loads(l).items() if k != "seconds"}
                for l in (folder / "history.jsonl").read_text().splitlines()]

    assert lines(tmp_path / "part") == lines(tmp_path / "full")


def test_bad_inputs_are_user_errors(data, tmp_path):
    base, train, valid, _ = data
    bad = Labelled(valid.texts, valid.labels + 3, "bad")
    with pytest.raises(UlmfitError, match="labels"):
        train_siatl(base, train, bad, CLASSES, tmp_path, small_cfg())
    with pytest.raises(UlmfitError, match="precision"):
        train_siatl(base, train, valid, CLASSES, tmp_path, small_cfg(), precision="fp8")


def test_few_labels_get_min_steps_per_epoch(data, tmp_path, monkeypatch):
    """60 texts in batches of 16 are 4 steps; min_steps_per_epoch=10 repeats reshuffled passes to 12."""
    import ulmfit.recipes.siatl as siatl_module

    steps = []

    class Counting(siatl_module.ClassificationLoader):
        def __iter__(self):
            n = 0
            for batch in super().__iter__():
                n += 1
                yield batch
            if self.shuffle:
                steps.append(n)

    monkeypatch.setattr(siatl_module, "ClassificationLoader", Counting)
    run(data, tmp_path, small_cfg(epochs=2, min_steps_per_epoch=10))
    assert steps == [12, 12]
