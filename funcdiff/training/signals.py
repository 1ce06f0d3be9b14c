"""Scheduler signals: stop at a safe point, save, and exit with a status that asks for a requeue.

Slurm warns a job before its time limit with ``#SBATCH --signal=B:USR1@90`` (SIGUSR1 to the batch shell 90 s
before the end; the example scripts in ``examples/slurm/`` forward it to the job step) and pre-empts or cancels
it with SIGTERM (then SIGKILL after ``KillWait``, 30 s by default). funcdiff's answer to either:

* ``funcdiff train`` finishes the optimizer step in hand, writes a checkpoint, prints how to resume and exits
  with :data:`REQUEUE_EXIT` (75, ``EX_TEMPFAIL`` of ``sysexits.h``: "temporary failure, try again").
* batch inference (``solve --cases``, ``forecast --indices/--init-times``) finishes the case in hand (its part file
  is written atomically) and exits with :data:`REQUEUE_EXIT` when cases remain.
* SIGINT (Ctrl-C) in ``train``: the same checkpoint and resume hint, exit status 130 (128 + SIGINT), no traceback.

The job script turns status 75 into ``scontrol requeue $SLURM_JOB_ID`` (with ``#SBATCH --requeue``); the requeued
job reruns the same command with ``--resume`` (training) or the same case list (inference, which skips finished
cases). ``examples/slurm/train.sbatch`` starts one ``funcdiff train`` per srun task (srun forwards the signal to each):
under torchrun the agent turns a signal into a ``SignalException`` (or a rank's 75 into a ``ChildFailedError``) with a
traceback and exits with 1 (``--signals-to-handle ...,SIGUSR1`` only makes it forward SIGUSR1 to its workers first,
instead of dying of it). Training ranks agree on the stop step with one all-reduce per step (:func:`agree_stop`), so
every rank checkpoints at the same step, and wait for rank 0's checkpoint before they exit.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Iterable, Optional

import torch
import torch.distributed as dist

REQUEUE_EXIT = 75  # sysexits.h EX_TEMPFAIL: the job stopped early on a scheduler's signal and should be requeued
INTERRUPT_EXIT = 130  # 128 + SIGINT: the shell's status for a job stopped by Ctrl-C
SCHEDULER_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopSignal:
    """Context manager that records the first of ``signals`` received instead of letting it kill the process.

    ``requested`` says whether a stop was asked; ``signum`` is the first signal received (None before).
    A second SIGINT restores Python's default handling (a user pressing Ctrl-C twice gets KeyboardInterrupt).
    Handlers can only be installed from the main thread; elsewhere the context is inert.
    """

    def __init__(self, signals: Iterable[int] = SCHEDULER_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_status(self) -> int:
        """:data:`INTERRUPT_EXIT` after SIGINT, else :data:`REQUEUE_EXIT`."""
        return INTERRUPT_EXIT if self.signum == signal.SIGINT else REQUEUE_EXIT

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "StopSignal":
        try:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            self._restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def agree_stop(local: bool, enabled: bool) -> bool:
    """Whether any rank asked to stop (one all-reduce of a flag when distributed; ``local`` otherwise)."""
    if not (enabled and dist.is_available() and dist.is_initialized()):
        return local
    flag = torch.tensor([1.0 if local else 0.0])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)
