from setuptools import find_packages, setup

setup(
    name="ldensf_hpc",
    version="0.1.0",
    description="HPC engine for latent-space data assimilation with ensemble score filters (LD-EnSF)",
    python_requires=">=3.11",
    packages=find_packages(include=["ldensf_hpc", "ldensf_hpc.*"]),
    package_data={"ldensf_hpc": ["presets/*.yaml", "presets/*/*.yaml"]},
    install_requires=[
        "numpy>=1.26",
        "scipy>=1.11",
        "numba>=0.60",
        "torch==2.13.0",
        "h5py>=3.10",
        "dask[distributed]>=2024.1",
        "dask-jobqueue>=0.8",
        "mpi4py>=4.0",
        "mpich",
        "PyYAML>=6.0",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "xarray>=2024.1",  # Assimilation.to_xarray, ldensf import
        "h5netcdf>=1.3",  # NetCDF-4 files
        "zarr>=2.18",  # ldensf import of Zarr stores
        "threadpoolctl>=3.1",  # one BLAS thread inside the parallel chunks of the full-space EnSF (kernels.blas)
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-mpi>=0.6", "pytest-timeout>=2.3", "hypothesis>=6.100", "cmake>=3.27",
                "sphinx>=8,<10", "ducc0>=0.34"],
        "fft": ["ducc0>=0.34"],  # kolmogorov.backend=ducc0: FFTs into preallocated buffers
        "cuda": ["cupy-cuda13x", "numba-cuda"],
        "peers": ["jax[cpu]==0.10.2", "jax-cfd==0.2.1", "dapper==1.7.1"],  # benchmarks/peers.py only
    },
    entry_points={"console_scripts": ["ldensf=ldensf_hpc.cli:main"]},
)
