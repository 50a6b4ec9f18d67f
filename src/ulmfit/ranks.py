"""Which process of a data-parallel run this is (torchrun's RANK and WORLD_SIZE), without torch.

Importable from every layer, like `errors.py`: the file writers (`fileio.py`) write only in the main
process, the CLI logs only there, and `train/distributed.py` builds the process group from these.
"""
from __future__ import annotations

import os


def world_size() -> int:
    """Processes in this run (torchrun's WORLD_SIZE; 1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's number, 0..world_size-1 (torchrun's RANK; 0 alone)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True alone and in rank 0: the process that writes files and logs."""
    return rank() == 0
