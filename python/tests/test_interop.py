"""A model moves between Python, the gpumlp command and ONNX runtimes, and gives the same
answers everywhere."""

import re
import subprocess
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import gpumlp
from gpumlp import MLPClassifier, MLPRegressor, _gpumlp

from conftest import write_csv

ort = pytest.importorskip("onnxruntime")


def run(bin_, *args):
    out = subprocess.run([bin_, *args], capture_output=True, text=True)
    assert out.returncode == 0, f"gpumlp {args} failed:\n{out.stdout}{out.stderr}"
    return out.stdout + out.stderr


def onnx_run(path, X):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"input": np.asarray(X, np.float32)})))


def quiet_fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def test_python_model_evaluates_the_same_with_the_cli(tmp_path, digits, gpumlp_bin):
    X, y = digits
    X = X / 16
    clf = quiet_fit(MLPClassifier((32,), max_iter=8, random_state=0, device="cpu"), X[:1400], y[:1400])
    clf.save(tmp_path / "py.safetensors")
    data = write_csv(tmp_path / "test.csv", X[1400:], y[1400:])
    out = run(gpumlp_bin, "eval", "--model", str(tmp_path / "py.safetensors"), "--data", data, "--device", "cpu")
    cli_acc = float(re.search(r"accuracy: ([\d.]+)%", out).group(1))
    assert cli_acc == pytest.approx(100 * clf.score(X[1400:], y[1400:]), abs=0.006), out


def test_cli_model_loads_in_python_and_predicts_identically(tmp_path, digits, gpumlp_bin):
    X, y = digits
    data = write_csv(tmp_path / "train.csv", X[:600], y[:600])
    model = str(tmp_path / "cli.safetensors")
    run(gpumlp_bin, "train", "--data", data, "--layers", "64,24,10", "--epochs", "3",
        "--device", "cpu", "--out", model, "--quiet")
    feats = write_csv(tmp_path / "x.csv", X[600:900])
    run(gpumlp_bin, "predict", "--model", model, "--data", feats, "--out", str(tmp_path / "p.csv"), "--device", "cpu")
    cli = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    clf = gpumlp.load(model, device="cpu")
    assert isinstance(clf, MLPClassifier) and list(clf.classes_) == list(range(10))
    assert clf.n_features_in_ == 64 and [c.shape for c in clf.coefs_] == [(64, 24), (24, 10)]
    assert np.array_equal(clf.predict(X[600:900]), cli[:, 0].astype(int))
    np.testing.assert_allclose(clf.predict_proba(X[600:900]), cli[:, 1:], rtol=1e-5, atol=1e-6)


ACTIVATIONS = ["identity", "logistic", "tanh", "relu", "leaky_relu:0.2"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("classes", [2, 3])
def test_onnx_matches_predict_for_every_activation(tmp_path, activation, classes):
    rs = np.random.RandomState(0)
    X = rs.normal(size=(64, 5)).astype(np.float32)
    y = np.array(["a", "b", "c"])[rs.randint(0, classes, 64)]
    clf = quiet_fit(MLPClassifier((7, 4), activation=activation, max_iter=3, random_state=1, device="cpu"), X, y)
    clf.to_onnx(tmp_path / "m.onnx")
    got = onnx_run(tmp_path / "m.onnx", X)
    proba = clf.predict_proba(X)
    want = proba[:, 1:] if classes == 2 else proba
    np.testing.assert_allclose(got["output"], want, rtol=0, atol=1e-5)
    assert np.array_equal(clf.classes_[got["label"]], clf.predict(X))


def test_onnx_of_a_regressor_and_of_the_step_activation(tmp_path):
    rs = np.random.RandomState(2)
    X = rs.normal(size=(40, 3)).astype(np.float32)
    reg = quiet_fit(MLPRegressor((6,), activation="tanh", max_iter=3, random_state=0, device="cpu"), X, X @ [1.0, -2.0, 0.5])
    reg.to_onnx(tmp_path / "r.onnx")
    got = onnx_run(tmp_path / "r.onnx", X)
    assert set(got) == {"output"}
    np.testing.assert_allclose(got["output"][:, 0], reg.predict(X), atol=1e-5)
    # The Heaviside step cannot be trained; a hand-set network with it still exports.
    params = rs.normal(size=3 * 4 + 4 + 4 * 3 + 3).astype(np.float32)
    _gpumlp.save_checkpoint(str(tmp_path / "step.safetensors"), [3, 4, 3], ["step", "softmax"], "cross-entropy", params)
    step = gpumlp.load(tmp_path / "step.safetensors", device="cpu")
    step.to_onnx(tmp_path / "step.onnx")
    got = onnx_run(tmp_path / "step.onnx", X)
    np.testing.assert_allclose(got["output"], step.predict_proba(X), atol=1e-5)


@pytest.mark.parametrize("normalize", ["none", "unit", "standard"])
def test_onnx_applies_the_saved_normalization(tmp_path, digits, gpumlp_bin, normalize):
    X, y = digits
    data = write_csv(tmp_path / "train.csv", X[:300], y[:300])
    model = tmp_path / "m.safetensors"
    run(gpumlp_bin, "train", "--data", data, "--layers", "64,16,10", "--epochs", "2", "--normalize", normalize,
        "--device", "cpu", "--out", str(model), "--quiet")
    run(gpumlp_bin, "export", "--model", str(model), "--onnx", str(tmp_path / "cli.onnx"), "--quiet")
    clf = gpumlp.load(model, device="cpu")
    assert (clf._normalization is None) == (normalize == "none") or clf._normalization[0] == normalize
    clf.to_onnx(tmp_path / "py.onnx")
    assert (tmp_path / "py.onnx").read_bytes() == (tmp_path / "cli.onnx").read_bytes()
    got = onnx_run(tmp_path / "cli.onnx", X[300:500])
    np.testing.assert_allclose(got["output"], clf.predict_proba(X[300:500]), atol=1e-5)
    assert np.array_equal(got["label"], clf.predict(X[300:500]))


def test_export_refuses_to_overwrite_its_input(tmp_path, gpumlp_bin):
    X = np.random.RandomState(0).normal(size=(20, 3))
    clf = quiet_fit(MLPClassifier((4,), max_iter=1, random_state=0, device="cpu"), X, np.arange(20) % 2)
    clf.save(tmp_path / "m.safetensors")
    out = subprocess.run([gpumlp_bin, "export", "--model", str(tmp_path / "m.safetensors"),
                          "--onnx", str(tmp_path / "m.safetensors")], capture_output=True, text=True)
    assert out.returncode != 0 and "--onnx names the input" in out.stderr
    assert gpumlp.load(tmp_path / "m.safetensors", device="cpu").n_features_in_ == 3


def test_one_fit_on_a_gpu_adapter_when_there_is_one():
    import os

    X = np.random.RandomState(0).normal(size=(100, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    try:
        clf = quiet_fit(MLPClassifier((8,), max_iter=20, learning_rate_init=0.05, random_state=0, device="gpu"), X, y)
    except RuntimeError as e:
        if "no GPU adapter" in str(e) and not os.environ.get("CI"):
            pytest.skip(str(e))
        raise
    assert clf.device_ != "cpu-reference"
    ref = quiet_fit(MLPClassifier((8,), max_iter=20, learning_rate_init=0.05, random_state=0, device="cpu"), X, y)
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X), atol=1e-3)
