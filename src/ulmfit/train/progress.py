"""Progress of a training epoch when no progress bar is shown (output to a file, a pipe, CI).

A bar (tqdm) redraws one terminal line; in a log file it would be noise, and without it a long
epoch prints nothing for minutes. `Heartbeat` prints one plain line at most every `every_s`
seconds instead, to stderr like the bar:

    lm fine-tune 1/2: batch 120/410 (29%), loss 4.312, 5,310 tokens/s, 0:31 elapsed, ~1:16 left

Other long passes use it too (the teacher cache of `ulmfit distill`: `unit="text"`, no loss, through `say`):

    teacher probabilities: text 12,000/40,000 (30%), 310 texts/s, 0:38 elapsed, ~1:30 left

In a child process of a parallel run (train/processes.py: the two models of `--direction both`),
`route(say)` sends every heartbeat line to `say` (the parent prints it, prefixed with the child's
name) and `show_bar` is false: two processes redrawing one terminal line would garble each other.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


_route: Callable[[str], None] | None = None  # set by `route` in a child process of a parallel run


def route(say: Callable[[str], None] | None) -> None:
    """From now on this process's heartbeat lines go to `say` (None: back to stderr), and no bar is drawn."""
    global _route
    _route = say


def show_bar(requested: bool | None) -> bool:
    """Whether to draw a progress bar: as `requested` (None: when stderr is a terminal), never in a
    process whose lines are routed to a parent."""
    return _route is None and (sys.stderr.isatty() if requested is None else bool(requested))


def show(line: str, stream: TextIO | None = None) -> None:
    """One progress line where progress goes when no bar is drawn: `stream`, else the process's
    `route` (a parallel run's child), else stderr (flushed)."""
    if stream is None and _route is not None:
        _route(line)
    else:
        print(line, file=stream or sys.stderr, flush=True)


class Heartbeat:
    """Call `update` after every batch; it prints when `every_s` seconds have passed since the last
    line of any heartbeat of this process (so the gap stays under `every_s` across epochs: the
    validation pass between two epochs counts), or since this one started if none printed yet.
    `every_s` None or <= 0: never prints. `unit`: what `done` and `total` count; `rate_unit`: what the
    `tokens` argument counts; `say`: where the line goes (default: `stream`, else the process's
    `route`, else stderr); `start`: units
    already done before this heartbeat (a resumed pass), left out of the time estimate."""

    _last_line: float | None = None  # clock() of the process's last heartbeat line

    def __init__(self, desc: str, total: int, every_s: float | None = 30.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter, unit: str = "batch", rate_unit: str = "tokens",
                 say: Callable[[str], None] | None = None, start: int = 0):
        self.desc, self.total, self.every_s = desc, total, every_s
        self.stream, self.clock, self.unit, self.rate_unit, self.say = stream, clock, unit, rate_unit, say
        self.start, self.t0 = start, clock()
        last = Heartbeat._last_line
        if last is None or last > self.t0:
            # The first heartbeat of the process (or a clock that was reset) anchors the gap: later ones
            # (the next epochs) count from it, so epochs shorter than `every_s` still get a line.
            last = Heartbeat._last_line = self.t0
        self.last = last

    def update(self, done: int, loss: float | None, tokens: int) -> bool:
        """`done` units of `total` finished, mean loss so far (None: not shown), `rate_unit`s processed
        since this heartbeat started. True if it printed."""
        if not self.every_s or self.every_s <= 0:
            return False
        now = self.clock()
        if now - self.last < self.every_s:
            return False
        self.last = Heartbeat._last_line = now
        elapsed = now - self.t0
        left = elapsed / (done - self.start) * (self.total - done) if done > self.start else 0.0
        rate = tokens / elapsed if elapsed > 0 else 0.0
        loss_part = "" if loss is None else f", loss {loss:.3f}"
        line = (f"{self.desc}: {self.unit} {done:,}/{self.total:,} ({100 * done / max(self.total, 1):.0f}%){loss_part}, "
                f"{rate:,.0f} {self.rate_unit}/s, {_clock(elapsed)} elapsed, ~{_clock(left)} left")
        if self.say is not None:
            self.say(line)
        else:
            show(line, self.stream)
        return True
