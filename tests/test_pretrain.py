"""`ulmfit pretrain` on a tiny corpus: memory-mapped ids, held-out validation, fp16 weights, resume,
and the pretrained model as the starting point of `fit` (vocabulary transfer)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from ulmfit.cli import main
from ulmfit.recipes import model_dir
from ulmfit.recipes.pretrain import PretrainConfig, pretrain
from ulmfit.text.token_docs import TokenDocs

SUBJECTS = ["The ship", "A whale", "The captain", "Our crew", "The sea", "An old sailor"]
VERBS = ["sailed", "watched", "found", "followed", "crossed", "feared"]
OBJECTS = ["the harbour", "a storm", "the island", "the white whale", "the long night", "the coast"]


def make_corpus(folder, n_docs=240, seed=0):
    rng = random.Random(seed)
    (folder / "shards").mkdir(parents=True)
    for shard in range(2):
        lines = []
        for _ in range(n_docs // 2):
            sents = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(rng.randint(2, 5))]
            lines.append(" ".join(sents))
        (folder / "shards" / f"toy-{shard:03d}.txt").write_text("\n".join(lines) + "\n")
    return folder


def tiny_cfg(**kw):
    return PretrainConfig(**{**dict(preset="tiny", bs=8, bptt=10, epochs=2, lr=2e-2, min_freq=1,
                                    valid_every=10, checkpoint_every=5), **kw})


def test_pretrain_writes_a_loadable_memmapped_model(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    out = pretrain(corpus, tmp_path / "lm", tiny_cfg(), log=lambda m: None)
    lm, tok, vocab = model_dir.load_lm(out)
    assert "whale" in vocab.stoi and len(vocab) % 8 == 0
    train = TokenDocs.load(out / "data" / "train", mmap=True)
    assert isinstance(train.ids, np.memmap)
    valid = TokenDocs.load(out / "data" / "valid", mmap=False)
    assert len(train) + len(valid) == 240 and len(valid) == 24  # every 10th document held out
    hist = [json.loads(l) for l in (out / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["perplexity"] < hist[0]["perplexity"] < len(vocab)  # it learns
    assert all(r["train_tokens_per_s"] > 0 for r in hist)
    from safetensors import safe_open

    with safe_open(str(out / "lm.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys() if f.get_tensor(k).is_floating_point())
    stats = json.loads((out / "pretrain_stats.json").read_text())
    assert stats["documents"] == 240 and stats["vocab"] == len(vocab)
    assert json.loads((out / "ulmfit.json").read_text())["kind"] == "lm"


def test_pretrain_resume_continues_from_checkpoint(tmp_path, killed_after_first_epoch):
    corpus = make_corpus(tmp_path / "corpus")
    with killed_after_first_epoch():
        pretrain(corpus, tmp_path / "lm", tiny_cfg(), log=lambda m: None)
    assert not (tmp_path / "lm" / "ulmfit.json").exists()  # unfinished: no marker
    logs = []
    pretrain(corpus, tmp_path / "lm", tiny_cfg(), resume=True, log=logs.append)
    hist = [json.loads(l) for l in (tmp_path / "lm" / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in hist] == [0, 1]  # no epoch repeated
    assert not any("pass 1" in m for m in logs)  # the memory-mapped ids were reused


def test_fit_from_pretrained_transfers_vocabulary(tmp_path, tiny_data, tiny_config, capsys):
    corpus = make_corpus(tmp_path / "corpus")
    lm_dir = pretrain(corpus, tmp_path / "lm", tiny_cfg(epochs=1), log=lambda m: None)
    tiny_config.pretrained = str(lm_dir)
    from ulmfit.recipes.fit import fit

    logs = []
    fit(tiny_data["train"], tiny_data["valid"], out=tmp_path / "clf", config=tiny_config, log=logs.append)
    line = next(m for m in logs if m.startswith("vocabulary transfer"))
    found, total = map(int, line.split(": ")[1].split(" ")[0].split("/"))
    assert 0 < found < total  # some target words are in the pretrained vocabulary, some are new
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["pretrained"] == str(lm_dir)


def test_finetune_keeps_rare_words_the_pretrained_lm_knows(tmp_path):
    """lm.known_min_freq: a word the target text uses once is kept when the pretrained LM has it, and
    starts from its pretrained row; an unknown word used once is not; unset, min_freq rules all."""
    from ulmfit.recipes.config import LMTrainConfig
    from ulmfit.recipes.ulmfit import finetune_lm
    from ulmfit.text.tokenize import Tokenizer
    from ulmfit.text.vocab import Vocab

    lm_dir = pretrain(make_corpus(tmp_path / "corpus"), tmp_path / "lm", tiny_cfg(epochs=1), log=lambda m: None)
    pre_lm, _, pre_vocab = model_dir.load_lm(lm_dir)
    tok = Tokenizer()
    texts = ["the ship sailed to the harbour ."] * 4 + ["a storm came .", "zyzzyva ."]  # "storm" and "zyzzyva" once
    tokens = tok.tokenize_many(texts)
    cfg = dict(epochs=0, frozen_epochs=0, bs=2, bptt=4, lr=1e-2, min_freq=3, softmax="full")

    def vocab_of(out, **kw):
        res = finetune_lm(tokens, tmp_path / out, LMTrainConfig(**cfg, **kw), tokenizer=tok, pretrained=str(lm_dir))
        assert Vocab.load(tmp_path / out / "vocab.json") == res.vocab  # the folder's, as the classifier reads it
        return res.lm, res.vocab

    _, plain = vocab_of("plain")
    assert "storm" not in plain and "harbour" in plain
    lm, kept = vocab_of("known", known_min_freq=1)
    assert "storm" in kept and "zyzzyva" not in kept and set(plain.itos[9:]) <= set(kept.itos)
    emb, pre_emb = lm.encoder.embedding.weight, pre_lm.encoder.embedding.weight
    assert torch.equal(emb[kept.stoi["storm"]], pre_emb[pre_vocab.stoi["storm"]])  # its pretrained row


def test_vocab_transfer_copies_shared_rows_and_means_new_ones():
    from ulmfit.models.vocab_transfer import transfer_vocab

    emb = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    bias = torch.tensor([1.0, 2.0, 3.0, 6.0])
    state, found = transfer_vocab({"e.weight": emb, "d.bias": bias}, ["a", "b", "c", "d"], ["c", "z", "a"],
                                  embedding_keys=("e.weight",), bias_keys=("d.bias",))
    assert found == 2
    assert torch.equal(state["e.weight"][0], emb[2]) and torch.equal(state["e.weight"][2], emb[0])
    assert torch.allclose(state["e.weight"][1], emb.mean(0))
    assert state["d.bias"].tolist() == [3.0, 3.0, 1.0]


def test_pretrain_cli_and_missing_corpus(tmp_path, capsys):
    code = main(["pretrain", "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "lm")])
    err = capsys.readouterr().err
    assert code == 2 and "no text shards" in err and "corpus build" in err
    corpus = make_corpus(tmp_path / "corpus", n_docs=80)
    code = main(["pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "lm"), "--preset", "tiny",
                 "--set", "epochs=1", "--set", "bs=4", "--set", "min_freq=1", "--set", "bptt=8"])
    assert code == 0 and (tmp_path / "lm" / "lm.safetensors").exists()
    code = main(["generate", str(tmp_path / "lm"), "--prompt", "The whale", "--words", "5", "--seed", "0"])
    assert code == 0 and capsys.readouterr().out.startswith("The whale")


def test_resolve_pretrained_names_paths_and_errors(tmp_path, monkeypatch):
    from ulmfit.errors import UlmfitError
    from ulmfit.recipes import model_dir

    shipped = tmp_path / "pretrained"
    monkeypatch.setattr(model_dir, "SHIPPED", shipped)
    assert model_dir.resolve_pretrained(None) is None and model_dir.resolve_pretrained("none") is None
    assert model_dir.resolve_pretrained("auto") is None  # nothing shipped: from scratch
    (shipped / "general-en").mkdir(parents=True)
    (shipped / "general-en" / "ulmfit.json").write_text("{}")
    assert model_dir.resolve_pretrained("auto") == shipped / "general-en"
    assert model_dir.resolve_pretrained("general-en") == shipped / "general-en"
    assert model_dir.resolve_pretrained(str(tmp_path)) == tmp_path
    with pytest.raises(UlmfitError, match="general-en"):
        model_dir.resolve_pretrained("wikitext-9000")


def test_model_card_says_how_to_reproduce(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    out = pretrain(corpus, tmp_path / "lm", tiny_cfg(epochs=1), log=lambda m: None)
    card = (out / "README.md").read_text()
    assert "validation perplexity" in card and "ulmfit pretrain --corpus" in card and "--preset tiny" in card
    assert "--set bs=8" in card and "float16" in card


def test_shipped_general_en_loads_generates_and_has_its_card(capsys):
    from ulmfit.cli import main
    from ulmfit.recipes import model_dir

    folder = model_dir.resolve_pretrained("auto", "fwd")
    assert folder is not None and folder.name == "general-en", "the package ships general-en"
    assert (folder / "lm.safetensors").stat().st_size <= 40e6
    card = (folder / "README.md").read_text()
    for fact in ("Corpus", "vocabulary", "perplexity", "Hardware", "ulmfit pretrain --corpus"):
        assert fact in card
    assert main(["generate", "--pretrained", "general-en", "--prompt", "The", "--words", "8", "--seed", "0"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("The") and len(out.split()) >= 5


def test_shipped_general_en_bwd_reads_text_backwards():
    """The shipped backward LM is found for direction bwd, is within the size limit, and predicts
    reversed English better than English in reading order (the forward model the other way round)."""
    import torch.nn.functional as F

    folder = model_dir.resolve_pretrained("auto", "bwd")
    assert folder is not None and folder.name == "general-en-bwd", "the package ships general-en-bwd"
    assert (folder / "lm.safetensors").stat().st_size <= 40e6
    assert json.loads((folder / "ulmfit.json").read_text())["direction"] == "bwd"
    assert "backward" in (folder / "README.md").read_text()
    text = ("The president of the United States said on Monday that the government would not change its "
            "policy on trade with other countries, and that the people of the nation would have to wait.")

    def loss(name, reverse):
        lm, tok, vocab = model_dir.load_lm(model_dir.resolve_pretrained(name))
        lm.eval()
        ids = vocab.numericalize(tok.tokenize_many([text])[0])
        ids = torch.as_tensor(ids[::-1].copy() if reverse else ids).long()[None]
        with torch.no_grad():
            logits = lm(ids[:, :-1])[0]
        return F.cross_entropy(logits[0], ids[0, 1:]).item()

    assert loss("general-en-bwd", reverse=True) < loss("general-en-bwd", reverse=False) - 0.5
    assert loss("general-en", reverse=False) < loss("general-en", reverse=True) - 0.5
