"""Names the CLI offers as ``choices``, as plain tuples: building the parser (``funcdiff --help``,
``funcdiff <verb> --help``) must import neither torch nor neuraloperator (issue 20: 9-23 s of start-up).

Each tuple mirrors the registry it names; tests/test_cli_startup.py checks that they stay equal.
"""

SOLVERS = ("euler", "heun", "stochastic")  # funcdiff.sampling.SOLVERS
DETERMINISTIC_SOLVERS = tuple(s for s in SOLVERS if s != "stochastic")
TASKS = ("burgers", "darcy-forward", "darcy-inverse", "helmholtz-forward", "helmholtz-inverse",
         "navier-stokes-forward", "navier-stokes-inverse", "poisson-forward", "poisson-inverse")  # tasks.problems.task_names()
METHODS = ("dps", "mmps", "enkg", "dps-physics", "mmps-physics", "enkg-physics")  # funcdiff.tasks.samplers.METHODS
DATA_DTYPES = ("float32", "float64")  # `data generate --dtype`
DEMO_SETTINGS = (  # funcdiff.tasks.demo.DemoSettings fields other than seed and device: (name, type, default)
    ("resolution", int, 32), ("num_samples", int, 512), ("train_steps", int, 1500), ("batch_size", int, 16),
    ("hidden_channels", int, 32), ("n_modes", int, 12), ("sample_steps", int, 24), ("num_generated", int, 8),
    ("obs_fraction", float, 0.03), ("posterior_samples", int, 8),
)
