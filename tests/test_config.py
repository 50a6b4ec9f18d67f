import json

from ulmfit.recipes import model_dir
from ulmfit.recipes.config import FitConfig
from ulmfit.recipes.siatl_config import SiatlConfig


def _lm_folder(path, hidden):
    path.mkdir(parents=True)
    (path / "ulmfit.json").write_text(json.dumps({"format": "ulmfit-model", "kind": "lm"}))
    (path / "lm_config.json").write_text(json.dumps({"hidden_size": hidden}))
    return path


def test_fine_tuning_rates_follow_the_size_of_the_pretrained_lm(tmp_path):
    small = _lm_folder(tmp_path / "small", 256)
    large = _lm_folder(tmp_path / "large", 1152)
    scratch = FitConfig(pretrained=None).resolved()
    assert scratch.lm.lr == 2e-2 and scratch.clf.lrs == (2e-2, 1e-2, 1e-2, 5e-3)
    assert FitConfig(pretrained=str(small)).resolved().clf.lrs == scratch.clf.lrs
    assert FitConfig(pretrained=str(small)).resolved().lm.lr == 2e-2
    big = FitConfig(pretrained=str(large)).resolved()
    assert big.lm.lr == 3e-3 and big.clf.lrs == (2e-2, 1e-2, 5e-3, 1e-3)
    # explicit rates are never replaced
    cfg = FitConfig(pretrained=str(large))
    cfg.clf = cfg.clf.__class__(lrs=(1e-1,))
    assert cfg.resolved().clf.lrs == (1e-1,)


def test_siatl_from_scratch_trains_everything_with_adam_unless_configured(tmp_path, monkeypatch):
    monkeypatch.setattr(model_dir, "SHIPPED", tmp_path / "none")
    s = FitConfig(recipe="siatl", pretrained=None).resolved().siatl
    assert s.pretrained_optimizer == "adam" and s.unfreeze_lstm_epoch == 1 and s.unfreeze_embedding_epoch == 1
    # Issue 14: a field the user sets is kept as set, and the fields left "auto" still get their
    # from-scratch values (before, setting any siatl field silently dropped the whole adjustment).
    custom = FitConfig(recipe="siatl", pretrained=None, siatl=SiatlConfig(pretrained_lr=5e-3)).resolved().siatl
    assert custom == SiatlConfig(pretrained_lr=5e-3, pretrained_optimizer="adam", new_lr=1e-2,
                                 unfreeze_lstm_epoch=1, unfreeze_embedding_epoch=1)
    pinned = SiatlConfig(pretrained_optimizer="sgd", pretrained_lr=1e-2, new_lr=1e-3, unfreeze_lstm_epoch=2,
                         unfreeze_embedding_epoch=5)
    assert FitConfig(recipe="siatl", pretrained=None, siatl=pinned).resolved().siatl == pinned
    pre = _lm_folder(tmp_path / "pre", 256)
    # with a pretrained LM the paper's staged unfreezing and Adam at a fine-tuning rate, as before issue 14
    assert FitConfig(recipe="siatl", pretrained=str(pre)).resolved().siatl == SiatlConfig(
        pretrained_optimizer="adam", pretrained_lr=1e-3, new_lr=1e-3, unfreeze_lstm_epoch=2, unfreeze_embedding_epoch=5)
