"""The method registry: every data-assimilation method behind one interface (:mod:`.base`).

Sequential filters share one forecast-analysis driver (:mod:`.cycle`); smoothers (4DEnVar,
LEVDA) run their windows behind the same entry point::

    method = make_method("ld_ensf", cfg)
    run = method.assimilate(problem, observations, seed)     # -> MethodRun
"""
from __future__ import annotations

from ..registry import Registry

METHODS = Registry("method", {
    "free": "ldensf_hpc.filters.free:Free",
    "ensf": "ldensf_hpc.filters.ensf:EnSF",
    "latent_ensf": "ldensf_hpc.filters.latent_ensf:LatentEnSF",
    "ld_ensf": "ldensf_hpc.filters.ld_ensf:LDEnSF",
    "letkf": "ldensf_hpc.filters.letkf:LETKF",
    "levda": "ldensf_hpc.filters.levda:LEVDA",
    "envar4d": "ldensf_hpc.filters.envar4d:EnVar4D",
})
"""Method name -> class (a :class:`~ldensf_hpc.filters.base.Method`)."""


def make_method(name: str, cfg=None):
    """The method registered as ``name``, with its defaults or its settings from a config."""
    cls = METHODS[name]
    return cls() if cfg is None else cls.from_config(cfg)
