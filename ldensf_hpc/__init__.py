"""ldensf_hpc: latent-space data assimilation with ensemble score filters.

Symbols and shapes used throughout (ensemble axis always first):

- ``K`` ensemble members, ``d`` flattened state dimension, ``F`` fields.
- a model state batch is ``(K, F, ny, nx)`` (Lorenz-96: ``(K, d)``);
- ``u`` model parameters ``(K, p)``; ``s`` latent state ``(K, latent)``;
- ``xi`` spatial coordinates ``(M, 2)`` scaled to [-1, 1];
- ``y`` an observation vector ``(m,)``; ``H`` the observation operator.

Layers, lowest first (:data:`LAYERS`): a module imports only from its own layer or the ones
below it, and subpackages never import each other in a cycle (``tests/test_layers.py``).
Methods (``filters``), cases (``cases``), kernels, surrogates and observation operators
live in registries; nothing outside a registry branches on their names.
"""

__version__ = "0.1.0"

LAYERS = (
    "presets", "errors", "registry", "config", "backend", "cuda_host", "machine", "parallel", "sde", "metrics", "geometry",
    "plots",  # foundations
    "models", "observe", "sensor_log", "cases",  # physics: solvers, observation operators and logs, the cases
    "kernels", "data", "surrogate", "filters",  # numerics, data, networks, the method registry
    "experiment", "settings", "assimilation", "pipeline", "api", "jobs", "cli",  # applications
)
"""The package's layers, lowest first (subpackages and top-level modules)."""


API = ("Case", "ModelCase", "Assimilation", "assimilate")
"""The public Python API (:mod:`ldensf_hpc.api`), imported on first use so that ``import ldensf_hpc`` stays light."""


def __getattr__(name):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'ldensf_hpc' has no attribute {name!r}")
