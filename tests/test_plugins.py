"""A toy recipe and a toy backbone added through the public plug-in points alone
(recipes/registry.py `register`, models/backbone.py `register_backbone`), fitted end to end with
`ulmfit.fit`, predicted with `ulmfit.load`, and selected from the command line."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ulmfit
from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.models.awd_lstm_backbone import AWDTextPipeline
from ulmfit.models.backbone import (Backbone, BackboneSpec, PooledClassifier, get_backbone, length_mask,
                                    register_backbone)
from ulmfit.recipes import fields, model_dir, registry
from ulmfit.recipes.config import FitConfig
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab
from ulmfit.train.checkpoint import load_weights, save_weights
from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
from ulmfit.train.metrics import classification_metrics
from ulmfit.train.optim import make_optimizer, param_groups
from ulmfit.train.tasks import ClassifierTask


# ----------------------------------------------------------------------------- the toy backbone
class BagBackbone(Backbone):
    """Embeddings with a one-token context mix; LM objective: predict the next token."""

    kind = "toy_bag"

    def __init__(self, vocab_size: int, size: int = 16):
        super().__init__()
        self.out_size, self.pad_id = size, 1
        self.emb, self.mix, self.decoder = nn.Embedding(vocab_size, size), nn.Linear(2 * size, size), nn.Linear(size, vocab_size)

    def encode(self, ids, lengths):
        e = self.emb(ids)
        prev = torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], 1)
        return torch.tanh(self.mix(torch.cat([e, prev], -1))), length_mask(lengths, ids.size(1))

    def lm_loss(self, ids, lengths):
        feats, mask = self.encode(ids, lengths)
        keep = mask[:, 1:]
        return F.cross_entropy(self.decoder(feats[:, :-1][keep]), ids[:, 1:][keep])

    def layer_groups(self):
        return [[self.emb.weight], list(self.mix.parameters()) + list(self.decoder.parameters())]


BAG = BackboneSpec(
    kind="toy_bag", build=lambda pipeline, options: BagBackbone(len(pipeline.vocab)),
    config=lambda b: {"vocab_size": b.emb.num_embeddings}, from_config=lambda d: BagBackbone(d["vocab_size"]),
    pipeline_to_json=lambda p: {"itos": p.vocab.itos},
    pipeline_from_json=lambda d: AWDTextPipeline(Tokenizer(TokenizerConfig()), Vocab(d["itos"])))


# ----------------------------------------------------------------------------- the toy recipe
@dataclass
class ToyConfig:
    backbone: str = "toy_bag"
    epochs: int = fields.spec(6, ge=1)
    lr: float = fields.learning_rate(3e-2)
    metric: str = fields.metric()

    def __post_init__(self):
        fields.check(self, "toy")


def toy_fit(run: registry.Run) -> dict:
    cfg, data = run.configs["fwd"], run.data
    tok = Tokenizer(TokenizerConfig())
    vocab = Vocab.build(tok.tokenize_many(data.train.texts + data.unlabeled), min_freq=1, max_vocab=1000)
    model_dir.save_text_pipeline(run.out, tok.config, vocab)  # the predictor's text pipeline
    pipeline = AWDTextPipeline(tok, vocab)
    torch.manual_seed(cfg.seed)
    backbone = get_backbone(cfg.toy.backbone).build(pipeline, {})
    model = PooledClassifier(backbone, len(data.classes))

    def loader(part, **kw):
        return ClassificationLoader(vocab.encode_many(tok.tokenize_many(part.texts)), part.labels, bs=16,
                                    pad_idx=backbone.pad_id, **kw)

    groups = model.layer_groups()
    task = ClassifierTask(data.classes)
    run_phase(model, task, make_optimizer(param_groups(groups, cfg.toy.lr), "adamw"), groups,
              [Stage("all", cfg.toy.epochs, cfg.toy.lr)], loader(data.train, seed=cfg.seed), loader(data.valid, shuffle=False),
              PhaseFiles(run.out, "toy"), LoopConfig(monitor=cfg.toy.metric, patience=None, seed=cfg.seed, progress=False))
    model_dir.save_backbone(run.out, backbone, pipeline)
    save_weights(model.state_dict(), run.out / "toy.safetensors")
    probs = task.predict(model, loader(data.valid, shuffle=False))
    return classification_metrics(data.valid.labels, probs.argmax(1), data.classes)


def toy_load(folder):
    backbone, _ = model_dir.load_backbone(folder)
    model = PooledClassifier(backbone, len(model_dir.read_marker(folder)["classes"]))
    model.load_state_dict(load_weights(folder / "toy.safetensors"))
    return model.eval()


@pytest.fixture
def plugins():
    register_backbone(BAG)
    registry.register(registry.Recipe(name="toy", section="toy", config=ToyConfig, fit=toy_fit, load_model=toy_load,
                                      directions=("fwd",), summary="a test recipe"))
    yield
    registry.unregister("toy")


# ----------------------------------------------------------------------------- the tests
@pytest.mark.slow
def test_toy_recipe_and_backbone_fit_end_to_end(plugins, tiny_data, tmp_path):
    cfg = FitConfig(recipe="toy", pretrained=None, toy=ToyConfig(epochs=6))
    model = ulmfit.fit(tiny_data["train"], tiny_data["valid"], out=tmp_path / "m", config=cfg)
    assert model.meta["recipe"] == "toy"
    assert (tmp_path / "m" / "backbone.json").exists() and (tmp_path / "m" / "report.md").exists()
    import pandas as pd

    test = pd.read_csv(tiny_data["test"])
    m = ulmfit.load(tmp_path / "m").evaluate(test.text.tolist(), test.label.tolist())
    assert m["macro_f1"] > 0.8, m  # label words carry the class: a bag of embeddings learns them
    saved = FitConfig.load(tmp_path / "m" / "config.json")  # the toy section round-trips
    assert saved.toy == ToyConfig(epochs=6) and saved.recipe == "toy"


def test_backbone_save_load_round_trip(plugins, tmp_path):
    for spec in (get_backbone("awd_lstm"), get_backbone("toy_bag")):
        tok = Tokenizer(TokenizerConfig())
        pipeline = AWDTextPipeline(tok, Vocab.build(tok.tokenize_many(["a b c d", "b c d e"]), min_freq=1))
        torch.manual_seed(0)
        backbone = spec.build(pipeline, {"preset": "tiny", "bptt": 3}).eval()
        ids, lengths = torch.randint(2, 16, (3, 7)), torch.tensor([7, 4, 1])
        feats, mask = backbone.encode(ids, lengths)
        assert feats.shape == (3, 7, backbone.out_size) and mask.sum().item() == 12
        assert torch.isfinite(backbone.lm_loss(ids, lengths))
        assert sum(len(g) for g in backbone.layer_groups()) > 0
        (tmp_path / spec.kind).mkdir()
        model_dir.save_backbone(tmp_path / spec.kind, backbone, pipeline)
        loaded, pipe = model_dir.load_backbone(tmp_path / spec.kind)
        assert type(loaded) is type(backbone) and pipe.vocab == pipeline.vocab
        torch.testing.assert_close(loaded.encode(ids, lengths)[0], feats, rtol=0, atol=0)


def test_awd_lstm_backbone_reads_long_documents_whole():
    """Chunked reading carries the state: the features equal one pass over the whole sequence."""
    from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
    from ulmfit.models.awd_lstm_backbone import AWDLSTMBackbone

    torch.manual_seed(0)
    lm = LanguageModel(AWDLSTMConfig.preset("tiny", vocab_size=40)).eval()
    ids, lengths = torch.randint(2, 40, (2, 11)), torch.tensor([11, 6])
    whole, _ = lm.encoder(ids)
    chunked, _ = AWDLSTMBackbone(lm, bptt=4).encode(ids, lengths)
    torch.testing.assert_close(chunked, whole)


def test_cli_lists_and_runs_a_registered_recipe(plugins, tiny_data, tmp_path, capsys):
    from ulmfit.cli import main

    assert main(["fit", "--train", str(tiny_data["train"]), "--out", str(tmp_path / "m"), "--recipe", "toy",
                 "--pretrained", "none", "--set", "toy.epochs=1"]) == 0
    assert np.isfinite(ulmfit.load(tmp_path / "m").predict_proba(["great flight"])).all()
