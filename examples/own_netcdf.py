"""Bring your own NetCDF: trajectories computed elsewhere, imported, learned and assimilated with LD-EnSF.

    python examples/own_netcdf.py --workdir runs/own-netcdf                          # seconds
    ldensf import runs/own-netcdf/tracer.nc --out runs/own-netcdf/data --preset tiny  # the same, as commands
    ldensf run --data runs/own-netcdf/data --preset tiny --methods ld_ensf,levda --noise 0.1

The file stands for the user's own archive: 12 trajectories of a tracer on a (lat, lon) grid with
CF names and units, time in hours, and the two parameters of each trajectory as variables over
the trajectory dimension (here made by the model of ``blob_model.py``; any xarray-readable
NetCDF, HDF5 or Zarr file with that layout works). No solver is involved after the import:
the prior ensemble comes from the training trajectories and the dynamics from the LDNet.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

import ldensf_hpc as ld


def write_archive(path: Path, n_trajectories: int = 12, n_frames: int = 9, n: int = 16) -> Path:
    """A NetCDF file as a user would have it: ``tracer(trajectory, time, lat, lon)``, ``source_lon``, ``source_lat``."""
    from blob_model import trajectories

    tracer, params, hours = trajectories(n_trajectories, n_frames, n, seed=7)
    ds = xr.Dataset(
        {"tracer": (("trajectory", "time", "lat", "lon"), tracer, {"units": "kg m-2"}),
         "source_lon": (("trajectory",), 360 * params[:, 0], {"units": "degrees_east"}),
         "source_lat": (("trajectory",), -60 + 120 * params[:, 1], {"units": "degrees_north"})},
        coords={"time": ("time", hours, {"units": "hours", "standard_name": "time"}),
                "lat": ("lat", np.linspace(-60, 60, n), {"standard_name": "latitude", "units": "degrees_north"}),
                "lon": ("lon", np.linspace(0, 360, n, endpoint=False),
                        {"standard_name": "longitude", "units": "degrees_east"})},
        attrs={"Conventions": "CF-1.10", "title": "tracer archive"})
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--workdir", type=Path, default=Path("runs") / "own-netcdf")
    args = parser.parse_args(argv)

    source = write_archive(args.workdir / "tracer.nc")
    case = ld.Case.from_dataset(source, args.workdir / "data", preset=args.preset, periodic=True)
    print(case.imported.describe())
    report = case.run(args.workdir, methods=("ld_ensf", "levda"), levels=[0.1], data=args.workdir / "data")
    errors = {m: float(np.mean(r["full_rel_rmse"])) for m, r in report["levels"]["0.1"].items()}
    print("time-mean rel-RMSE: " + ", ".join(f"{m} {e:.3f}" for m, e in errors.items()))
    return errors


if __name__ == "__main__":
    main()
