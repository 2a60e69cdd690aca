"""Data-assimilation filters sharing one interface (see :mod:`ldensf_hpc.filters.base`)."""
