"""`ulmfit lr-find`: the learning-rate range test for the language model or the classifier's first stage."""
from __future__ import annotations

from pathlib import Path

from ulmfit.data.cls_loader import ClassificationLoader
from ulmfit.data.lm_loader import LMLoader
from ulmfit.data.readers import read_table
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.recipes import model_dir
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.prepare import class_names_from, encode_labels
from ulmfit.recipes.toolbox import scratch_lm
from ulmfit.recipes.ulmfit import classifier_from_lm
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab
from ulmfit.train.device import describe as describe_device
from ulmfit.train.freeze import freeze_to
from ulmfit.train.lr_find import lr_find
from ulmfit.train.optim import make_optimizer, param_groups
from ulmfit.train.plots import plot_lr_find
from ulmfit.train.tasks import ClassifierTask, LMTask


def lr_find_run(train, out, cfg: FitConfig, *, text_col: str = "text", label_col: str | None = None,
                encoding: str = "utf-8", encoder: str | None = None, iters: int = 100, log=print) -> dict:
    """The LM's rate (from scratch, `cfg.lm.preset`), or with `encoder` the classifier's first stage."""
    table = read_table(Path(train), text_col=text_col, label_col=label_col, encoding=encoding, on_empty="skip")
    if encoder:
        if not label_col:
            raise UlmfitError("lr-find --encoder finds the classifier's rate and needs --label-col")
        lm, tokenizer, vocab = model_dir.load_lm(encoder)
        classes = class_names_from(table)
        labels = encode_labels(table, classes, "training")
        lm_cfg = AWDLSTMConfig.from_dict(lm.encoder.cfg.to_dict())
        model, _, _ = classifier_from_lm(lm, lm_cfg, len(classes), cfg.clf)
        groups = model.layer_groups()
        freeze_to(groups, -1)
        docs = vocab.encode_many(tokenizer.tokenize_many(table.texts))
        batches = ClassificationLoader(docs, labels, bs=cfg.clf.bs, shuffle=True, seed=cfg.seed)
        task, what = ClassifierTask(classes), "classifier (head only, as in the first stage)"
    else:
        tokenizer = Tokenizer(TokenizerConfig())
        tokens = tokenizer.tokenize_many(table.texts)
        vocab = Vocab.build(tokens, min_freq=cfg.lm.min_freq, max_vocab=cfg.lm.max_vocab)
        model = scratch_lm(vocab, cfg.lm)[0]
        groups = model.layer_groups()
        batches = LMLoader(vocab.encode_many(tokens), bs=cfg.lm.bs, bptt=cfg.lm.bptt, shuffle=True, seed=cfg.seed)
        task, what = LMTask(cfg.lm.alpha, cfg.lm.beta), f"language model ({cfg.lm.preset} preset, from scratch)"
    log(f"lr-find on the {what}: {iters} steps on {describe_device()}")
    result = lr_find(model, batches, task.loss, lambda: make_optimizer(param_groups(groups, 1e-3), cfg.optimizer),
                     num_it=iters, clip=0.25)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_lr_find(result.lrs, result.losses, result.suggestion, out / "lr_find.png")
    summary = {"suggestion": result.suggestion, "method": result.method, "valley": result.valley,
               "min_loss_lr_div10": result.min_loss_lr, "lrs": result.lrs, "losses": result.losses}
    atomic_write_json(out / "lr_find.json", summary)
    print(f"suggested learning rate: {result.suggestion:.2e} ({result.method}); valley {result.valley:.2e}; "
          f"plot: {out / 'lr_find.png'}")
    return summary
