"""Run the `ulmfit` command line with test instrumentation; tests start it with and without torchrun.

ULMFIT_TEST_RECORD=DIR   save every training batch (LM inputs) this rank read to DIR/rank<R>.npz
ULMFIT_TEST_KILL=R:K     rank R kills itself (SIGKILL, no clean-up) at its K-th training step
ULMFIT_TEST_NO_DROPOUT=1 every torch.nn.Dropout is the identity (the classifier head's hidden-layer
                         dropout is fixed at 0.1, not scaled by drop_mult)
"""
import atexit
import os
import signal
import sys

import numpy as np

from ulmfit.cli import main
from ulmfit.data.lm_loader import LMLoader
from ulmfit.train.tasks import LMTask

RANK = int(os.environ.get("RANK", "0"))

if os.environ.get("ULMFIT_TEST_RECORD"):
    seen: list[np.ndarray] = []
    _iter = LMLoader.__iter__

    def recording_iter(self):
        for x, y in _iter(self):
            if self.shuffle:  # the training loader
                seen.append(x.numpy().copy())
            yield x, y

    LMLoader.__iter__ = recording_iter
    atexit.register(lambda: np.savez(os.path.join(os.environ["ULMFIT_TEST_RECORD"], f"rank{RANK}.npz"),
                                     *seen))

if os.environ.get("ULMFIT_TEST_KILL"):
    kill_rank, kill_step = map(int, os.environ["ULMFIT_TEST_KILL"].split(":"))
    _loss, steps = LMTask.loss, [0]

    def dying_loss(self, model, batch):
        steps[0] += 1
        if RANK == kill_rank and steps[0] == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return _loss(self, model, batch)

    LMTask.loss = dying_loss

if os.environ.get("ULMFIT_TEST_NO_DROPOUT"):
    import torch

    torch.nn.Dropout.forward = lambda self, x: x

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
