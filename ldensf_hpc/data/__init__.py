"""Training data: generation (``generate.py``), the HDF5 layout (``store.py``) and
torch datasets over it (``dataset.py``)."""
