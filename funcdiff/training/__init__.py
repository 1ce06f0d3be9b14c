"""Training stage: EDM loss with function-space noise and the Trainer (EMA, LR schedule, checkpoints, DDP).

- ``loss``: :class:`EDMLoss` (Karras et al. 2022, eq. 2, Table 1) with GRF noise.
- ``schedule``: linear warm-up + cosine learning rate.
- ``ema``: exponential moving average of the weights.
- ``trainer``: :class:`Trainer`, :func:`train`, :func:`build_datasets`, :func:`build_noise`.
- ``distributed``: torchrun environment, device choice, per-rank sharding and seeds.
- ``forecast``: forecasters' training items (trajectory windows), the rolling-diffusion sigma draw, the MSE baseline.

What differs between kinds of model (layout, items, noise, loss, checkpoint entries) is each kind's own
(:mod:`funcdiff.kinds`); the trainer looks the kind up once.
"""

from funcdiff.training.ema import EMA, ema_decay_at
from funcdiff.training.loss import EDMLoss
from funcdiff.training.schedule import WarmupCosineSchedule, warmup_cosine
from funcdiff.training.trainer import Trainer, build_datasets, build_noise, train

__all__ = ["EMA", "EDMLoss", "Trainer", "WarmupCosineSchedule", "build_datasets", "build_noise", "ema_decay_at",
           "train", "warmup_cosine"]
