"""Export a ulmfit language model to fastai's AWD-LSTM format (the inverse of `fastai_import`).

    export_fastai("runs/general-en", "exported/general-en")
    # -> exported/general-en/lstm_fwd.pth   torch.save of the LM state dict, fastai key names and order
    #    exported/general-en/itos.pkl       pickled list of tokens, row i of the weights = itos[i]
    #    exported/general-en/fastai_config.json   emb_sz / n_hid / n_layers for fastai's awd_lstm config

and then, in fastai 2.8 (with a `TextDataLoaders` `dls` and `config = awd_lstm_lm_config.copy()`
updated with emb_sz / n_hid / n_layers from fastai_config.json):

    learn = language_model_learner(dls, AWD_LSTM, config=config, pretrained=False)
    learn.load_pretrained("exported/general-en/lstm_fwd.pth", "exported/general-en/itos.pkl")

`load_pretrained` maps the rows of the embedding, decoder and bias onto the new vocabulary by
token (`match_embeds`; words absent from the export get the mean row), then copies the weights
into the model *by position* (`load_ignore_keys` zips the two state dicts' keys), so the order of
the keys written here is fastai's own module order:

    0.encoder.weight                      <- encoder.embedding.weight
    0.encoder_dp.emb.weight               <- encoder.embedding.weight (fastai's dropout wrapper
                                             holds the same embedding module)
    0.rnns.{i}.weight_hh_l0_raw           <- encoder.rnns.{i}.weight_hh_l0_raw
    0.rnns.{i}.module.weight_ih_l0        <- encoder.rnns.{i}.module.weight_ih_l0
    0.rnns.{i}.module.bias_ih_l0          <- encoder.rnns.{i}.module.bias_ih_l0
    0.rnns.{i}.module.bias_hh_l0          <- encoder.rnns.{i}.module.bias_hh_l0
    1.decoder.weight / 1.decoder.bias     <- decoder.weight / decoder.bias

fastai 2.x lists its special tokens in the same order as ours (xxunk, xxpad, xxbos, xxeos, xxfld,
xxrep, xxwrep, xxup, xxmaj), so rows keep their order; our unique padding tokens `xxfake0`,
`xxfake1`, ... are written as fastai's repeated `xxfake`. The tokenizers differ (fastai runs
spaCy), so a word that the two split differently does not find its row in fastai.

A backward model (`direction: bwd` in ulmfit.json) is written as `lstm_bwd.pth`; fastai expects its
documents reversed (`backwards=True` in the DataLoaders).
"""
from __future__ import annotations

import os
import io
import pickle
import re
from pathlib import Path

import torch

from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_bytes, atomic_write_json
from ulmfit.recipes import model_dir

ITOS_NAME = "itos.pkl"
_FAKE = re.compile(r"^xxfake\d+$")


def fastai_state_dict(lm) -> dict[str, torch.Tensor]:
    """Our `LanguageModel` -> fastai's SequentialRNN(AWD_LSTM, LinearDecoder) state dict, in
    fastai's key order (which `load_pretrained` relies on)."""
    if lm.cfg.softmax != "full":
        raise UlmfitError(f"this language model has an adaptive softmax (cutoffs {list(lm.cfg.cutoffs)}); fastai's "
                          "LinearDecoder is a full softmax and has no equivalent: export a full-softmax LM (`--set lm.softmax=full` "
                          "in `finetune-lm`/`fit`, `--set softmax=full` in `pretrain`)")
    sd = {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in lm.state_dict().items()}
    emb = sd["encoder.embedding.weight"]
    out = {"0.encoder.weight": emb, "0.encoder_dp.emb.weight": emb.clone()}
    for i in range(lm.cfg.n_layers):
        out[f"0.rnns.{i}.weight_hh_l0_raw"] = sd[f"encoder.rnns.{i}.weight_hh_l0_raw"]
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            out[f"0.rnns.{i}.module.{name}"] = sd[f"encoder.rnns.{i}.module.{name}"]
    out["1.decoder.weight"] = sd["decoder.weight"].clone()
    out["1.decoder.bias"] = sd["decoder.bias"]
    return out


def fastai_itos(itos: list[str]) -> list[str]:
    """Our token list as fastai writes it: `xxfakeN` padding back to fastai's repeated `xxfake`."""
    return ["xxfake" if _FAKE.match(t) else t for t in itos]


def export_fastai(lm_folder: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                  log=print) -> Path:
    """Write `lstm_<direction>.pth`, `itos.pkl` and `fastai_config.json` for the LM in `lm_folder`
    (an `ulmfit pretrain` / `finetune-lm` folder, or a classifier folder's language model) into
    `out_dir`; returns the `.pth` path."""
    lm_folder, out_dir = Path(lm_folder), Path(out_dir)
    meta = model_dir.read_marker(lm_folder)
    lm, _tokenizer, vocab = model_dir.load_lm(lm_folder)
    direction = meta.get("direction", "fwd")
    if direction not in ("fwd", "bwd"):
        raise UlmfitError(f"{lm_folder}: direction {direction!r} in ulmfit.json; expected fwd or bwd")
    pth = out_dir / f"lstm_{direction}.pth"
    if pth.exists() and not overwrite:
        raise UlmfitError(f"{pth} exists; choose another folder, or pass overwrite=True")
    cfg = lm.cfg
    if cfg.pad_idx != 1:
        raise UlmfitError(f"{lm_folder}: pad id {cfg.pad_idx}, but fastai's AWD_LSTM pads with id 1")
    buf = io.BytesIO()
    torch.save(fastai_state_dict(lm), buf)  # fastai's own format (a pickle); written for fastai to read
    atomic_write_bytes(pth, buf.getvalue())
    atomic_write_bytes(out_dir / ITOS_NAME, pickle.dumps(fastai_itos(vocab.itos), protocol=4))
    atomic_write_json(out_dir / "fastai_config.json", {
        "emb_sz": cfg.emb_size, "n_hid": cfg.hidden_size, "n_layers": cfg.n_layers, "pad_token": cfg.pad_idx,
        "vocab_size": cfg.vocab_size, "tie_weights": cfg.tie_weights, "direction": direction,
        "source": str(lm_folder), "weights": pth.name, "itos": ITOS_NAME})
    log(f"fastai export: {lm_folder} -> {pth} (+ {ITOS_NAME}; vocab {cfg.vocab_size:,}, emb {cfg.emb_size}, "
        f"hidden {cfg.hidden_size}, {cfg.n_layers} layers)")
    return pth
