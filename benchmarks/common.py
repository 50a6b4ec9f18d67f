"""Shared helpers of the benchmark scripts: machine facts, measured subprocesses, JSON, tables.

Only the standard library here: benchmarks/peers/*.py import this module too, from inside the
peer virtual environments (fastai, hf), which do not have ulmfit installed.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
VENVS = BENCH / ".venvs"
# $ULMFIT_BENCH_VENV / $ULMFIT_BENCH_HF_VENV / $ULMFIT_BENCH_FASTAI_VENV / $ULMFIT_BENCH_SETFIT_VENV:
# other venvs than the checkout's own (a git worktree sharing one venv: export PYTHONPATH=$PWD/src
# too, so the CLI imports the worktree's code).
OUR_VENV = Path(os.environ.get("ULMFIT_BENCH_VENV") or ROOT / ".venv")
OUR_PY = OUR_VENV / "bin" / "python"
OUR_CLI = OUR_VENV / "bin" / "ulmfit"
PEER_PY = {"ours": OUR_PY,
           **{k: Path(os.environ.get(f"ULMFIT_BENCH_{k.upper()}_VENV") or VENVS / k) / "bin" / "python"
              for k in ("fastai", "hf", "setfit")}}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names=("torch", "ulmfit", "fastai", "spacy", "transformers", "sentence_transformers",
                            "sklearn", "numpy")) -> dict[str, str]:
    """Versions of those of `names` that import in *this* interpreter."""
    import importlib

    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = str(getattr(importlib.import_module(n), "__version__", "?"))
        except Exception:  # noqa: BLE001 - absent or broken: just not listed
            pass
    return out


def machine_info() -> dict:
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_model(), "cores": os.cpu_count(),
            "memory_gb": mem_gb, "gpu": gpu_name(), "platform": platform.platform(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()], "nice": os.nice(0)}


def run_measured(cmd: list[str], log_path: Path | None = None, timeout: float | None = None,
                 env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run `cmd` to completion; returns {rc, wall_s, peak_rss_mb, cpu_s, stdout}. The peak RSS is
    the child's own (os.wait4's rusage: the largest of the process and the descendants it waited
    for), so each measured subprocess gets its own figure. stdout is captured; stderr goes to
    `log_path` (or is discarded)."""
    log_path = Path(log_path) if log_path else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    out_path = (log_path.with_suffix(".stdout") if log_path else Path(os.devnull))
    t0 = time.perf_counter()
    # A harness stopped with SIGTERM (kill, pkill) takes its measured child with it instead of leaving
    # it running, still writing into the cell's folder (Ctrl-C already reaches the whole process group).
    previous = (signal.signal(signal.SIGTERM, _exit_on_signal)
                if threading.current_thread() is threading.main_thread() else None)
    with open(out_path, "w") as out, open(log_path or os.devnull, "w") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        deadline = None if timeout is None else t0 + timeout
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if deadline and time.perf_counter() > deadline:
                    p.kill()
                    pid, status, ru = os.wait4(p.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:
            p.kill()
            p.wait()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    stdout = Path(out_path).read_text() if log_path else ""
    return {"rc": p.returncode, "wall_s": round(wall, 2), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "stdout": stdout,
            "timed_out": bool(deadline and wall > timeout)}


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def write_json(path: Path, obj) -> None:
    """Atomically: a temp file with a unique name beside `path`, then a rename (two harness runs may
    write the same file at once). The standard library's version of ulmfit.fileio.atomic_write_json,
    because the peer venvs that call this (peer_main) have no ulmfit installed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def table(rows: list[dict], cols: list[str], fmt: dict | None = None) -> str:
    """A plain text table of `rows` (dicts) with the columns `cols`."""
    fmt = fmt or {}

    def cell(r, c):
        v = r.get(c, "")
        if v is None:
            return "-"
        if c in fmt and isinstance(v, (int, float)):
            return format(v, fmt[c])
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[cell(r, c) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(xs, widths)))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def peer_main(run):
    """Entry point of a peer runner: `python peers/X.py JOB.json RESULT.json`; `run(job) -> dict`."""
    job = read_json(sys.argv[1])
    t0 = time.perf_counter()
    result = run(job)
    result.setdefault("runner_wall_s", round(time.perf_counter() - t0, 2))
    result.setdefault("versions", package_versions())
    write_json(Path(sys.argv[2]), result)


def speed_task_main(tasks: dict) -> None:
    """Entry point of the speed runners: run the job's `task` from `tasks` (a module's globals) with
    the job's torch thread count, and record the count used."""
    def run(job):
        import torch

        if job.get("threads"):
            torch.set_num_threads(int(job["threads"]))
        out = tasks[job["task"]](job)
        out["torch_threads"] = torch.get_num_threads()
        return out

    peer_main(run)


def read_csv_rows(path, text_col="text", label_col="label"):
    """(texts, labels) of a UTF-8 CSV without pandas (labels None when the column is absent)."""
    import csv

    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [r[text_col] for r in rows]
    labels = [r[label_col] for r in rows] if rows and label_col in rows[0] else None
    return texts, labels


def per_class_f1(y_true, y_pred) -> dict:
    """{class: F1} over the classes present in y_true."""
    out = {}
    for c in sorted(set(y_true)):
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred))
        out[c] = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    return out


def macro_f1_accuracy(y_true, y_pred) -> dict:
    """Macro-F1 over the classes present in y_true (every split here holds every class) and accuracy."""
    classes = sorted(set(y_true))
    f1s = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    acc = sum(t == p for t, p in zip(y_true, y_pred)) / max(len(y_true), 1)
    return {"macro_f1": sum(f1s) / len(f1s), "accuracy": acc}
