"""`ulmfit export DIR --format onnx --out FILE`: a model folder's classifier (or language model) as
ONNX files (models/onnx.py: the AWD-LSTM as one BPTT chunk per call, the recurrent state and pooling
statistics as inputs and outputs; a transformer classifier as one pass over a batch's windows), with
the classes, direction and reading sizes (bptt / max_len, or window / overlap) in the metadata. Predict
with them through `ulmfit.load(DIR, runtime="onnx", onnx_files={"fwd": FILE})`, or from any
onnxruntime with the chunk loop of `OnnxChunkModel`.
"""
from __future__ import annotations

from pathlib import Path

from ulmfit.errors import UlmfitError
from ulmfit.models.onnx import check_exportable, export_lm, export_model
from ulmfit.recipes import model_dir, registry


def export_folder(folder: str | Path, out: str | Path, part: str = "classifier", log=print) -> list[Path]:
    """`ulmfit export`: each direction of `folder` as ONNX. The first direction goes to `out`, a
    backward model of a `--direction both` folder next to it as <stem>.bwd.onnx. Returns the paths."""
    from ulmfit.fileio import atomic_write_bytes

    folder, out = Path(folder), Path(out)
    meta = model_dir.read_marker(folder)
    if part not in ("classifier", "lm"):
        raise UlmfitError(f"export: --part must be classifier or lm, not {part!r}")
    if meta.get("kind") == "ensemble":
        raise UlmfitError(f"{folder}: an ensemble; export its member folders ({folder}/members/...) one by one")
    if part == "classifier" and meta.get("kind") != "classifier":
        raise UlmfitError(f"{folder}: holds a {meta.get('kind')} model, not a classifier; "
                          f"export its language model with --part lm")
    dirs = list(meta.get("directions") or [meta.get("direction", "fwd")])
    written = []
    for d in dirs:
        sub = model_dir.direction_folder(folder, dirs[0], d)
        path = out if d == dirs[0] else out.with_name(f"{out.stem}.{d}{out.suffix or '.onnx'}")
        if part == "classifier":
            r = registry.get(meta.get("recipe") or registry.default_name())
            model = r.load_model(sub)
            check_exportable(model, f"{folder} (recipe {r.name})")
            data = export_model(model, {"direction": d, "classes": list(meta["classes"])})
        else:
            lm, _, _ = model_dir.load_lm(sub)  # "holds no language model" where there is none
            data = export_lm(lm, {"direction": d})
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        log(f"{d} {part} -> {path} ({len(data) / 1e6:.1f} MB)")
        written.append(path)
    return written
