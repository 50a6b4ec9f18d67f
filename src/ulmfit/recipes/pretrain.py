"""`ulmfit pretrain`: a general-domain language model from a corpus folder (ULMFiT §3.1).

The corpus (text shards, one document per line, as `ulmfit corpus build` writes them) is
numericalised in two streaming passes so RAM stays flat however large it is: pass 1 tokenizes
shard by shard and counts words and document lengths; pass 2 tokenizes again and writes the ids
straight into a memory-mapped `ids.npy` whose size pass 1 fixed. Training then reads batches
from that memory map (`LMLoader` never copies the corpus). Checkpoints every N steps make a
multi-hour CPU epoch resumable.

`--set direction=bwd` pretrains a backward LM: every document's ids are written reversed (the
documents keep their order), which is how `fit --direction bwd` reads its text too.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ulmfit.data.lm_loader import LMLoader
from ulmfit.errors import UlmfitError
from ulmfit.fileio import atomic_write_json, atomic_write_npy, atomic_write_text, make_dir
from ulmfit.models.awd_lstm import PRESETS, AWDLSTMConfig, LanguageModel
from ulmfit.recipes import model_dir
from ulmfit.recipes.pretrain_config import PretrainConfig  # noqa: F401 (its home before; checked torch-free)
from ulmfit.recipes.toolbox import output_layer, seed_all, subsample_tokens
from ulmfit.text.token_docs import TokenDocs
from ulmfit.text.tokenize import Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab
from ulmfit.train import distributed
from ulmfit.train.checkpoint import save_weights
from ulmfit.train.loop import LoopConfig, PhaseFiles, Stage, run_phase
from ulmfit.train.optim import make_optimizer, param_groups
from ulmfit.train.plots import plot_history
from ulmfit.train.device import describe as describe_device, training_device
from ulmfit.train.precision import describe_precision, training_precision
from ulmfit.train.tasks import LMTask

Log = Callable[[str], None]


def read_shards(corpus: Path, chunk: int = 5000, encoding: str = "utf-8") -> Iterator[list[str]]:
    """Documents of the corpus, at most `chunk` lines at a time, in file-name order (bounded memory).
    A byte that is not valid in `encoding` is one line naming the shard, the line and the option."""
    shards = sorted((corpus / "shards").glob("*.txt")) if (corpus / "shards").is_dir() else sorted(corpus.glob("*.txt"))
    if not shards:
        raise UlmfitError(f"{corpus}: no text shards (expected {corpus}/shards/*.txt); build one with "
                          f"`ulmfit corpus build general-en --out {corpus}`")
    for path in shards:
        try:
            f = open(path, encoding=encoding)
        except LookupError:
            raise UlmfitError(f"unknown encoding {encoding!r}; pass --set encoding=utf-8 (or latin-1)") from None
        with f:
            docs, lineno = [], 0
            try:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        docs.append(line.strip())
                    if len(docs) == chunk:
                        yield docs
                        docs = []
            except UnicodeDecodeError as e:
                raise UlmfitError(f"{path}: byte 0x{e.object[e.start]:02x} near line {lineno + 1} is not valid "
                                  f"{encoding}; fix that shard, or pass --set encoding=latin-1 (the shards' real "
                                  "encoding)") from None
            if docs:
                yield docs


def numericalize_corpus(corpus: Path, folder: Path, tokenizer: Tokenizer, cfg: PretrainConfig,
                        log: Log) -> tuple[Vocab, TokenDocs, TokenDocs]:
    """Two streaming passes: count, then write ids into memory maps. Returns (vocab, train, valid).

    Every `cfg.valid_every`-th document goes to the (small, in-RAM) validation set; the rest are
    written to `folder/train/ids.npy`, memory-mapped. A backward LM's documents are stored reversed.
    """
    step = -1 if cfg.direction == "bwd" else 1
    t0 = time.perf_counter()
    counts, lengths = Counter(), []
    for docs in read_shards(corpus, encoding=cfg.encoding):
        for toks in tokenizer.tokenize_many(docs):
            counts.update(toks)
            lengths.append(len(toks))
    vocab = Vocab.from_counts(counts, cfg.min_freq, cfg.max_vocab)
    lengths = np.asarray(lengths, dtype=np.int64)
    is_valid = np.arange(len(lengths)) % cfg.valid_every == 0
    log(f"pass 1: {len(lengths):,} documents, {lengths.sum():,} tokens, vocab {len(vocab):,} "
        f"({time.perf_counter() - t0:.0f}s)")
    train_offsets = np.r_[0, np.cumsum(lengths[~is_valid])].astype(np.int64)
    make_dir(folder / "train")
    tmp = folder / "train" / ".ids.npy.tmp"  # a memory map too large for memory: written here, renamed when whole
    ids = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(int(train_offsets[-1]),))
    valid, d, t = [], 0, 0
    for docs in read_shards(corpus, encoding=cfg.encoding):
        for toks in tokenizer.tokenize_many(docs):
            if is_valid[d]:
                valid.append(vocab.numericalize(toks)[::step])
            else:
                ids[train_offsets[t]:train_offsets[t + 1]] = vocab.numericalize(toks)[::step]
                t += 1
            d += 1
    ids.flush()
    del ids
    atomic_write_npy(folder / "train" / "offsets.npy", train_offsets)
    tmp.replace(folder / "train" / "ids.npy")
    valid_docs = TokenDocs.from_arrays(valid)
    valid_docs.save(folder / "valid")
    log(f"pass 2: ids written to {folder / 'train' / 'ids.npy'} ({time.perf_counter() - t0:.0f}s in all)")
    return vocab, TokenDocs.load(folder / "train", mmap=True), valid_docs


def write_model_card(out: Path, cfg: PretrainConfig, lm_cfg: AWDLSTMConfig, stats: dict, history: list[dict]) -> None:
    """README.md next to the weights: what it was trained on, how, how well, and how to redo it."""
    import platform
    import sys

    corpus_stats = {}
    if (Path(stats["corpus"]) / "stats.json").exists():
        corpus_stats = json.loads((Path(stats["corpus"]) / "stats.json").read_text())
    sources = ", ".join(f"{k} ({v.get('words', 0) / 1e6:.2f}M words)" for k, v in corpus_stats.get("sources", {}).items())
    overrides = " ".join(f"--set {k}={v}" for k, v in asdict(cfg).items()
                         if k != "preset" and v != getattr(PretrainConfig(), k))
    seconds = sum(r["seconds"] for r in history)
    reads = ("backward: it reads every document from its last word to its first (use it with "
             "`ulmfit fit --direction bwd`, or as `--pretrained-bwd` with `--direction both`)"
             if cfg.direction == "bwd" else "forward: it reads text left to right")
    text = f"""# {out.name}: AWD-LSTM language model (ulmfit)

- Direction: {reads}.
- Architecture: AWD-LSTM, {lm_cfg.n_layers} layers, embedding {lm_cfg.emb_size}, hidden {lm_cfg.hidden_size}, tied {_head_text(lm_cfg)}; preset `{cfg.preset}`; vocabulary {stats['vocab']:,} (min_freq {cfg.min_freq}).
- Corpus: `{stats['corpus']}` — {stats['documents']:,} documents; trained on {stats['train_tokens']:,} tokens ({cfg.epochs} epoch(s){', a random subset of the corpus' if cfg.max_train_tokens else ''}); every {cfg.valid_every}th document held out ({stats['valid_tokens']:,} tokens).
- Sources: {sources or 'see the corpus stats.json'}.
- Result: validation perplexity {stats['valid_perplexity']:.1f}, next-token accuracy {stats['valid_accuracy']:.3f}.
- Training: bs {cfg.bs}, bptt {cfg.bptt} (variable), AdamW, {cfg.schedule} lr {cfg.lr}, drop_mult {cfg.drop_mult}, {cfg.precision}; {stats['tokens_per_s']:,.0f} tokens/s; {seconds / 60:.0f} min of training.
- Hardware: {platform.machine()} CPU, {_threads()}, {'no GPU' if training_device().type == 'cpu' else 'trained on ' + describe_device()}; Python {sys.version.split()[0]}, torch {torch.__version__}.
- Weights: `lm.safetensors` in float16 (loaded as float32).

Reproduce:
```
ulmfit corpus build general-en --out corpora/general-en
ulmfit pretrain --corpus corpora/general-en --out {out.name} --preset {cfg.preset} {overrides}
```
{_sizing_note(cfg, seconds)}
"""
    atomic_write_text(out / "README.md", text)


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread" + ("s" if n != 1 else "")


def _head_text(lm_cfg: AWDLSTMConfig) -> str:
    if lm_cfg.softmax == "adaptive":
        return (f"adaptive softmax (cutoffs {', '.join(map(str, lm_cfg.cutoffs))}; LM fine-tuning keeps it, the "
                f"default `lm.softmax=adaptive`; fastai export needs a full softmax)")
    return "decoder (full softmax)"


def _check_resumed_direction(out: Path, cfg: PretrainConfig, resume: bool) -> None:
    """The stored ids are in the direction of the run that wrote them: a resume may not switch it."""
    saved = out / "pretrain_config.json"
    if resume and saved.exists():
        before = json.loads(saved.read_text()).get("direction", "fwd")
        if before != cfg.direction:
            raise UlmfitError(f"{out}: an interrupted {before} pretraining run; resume it with --set direction={before}, "
                              f"or pass --overwrite to start a {cfg.direction} one")


def _sizing_note(cfg: PretrainConfig, seconds: float) -> str:
    if training_device().type == "cuda" or cfg.preset == "paper":
        return "Trained at the paper's size; more epochs over a larger corpus would still lower the perplexity."
    return (f"This size was chosen for what {_threads()} of a CPU can do in about {seconds / 60:.0f} minutes, "
            f"with no GPU at hand; a GPU run of the `paper` preset over the whole corpus for several epochs "
            f"(`--preset paper --set epochs=5`) should replace it.")


def pretrain(corpus: str | Path, out: str | Path, cfg: PretrainConfig, resume: bool = False,
             overwrite: bool = False, log: Log = print) -> Path:
    corpus, out = Path(corpus), Path(out)
    if (out / "ulmfit.json").exists() and not (resume or overwrite):
        raise UlmfitError(f"{out} already holds a model; choose another --out, or pass --overwrite")
    if cfg.preset not in PRESETS:
        raise UlmfitError(f"unknown model preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    with model_dir.writing(out, resume=resume, overwrite=overwrite) as work:
        _check_resumed_direction(work, cfg, resume)
        _pretrain_into(corpus, work, cfg, resume, log)
    log(f"pretrained LM saved to {out}")
    return out


def _pretrain_into(corpus: Path, out: Path, cfg: PretrainConfig, resume: bool, log: Log) -> None:
    """The run into `out` (the model folder, or the staging folder of an --overwrite)."""
    where = training_device().type
    how = f"{describe_device()}, {describe_precision(cfg.precision, where, lstm=True)}"
    cfg = replace(cfg, precision=training_precision(cfg.precision, where))  # the resolved value is what is saved
    tokenizer = Tokenizer(TokenizerConfig())
    data_dir = out / "data"
    with distributed.main_first():  # [distributed] rank 0 numericalises; the other ranks load what it wrote
        load = resume or not distributed.is_main()
        if load and (data_dir / "train" / "ids.npy").exists() and (out / "vocab.json").exists():
            vocab = Vocab.load(out / "vocab.json")
            all_train, valid_docs = TokenDocs.load(data_dir / "train"), TokenDocs.load(data_dir / "valid", mmap=False)
        else:  # pass 1 reads every shard before anything is written: a bad shard leaves no folder behind
            vocab, all_train, valid_docs = numericalize_corpus(corpus, data_dir, tokenizer, cfg, log)
            model_dir.save_text_pipeline(out, tokenizer.config, vocab)
    atomic_write_json(out / "pretrain_config.json", asdict(cfg))
    train_docs = subsample_tokens(all_train, cfg.max_train_tokens, cfg.seed)
    seed_all(cfg.seed)
    lm_cfg = AWDLSTMConfig(vocab_size=len(vocab), drop_mult=cfg.drop_mult, **PRESETS[cfg.preset],
                           **output_layer(cfg, len(vocab)))
    lm = LanguageModel(lm_cfg)
    n_train = train_docs.n_tokens
    log(f"device and precision: {how}")
    log(f"pretraining {cfg.preset} LM ({sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M parameters) on "
        f"{n_train:,} tokens, validating on {valid_docs.n_tokens:,}; {cfg.epochs} epoch(s), bs {cfg.bs}, bptt {cfg.bptt}")
    train_loader = LMLoader(train_docs, bs=cfg.bs, bptt=cfg.bptt, shuffle=True, variable_bptt=True, seed=cfg.seed)
    valid_loader = LMLoader(valid_docs, bs=min(cfg.bs, max(1, valid_docs.n_tokens // (4 * cfg.bptt))),
                            bptt=cfg.bptt, shuffle=False)
    groups = lm.layer_groups()
    opt = make_optimizer(param_groups(groups, cfg.lr, weight_decay=cfg.wd), "adamw")
    loop_cfg = LoopConfig(monitor="valid_loss", patience=None, seed=cfg.seed, precision=cfg.precision,
                          lr_factor=1.0, checkpoint_every=cfg.checkpoint_every)
    t0 = time.perf_counter()
    result = run_phase(lm, LMTask(), opt, groups, [Stage("pretrain", cfg.epochs, cfg.lr, schedule=cfg.schedule)],
                       train_loader, valid_loader, PhaseFiles(out, "lm"), loop_cfg, resume=resume)
    atomic_write_json(out / "lm_config.json", lm_cfg.to_dict())
    save_weights(lm.state_dict(), out / "lm.safetensors", dtype=torch.float16)
    plot_history(result.history, out / "lm_history.png", title="pretraining")
    last = result.history[-1]
    stats = {"corpus": str(corpus), "documents": len(all_train) + len(valid_docs), "train_tokens": n_train,
             "valid_tokens": valid_docs.n_tokens, "vocab": len(vocab), "valid_perplexity": last["perplexity"],
             "valid_accuracy": last["accuracy"], "tokens_per_s": last["train_tokens_per_s"],
             "wall_minutes_last_run": round((time.perf_counter() - t0) / 60, 1)}
    atomic_write_json(out / "pretrain_stats.json", stats)
    write_model_card(out, cfg, lm_cfg, stats, result.history)
    model_dir.write_marker(out, "lm", pretrained_on=str(corpus), direction=cfg.direction)
    model_dir.remove_checkpoints(out)
    log(f"validation perplexity {last['perplexity']:.1f}")
