"""Run configuration: frozen dataclasses per component, composed into one :class:`RunConfig`.

A run is described by one YAML file (``configs/<name>.yaml``) with the sections ``data``, ``noise``, ``transform``,
``model``, ``train`` and ``sample`` (plus a top-level ``name``), read with ``yaml.safe_load`` and overridable
with ``section.key=value`` strings whose values are parsed as YAML too (``train.lr=1e-3``,
``model.n_modes=[8,8]``). Unknown keys, in the file or in an override, raise ``ValueError`` naming the key
and listing the valid ones. Shapes come from the data: ``model`` never holds ``in_channels``/``out_channels``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from funcdiff.kinds import KIND_NAMES
from funcdiff.schedules import RHO, SIGMA_MAX, SIGMA_MIN

DATA_SOURCES = ("synthetic", "file")
DERIVED_MODEL_KEYS = ("in_channels", "out_channels", "cond_channels")


@dataclass(frozen=True)
class DataConfig:
    """Where the training fields come from.

    ``source="synthetic"`` draws ``num_samples`` fields of :func:`funcdiff.data.make_synthetic_fields` at
    ``resolution`` points per axis (``len(channels)`` channels); ``source="file"`` reads the named fields
    ``channels`` of ``path`` (any format ``funcdiff.data.load_fields`` reads; ``num_samples`` caps how many).
    ``test_fraction`` of the samples are held out for the validation loss. ``seed`` fixes data and split.

    ``resolutions``: train on several grids at once (synthetic data drawn at each, the same functions; each batch
    holds one grid, the grids in turn by step; :mod:`funcdiff.training.multigrid`); empty: ``resolution`` only.

    ``stream``: read file data from disk batch by batch (``true``; HDF5, zarr, netCDF, The Well, anemoi:
    :mod:`funcdiff.data.streaming`), whole into memory (``false``), or ``auto``: stream when the selected
    channels of the file take more than ``stream_above_gb`` GB as float32 and the model kind can stream (fields,
    autoregressive, rolling, deterministic). Both give the same batches.
    """

    source: str = "synthetic"
    path: str | None = None
    channels: tuple[str, ...] = ("a",)
    resolution: int = 32
    num_samples: int | None = 256
    test_fraction: float = 0.1
    dim: int = 2
    seed: int = 0
    stream: bool | str = "auto"
    stream_above_gb: float = 2.0
    resolutions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.resolutions and (min(self.resolutions) < 2 or len(set(self.resolutions)) != len(self.resolutions)):
            raise ValueError(f"data.resolutions must be distinct grids of >= 2 points, got {list(self.resolutions)}")
        if self.stream not in (True, False, "auto"):
            raise ValueError(f"data.stream must be true, false or auto, got {self.stream!r}")
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {list(DATA_SOURCES)}, got {self.source!r}")
        if self.source == "file" and not self.path:
            raise ValueError("data.source='file' needs data.path")
        if not self.channels:
            raise ValueError("data.channels must name at least one channel")
        if self.resolution < 2 or (self.num_samples is not None and self.num_samples < 1):
            raise ValueError(f"data.resolution must be >= 2 and data.num_samples >= 1, got {self.resolution} and "
                             f"{self.num_samples} (for file data the grid comes from the file; resolution is unused)")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")


NOISE_DOMAINS = ("torus", "sphere")


@dataclass(frozen=True)
class NoiseConfig:
    """The diffusion's Gaussian random field (see :class:`funcdiff.noise.GaussianRandomField`); its dimension
    is ``data.dim``. ``smoothness=0`` is white noise; otherwise it must exceed dim/2.

    ``domain="sphere"``: the isotropic field on the sphere (:class:`funcdiff.noise_sphere.SphericalGaussianRandomField`,
    lat-lon data, ``length_scale`` in radians, smoothness > 1), keeping degrees below ``max_degree`` (None: every
    degree the grid resolves)."""

    smoothness: float = 2.0
    length_scale: float = 0.1
    amplitude: float = 1.0
    domain: str = "torus"
    max_degree: int | None = None

    def __post_init__(self) -> None:
        if self.domain not in NOISE_DOMAINS:
            raise ValueError(f"noise.domain must be one of {list(NOISE_DOMAINS)}, got {self.domain!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (units: steps are optimizer steps; ``batch_size`` is global over all ranks).

    ``P_mean``/``P_std``: log-normal sigma distribution of the EDM loss (Karras et al. 2022, Table 1).
    ``ema_decay``: per-step EMA decay (capped at (1+n)/(10+n) after n updates). ``*_every``: intervals in
    steps (0 disables). ``bf16``: bfloat16 autocast of the forward pass, CPU or CUDA
    (FFTs/DFTs and norm statistics in float32; measured speed and loss-curve error in ``benchmarks/denoiser_speed.py``).
    ``device``: "auto" (CUDA if available), "cpu" or "cuda". ``keep_checkpoints``: newest files kept (0 = all).
    ``latitude_weighted``: weight the loss's grid points by cell area (lat-lon data, WeatherBench 2 weights).
    ``grad_accum``: micro-batches per optimizer step on each rank (the rank's share of ``batch_size`` must divide
    by it); the update equals the one of the whole batch at once (to float rounding). ``compile``: wrap the network
    in ``torch.compile`` (off by default: see the docs, "GPU options"; ``benchmarks/gpu.py`` measures both).
    ``num_workers``: DataLoader worker processes reading streamed data (``data.stream``; 0 = the training process
    reads); ``prefetch_factor``: batches each worker reads ahead. Neither changes the batches.
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    P_mean: float = -1.2
    P_std: float = 1.2
    log_every: int = 10
    checkpoint_every: int = 500
    eval_every: int = 100
    keep_checkpoints: int = 3
    bf16: bool = False
    seed: int = 0
    out_dir: str = "runs/default"
    device: str = "auto"
    latitude_weighted: bool = False
    grad_accum: int = 1
    compile: bool = False
    num_workers: int = 0
    prefetch_factor: int = 2

    def __post_init__(self) -> None:
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise ValueError(f"need train.num_workers >= 0 and train.prefetch_factor >= 1, got {self.num_workers} "
                             f"and {self.prefetch_factor}")
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {getattr(self, name)}")
        if self.lr <= 0 or not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"need train.lr > 0 and 0 <= train.ema_decay < 1, got {self.lr}, {self.ema_decay}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"train.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")


@dataclass(frozen=True)
class SampleConfig:
    """Default sampler settings used by ``funcdiff sample`` and ``funcdiff solve`` (see
    :func:`funcdiff.sampling.sample`).

    ``sigma_max`` = 20: the pipeline normalises data to unit std, so starting from 20 × noise mis-states the
    prior's variance by 1/400 only, while EDM's 80 (set for images of std 0.5) spends few-step budgets at
    levels the training distribution (log σ ~ N(-1.2, 1.2²)) almost never visits: on the Darcy model,
    5 Heun steps give samples with 2.1× the data std from 80 and 1.4× from 20, and guided 5-step errors
    drop 3× (``benchmarks/inverse_problems.py``).

    ``bf16``: denoiser calls under bfloat16 autocast (``funcdiff sample``; CPU or CUDA, the solver state stays
    float32; :class:`funcdiff.sampling.SamplerSettings`).
    """

    steps: int = 32
    solver: str = "heun"
    sigma_min: float = SIGMA_MIN  # the one default schedule (funcdiff.schedules), recorded in every checkpoint
    sigma_max: float = SIGMA_MAX
    rho: float = RHO
    bf16: bool = False


FORECAST_KINDS = KIND_NAMES  # the registry of model kinds (funcdiff.kinds: names only, no torch)


@dataclass(frozen=True)
class ForecastConfig:
    """A forecaster of trajectories (``kind != "none"``); ``data`` then names trajectory fields (N, T, *S).

    ``kind``: ``"autoregressive"`` learns p(x_{t+1..t+horizon} | x_{t-history+1..t}) -- clean history frames
    are conditioning, the ``horizon`` future frames are noised at one sigma; ``"rolling"`` (Ruhe et al. 2024,
    ERDM) learns a window of ``horizon`` frames whose noise rises with the frame index, local time (k + t)/W
    through the Karras ramp of ``sample`` (sigma_min, sigma_max, rho), with a fraction ``init_fraction`` of
    windows on the initial schedule (all noise -> the rolling profile); ``"deterministic"`` is the MSE baseline of
    the same backbone: the EDM loss at the single level sigma_max, where it is the squared error of the
    conditional mean, rolled out with one Euler step (one network evaluation) per block. ``frame_step``: use every n-th frame
    of the file (the forecast step is ``frame_step`` × the file's frame spacing). ``stride``: frames between
    the starts of training windows. ``steps_per_frame``: default solver steps per emitted frame (rolling:
    per shift; autoregressive: a block of ``horizon`` frames gets ``steps_per_frame × horizon`` steps).
    ``"trajectory"`` (WDNO, Hu, Wang et al., ICLR 2025) diffuses the ``horizon`` frames after one initial frame
    (``history`` must be 1) as one space-time field through ``transform`` (:mod:`funcdiff.kinds.trajectory`);
    a forecast longer than ``horizon`` continues from the last frame, block by block. ``forcing`` (trajectory
    only): the names of the last ``data.channels`` that hold a time-independent forcing (e.g. ``[f]`` of
    ``burgers_shock_forced``): clean conditioning channels laid out like the initial frame, never diffused.
    ``"super_resolution"`` learns the one-level wavelet details of the last ``horizon`` frames of each window given
    their approximation (:mod:`funcdiff.kinds.super_resolution`; ``funcdiff upsample`` applies it).
    """

    kind: str = "none"
    history: int = 1
    horizon: int = 1
    init_fraction: float = 0.1
    frame_step: int = 1
    stride: int = 1
    steps_per_frame: int = 2
    forcing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.forcing and self.kind != "trajectory":
            raise ValueError(f"forecast.forcing {list(self.forcing)} is used by forecast.kind=trajectory only, "
                             f"got kind {self.kind!r}")
        if self.kind not in FORECAST_KINDS:
            raise ValueError(f"forecast.kind must be one of {list(FORECAST_KINDS)}, got {self.kind!r}")
        for name in ("history", "horizon", "frame_step", "stride", "steps_per_frame"):
            if getattr(self, name) < 1:
                raise ValueError(f"forecast.{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.init_fraction < 1.0:
            raise ValueError(f"forecast.init_fraction must be in [0, 1), got {self.init_fraction}")
        if self.kind == "trajectory" and self.history != 1:
            raise ValueError(f"forecast.kind=trajectory is conditioned on one initial frame: forecast.history must "
                             f"be 1, got {self.history}")

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    @property
    def window(self) -> int:
        """Frames in one training item: history + horizon."""
        return self.history + self.horizon


TRANSFORM_KINDS = ("identity", "wavelet")
TRANSFORM_NOISES = ("white", "grf")


@dataclass(frozen=True)
class TransformConfig:
    """The map between physical fields and the space the diffusion runs in (:mod:`funcdiff.transforms`).

    ``kind="identity"`` (the default) is the physical-space path; ``"wavelet"`` is
    :class:`funcdiff.transforms.WaveletTransform` (WDNO, Hu, Wang et al., ICLR 2025) with ``wavelet`` (a
    PyWavelets name), ``levels``, ``axes`` (one name per dimension after (batch, channel): ``time``, ``x``,
    ``y``, ``z``) and ``time_boundary`` (``periodization`` or ``boundary``). The options are checked when the
    transform is built, where the field's shape is known. Used by ``forecast.kind: trajectory``
    (:mod:`funcdiff.kinds.trajectory`); ``noise`` chooses that diffusion's noise in coefficient space:
    ``white`` (i.i.d. unit noise on the normalised coefficients) or ``grf`` (the ``noise:`` section's space-time
    Gaussian random field mapped through the transform). Identity always uses the ``noise:`` field as it is.
    ``residual``: a trajectory model diffuses the change of frames 1..T from the initial frame instead of the
    frames themselves.
    """

    kind: str = "identity"
    wavelet: str = "db4"
    levels: int = 1
    axes: tuple[str, ...] = ()
    time_boundary: str = "periodization"
    noise: str = "white"
    residual: bool = False

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORM_KINDS:
            raise ValueError(f"transform.kind must be one of {list(TRANSFORM_KINDS)}, got {self.kind!r}")
        if self.noise not in TRANSFORM_NOISES:
            raise ValueError(f"transform.noise must be one of {list(TRANSFORM_NOISES)}, got {self.noise!r}")

    def coefficients_per_channel(self, axes: int | None = None) -> int:
        """Coefficient channels per physical channel: 2^(axes·levels) for a wavelet over ``axes`` axes (default:
        all of ``axes``), 1 for identity."""
        if self.kind == "identity":
            return 1
        return 1 << ((len(self.axes) if axes is None else axes) * self.levels)

    def options(self) -> dict:
        """Keyword arguments of :func:`funcdiff.transforms.build_transform` (``kind`` included)."""
        if self.kind == "identity":
            return {"kind": "identity"}
        return {"kind": self.kind, "wavelet": self.wavelet, "levels": self.levels, "axes": list(self.axes),
                "time_boundary": self.time_boundary}


SECTIONS: dict[str, type] = {"data": DataConfig, "noise": NoiseConfig, "train": TrainConfig, "sample": SampleConfig,
                             "forecast": ForecastConfig, "transform": TransformConfig}


@dataclass(frozen=True)
class RunConfig:
    """One training run: the components above plus ``model``, the plain dict given to
    :func:`funcdiff.models.build_denoiser` (without ``in_channels``/``out_channels``, which come from the data)."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: dict = field(default_factory=lambda: {"backbone": "fno", "n_modes": [12, 12]})
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)

    def __post_init__(self) -> None:
        _check_model_keys(self.model)
        forcing, channels = tuple(self.forecast.forcing), tuple(self.data.channels)
        if forcing and (len(forcing) >= len(channels) or channels[len(channels) - len(forcing):] != forcing):
            raise ValueError(f"forecast.forcing {list(forcing)} must name the last data.channels (after at least "
                             f"one diffused channel), got data.channels {list(channels)}")

    def model_config(self, num_channels: int) -> dict:
        """The full ``build_denoiser`` dict: ``model`` plus in/out channels taken from the data.

        ``num_channels`` is the physical channel count C; the layout is the kind's
        (:meth:`funcdiff.kinds.base.ModelKind.model_config`): e.g. a forecaster's state is its ``horizon`` frames
        stacked as channels (C·horizon in and out) with C·history conditioning channels.
        """
        from funcdiff.kinds import model_kind

        return model_kind(self).model_config(num_channels)

    def to_dict(self) -> dict:
        """Plain nested dict (lists, not tuples) that :func:`config_from_dict` accepts back."""
        return _plain(dataclasses.asdict(self))

    def replace(self, overrides: Sequence[str]) -> "RunConfig":
        """A copy with ``section.key=value`` overrides applied."""
        return config_from_dict(self.to_dict(), overrides)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config (``yaml.safe_load``) and apply ``section.key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"config {path} must be a mapping of sections, got {type(raw).__name__}")
    return config_from_dict(raw, overrides)


def config_from_dict(raw: dict, overrides: Sequence[str] = ()) -> RunConfig:
    """Build a :class:`RunConfig` from a nested dict; unknown sections/keys raise ValueError listing valid ones."""
    raw = apply_overrides(raw, overrides)
    valid = ["name", "model", *SECTIONS]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; valid sections: {valid}")
    parts: dict[str, Any] = {name: _build_section(name, cls, raw.get(name) or {}) for name, cls in SECTIONS.items()}
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise ValueError(f"config section 'model' must be a mapping, got {type(model).__name__}")
    return RunConfig(name=str(raw.get("name", "run")), model=dict(model), **parts)


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``raw`` with ``section.key=value`` strings applied (values parsed by yaml.safe_load)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or (not dot and section != "name"):
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-3)")
        parsed = yaml.safe_load(value)
        if section == "name":
            out["name"] = parsed
            continue
        if section not in ("model", *SECTIONS):
            raise ValueError(f"unknown config section {section!r} in override {item!r}; "
                             f"valid sections: {['name', 'model', *SECTIONS]}")
        out.setdefault(section, {})
        out[section] = {**(out[section] or {}), name: parsed}
    return out


def _build_section(name: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"config section {name!r} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        keys = [f"{name}.{k}" for k in unknown]
        raise ValueError(f"unknown key(s) {keys}; valid keys for {name!r}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()})


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check/convert one value to its field type (YAML reads ``1e-3`` as a string, so floats accept strings)."""
    is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    options = typing.get_args(hint) if is_union else (hint,)
    if value is None and type(None) in options:
        return None
    errors = []
    for option in (o for o in options if o is not type(None)):
        try:
            return _coerce_one(value, option)
        except (TypeError, ValueError) as err:
            errors.append(str(err))
    raise ValueError(f"config key {key}: {value!r} is not a valid {hint} ({'; '.join(errors)})")


def _coerce_one(value: Any, hint: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError("expected true/false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError("expected an integer")
    if hint is float:
        if isinstance(value, bool):
            raise TypeError("expected a number")
        return float(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError("expected a string")
    if typing.get_origin(hint) is tuple:
        items = [value] if isinstance(value, str) else list(value)
        return tuple(_coerce_one(v, typing.get_args(hint)[0]) for v in items)
    raise TypeError(f"unsupported field type {hint}")


def _check_model_keys(model: dict) -> None:
    """Reject derived keys and keys the chosen backbone does not know (the error lists the valid ones)."""
    derived = sorted(set(model) & set(DERIVED_MODEL_KEYS))
    if derived:
        raise ValueError(f"model.{derived[0]} must not be set: in/out channels come from data.channels")
    from funcdiff.models.registry import BACKBONES, DENOISER_KEYS

    name = model.get("backbone", "fno")
    if name not in BACKBONES:
        raise ValueError(f"unknown model.backbone {name!r}; valid backbones: {sorted(BACKBONES)}")
    valid = {f.name for f in dataclasses.fields(BACKBONES[name][0])} - set(DERIVED_MODEL_KEYS) | set(DENOISER_KEYS)
    unknown = sorted(set(model) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {[f'model.{k}' for k in unknown]}; valid keys for 'model': {sorted(valid)}")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
