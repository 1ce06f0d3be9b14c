"""The model-kind contract: what every kind of model (field, autoregressive, rolling, deterministic, trajectory,
super-resolution) owns, the way GraphCast's ``Predictor`` owns both ``__call__`` and ``loss``.

A kind is looked up once by its config name (``KINDS[config.forecast.kind]``, :mod:`funcdiff.kinds`); the trainer,
the loaders, the rollout and the CLI call the contract and never branch on the name.

Contract (:class:`ModelKind`). Training methods act on an instance built from the run config; loading and
sampling methods are class methods that read the loaded model.

- layout: ``model_config(C)``, the ``build_denoiser`` dict for C physical channels (in/out/cond channels);
- training items: ``datasets(fields)``, the train/validation :class:`~funcdiff.data.FieldDataset` s cut from the
  data (fields or windows); ``fit(train_set)``, what the kind learns from the training split besides weights (a
  transform's statistics); ``items(dataset, device)``, the normalised items the loss sees, conditioning first;
- noise: ``noise()`` (``sample``, ``apply_cov_power``, ``dim``, ``as_dict``);
- loss: ``loss(noise)``, the :class:`~funcdiff.training.EDMLoss` with ``cond_channels()`` clean channels first and
  the ``sigma_sampler()`` draw (None: EDM's log-normal);
- checkpoint: ``checkpoint_extra()``, the entries the kind writes into a checkpoint's ``extra``;
- loading: ``load(denoiser, meta, config, device)``, the loaded model (a :class:`Forecaster`, a super-resolver,
  a field model's ``(denoiser, meta)``); ``role`` (``field``, ``forecaster``, ``super_resolution``) and
  ``refusals``, the messages ``require`` raises for a checkpoint given to the wrong verb;
- sampling: ``step(forecaster, state, ...)``, one rollout step (emitted frames, new history, new window);
  ``frames_per_step(forecast)``, ``nfe_per_frame(forecast, steps_per_frame, solver)``; ``graphed(forecaster)``, the
  forecaster with its network's calls replayed from CUDA graphs.

**Adding a kind = one module + one registry entry.** The smallest kind, the deterministic forecaster, is the
autoregressive one with another sigma draw and another one-step schedule (``funcdiff/kinds/deterministic.py``)::

    class DeterministicKind(AutoregressiveKind):
        name = "deterministic"

        def sigma_sampler(self):                      # training: every item at sigma_max
            return ConstantSigma(self.config.sample.sigma_max)

        @classmethod
        def schedule(cls, fc, steps_per_frame, solver, like):   # rollout: one Euler step sigma_max -> 0
            return torch.tensor([fc.sample.sigma_max, 0.0], dtype=torch.float64), get_solver("euler")

        @classmethod
        def nfe_per_frame(cls, forecast, steps_per_frame, solver="heun"):
            return 1.0 / forecast.horizon

and ``"deterministic": "funcdiff.kinds.deterministic:DeterministicKind"`` in ``_PATHS`` of :mod:`funcdiff.kinds`.
``forecast.kind: deterministic`` in a config then trains, checkpoints, loads, forecasts and scores with it; nothing
else changes. A new kind that is not a forecaster subclasses :class:`ModelKind` directly.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from torch import Tensor

from funcdiff.config import ForecastConfig, RunConfig, SampleConfig
from funcdiff.data import FieldDataset, Normalizer
from funcdiff.data.datasets import SOURCE_ATTRS, check_finite
from funcdiff.data.stores import ArrayStore
from funcdiff.data.streaming import StreamedDataset, StoreItems, streaming_normalizer
from funcdiff.errors import UserError
from funcdiff.noise import GaussianRandomField

ConditionalDenoiser = Callable[..., Tensor]  # (x, sigma, cond=history) -> denoised, normalised units
ROLES = ("field", "forecaster", "super_resolution")
REFUSALS = {"super_resolution": "checkpoint {checkpoint} is not a super-resolution model (forecast.kind={name}); train "
                                "one with configs/wavelet/burgers-shock-superres.yaml"}


class ModelKind(ABC):
    """One kind of model (module docstring). ``config`` is the resolved run config."""

    name: ClassVar[str]
    role: ClassVar[str]
    refusals: ClassVar[dict[str, str]] = {}  # wanted role -> message for a checkpoint of this kind (see refusal)

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    # ------------------------------------------------------------------------------------- layout and data
    @abstractmethod
    def model_config(self, num_channels: int) -> dict:
        """The full ``build_denoiser`` dict: ``config.model`` plus the channels of C = ``num_channels``."""

    @abstractmethod
    def datasets(self, fields: Optional[Tensor] = None) -> tuple[FieldDataset, FieldDataset]:
        """Train and validation sets of ``config.data`` (or of in-memory ``fields``)."""

    def fit(self, train_set: FieldDataset) -> None:
        """Fit the kind's own statistics on the training split; by default there are none, and a transform other
        than the identity is refused (only whole-trajectory models use one)."""
        t = self.config.transform
        if t.kind != "identity":
            raise UserError(f"transform.kind={t.kind} is used by whole-trajectory models: set "
                            "forecast.kind: trajectory (see configs/wavelet/)")

    @abstractmethod
    def items(self, dataset: FieldDataset, device: torch.device) -> Tensor:
        """All training items of ``dataset``, normalised, on ``device`` (conditioning channels first)."""

    several_grids: ClassVar[bool] = True  # whether its items may come from several grids (data.resolutions)

    # ------------------------------------------------------------------------------------- streamed data
    streams: ClassVar[bool] = False  # whether stream_datasets/encode_batch serve this kind (data.stream)

    def stream_datasets(self, store: ArrayStore) -> tuple[StreamedDataset, StreamedDataset]:
        """Train and validation items of a store on disk, read lazily (:mod:`funcdiff.data.streaming`): the items
        and normaliser :meth:`datasets` would give for the same file. UserError for a kind that cannot stream."""
        raise UserError(f"forecast.kind={self.name} models train on data in memory: set data.stream: false")

    def encode_batch(self, raw: Tensor, normalizer: Normalizer, device: torch.device | str) -> Tensor:
        """Raw physical items ``(b, C, *rest)`` (a streamed batch) -> the training items :meth:`items` makes of
        them, normalised float32 on ``device``: the same elementwise operations, so the same bits."""
        x = normalizer.encode(raw.to(device=device, non_blocking=True)).to(torch.float32)
        names = normalizer.channel_names or tuple(f"c{i}" for i in range(x.shape[1]))
        check_finite(x, names)
        return x

    # ------------------------------------------------------------------------------------- noise and loss
    def noise(self):
        """The diffusion's noise: the ``noise:`` section's field on the data's domain."""
        return field_noise(self.config)

    def cond_channels(self) -> int:
        """How many channels at the front of an item are clean conditioning."""
        return 0

    def sigma_sampler(self):
        """The training sigma draw (None: EDM's log-normal, one sigma per item)."""
        return None

    def loss(self, noise):
        """The EDM loss of this kind with ``noise``: :meth:`cond_channels` conditioning channels first, the sigma
        draw of :meth:`sigma_sampler`."""
        from funcdiff.training.loss import EDMLoss  # the kinds sit beside training: imported when used

        tc = self.config.train
        return EDMLoss(noise, tc.P_mean, tc.P_std, cond_channels=self.cond_channels(),
                       sigma_sampler=self.sigma_sampler())

    def checkpoint_extra(self) -> dict[str, Any]:
        """Entries for the checkpoint's ``extra`` (besides the data's source attributes)."""
        return {}

    # ------------------------------------------------------------------------------------- loading
    @classmethod
    @abstractmethod
    def load(cls, denoiser, meta, config: RunConfig, device: str | torch.device = "cpu"):
        """The loaded model of a checkpoint: its EMA ``denoiser``, its ``meta`` and parsed ``config``."""

    @classmethod
    def refusal(cls, checkpoint, wanted: str) -> str:
        """The message for a checkpoint of this kind given where a ``wanted`` role is needed: the kind's own
        ``refusals[wanted]`` (fields ``checkpoint``, ``name``) or a generic one."""
        template = cls.refusals.get(wanted) or REFUSALS.get(wanted, "checkpoint {checkpoint} is a {role} model "
                                                                     "(forecast.kind={name}), not a {wanted} model")
        return template.format(checkpoint=checkpoint, name=cls.name, role=cls.role, wanted=wanted)

    @classmethod
    def require(cls, wanted: str, checkpoint) -> None:
        """UserError unless this kind's models serve the ``wanted`` role."""
        if cls.role != wanted:
            raise UserError(cls.refusal(checkpoint, wanted))

    # ------------------------------------------------------------------------------------- rollout
    @classmethod
    def frames_per_step(cls, forecast: ForecastConfig) -> int:
        """Frames one rollout step emits."""
        raise UserError(f"forecast.kind={cls.name} models are not rolled out")

    @classmethod
    def nfe_per_frame(cls, forecast: ForecastConfig, steps_per_frame: int, solver: str = "heun") -> float:
        """Network evaluations per emitted frame."""
        raise UserError(f"forecast.kind={cls.name} models are not rolled out")

    @classmethod
    def step(cls, fc: "Forecaster", state: "RolloutState", *, steps_per_frame: int, solver: str = "heun",
             terms_for_lead=None) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """One rollout step of the members in ``state``: (emitted frames folded (M, e·C, *S), new history, new
        window or None), all normalised."""
        raise UserError(f"forecast.kind={cls.name} models are not rolled out")

    @classmethod
    def graphed(cls, fc: "Forecaster") -> "Forecaster":
        """``fc`` with its network's calls replayed from CUDA graphs (:class:`funcdiff.models.graphs.GraphedDenoiser`:
        the same kernels, far fewer launches from the host); the kind knows where its network sits."""
        raise UserError(f"forecast.kind={cls.name} models are not rolled out")


def load_for_role(checkpoint, wanted: str, device: str | torch.device = "cpu", ema: bool = True):
    """The loaded model of a checkpoint file or run directory, by its kind; UserError unless the kind serves the
    ``wanted`` role (``field``, ``forecaster``, ``super_resolution``)."""
    from funcdiff.config import config_from_dict
    from funcdiff.io.checkpoint import load_denoiser
    from funcdiff.kinds import KINDS

    denoiser, meta = load_denoiser(checkpoint, ema=ema, device=device)
    config = config_from_dict(meta.config)
    kind = KINDS[config.forecast.kind]
    kind.require(wanted, checkpoint)
    return kind.load(denoiser, meta, config, device)


# ----------------------------------------------------------------------------------------- shared pieces
def field_noise(config: RunConfig) -> GaussianRandomField:
    """The diffusion's GRF on [0, 1)^dim from ``config.noise`` and ``config.data.dim`` (on the sphere with
    ``noise.domain: sphere``)."""
    n = config.noise
    if n.domain == "sphere":
        from funcdiff.noise_sphere import SphericalGaussianRandomField

        if config.data.dim != 2:
            raise ValueError(f"noise.domain=sphere needs lat-lon fields (data.dim=2), got data.dim={config.data.dim}")
        return SphericalGaussianRandomField(smoothness=n.smoothness, length_scale=n.length_scale,
                                            amplitude=n.amplitude, max_degree=n.max_degree)
    return GaussianRandomField(dim=config.data.dim, smoothness=n.smoothness, length_scale=n.length_scale,
                               amplitude=n.amplitude)


def check_channel_count(num_channels: int, names: tuple[str, ...]) -> None:
    """ValueError unless the data have one channel per name of ``data.channels``."""
    if num_channels != len(names):
        raise ValueError(f"data has {num_channels} channels but data.channels names {len(names)}: {list(names)}")


def encoded(dataset: FieldDataset, device: torch.device | str | None = None) -> Tensor:
    """All samples of a FieldDataset, normalised, float32 on ``device`` (None: where they are); ValueError for
    non-finite values."""
    x = dataset.normalizer.encode(dataset.fields)
    x = x.to(torch.float32) if device is None else x.to(device=device, dtype=torch.float32)
    check_finite(x, dataset.channel_names)
    return x


NORMALIZATION_FILE = "normalization.json"  # a streamed run's statistics, beside its checkpoints


def streamed_sets(config: RunConfig, store: ArrayStore, train, held_out, source: dict
                  ) -> tuple[StreamedDataset, StreamedDataset]:
    """Streamed train and validation sets over the item indices ``train`` and ``held_out`` of ``store``
    (:class:`funcdiff.data.streaming.ItemIndex`) with channels ``data.channels``, the normaliser fitted on the
    training items by one streaming pass (:func:`funcdiff.data.streaming.streaming_normalizer`), kept in
    ``<train.out_dir>/normalization.json`` and read from there when the run starts again on the same items."""
    names = tuple(config.data.channels)
    train_items, val_items = StoreItems(store, train), StoreItems(store, held_out)
    normalizer = _run_normalizer(train_items, names, Path(config.train.out_dir) / NORMALIZATION_FILE)
    source = {**{k: store.attrs[k] for k in SOURCE_ATTRS if k in store.attrs}, **source}
    return (StreamedDataset(train_items, normalizer, tuple(names), source),
            StreamedDataset(val_items, normalizer, tuple(names), source))


def _run_normalizer(items: StoreItems, names: tuple[str, ...], path: Path) -> Normalizer:
    """The statistics of ``items`` from ``path`` when it holds those of the same store, channels and items, else
    from a streaming pass (then written to ``path`` atomically)."""
    from funcdiff.io.atomic import write_text_atomic

    index = items.index
    digest = hashlib.sha256(index.items.tobytes() + (b"" if index.starts is None else index.starts.tobytes()))
    key = {"path": str(Path(items.store.path).resolve()), "shape": list(items.store.shape), "channels": list(names),
           "length": index.length,
           "frame_step": index.frame_step, "items": digest.hexdigest()}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return Normalizer.from_state_dict(saved["normalizer"])
    normalizer = streaming_normalizer(items, names)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"key": key, "normalizer": normalizer.state_dict()}, indent=1))
    return normalizer


def grid_kind(grid) -> str:
    """``latlon``, ``node`` or ``periodic``: the grid of a checkpoint's ``extra["grid"]``."""
    kind = grid.get("type") if isinstance(grid, dict) else grid
    if kind == "latlon":
        return "latlon"
    return "node" if isinstance(kind, str) and kind.startswith("node") else "periodic"


# ----------------------------------------------------------------------------------------- forecasters
@dataclass
class Forecaster:
    """What a rollout needs: the conditional denoiser and how it was trained.

    ``denoiser(x, sigma, cond=history)`` maps a noisy window (B, horizon·C, *S) at per-element sigma and clean
    history (B, history·C, *S) to the denoised window; a trained checkpoint gives one through
    :func:`funcdiff.tasks.forecast.load_forecaster`, tests give exact ones. ``dt`` is the time between frames,
    ``normalizer`` maps physical to model units (``None``: identity). Its kind (:attr:`model_kind`) is the class
    registered under ``forecast.kind``.
    """

    denoiser: ConditionalDenoiser
    noise: GaussianRandomField
    forecast: ForecastConfig
    channel_names: tuple[str, ...]
    normalizer: Optional[Normalizer] = None
    sample: SampleConfig = field(default_factory=SampleConfig)
    dt: float = 1.0
    grid: str = "periodic"
    min_resolution: tuple[int, ...] = ()
    sigma_data: float | Sequence[float] = 1.0
    name: str = "forecaster"
    device: str | torch.device = "cpu"
    time_units: str = "model time units"
    channel_units: tuple[str, ...] = ()
    training_split: Optional[dict] = None  # :func:`funcdiff.io.checkpoint.training_split` of the checkpoint

    @property
    def model_kind(self) -> type[ModelKind]:
        """The kind class of ``forecast.kind`` (its ``step`` advances a rollout)."""
        from funcdiff.kinds import KINDS

        return KINDS[self.forecast.kind]

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    def encode(self, x: Tensor) -> Tensor:
        """Physical -> model units. Shapes: (B, C, ...) -> same."""
        return x if self.normalizer is None else self.normalizer.encode(x).to(x.dtype)

    def decode(self, x: Tensor) -> Tensor:
        """Model -> physical units. Shapes: (B, C, ...) -> same."""
        return x if self.normalizer is None else self.normalizer.decode(x).to(x.dtype)


def forecaster_from_meta(denoiser, meta, config: RunConfig, device: str | torch.device = "cpu",
                         **overrides) -> Forecaster:
    """The :class:`Forecaster` of a checkpoint, every field read from its metadata the one way (``overrides``: what a
    kind sets otherwise, e.g. a trajectory model's coefficient-space denoiser)."""
    from funcdiff.io.checkpoint import training_split

    era5 = meta.extra.get("era5") or {}  # lat-lon data from an ERA5 store: CF time units and channel units
    units = era5.get("units") or {}
    fields = dict(denoiser=denoiser, noise=meta.noise, forecast=config.forecast,
                  time_units=str(era5.get("time_units", "model time units")),
                  channel_units=tuple(str(units.get(c, "1")) for c in meta.channel_names) if units else (),
                  channel_names=tuple(meta.channel_names), normalizer=meta.normalizer, sample=config.sample,
                  dt=float(meta.extra.get("dt", 1.0)), grid=str(grid_kind(meta.extra.get("grid"))),
                  min_resolution=tuple(int(m) + 1 for m in meta.model_config.get("n_modes", ())),
                  sigma_data=meta.model_config.get("sigma_data", 1.0), name=str(meta.task or "forecaster"),
                  device=device, training_split=training_split(meta))
    return Forecaster(**{**fields, **overrides})


@dataclass
class RolloutState:
    """Everything a rollout carries from one step to the next (normalised units).

    ``history`` (M, history·C, *S) clean frames; ``window`` (M, horizon·C, *S) the rolling window at the start of
    a step, or ``None`` before the first rolling step (and always for autoregressive steps); ``emitted`` frames
    so far; one random generator per member, so a member's result never depends on the batch it ran in.
    """

    history: Tensor
    window: Optional[Tensor]
    emitted: int
    generators: list[torch.Generator]

    def state_dict(self) -> dict:
        """Plain tensors and numbers (``torch.load(weights_only=True)`` reads them back)."""
        return {"history": self.history, "window": self.window, "emitted": self.emitted,
                "generators": [g.get_state() for g in self.generators]}

    @classmethod
    def from_state_dict(cls, state: dict, device: str | torch.device = "cpu") -> "RolloutState":
        """The state on ``device``; the generators stay on the CPU, where ``make_generators`` makes them."""
        gens = []
        for s in state["generators"]:
            g = torch.Generator()
            g.set_state(s)
            gens.append(g)
        window = state["window"]
        return cls(state["history"].to(device), None if window is None else window.to(device),
                   int(state["emitted"]), gens)

    def part(self, rows: slice) -> "RolloutState":
        """The members ``rows`` of this state."""
        window = None if self.window is None else self.window[rows]
        return RolloutState(self.history[rows], window, self.emitted, self.generators[rows])


__all__ = ["ConditionalDenoiser", "Forecaster", "ModelKind", "ROLES", "RolloutState", "check_channel_count", "encoded",
           "field_noise", "streamed_sets", "forecaster_from_meta", "grid_kind", "load_for_role"]
