"""Shared fixtures: small simulated samples, a Space Ranger folder writer and the shared data location."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import spatialdomains as sd

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SPATIALDOMAINS_SHARED", REPO.parent / "shared"))


def pytest_configure(config):
    """Under pytest-xdist, torch in each worker uses its share of the cores: tests that call a model directly
    (not through plan_threads) would otherwise run on every core in every worker, and small operations on
    threads that lose their core to the other worker stall (60 epochs on 400 spots: 0.7 s alone, 40 s so)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        from spatialdomains.models.trainer import allowed_cores

        torch.set_num_threads(max(1, allowed_cores() // int(workers)))


def shared_file(relative: str) -> Path:
    """A file under the shared data folder, or skip naming what is missing."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared dataset {relative} not found under {SHARED} (set SPATIALDOMAINS_SHARED)")
    return path


def chromium() -> str:
    """The headless browser that opens reports, or skip naming what to install."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("Debian's chromium is not installed (apt-get install chromium): the page cannot be opened")


def python_environment() -> dict:
    """This process's environment for a Python subprocess, with this Python's own library folder first on
    LD_LIBRARY_PATH: once R has started in a test process it lists the system's folders, whose libpython (another
    build) a child would otherwise load."""
    import sysconfig

    env = dict(os.environ)
    library = sysconfig.get_config_var("LIBDIR")
    if env.get("LD_LIBRARY_PATH") and library:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([library, env["LD_LIBRARY_PATH"]])
    return env


def r_with_mclust() -> bool:
    from spatialdomains.cluster import mclust_unavailable_reason

    return mclust_unavailable_reason() is None


@pytest.fixture(scope="session")
def small_sample():
    """A ~400-spot simulated sample with 3 domains (do not modify: copy first)."""
    return sd.datasets.simulate_visium(400, 3, seed=7)


@pytest.fixture
def sample(small_sample):
    return small_sample.copy()


def write_space_ranger(adata, folder: Path, *, header: bool = True) -> Path:
    """Write ``adata`` as a Space Ranger ``outs/`` folder (10x HDF5 matrix, positions, scale factors, image)."""
    from tenx_layouts import write_10x_h5

    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", adata.X, adata.obs_names, adata.var_names)
    spatial = folder / "spatial"
    spatial.mkdir(exist_ok=True)
    rows = [
        [barcode, 1, int(r), int(c), float(y), float(x)]
        for barcode, r, c, (x, y) in zip(adata.obs_names, adata.obs["array_row"], adata.obs["array_col"],
                                         adata.obsm["spatial"])
    ]
    # An off-tissue barcode that is not in the matrix, as in real positions files.
    rows.append(["AAAA-1", 0, 0, 0, 0.0, 0.0])
    lines = [",".join(map(str, row)) for row in rows]
    if header:
        lines.insert(0, "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres")
        (spatial / "tissue_positions.csv").write_text("\n".join(lines) + "\n")
    else:
        (spatial / "tissue_positions_list.csv").write_text("\n".join(lines) + "\n")
    scalefactors = dict(adata.uns["spatial"]["simulated"]["scalefactors"])
    (spatial / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    import matplotlib.image

    matplotlib.image.imsave(spatial / "tissue_lowres_image.png", np.full((20, 30, 3), 0.8))
    return folder
