"""The estimators as scikit-learn users use them."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import gpumlp
from gpumlp import MLPClassifier, MLPRegressor


def small(**kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("random_state", 0)
    return kw


def test_digits_reaches_the_cli_accuracy(digits):
    # The CLI's default run: 64-128-10 ReLU, Adam lr 0.001, batch 32, 20 epochs, standardized,
    # 20% held out: 97.8-98.6% over seeds 0-5.
    X, y = digits
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0)
    clf = make_pipeline(
        StandardScaler(),
        MLPClassifier((128,), batch_size=32, max_iter=20, **small()),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_tr, y_tr)
    acc = clf.score(X_te, y_te)
    assert acc >= 0.97, acc
    mlp = clf[-1]
    assert mlp.n_iter_ == 20 and len(mlp.loss_curve_) == 20
    assert [c.shape for c in mlp.coefs_] == [(64, 128), (128, 10)]
    assert [b.shape for b in mlp.intercepts_] == [(128,), (10,)]
    assert list(mlp.classes_) == list(range(10))
    assert mlp.device_.startswith("cpu"), mlp.device_  # the fast CPU backend


def test_clone_and_grid_search(digits):
    X, y = digits
    X, y = X[:400] / 16, y[:400]
    base = MLPClassifier((16,), max_iter=5, **small())
    c = clone(base)
    assert c.get_params() == base.get_params() and c is not base
    grid = GridSearchCV(base, {"hidden_layer_sizes": [(8,), (16,)], "learning_rate_init": [0.01]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert grid.best_params_["hidden_layer_sizes"] in [(8,), (16,)]
    assert 0 <= grid.best_score_ <= 1


def test_string_labels_round_trip_and_probabilities_sum_to_one(tmp_path):
    X, y = make_classification(200, 6, n_informative=4, n_classes=3, random_state=0)
    names = np.array(["cat", "dog", "émeu"])[y]
    clf = MLPClassifier((12,), max_iter=30, learning_rate_init=0.01, **small()).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "émeu"]
    pred = clf.predict(X)
    assert set(pred) <= set(names) and np.mean(pred == names) > 0.7
    p = clf.predict_proba(X)
    assert p.shape == (200, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-6)
    clf.save(tmp_path / "m.safetensors")
    back = gpumlp.load(tmp_path / "m.safetensors", device="cpu")
    assert list(back.classes_) == ["cat", "dog", "émeu"]
    assert np.array_equal(back.predict(X), pred)
    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict_proba(X), p)


def test_binary_uses_one_logistic_output():
    X, y = make_classification(120, 4, random_state=1)
    labels = np.where(y == 1, "yes", "no")
    clf = MLPClassifier((8,), activation="tanh", max_iter=20, learning_rate_init=0.01, **small()).fit(X, labels)
    assert clf.n_outputs_ == 1 and clf.out_activation_ == "logistic"
    p = clf.predict_proba(X)
    assert p.shape == (120, 2) and np.allclose(p.sum(axis=1), 1)
    assert np.array_equal(clf.classes_[p.argmax(axis=1)], clf.predict(X))


def test_regressor_multi_output_and_score():
    X, y = make_regression(150, 5, n_targets=2, noise=0.1, random_state=0)
    y = y / y.std(axis=0)
    reg = MLPRegressor((32,), max_iter=150, learning_rate_init=0.01, **small()).fit(X, y)
    assert reg.predict(X).shape == (150, 2)
    assert reg.score(X, y) > 0.8
    reg1 = MLPRegressor((8,), max_iter=2, **small()).fit(X, y[:, 0])
    assert reg1.predict(X).shape == (150,)


def test_early_stopping_and_partial_fit():
    X, y = make_classification(300, 8, random_state=0)
    clf = MLPClassifier((16,), early_stopping=True, n_iter_no_change=3, max_iter=500,
                        learning_rate_init=0.05, **small()).fit(X, y)
    assert clf.n_iter_ < 500
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    inc = MLPClassifier((16,), **small())
    for _ in range(3):
        inc.partial_fit(X, y, classes=[0, 1])
    assert inc.n_iter_ == 3 and len(inc.loss_curve_) == 3
    with pytest.raises(ValueError, match="classes"):
        MLPClassifier(**small()).partial_fit(X, y)


def test_bad_input_raises_python_exceptions():
    X, y = make_classification(50, 4, random_state=0)
    with pytest.raises(NotFittedError):
        MLPClassifier(**small()).predict(X)
    with pytest.raises(ValueError, match="NaN"):
        Xn = X.copy()
        Xn[3, 1] = np.nan
        MLPClassifier(**small()).fit(Xn, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier((0,), **small()).fit(X, y)
    with pytest.raises(ValueError, match="device"):
        MLPClassifier(device="tpu").fit(X, y)
    with pytest.raises(ValueError, match="activation"):
        MLPClassifier(activation="swish", **small()).fit(X, y)
    with pytest.raises(ValueError, match="Heaviside"):
        MLPClassifier(activation="step", **small()).fit(X, y)
    clf = MLPClassifier((4,), max_iter=1, **small()).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :3])
    with pytest.raises(FloatingPointError, match="diverged"):
        MLPRegressor((4,), solver="sgd", learning_rate_init=1e6, max_iter=50, **small()).fit(X, y * 1e3)
    with pytest.raises(OSError):
        clf.save("/nonexistent-folder/m.safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors|not a safetensors|No such file|I/O"):
        gpumlp.load(__file__)


def test_ctrl_c_stops_training_between_steps():
    import subprocess
    import sys

    code = """
import os, signal, threading, time
import numpy as np
from gpumlp import MLPClassifier
X = np.random.RandomState(0).normal(size=(40000, 64)).astype(np.float32)
y = np.arange(40000) % 3
threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
t = time.time()
try:
    MLPClassifier((512,), batch_size=4, max_iter=30, device="cpu").fit(X, y)
    print("finished", time.time() - t)
except KeyboardInterrupt:
    print("interrupted", time.time() - t)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    word, seconds = out.stdout.split()
    assert word == "interrupted" and float(seconds) < 5, out.stdout
