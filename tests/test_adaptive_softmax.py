"""The tied adaptive softmax (models/adaptive_softmax.py) and `lm.softmax` / pretrain `softmax`:
exact log-probabilities, the training loss, tying, vocabulary transfer, save/resume, bad combinations."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ulmfit.errors import UlmfitError
from ulmfit.models.adaptive_softmax import TiedAdaptiveSoftmax, adaptive_cutoffs
from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
from ulmfit.recipes.config import LMTrainConfig
from ulmfit.recipes.pretrain import PretrainConfig, pretrain
from ulmfit.recipes.toolbox import lm_from_pretrained
from ulmfit.text.vocab import Vocab

V, D = 40, 8


def head(cutoffs=(10, 25), seed=0) -> TiedAdaptiveSoftmax:
    """A head with every parameter random (not at its initial values)."""
    torch.manual_seed(seed)
    m = TiedAdaptiveSoftmax(V, D, cutoffs)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("cutoffs", [(10,), (10, 25), (1, 2, 39)])
def test_log_probabilities_sum_to_one_and_the_loss_is_their_cross_entropy(cutoffs):
    m = head(cutoffs)
    h = torch.randn(2, 5, D, requires_grad=True)
    lp = m(h)
    assert lp.shape == (2, 5, V)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 5), atol=1e-5, rtol=0)
    # targets in the head and in every cluster
    t = torch.tensor([0, 9, 10, 24, 25, 39, 3, 30, 12, 1]) % V
    ref = F.nll_loss(lp.reshape(-1, V), t)
    got = m.loss(h.reshape(-1, D), t)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # and the same gradients for every parameter and for h
    params = [h] + list(m.parameters())
    g_ref = torch.autograd.grad(ref, params)
    g_got = torch.autograd.grad(got, params)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_equals_torch_adaptive_log_softmax_with_the_same_weights():
    """torch's AdaptiveLogSoftmaxWithLoss (untied, no tail bias, div_value 1) as a reference."""
    m = head((10, 25))
    with torch.no_grad():
        m.bias[10:].zero_()  # torch's tails have no bias
    ref = nn.AdaptiveLogSoftmaxWithLoss(D, V, [10, 25], div_value=1.0, head_bias=True)
    with torch.no_grad():
        ref.head.weight.copy_(torch.cat([m.weight[:10], m.cluster_weight]))
        ref.head.bias.copy_(torch.cat([m.bias[:10], m.cluster_bias]))
        for i, (lo, hi) in enumerate(m.bounds):
            ref.tail[i][0].weight.copy_((torch.eye(D) + m.proj[i]).t())  # h + h @ P = h @ (I + P)
            ref.tail[i][1].weight.copy_(m.weight[lo:hi])
    h = torch.randn(12, D)
    t = torch.arange(12) * 3 % V
    torch.testing.assert_close(m.log_prob(h), ref.log_prob(h), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.loss(h, t), ref(h, t).loss, atol=1e-5, rtol=1e-5)


def test_word_rows_are_the_embedding_and_a_new_head_is_uniform():
    cfg = AWDLSTMConfig.preset("tiny", vocab_size=V, softmax="adaptive", cutoffs=(10, 25))
    lm = LanguageModel(cfg)
    assert lm.decoder.weight is lm.encoder.embedding.weight
    assert lm.decoder.weight.data_ptr() == lm.encoder.embedding.weight.data_ptr()
    # zero biases + cluster logits from the rows: the distribution at h = 0 is uniform
    torch.testing.assert_close(lm.decoder.log_prob(torch.zeros(1, cfg.emb_size)),
                               torch.full((1, V), -torch.log(torch.tensor(float(V)))), atol=1e-5, rtol=0)
    # the head's extra parameters are trained with the embedding (the last layer group, frozen epoch)
    last = lm.layer_groups()[-1]
    assert last[0] is lm.encoder.embedding.weight
    assert {id(p) for p in last[1:]} == {id(lm.decoder.bias), id(lm.decoder.cluster_weight),
                                          id(lm.decoder.cluster_bias), id(lm.decoder.proj)}
    full = LanguageModel(AWDLSTMConfig.preset("tiny", vocab_size=V))
    assert [id(p) for p in full.layer_groups()[-1]] == [id(full.encoder.embedding.weight), id(full.decoder.bias)]


def test_cutoffs_fit_any_vocabulary_and_bad_values_are_one_line():
    assert adaptive_cutoffs((2000, 10000), 9472) == (2000,)
    assert adaptive_cutoffs((2000, 10000), 20000) == (2000, 10000)
    assert adaptive_cutoffs((2000, 10000), 1500) == ()
    from ulmfit.recipes.toolbox import output_layer

    assert output_layer(LMTrainConfig(softmax="adaptive"), 1500) == {"softmax": "full", "cutoffs": ()}
    assert output_layer(LMTrainConfig(softmax="adaptive"), 9472) == {"softmax": "adaptive", "cutoffs": (2000,)}
    with pytest.raises(UlmfitError, match=r"lm.cutoffs=\[10000, 2000\]: the word ranks must increase strictly"):
        LMTrainConfig(cutoffs=(10000, 2000))
    with pytest.raises(UlmfitError, match=r"lm.softmax='sampled': choose one of full, adaptive"):
        LMTrainConfig(softmax="sampled")
    with pytest.raises(UlmfitError, match=r"pretrain.cutoffs=\(0,\): each value must be >= 1"):
        PretrainConfig(cutoffs=(0,))
    with pytest.raises(UlmfitError, match="cutoffs increasing strictly within"):
        AWDLSTMConfig(vocab_size=V, softmax="adaptive", cutoffs=(10, 40))
    cfg = AWDLSTMConfig(vocab_size=V, softmax="adaptive", cutoffs=(10, 25))
    assert AWDLSTMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert AWDLSTMConfig.from_dict({"vocab_size": V}).softmax == "full"  # lm_config.json of older versions


def _vocabs():
    words = [f"w{i}" for i in range(V - 9)]
    old = Vocab(Vocab.build([words], min_freq=1).itos)
    # a new vocabulary: some words shared (in another order), some new
    new_words = words[::2] + [f"new{i}" for i in range(12)]
    new = Vocab(Vocab.build([new_words], min_freq=1).itos)
    return old, new


def test_transfer_keeps_known_rows_and_cluster_parameters():
    old, new = _vocabs()
    cfg = AWDLSTMConfig.preset("tiny", vocab_size=len(old), softmax="adaptive", cutoffs=(12, 20))
    torch.manual_seed(0)
    pre = LanguageModel(cfg)
    with torch.no_grad():
        for p in pre.decoder.parameters():
            p.normal_(0, 0.3)
    lm, lm_cfg = lm_from_pretrained(pre, old, new, LMTrainConfig(softmax="adaptive", cutoffs=(12, 20)), log=lambda m: None)
    assert lm_cfg.softmax == "adaptive" and lm_cfg.cutoffs == (12, 20) and lm_cfg.vocab_size == len(new)
    assert lm.decoder.weight is lm.encoder.embedding.weight
    shared = [w for w in new.itos if w in old.stoi]
    assert len(shared) > 9
    for w in shared:
        i, j = new.stoi[w], old.stoi[w]
        assert torch.equal(lm.encoder.embedding.weight[i], pre.encoder.embedding.weight[j])
        assert torch.equal(lm.decoder.bias[i], pre.decoder.full_bias()[j])  # biases move in their full-softmax form
    for name in ("cluster_weight", "cluster_bias", "proj"):
        assert torch.equal(getattr(lm.decoder, name), getattr(pre.decoder, name))
    # onto the same vocabulary the transferred head is the same model (a cluster ignores a bias shift)
    same, _ = lm_from_pretrained(pre, old, old, LMTrainConfig(softmax="adaptive", cutoffs=(12, 20)), log=lambda m: None)
    h = torch.randn(6, cfg.emb_size)
    torch.testing.assert_close(same.decoder.log_prob(h), pre.decoder.log_prob(h), atol=1e-5, rtol=1e-5)


def test_a_full_softmax_lm_starts_an_adaptive_head_at_its_own_distribution_at_zero():
    """full -> adaptive: rows follow the embedding; cluster logits = the log-sum-exp of their words'
    logits expanded at h = 0, so there the adaptive head gives exactly the full softmax's distribution."""
    old, new = _vocabs()
    torch.manual_seed(1)
    pre = LanguageModel(AWDLSTMConfig.preset("tiny", vocab_size=len(old)))
    with torch.no_grad():
        pre.decoder.bias.normal_(0, 1.0)
    logs = []
    lm, lm_cfg = lm_from_pretrained(pre, old, new, LMTrainConfig(softmax="adaptive", cutoffs=(12, 20)), log=logs.append)
    assert lm_cfg.cutoffs == (12, 20) and any("cluster logits from the transferred word rows" in m for m in logs)
    full_same_vocab, _ = lm_from_pretrained(pre, old, new, LMTrainConfig(), log=lambda m: None)
    zero = torch.zeros(1, lm_cfg.emb_size)
    torch.testing.assert_close(lm.decoder.log_prob(zero), F.log_softmax(full_same_vocab.decoder(zero), -1),
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(lm.decoder.proj, torch.zeros_like(lm.decoder.proj))
    # near h = 0 the two stay close (first order)
    h = 1e-2 * torch.randn(4, lm_cfg.emb_size)
    diff = (lm.decoder.log_prob(h) - F.log_softmax(full_same_vocab.decoder(h), -1)).abs().max()
    assert diff < 1e-3


def test_an_adaptive_lm_into_a_full_softmax_keeps_rows_and_its_distribution_at_zero():
    """adaptive -> full (`lm.softmax=full`, SiATL): rows and full-form biases kept, cluster parameters
    dropped (logged); the same distribution at h = 0."""
    old, new = _vocabs()
    torch.manual_seed(2)
    pre = LanguageModel(AWDLSTMConfig.preset("tiny", vocab_size=len(old), softmax="adaptive", cutoffs=(12, 20)))
    with torch.no_grad():
        for p in pre.decoder.parameters():
            p.normal_(0, 0.3)
    logs = []
    lm, lm_cfg = lm_from_pretrained(pre, old, old, LMTrainConfig(softmax="full"), log=logs.append)
    assert lm_cfg.softmax == "full" and lm_cfg.cutoffs == () and isinstance(lm.decoder, nn.Linear)
    assert any("cluster vectors and projections dropped" in m for m in logs)
    zero = torch.zeros(1, lm_cfg.emb_size)
    torch.testing.assert_close(F.log_softmax(lm.decoder(zero), -1), pre.decoder.log_prob(zero), atol=1e-5, rtol=1e-5)


def test_weights_that_do_not_fit_the_configured_head_are_one_line(tmp_path):
    from ulmfit.recipes import model_dir

    pre = pretrain(_corpus(tmp_path), tmp_path / "pre", _cfg(epochs=1, softmax="full"), log=lambda m: None)
    cfg = json.loads((pre / "lm_config.json").read_text())
    (pre / "lm_config.json").write_text(json.dumps({**cfg, "softmax": "adaptive", "cutoffs": [12]}))
    with pytest.raises(UlmfitError, match="lm.safetensors"):
        model_dir.load_lm(pre)
    (pre / "lm_config.json").write_text(json.dumps({**cfg, "softmax": "adaptive", "cutoffs": [12, 5]}))
    with pytest.raises(UlmfitError, match="lm_config.json.*cutoffs increasing strictly"):
        model_dir.load_lm(pre)


def _corpus(tmp_path):
    from test_pretrain import make_corpus

    return make_corpus(tmp_path / "corpus")


def _cfg(**kw):
    return PretrainConfig(**{**dict(preset="tiny", bs=8, bptt=10, epochs=2, lr=2e-2, min_freq=1, valid_every=10,
                                    checkpoint_every=5, softmax="adaptive", cutoffs=(12, 20), precision="fp32"), **kw})


def test_pretrain_adaptive_saves_reloads_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path, killed_after_first_epoch):
    from safetensors import safe_open

    from ulmfit.recipes import model_dir

    corpus = _corpus(tmp_path)
    ref = pretrain(corpus, tmp_path / "ref", _cfg(), log=lambda m: None)
    lm, _, vocab = model_dir.load_lm(ref)
    assert lm.cfg.softmax == "adaptive" and lm.cfg.cutoffs == (12, 20) and len(vocab) > 20
    assert lm.decoder.weight is lm.encoder.embedding.weight  # still tied after loading
    with safe_open(str(ref / "lm.safetensors"), "pt") as f:
        assert {"decoder.cluster_weight", "decoder.cluster_bias", "decoder.proj"} <= set(f.keys())
    assert "adaptive softmax (cutoffs 12, 20" in (ref / "README.md").read_text()
    hist = [json.loads(l) for l in (ref / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["perplexity"] < hist[0]["perplexity"] < len(vocab)  # it learns

    with killed_after_first_epoch():
        pretrain(corpus, tmp_path / "run", _cfg(), log=lambda m: None)
    pretrain(corpus, tmp_path / "run", _cfg(), resume=True, log=lambda m: None)
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]  # noqa: E731
    again = [json.loads(l) for l in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert strip(again) == strip(hist)
    with safe_open(str(ref / "lm.safetensors"), "pt") as a, safe_open(str(tmp_path / "run" / "lm.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for k in a.keys():
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k


def test_finetune_from_either_head_and_the_classifier_uses_the_encoder_only(tmp_path):
    """fit/finetune-lm's LM phase: an adaptive pretrained LM fine-tuned adaptive keeps its cluster
    parameters and writes an adaptive lm_config, or full when asked; a classifier built from it is
    the same kind of model as from a full LM (no head fields in its encoder config); fastai export
    of an adaptive LM is one line."""
    from ulmfit.recipes import model_dir
    from ulmfit.recipes.fastai_export import export_fastai
    from ulmfit.recipes.ulmfit import classifier_configs, finetune_lm
    from ulmfit.recipes.ulmfit_config import ClassifierTrainConfig

    corpus = _corpus(tmp_path)
    pre = pretrain(corpus, tmp_path / "pre", _cfg(epochs=1), log=lambda m: None)
    tok, _ = model_dir.load_text_pipeline(pre)
    texts = [line for p in sorted((corpus / "shards").glob("*.txt")) for line in p.read_text().splitlines()][:60]
    tokens = tok.tokenize_many(texts)
    logs = []
    res = finetune_lm(tokens, tmp_path / "ft", LMTrainConfig(epochs=1, bs=4, bptt=8, min_freq=1, lr=1e-2, softmax="adaptive",
                                                              cutoffs=(12, 20)),
                      tokenizer=tok, pretrained=str(pre), precision="fp32", log=logs.append)
    assert res.config.softmax == "adaptive" and json.loads((tmp_path / "ft" / "lm_config.json").read_text())["softmax"] == "adaptive"
    assert not any("cluster logits from the transferred" in m for m in logs)  # same cutoffs: cluster parameters kept
    enc_cfg, _ = classifier_configs(res.config, 3, ClassifierTrainConfig())
    assert enc_cfg.softmax == "full" and enc_cfg.cutoffs == ()
    logs = []
    full = finetune_lm(tokens, tmp_path / "ft2", LMTrainConfig(epochs=1, bs=4, bptt=8, min_freq=1, lr=1e-2, softmax="full"),
                       tokenizer=tok, pretrained=str(pre), precision="fp32", log=logs.append)
    assert full.config.softmax == "full" and any("cluster vectors and projections dropped" in m for m in logs)
    (tmp_path / "ft" / "ulmfit.json").write_text((pre / "ulmfit.json").read_text())
    with pytest.raises(UlmfitError, match="fastai's LinearDecoder is a full softmax"):
        export_fastai(tmp_path / "ft", tmp_path / "fa", log=lambda m: None)


def test_generate_samples_from_an_adaptive_lm(tmp_path):
    from ulmfit.cli import main

    pre = pretrain(_corpus(tmp_path), tmp_path / "pre", _cfg(epochs=1), log=lambda m: None)
    assert main(["generate", str(pre), "--words", "5", "--prompt", "The ship"]) == 0


def test_onnx_export_of_an_adaptive_lm_gives_its_log_probabilities():
    import numpy as np

    from ulmfit.models.onnx import export_lm, session

    lm = LanguageModel(AWDLSTMConfig.preset("tiny", vocab_size=V, softmax="adaptive", cutoffs=(10, 25))).eval()
    with torch.no_grad():
        for p in lm.decoder.parameters():
            p.normal_(0, 0.3)
    sess = session(export_lm(lm, {}))
    ids = torch.randint(2, V, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, _, _, _ = lm(ids)
    zeros = [np.zeros((1, 2, r.hidden_size), np.float32) for r in lm.encoder.rnns] * 2
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, dict(zip(names, [ids.numpy(), *zeros])))[0]
    assert np.abs(got - want.numpy()).max() < 1e-4
