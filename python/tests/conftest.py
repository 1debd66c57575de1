import os
import pathlib
import shutil

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def gpumlp_bin():
    """The `gpumlp` command: $GPUMLP_BIN, else target/release/gpumlp (`cargo build --release`)."""
    path = os.environ.get("GPUMLP_BIN") or str(ROOT / "target" / "release" / "gpumlp")
    if not os.path.exists(path):
        path = shutil.which("gpumlp")
    if not path:
        pytest.skip("the gpumlp command is not built: run `cargo build --release` first")
    return path


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


def write_csv(path, X, y=None):
    """The CLI's csv: features, then the label (no header)."""
    cols = [X] if y is None else [X, np.asarray(y).reshape(-1, 1)]
    np.savetxt(path, np.hstack(cols), delimiter=",", fmt="%.9g")
    return f"csv:{path}"
