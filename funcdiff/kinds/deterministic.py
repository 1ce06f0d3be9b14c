"""The deterministic baseline (``forecast.kind: deterministic``): the autoregressive layout trained with the EDM loss
at the single level sigma_max, where it is the squared error of the conditional mean (MSE training of the same
backbone and preconditioner), rolled out with one Euler step sigma_max -> 0 (one network evaluation) per block.
The smallest kind: the example of :mod:`funcdiff.kinds.base`."""

from __future__ import annotations

import torch

from funcdiff.kinds.autoregressive import AutoregressiveKind
from funcdiff.sampling import get_solver
from funcdiff.training.forecast import ConstantSigma


class DeterministicKind(AutoregressiveKind):
    """The conditional-mean forecaster (module docstring)."""

    name = "deterministic"

    def sigma_sampler(self) -> ConstantSigma:
        return ConstantSigma(self.config.sample.sigma_max)

    @classmethod
    def schedule(cls, fc, steps_per_frame: int, solver: str, like):
        return torch.tensor([fc.sample.sigma_max, 0.0], dtype=torch.float64), get_solver("euler")  # x -> D(x)

    @classmethod
    def nfe_per_frame(cls, forecast, steps_per_frame: int, solver: str = "heun") -> float:
        return 1.0 / forecast.horizon


__all__ = ["DeterministicKind"]
