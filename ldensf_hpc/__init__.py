"""ldensf_hpc: latent-space data assimilation with ensemble score filters.

Symbols and shapes used throughout (ensemble axis always first):

- ``K`` ensemble members, ``d`` flattened state dimension, ``F`` fields.
- a model state batch is ``(K, F, ny, nx)`` (Lorenz-96: ``(K, d)``);
- ``u`` model parameters ``(K, p)``; ``s`` latent state ``(K, latent)``;
- ``xi`` spatial coordinates ``(M, 2)`` scaled to [-1, 1];
- ``y`` an observation vector ``(m,)``; ``H`` the observation operator.
"""

__version__ = "0.1.0"
