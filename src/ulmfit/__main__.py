"""`python -m ulmfit ...` (and `torchrun --nproc_per_node N -m ulmfit fit ...`): the command line."""
import sys

from ulmfit.cli import main

sys.exit(main())
