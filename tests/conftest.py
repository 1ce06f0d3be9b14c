"""Test-session settings.

Tests use tiny grids, where torch's intra-op thread pool costs more than it gains, and on a busy 2-core
machine OpenMP threads that spin-wait for each other can slow small kernels down by 10-100x. One thread
keeps the suite's run time predictable; it does not change any result.
"""

import torch

torch.set_num_threads(1)
