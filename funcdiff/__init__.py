"""funcdiff: diffusion models in function space for PDE and climate science.

Pipeline (one module per stage, imports only point downwards):
``pde``/``data`` -> ``noise`` -> ``models`` -> ``training`` -> ``sampling`` -> ``guidance`` -> ``tasks`` -> ``metrics``/``io`` -> ``cli``.
"""

__version__ = "0.1.0"
