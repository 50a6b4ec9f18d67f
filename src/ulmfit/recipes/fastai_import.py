"""Import fastai's pretrained AWD-LSTM language model (WikiText-103) into a ulmfit LM folder.

fastai distributes its pretrained LMs as `wt103-fwd.tgz` / `wt103-bwd.tgz`: a tar.gz holding a
folder with `lstm_fwd.pth` (or `lstm_bwd.pth`: `torch.save` of the model's state dict, sometimes
wrapped as `{'model': state_dict, 'opt': ...}`) and `itos_wt103.pkl` (a pickled list of tokens).

    import_fastai("wt103-fwd.tgz", "models/wt103")                       # the archive
    import_fastai("lstm_fwd.pth", "models/wt103", itos="itos_wt103.pkl")  # the two files
    import_fastai("wt103-fwd/", "models/wt103")                           # a folder with both
    import_fastai(download_fastai_wt103("fwd"), "models/wt103")           # fetch it first

The result is a folder of kind "lm" that `model_dir.load_lm` (and `--pretrained`) reads.

fastai's key names and ours differ only in their prefixes (our `WeightDropLSTM` keeps fastai's
`weight_hh_l0_raw` / `module.*` names):

    0.encoder.weight                      -> encoder.embedding.weight  (and decoder.weight, tied)
    0.encoder_dp.emb.weight               -> dropped (the same matrix, seen by the dropout wrapper)
    0.rnns.{i}.weight_hh_l0_raw           -> encoder.rnns.{i}.weight_hh_l0_raw
    0.rnns.{i}.module.weight_ih_l0        -> encoder.rnns.{i}.module.weight_ih_l0
    0.rnns.{i}.module.bias_{ih,hh}_l0     -> encoder.rnns.{i}.module.bias_{ih,hh}_l0
    0.rnns.{i}.module.weight_hh_l0        -> dropped (the last dropped-out copy of the raw matrix)
    1.decoder.weight / 1.decoder.bias     -> decoder.weight / decoder.bias

Sizes (vocabulary, embedding, hidden units, layers) are read from the weights. Our vocabularies
start with `SPECIAL_TOKENS` at ids 0..8; fastai v1 put them in another order (xxmaj, xxup before
xxrep, xxwrep) and fastai 0.7 used other spellings (`_unk_`, `_pad_`, `xbos`, ...), so the rows of
the embedding, decoder and bias are reordered (a missing special token gets a new row: the mean
embedding and mean bias, as fastai does for new words). fastai pads its vocabulary with repeated
`xxfake` tokens; ours must be unique, so they become `xxfake0`, `xxfake1`, ...

Files are read without running pickled code: the checkpoint with `torch.load(weights_only=True)`,
the itos with an unpickler that accepts plain lists and strings only.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from ulmfit.data.fetch_lib import cache_dir
from ulmfit.errors import UlmfitError
from ulmfit.fileio import Staged
from ulmfit.models.awd_lstm import AWDLSTMConfig, LanguageModel
from ulmfit.recipes import model_dir
from ulmfit.text.tokenize import PAD_ID, SPECIAL_TOKENS, TokenizerConfig
from ulmfit.text.vocab import Vocab

Log = Callable[[str], None]

URL = "https://s3.amazonaws.com/fast-ai-modelzoo/wt103-{direction}.tgz"
DIRECTIONS = ("fwd", "bwd")
ITOS_NAME = "itos_wt103.pkl"

# Spellings of our special tokens in older fastai vocabularies (fastai 0.7 and WikiText itself).
# An alias is used only when the canonical `xx...` spelling is absent.
ALIASES: dict[str, tuple[str, ...]] = {
    "xxunk": ("_unk_", "<unk>"),
    "xxpad": ("_pad_", "<pad>"),
    "xxbos": ("xbos", "<bos>"),
    "xxeos": ("xeos", "<eos>"),
    "xxfld": ("xfld",),
    "xxrep": ("tk_rep",),
    "xxwrep": ("tk_wrep",),
    "xxup": ("t_up",),
    "xxmaj": (),
}

_RNN_KEY = re.compile(r"^0\.rnns\.(\d+)\.(?:module\.)?(weight_hh_l0_raw|weight_ih_l0|bias_ih_l0|bias_hh_l0)$")
_DROPPED_KEY = re.compile(r"^0\.(encoder_dp\.|encoder_with_dropout\.|rnns\.\d+\.module\.weight_hh_l0$)")


# ------------------------------------------------------------------------------------- import


def import_fastai(src: str | os.PathLike, out: str | os.PathLike, *, itos: str | os.PathLike | Sequence[str] | None = None,
                  direction: str = "fwd", overwrite: bool = False, log: Log = print) -> Path:
    """Convert fastai's pretrained AWD-LSTM LM into the ulmfit LM folder `out`; returns `out`.

    `src`: a `.tgz` archive as fastai distributes it, a folder holding `lstm_<direction>.pth` and
    `itos_wt103.pkl`, or the `.pth` state-dict file itself (then pass `itos=`, the pickled token
    list, or a list of str; an `itos*.pkl` next to the `.pth` is used when it is the only one).
    `direction` ("fwd" or "bwd") picks the member of an archive / folder and is recorded in the
    folder's `ulmfit.json`; a backward model expects each document's tokens reversed.
    `out` must not already hold a model unless `overwrite`.
    """
    if direction not in DIRECTIONS:
        raise UlmfitError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    src, out = Path(src), Path(out)
    if not src.exists():
        raise UlmfitError(f"{src}: not found; pass fastai's wt103-{direction}.tgz, a folder holding "
                          f"lstm_{direction}.pth and {ITOS_NAME}, or the .pth file with itos=")
    if (out / "ulmfit.json").exists() and not overwrite:
        raise UlmfitError(f"{out} already holds a model; choose another folder, or pass overwrite=True "
                          "(--overwrite) to replace it")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UlmfitError(f"{out} is not empty (an interrupted run?); choose another folder, or pass overwrite=True "
                          "(--overwrite) to replace what it holds")

    with _located(src, itos, direction) as (pth, itos_src):
        tokens = _read_itos(itos_src) if not isinstance(itos_src, list) else itos_src
        itos_name = itos_src.name if isinstance(itos_src, Path) else "itos"
        state = _read_state_dict(pth)
        sd, cfg = _convert(state, pth)
    if len(tokens) != cfg.vocab_size:
        raise UlmfitError(f"{itos_name} has {len(tokens)} tokens but {pth.name} has {cfg.vocab_size} embedding rows; "
                          f"pass the itos file that came with this model")
    tokens, perm, notes = _our_itos(tokens)
    for note in notes:
        log(f"fastai import: {note}")
    sd, cfg = _permute_rows(sd, cfg, perm)
    vocab = Vocab(tokens)

    lm = LanguageModel(cfg)
    try:
        lm.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # shapes were checked in _convert; this would be a bug of the mapping
        raise UlmfitError(f"{pth.name}: weights do not fit an AWD-LSTM ({str(e).splitlines()[0]})") from None
    lm.eval()

    # Built beside `out` when it holds anything and swapped in whole: an earlier model (or an
    # interrupted run) in `out` stays as it was until the new one is complete; ulmfit.json goes last.
    with model_dir.writing(out, overwrite=overwrite) as work:
        model_dir.save_text_pipeline(work, TokenizerConfig(), vocab)
        model_dir.save_lm(work, lm, cfg)
        model_dir.write_marker(work, "lm", source="fastai", direction=direction, source_file=src.name)
    n_params = sum(p.numel() for p in lm.parameters())
    log(f"fastai import: {src.name} -> {out} ({direction}; vocab {len(vocab):,}, emb {cfg.emb_size}, "
        f"hidden {cfg.hidden_size}, {cfg.n_layers} layers, {n_params / 1e6:.1f}M parameters)")
    return out


@contextlib.contextmanager
def _located(src: Path, itos, direction: str) -> Iterator[tuple[Path, Path | list[str]]]:
    """(state-dict file, itos file or list) for an archive, a folder or a .pth file."""
    given_itos: Path | list[str] | None
    if itos is None:
        given_itos = None
    elif isinstance(itos, (str, os.PathLike)):
        given_itos = Path(itos)
        if not given_itos.is_file():
            raise UlmfitError(f"{given_itos}: itos file not found; pass fastai's {ITOS_NAME}")
    else:
        given_itos = list(itos)
        if not all(isinstance(t, str) for t in given_itos):
            raise UlmfitError("itos= must be a path or a list of str")

    if src.is_dir():
        pth = _pick(sorted(src.rglob("*.pth")), direction, src)
        yield pth, given_itos if given_itos is not None else _pick_itos(sorted(src.rglob("*.pkl")), src)
    elif _is_archive(src):
        with tempfile.TemporaryDirectory(prefix="ulmfit-fastai-") as tmp:
            yield _extract(src, Path(tmp), direction, need_itos=given_itos is None, given_itos=given_itos)
    else:
        _check_name(src, direction)
        if given_itos is None:
            near = sorted(src.parent.glob("itos*.pkl"))
            if len(near) != 1:
                raise UlmfitError(f"{src}: no itos given; pass itos= with the pickled token list ({ITOS_NAME}) "
                                  f"that came with this model")
            given_itos = near[0]
        yield src, given_itos


def _is_archive(path: Path) -> bool:
    if path.name.endswith((".tgz", ".tar.gz", ".tar")):
        return True  # a broken one then fails in _extract with a message naming it
    if path.suffix == ".pth":
        return False
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError):
        return False


def _extract(archive: Path, tmp: Path, direction: str, need_itos: bool, given_itos) -> tuple[Path, Path | list[str]]:
    """Extract only the state dict and the itos members (by their base names, never by the paths
    written in the archive, so a crafted member cannot write outside `tmp`)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            pths = [m for m in members if m.name.endswith(".pth")]
            pth_m = _pick(pths, direction, archive, name=lambda m: Path(m.name).name)
            pth_path = tmp / Path(pth_m.name).name  # error messages then name lstm_fwd.pth
            picked = [(pth_m, pth_path)]
            itos_path: Path | list[str] = given_itos
            if need_itos:
                pkls = [m for m in members if m.name.endswith(".pkl")]
                itos_m = _pick_itos(pkls, archive, name=lambda m: Path(m.name).name)
                itos_path = tmp / Path(itos_m.name).name
                picked.append((itos_m, itos_path))
            for member, dest in picked:
                with tar.extractfile(member) as f, open(dest, "wb") as g:
                    shutil.copyfileobj(f, g, 1 << 20)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UlmfitError(f"{archive}: cannot read the archive ({e}); download it again") from None
    return pth_path, itos_path


def _pick(cands: list, direction: str, where: Path, name=lambda p: p.name):
    """The `lstm_<direction>.pth` among `cands`, else the only .pth that names no other direction."""
    want = f"lstm_{direction}.pth"
    exact = [c for c in cands if name(c) == want]
    if exact:
        return exact[0]
    other = [c for c in cands if name(c) == f"lstm_{_other(direction)}.pth"]
    if other:
        raise UlmfitError(f"{where} holds {name(other[0])}, not {want}; pass direction={_other(direction)!r} "
                          f"(or the wt103-{direction} model)")
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise UlmfitError(f"{where}: no .pth state-dict file inside; expected fastai's {want}")
    raise UlmfitError(f"{where}: several .pth files ({', '.join(sorted(name(c) for c in cands))}) and none is "
                      f"{want}; pass the one to import")


def _pick_itos(cands: list, where: Path, name=lambda p: p.name):
    for pred in (lambda n: n == ITOS_NAME, lambda n: n.startswith("itos")):
        found = [c for c in cands if pred(name(c))]
        if len(found) == 1:
            return found[0]
    if len(cands) == 1:
        return cands[0]
    raise UlmfitError(f"{where}: no single itos file inside (found {len(cands)} .pkl files); "
                      f"pass itos= with fastai's {ITOS_NAME}")


def _check_name(pth: Path, direction: str) -> None:
    if pth.name == f"lstm_{_other(direction)}.pth":
        raise UlmfitError(f"{pth} is fastai's {_other(direction)} model; pass direction={_other(direction)!r}")


def _other(direction: str) -> str:
    return "bwd" if direction == "fwd" else "fwd"


# ------------------------------------------------------------------------------------- reading


class _PlainUnpickler(pickle.Unpickler):
    """Lists, tuples and strings need no class lookup; anything that does is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_itos(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            tokens = _PlainUnpickler(f).load()
    except OSError as e:
        raise UlmfitError(f"{path}: cannot read it ({e.strerror}); check the path") from None
    except Exception as e:  # a malformed pickle raises many types (OverflowError, MemoryError, RecursionError...)
        raise UlmfitError(f"{path.name}: not a pickled list of tokens ({type(e).__name__}); "
                          f"pass fastai's {ITOS_NAME}") from None
    if not isinstance(tokens, (list, tuple)) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise UlmfitError(f"{path.name}: expected a pickled list of str (fastai's {ITOS_NAME}), "
                          f"got {type(tokens).__name__}")
    return list(tokens)


def _read_state_dict(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file: UnpicklingError, RuntimeError, EOFError...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UlmfitError(f"{path.name}: cannot read it as a PyTorch state dict ({first}); "
                          f"pass fastai's lstm_fwd.pth / lstm_bwd.pth") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UlmfitError(f"{path.name}: not a state dict (a dict of tensors); pass fastai's lstm_fwd.pth")
    return obj


# ----------------------------------------------------------------------------------- converting


def _convert(state: dict, pth: Path) -> tuple[dict[str, torch.Tensor], AWDLSTMConfig]:
    """fastai state dict -> (our state dict, config); every shape checked, with errors naming `pth`."""
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}

    def bad(why: str) -> UlmfitError:
        return UlmfitError(f"{pth.name}: not a fastai AWD-LSTM language model ({why}); "
                           f"pass fastai's lstm_fwd.pth / lstm_bwd.pth")

    emb = state.get("0.encoder.weight")
    if emb is None or emb.dim() != 2:
        raise bad("no 0.encoder.weight embedding matrix")
    vocab_size, emb_size = emb.shape
    rnns: dict[int, dict[str, torch.Tensor]] = {}
    dec_w = state.get("1.decoder.weight")
    dec_b = state.get("1.decoder.bias")
    unknown = []
    for k, v in state.items():
        m = _RNN_KEY.match(k)
        if m:
            rnns.setdefault(int(m.group(1)), {})[m.group(2)] = v
        elif k not in ("0.encoder.weight", "1.decoder.weight", "1.decoder.bias") and not _DROPPED_KEY.match(k):
            unknown.append(k)
    if unknown:
        raise bad(f"unexpected key(s) {', '.join(sorted(unknown)[:3])}")
    if not rnns or sorted(rnns) != list(range(len(rnns))):
        raise bad("no 0.rnns.<i> LSTM layers numbered from 0")
    if dec_b is None or dec_b.shape != (vocab_size,):
        raise bad(f"1.decoder.bias missing or not of size {vocab_size}")
    n_layers = len(rnns)
    sizes = []  # (input, hidden) per layer
    for i in range(n_layers):
        layer = rnns[i]
        missing = {"weight_hh_l0_raw", "weight_ih_l0", "bias_ih_l0", "bias_hh_l0"} - set(layer)
        if missing:
            raise bad(f"layer {i} lacks {', '.join(sorted(missing))}")
        hh = layer["weight_hh_l0_raw"]
        if hh.dim() != 2 or hh.shape[0] != 4 * hh.shape[1]:
            raise bad(f"0.rnns.{i}.weight_hh_l0_raw has shape {tuple(hh.shape)}, not [4H, H]")
        sizes.append((layer["weight_ih_l0"].shape[-1], hh.shape[1]))
    hidden_size = sizes[0][1] if n_layers > 1 else emb_size
    expected = [emb_size] + [hidden_size] * (n_layers - 1) + [emb_size]
    for i in range(n_layers):
        if sizes[i] != (expected[i], expected[i + 1]):
            raise bad(f"layer {i} maps {sizes[i][0]} -> {sizes[i][1]} features, expected "
                      f"{expected[i]} -> {expected[i + 1]} (embedding {emb_size}, hidden {hidden_size})")
    tied = dec_w is None or (dec_w.shape == emb.shape and torch.equal(dec_w, emb))
    if dec_w is not None and dec_w.shape != emb.shape:
        raise bad(f"1.decoder.weight has shape {tuple(dec_w.shape)}, the embedding {tuple(emb.shape)}")

    cfg = AWDLSTMConfig(vocab_size=vocab_size, emb_size=emb_size, hidden_size=hidden_size, n_layers=n_layers,
                        pad_idx=PAD_ID, tie_weights=tied)
    f32 = lambda t: t.detach().to(torch.float32).contiguous()  # noqa: E731  (fastai fp16 exports)
    sd: dict[str, torch.Tensor] = {"encoder.embedding.weight": f32(emb), "decoder.bias": f32(dec_b)}
    sd["decoder.weight"] = sd["encoder.embedding.weight"] if tied else f32(dec_w)
    for i, layer in rnns.items():
        sd[f"encoder.rnns.{i}.weight_hh_l0_raw"] = f32(layer["weight_hh_l0_raw"])
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            sd[f"encoder.rnns.{i}.module.{name}"] = f32(layer[name])
    return sd, cfg


def _our_itos(fa_itos: list[str]) -> tuple[list[str], list[int], list[str]]:
    """(our itos, perm, notes): our row j is fastai's row perm[j], or a new mean row when -1."""
    notes = []
    first: dict[str, int] = {}
    for i, t in enumerate(fa_itos):
        first.setdefault(t, i)
    special_rows: list[int] = []
    for tok in SPECIAL_TOKENS:
        row = first.get(tok, -1)
        if row < 0:
            alias = next((a for a in ALIASES[tok] if a in first), None)
            if alias is not None:
                row = first[alias]
                notes.append(f"special token {tok} taken from fastai's {alias!r}")
        if row < 0:
            notes.append(f"special token {tok} is not in fastai's vocabulary; it gets a new row (mean embedding)")
        special_rows.append(row)
    if special_rows != list(range(len(SPECIAL_TOKENS))):
        notes.append(f"rows reordered so the special tokens have ids 0..{len(SPECIAL_TOKENS) - 1} "
                     f"(fastai order: {' '.join(fa_itos[:len(SPECIAL_TOKENS)])})")
    used = {r for r in special_rows if r >= 0}
    rest = [i for i in range(len(fa_itos)) if i not in used]
    perm = special_rows + rest

    itos = list(SPECIAL_TOKENS)
    taken = set(itos) | set(fa_itos)
    seen = set(itos)
    counters: dict[str, int] = {}
    renamed = 0
    n_fake = sum(t == "xxfake" for t in fa_itos)
    for i in rest:
        t = fa_itos[i]
        # fastai pads with repeated 'xxfake': all become xxfake0, xxfake1, ... (as Vocab.build names
        # them); any other repeated token (or a second copy of a special) keeps its first spelling
        if t in seen or (t == "xxfake" and n_fake > 1):
            base = t
            k = counters.get(base, 0)
            while f"{base}{k}" in taken:
                k += 1
            counters[base] = k + 1
            t = f"{base}{k}"
            taken.add(t)
            renamed += 1
        seen.add(t)
        itos.append(t)
    if renamed:
        notes.append(f"{renamed} duplicate token(s) (fastai's 'xxfake' padding) renamed to be unique")
    return itos, perm, notes


def _permute_rows(sd: dict[str, torch.Tensor], cfg: AWDLSTMConfig, perm: list[int]) -> tuple[dict, AWDLSTMConfig]:
    if perm == list(range(cfg.vocab_size)):
        return sd, cfg
    idx = torch.tensor([max(p, 0) for p in perm])
    new = torch.tensor([p < 0 for p in perm])

    def rows(t: torch.Tensor) -> torch.Tensor:
        out = t[idx].clone()
        if new.any():
            out[new] = t.mean(0)
        return out

    sd = dict(sd)
    sd["encoder.embedding.weight"] = rows(sd["encoder.embedding.weight"])
    sd["decoder.bias"] = rows(sd["decoder.bias"])
    sd["decoder.weight"] = sd["encoder.embedding.weight"] if cfg.tie_weights else rows(sd["decoder.weight"])
    cfg = AWDLSTMConfig.from_dict({**cfg.to_dict(), "vocab_size": len(perm)})
    return sd, cfg


# ------------------------------------------------------------------------------------- download


def download_fastai_wt103(direction: str = "fwd", cache: str | os.PathLike | None = None,
                          url: str | None = None, timeout: float = 60.0) -> Path:
    """fastai's pretrained WikiText-103 LM archive `wt103-<direction>.tgz`, downloaded once into
    `<cache>/fastai/` (`cache` defaults to `$ULMFIT_CACHE`, else `~/.cache/ulmfit`). Pass the result to
    `import_fastai`. `url` overrides fastai's address (a mirror)."""
    if direction not in DIRECTIONS:
        raise UlmfitError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    url = url or URL.format(direction=direction)
    folder = (Path(cache) if cache is not None else cache_dir()) / "fastai"
    dest = folder / f"wt103-{direction}.tgz"
    if dest.is_file():
        return dest
    hint = (f"no internet? download {url} by hand and pass the file: "
            f"ulmfit.recipes.fastai_import.import_fastai('wt103-{direction}.tgz', out)")
    staged = Staged(dest, "wb")  # the one atomic writer: an interrupted download never looks finished
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "ulmfit"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            shutil.copyfileobj(resp, staged.file, 1 << 20)
        staged.file.flush()
        if not tarfile.is_tarfile(staged.tmp):
            raise UlmfitError(f"{url}: the download is not a tar archive; {hint}")
        staged.commit()
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:  # refused, 404, timeout
        staged.abort()
        reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
        raise UlmfitError(f"could not download {url} ({reason}); {hint}") from None
    except BaseException:
        staged.abort()
        raise
    return dest
