"""scikit-learn's base classes and validation when it is installed, small stand-ins when not.

gpumlp needs only NumPy. With scikit-learn installed, the estimators are real scikit-learn
estimators (``clone``, ``Pipeline``, ``GridSearchCV``, ``check_estimator``) and raise its
``NotFittedError``; without it they keep the same interface with these fallbacks.
"""

import inspect
import warnings

import numpy as np

try:  # pragma: no cover - which branch runs depends on the environment
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, NotFittedError
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d

    try:
        from sklearn.utils.validation import validate_data as _validate_data
    except ImportError:  # scikit-learn < 1.6

        def _validate_data(est, X="no_validation", y="no_validation", reset=True, **kw):
            return est._validate_data(X, y, reset=reset, **kw)

    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover
    HAVE_SKLEARN = False

    class NotFittedError(ValueError, AttributeError):
        """Raised when an estimator is used before ``fit`` (scikit-learn's, when installed)."""

    class ConvergenceWarning(UserWarning):
        """Training stopped at ``max_iter`` before the loss settled."""

    class BaseEstimator:
        """``get_params``/``set_params`` from the constructor's signature, as scikit-learn's."""

        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values() if p.name != "self")

        def get_params(self, deep=True):
            return {k: getattr(self, k) for k in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for k, v in params.items():
                if k not in valid:
                    raise ValueError(
                        f"Invalid parameter {k!r} for estimator {type(self).__name__}; "
                        f"valid parameters: {valid}"
                    )
                setattr(self, k, v)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class ClassifierMixin:
        _estimator_type = "classifier"

        def score(self, X, y, sample_weight=None):
            w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
            return float(np.average(self.predict(X) == np.asarray(y), weights=w))

    class RegressorMixin:
        _estimator_type = "regressor"

        def score(self, X, y, sample_weight=None):
            y = np.asarray(y, dtype=float)
            pred = np.asarray(self.predict(X), dtype=float).reshape(y.shape)
            w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
            w = w.reshape((-1,) + (1,) * (y.ndim - 1))
            ss_res = (w * (y - pred) ** 2).sum(axis=0)
            ss_tot = (w * (y - np.average(y, axis=0, weights=w.ravel())) ** 2).sum(axis=0)
            return float(np.mean(1 - ss_res / np.where(ss_tot == 0, 1, ss_tot)))

    def check_random_state(seed):
        if seed is None or seed is np.random:
            return np.random.mtrand._rand
        if isinstance(seed, (int, np.integer)):
            return np.random.RandomState(seed)
        if isinstance(seed, np.random.RandomState):
            return seed
        raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState")

    def check_is_fitted(est, attributes=None):
        if hasattr(est, "__sklearn_is_fitted__"):
            fitted = est.__sklearn_is_fitted__()
        else:
            fitted = any(k.endswith("_") and not k.startswith("__") for k in vars(est))
        if not fitted:
            raise NotFittedError(
                f"This {type(est).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def check_classification_targets(y):
        if np.asarray(y).dtype.kind == "f" and np.any(np.asarray(y) != np.round(y)):
            raise ValueError("Unknown label type: continuous. Use MLPRegressor for real targets.")

    def column_or_1d(y, warn=False):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            if warn:
                warnings.warn("A column-vector y was passed when a 1d array was expected.")
            return y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y should be a 1d array, got an array of shape {y.shape} instead.")
        return y

    def train_test_split(X, y, test_size, random_state, stratify=None):
        rs = check_random_state(random_state)
        n = len(X)
        n_test = max(1, int(np.ceil(n * test_size)))
        order = rs.permutation(n)
        test, train = order[:n_test], order[n_test:]
        return X[train], X[test], y[train], y[test]

    def _validate_data(est, X, y="no_validation", reset=True, dtype=None, multi_output=False,
                       y_numeric=False, **_):
        X = np.asarray(X, dtype=dtype)
        if X.ndim != 2:
            raise ValueError(
                f"Expected 2D array, got {X.ndim}D array instead: reshape your data with "
                "X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample."
            )
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"Found array with shape {X.shape}: need at least 1 sample and 1 feature")
        if not np.all(np.isfinite(X)):
            raise ValueError("Input X contains NaN or infinity.")
        if reset:
            est.n_features_in_ = X.shape[1]
        elif X.shape[1] != est.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
                f"{est.n_features_in_} features as input."
            )
        if isinstance(y, str) and y == "no_validation":
            return X
        if y is None:
            raise ValueError(f"This {type(est).__name__} estimator requires y to be passed, but the target y is None.")
        y = np.asarray(y, dtype=float if y_numeric else None)
        if not multi_output:
            y = column_or_1d(y, warn=True)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
        return X, y
