"""Jobs side by side in child processes: the forward and backward models of a `--direction both` run
(recipes/ulmfit.py `fit_directions`: `ulmfit fit` and `ulmfit distill`), each in its own process
with its share of the torch threads.

Why processes: a small AWD-LSTM's step scales poorly across threads (the LM step on 2 AMD EPYC cores:
~17.6k tokens/s with one thread, 21-28k with two), so two one-thread processes, one model each, finish
the same work sooner than one two-thread process training one model after the other.

    results = run_in_processes({"fwd": Job(train_one, (args...)), "bwd": Job(...)}, threads=1, log=log)

- spawn, never fork: a child forked after torch's OpenMP pool has run can hang. `Job.fn` must be a
  module-level function (the child imports it by name) and its arguments picklable; the child calls
  `fn(*args, log)` with `threads` torch threads and returns its result through a pipe.
- Output: each child sends its `log` lines and its progress lines (train/progress.py `route`: no
  bar, one heartbeat line at most every 30 s) to the parent, which relays them as they come,
  prefixed with the job's name ("[fwd] ..."): log lines through the parent's `log` (a user's callback
  too, always called in the parent's main thread), progress lines to stderr as a heartbeat would.
- Errors: a `UlmfitError` in a child is raised in the parent as the same one line; any other
  exception as `JobFailed` carrying the child's traceback text; a child that ends without reporting
  (killed, out of memory; or before its job: a script that calls `fit` outside an
  `if __name__ == "__main__":` guard runs again in the spawned child and fails there) as one
  `UlmfitError` line with its exit code and the likely cause. The other children are then
  stopped: SIGINT, i.e. KeyboardInterrupt at their next Python line (a training step is well under a
  second; an atomic write in flight is removed, never left half-written), killed after `STOP_WAIT_S`.
  Ctrl-C reaches the children from the terminal too (one process group); the parent stops whatever
  is left and raises KeyboardInterrupt. A child whose parent dies interrupts itself, so no orphan
  keeps writing into a folder that a resumed run writes too.
"""
from __future__ import annotations

import _thread
import contextlib
import multiprocessing
import os
import signal
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from ulmfit.errors import UlmfitError
from ulmfit.train import progress

STOP_WAIT_S = 10.0  # a stopped child has this long to leave at its next Python line before it is killed


class JobFailed(RuntimeError):
    """A job's child process raised something other than a UlmfitError; the message holds its traceback."""


@dataclass(frozen=True)
class Job:
    fn: Callable  # module-level: fn(*args, log) in the child, log a Callable[[str], None]
    args: tuple = ()


def run_in_processes(jobs: dict[str, Job], *, threads: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Run every job in its own spawned process with `threads` torch threads, relaying their output;
    returns {name: fn's return value} once all have finished, or raises the first failure."""
    ctx = multiprocessing.get_context("spawn")
    procs: dict[str, multiprocessing.process.BaseProcess] = {}
    conns: dict[str, Connection] = {}
    finished = False
    try:
        for name, job in jobs.items():
            reader, writer = ctx.Pipe(duplex=False)
            procs[name] = ctx.Process(target=_child, args=(job.fn, job.args, threads, writer), name=f"ulmfit-{name}",
                                      daemon=True)
            procs[name].start()
            writer.close()  # the child holds the only writer: its end of the pipe closes when it ends
            conns[name] = reader
        results = _relay(procs, conns, log)
        finished = True
        return results
    finally:
        _stop(procs.values(), interrupt=not finished)
        for c in conns.values():
            c.close()


def _relay(procs: dict, conns: dict[str, Connection], log: Callable[[str], None]) -> dict[str, Any]:
    """Pass the children's lines on until every pipe is closed; raise the first failure."""
    results, open_, started = {}, dict(conns), set()
    while open_:
        for conn in wait(list(open_.values())):
            name = next(n for n, c in open_.items() if c is conn)
            try:
                kind, payload = conn.recv()
            except EOFError:  # the child has ended
                del open_[name]
                if name not in results:
                    procs[name].join(STOP_WAIT_S)
                    raise UlmfitError(_ended_early(name, procs[name].exitcode, name in started))
                continue
            if kind == "started":
                started.add(name)
            elif kind == "log":
                log(f"[{name}] {payload}")
            elif kind == "progress":
                progress.show(f"[{name}] {payload}")
            elif kind == "done":
                results[name] = payload
            elif kind == "error":
                raise UlmfitError(payload)
            elif kind == "interrupted":
                raise KeyboardInterrupt
            else:  # "crash"
                raise JobFailed(f"the {name} process failed:\n{payload}")
    return results


def _ended_early(name: str, code: int | None, started: bool) -> str:
    """The line for a child that ended without reporting: during its job (killed), or before it (the
    spawned interpreter failed to import the parent's main script, which re-ran unguarded code)."""
    if started:
        return (f"the {name} process ended (exit code {code}) before it finished: killed, or out of memory? "
                "What it checkpointed is kept (--resume continues)")
    return (f"the {name} process ended (exit code {code}) before it started (its error is printed above); "
            "from a Python script, put the call under `if __name__ == \"__main__\":` (the process imports the "
            "script again), or set parallel_directions=off")


def _stop(procs, interrupt: bool) -> None:
    """Wait for the children to end; `interrupt`: first send each one still running a SIGINT."""
    procs = [p for p in procs if p.pid is not None]
    if interrupt:
        for p in procs:
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)
    for p in procs:
        p.join(STOP_WAIT_S)
        if p.is_alive():
            p.kill()
            p.join()


# ----------------------------------------------------------------------------- in the child


def _child(fn: Callable, args: tuple, threads: int, conn: Connection) -> None:
    import torch

    _end_with_parent()
    torch.set_num_threads(threads)

    def sender(kind: str) -> Callable[[str], None]:
        return lambda text: conn.send((kind, text))

    progress.route(sender("progress"))
    conn.send(("started", None))
    try:
        report = ("done", fn(*args, sender("log")))
    except UlmfitError as e:
        report = ("error", str(e))
    except KeyboardInterrupt:
        report = ("interrupted", None)
    except BaseException:
        report = ("crash", traceback.format_exc())
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        conn.send(report)
    conn.close()


def _end_with_parent() -> None:
    """Interrupt this child's main thread when its parent process ends (however it ended)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        wait([parent.sentinel])
        _thread.interrupt_main()

    threading.Thread(target=watch, name="ulmfit-parent-watch", daemon=True).start()
