"""MLPClassifier and MLPRegressor with scikit-learn's interface, trained by gpumlp."""

import json
import re
import sys
import warnings

import numpy as np

from . import _gpumlp
from ._compat import (
    HAVE_SKLEARN,
    BaseEstimator,
    ClassifierMixin,
    ConvergenceWarning,
    RegressorMixin,
    check_classification_targets,
    check_is_fitted,
    check_random_state,
    column_or_1d,
    train_test_split,
    _validate_data,
)

_SOLVERS = ("adam", "sgd", "momentum")
_DEVICES = ("auto", "gpu", "cpu", "reference")
# scikit-learn's activation names, and gpumlp's own (leaky_relu[:alpha], sigmoid, step).
_OUT_NAMES = {"sigmoid": "logistic", "softmax": "softmax", "identity": "identity"}


def _f32(X):
    return np.ascontiguousarray(X, dtype=np.float32)


class _BaseMLP(BaseEstimator):
    """What both estimators share: parameters, the training loop, saving and ONNX."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        momentum=0.9,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        device="auto",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.momentum = momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.device = device

    # ---- parameters -------------------------------------------------------------------------

    def _check_params(self):
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, (int, np.integer)):
            hidden = (hidden,)
        hidden = list(hidden)
        if not all(isinstance(h, (int, np.integer)) and h > 0 for h in hidden):
            raise ValueError(
                f"hidden_layer_sizes must be positive whole numbers, got {self.hidden_layer_sizes!r}"
            )
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        if self.device not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}, got {self.device!r}")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a whole number >= 1, got {self.max_iter!r}")
        if not (self.alpha >= 0):
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        if not (self.learning_rate_init > 0):
            raise ValueError(f"learning_rate_init must be > 0, got {self.learning_rate_init!r}")
        if not (0 < self.validation_fraction < 1):
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        if not (isinstance(self.n_iter_no_change, (int, np.integer)) and self.n_iter_no_change >= 1):
            raise ValueError(f"n_iter_no_change must be >= 1, got {self.n_iter_no_change!r}")
        if not (self.tol >= 0):
            raise ValueError(f"tol must be >= 0, got {self.tol!r}")
        bs = self.batch_size
        if not (bs == "auto" or (isinstance(bs, (int, np.integer)) and bs >= 1)):
            raise ValueError(f"batch_size must be 'auto' or a whole number >= 1, got {bs!r}")
        acts = [self.activation] * len(hidden) if isinstance(self.activation, str) else list(
            self.activation
        )
        if len(acts) != len(hidden):
            raise ValueError(
                f"activation gives {len(acts)} names for {len(hidden)} hidden layers: "
                "give one, or one per hidden layer"
            )
        return hidden, acts

    def _schedule(self):
        lr = self.learning_rate
        if lr == "constant":
            return "constant"
        if lr == "invscaling":
            # per epoch here (scikit-learn scales per step)
            return f"invscaling:{self.power_t}"
        if isinstance(lr, str) and re.fullmatch(r"(step|exp|invscaling):.*", lr):
            return lr
        raise ValueError(
            f"learning_rate {lr!r} is not supported: use 'constant', 'invscaling', or a gpumlp "
            "schedule 'step:EVERY:GAMMA' / 'exp:GAMMA' ('adaptive' is not implemented)"
        )

    # ---- the model --------------------------------------------------------------------------

    def _new_model(self, sizes, acts, loss, n_samples, params=None, seed=0):
        hidden, _ = self._check_params()
        batch = min(200, n_samples) if self.batch_size == "auto" else min(self.batch_size, n_samples)
        batch = max(1, batch)
        model = _gpumlp.Model(
            sizes,
            acts,
            loss,
            params=params,
            init_seed=seed,
            device_name=self.device,
            optimizer=self.solver,
            lr=float(self.learning_rate_init),
            momentum=float(self.momentum),
            beta1=float(self.beta_1),
            beta2=float(self.beta_2),
            eps=float(self.epsilon),
            # scikit-learn's penalty is alpha/2·‖W‖² per sample (summed over the batch before
            # the mean); gpumlp's L2 is λ/2·‖W‖² on the batch mean.
            l2=float(self.alpha) / batch,
            batch_size=batch,
            seed=seed,
            shuffle=bool(self.shuffle),
            schedule=self._schedule(),
        )
        if self.verbose and model.fallback:
            print(f"gpumlp: {model.fallback}; running on {model.device}", file=sys.stderr)
        return model

    def _placed(self):
        """A model for prediction from the fitted parameters (after load or unpickling)."""
        return _gpumlp.Model(
            list(self._sizes), list(self._acts), self._loss,
            params=self._params, device_name=self.device,
        )

    def _set_fitted_params(self, params):
        self._params = np.asarray(params, dtype=np.float32)
        self.coefs_, self.intercepts_ = [], []
        off = 0
        for i, o in zip(self._sizes[:-1], self._sizes[1:]):
            self.coefs_.append(self._params[off:off + i * o].reshape(i, o).copy())
            off += i * o
            self.intercepts_.append(self._params[off:off + o].copy())
            off += o
        self.n_layers_ = len(self._sizes)
        self.n_outputs_ = self._sizes[-1]
        self.out_activation_ = _OUT_NAMES.get(self._acts[-1], self._acts[-1])

    def _fit(self, X, y, incremental, classes=None):
        hidden, acts = self._check_params()
        first = not (incremental and hasattr(self, "_model"))
        X, y = self._validate(X, y, reset=first)
        X = _f32(X)
        targets = self._encode_targets(y, first, classes)
        n = X.shape[0]
        if first:
            sizes = [X.shape[1]] + hidden + [self._n_out]
            rs = check_random_state(self.random_state)
            self._seed = int(rs.randint(np.iinfo(np.int32).max))
            self._sizes, self._acts, self._loss = sizes, [str(a) for a in acts] + [self._out_act], self._loss_name
            self._normalization = None
            self._model = self._new_model(sizes, self._acts, self._loss, n, seed=self._seed)
            self.device_ = self._model.device
            self.loss_curve_ = []
            self.n_iter_ = 0
            self.t_ = 0
            self._no_improvement_count = 0
            if self.early_stopping and not incremental:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.validation_scores_ = None
                self.best_validation_score_ = None
                self.best_loss_ = np.inf
        model = self._model

        X_val = y_val = None
        if self.early_stopping and not incremental:
            stratify = targets if self._is_classifier() else None
            X, X_val, targets, y_val = train_test_split(
                X, targets, test_size=self.validation_fraction,
                random_state=self._seed, stratify=stratify,
            )
            X, X_val = _f32(X), _f32(X_val)
        self._set_train(model, X, targets)

        epochs = 1 if incremental else self.max_iter
        best_params = None
        for _ in range(epochs):
            loss = model.run_epoch()
            self.n_iter_ += 1
            self.t_ += X.shape[0]
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if incremental:
                self.best_loss_ = min(self.best_loss_ or np.inf, loss)
                break
            if X_val is not None:
                score = self._val_score(model, X_val, y_val)
                self.validation_scores_.append(score)
                if self.verbose:
                    print(f"Validation score: {score:.6f}")
                if score < self.best_validation_score_ + self.tol:
                    self._no_improvement_count += 1
                else:
                    self._no_improvement_count = 0
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best_params = model.params()
            else:
                if loss > self.best_loss_ - self.tol:
                    self._no_improvement_count += 1
                else:
                    self._no_improvement_count = 0
                self.best_loss_ = min(self.best_loss_, loss)
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if X_val is not None else "Training loss"
                if self.verbose:
                    print(
                        f"{what} did not improve more than tol={self.tol} for "
                        f"{self.n_iter_no_change} consecutive epochs. Stopping."
                    )
                break
        else:
            if not incremental:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                    "optimization hasn't converged yet.",
                    ConvergenceWarning,
                )
        if best_params is not None:
            model.set_params(best_params)
        self._set_fitted_params(model.params())
        return self

    def fit(self, X, y):
        """Trains a new model for ``max_iter`` epochs (less when it stops early)."""
        return self._fit(X, y, incremental=False)

    def _prepare(self, X):
        check_is_fitted(self)
        X = _f32(self._validate(X, reset=False))
        n = self._normalization
        if n is not None:
            X = _f32((X - np.asarray(n[1], np.float32)) / np.asarray(n[2], np.float32))
        return X

    def _outputs(self, X):
        """The network's outputs [n, out] as float64."""
        X = self._prepare(X)
        return np.asarray(self._model.predict(X), dtype=np.float64)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "_params")

    # ---- pickling: the placed model is rebuilt from the parameters ---------------------------

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        state.pop("_model", None)
        return state

    def __setstate__(self, state):
        if hasattr(super(), "__setstate__"):
            super().__setstate__(state)
        else:
            self.__dict__.update(state)
        if "_params" in state:
            self._model = self._placed()

    # ---- files ------------------------------------------------------------------------------

    def _labels(self):
        return None

    def _file_args(self):
        check_is_fitted(self)
        return (
            list(self._sizes), list(self._acts), self._loss, self._params,
            self._normalization, self._labels(),
        )

    def save(self, path):
        """Writes the model as the ``gpumlp`` command's safetensors checkpoint (atomically):
        ``gpumlp eval --model PATH``, ``gpumlp.load`` and PyTorch read it."""
        sizes, acts, loss, params, norm, labels = self._file_args()
        _gpumlp.save_checkpoint(str(path), sizes, acts, loss, params, norm, labels)

    def to_onnx(self, path):
        """Writes the model as ONNX (opset 17): input ``input`` [batch, in], output ``output``
        [batch, out] (probabilities for a classifier), and ``label`` [batch] (class index into
        ``classes_``) for a classifier."""
        sizes, acts, loss, params, norm, labels = self._file_args()
        _gpumlp.write_onnx(str(path), sizes, acts, loss, params, norm, labels)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by gpumlp on a GPU (or the CPU).

    Parameters follow :class:`sklearn.neural_network.MLPClassifier`, plus ``device`` ('auto': the
    best GPU, else the CPU; 'gpu'; 'cpu'; 'reference'), ``solver='momentum'`` (SGD with classical
    momentum ``momentum``) and gpumlp's activations ``'leaky_relu'``/``'leaky_relu:ALPHA'``.
    Labels may be any values (strings included). Two classes train one logistic output with
    binary cross-entropy; more train a softmax output with cross-entropy.
    """

    _loss_name = None

    def _is_classifier(self):
        return True

    def _validate(self, X, y=None, reset=True):
        if y is None and not reset:
            return _validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        X, y = _validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32))
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return X, y

    def _encode_targets(self, y, first, classes):
        if first:
            self.classes_ = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes, but the data "
                    f"has one class only: {self.classes_[0]!r}"
                )
            k = len(self.classes_)
            self._n_out = 1 if k == 2 else k
            self._out_act = "sigmoid" if k == 2 else "softmax"
            self._loss_name = "binary-cross-entropy" if k == 2 else "cross-entropy"
        unseen = ~np.isin(y, self.classes_)
        if unseen.any():
            raise ValueError(
                f"y has labels not in classes_ {list(self.classes_)}: {list(np.unique(y[unseen]))}"
            )
        return np.searchsorted(self.classes_, y).astype(np.uint32)

    def _set_train(self, model, X, targets):
        model.set_train_data(X, labels=np.ascontiguousarray(targets, np.uint32),
                             classes=max(2, self._n_out))

    def _val_score(self, model, X_val, y_val):
        y = model.predict(X_val)
        pred = (y[:, 0] >= 0.5).astype(int) if y.shape[1] == 1 else y.argmax(axis=1)
        return float(np.mean(pred == y_val))

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), continuing the current model. The first call must give
        ``classes`` (all labels that will ever appear) unless y already holds them all."""
        if not hasattr(self, "_model") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, incremental=True, classes=classes)

    def predict_proba(self, X):
        """Class probabilities [n, n_classes], columns in the order of ``classes_``."""
        y = self._outputs(X)
        if y.shape[1] == 1:
            return np.hstack([1.0 - y, y])
        return y

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each sample (labels from ``classes_``)."""
        y = self._outputs(X)
        idx = (y[:, 0] >= 0.5).astype(int) if y.shape[1] == 1 else y.argmax(axis=1)
        return self.classes_[idx]

    def _labels(self):
        # Classes 0..k-1 are their own indices, as the command line's labels: no names needed.
        c = self.classes_
        if c.dtype.kind in "iu" and np.array_equal(c, np.arange(len(c))):
            return None
        return [str(v) for v in c]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor trained by gpumlp (identity output, squared error).

    Parameters follow :class:`sklearn.neural_network.MLPRegressor`, plus ``device`` as in
    :class:`MLPClassifier`. y may be [n] or [n, k].
    """

    def _is_classifier(self):
        return False

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}

    def _validate(self, X, y=None, reset=True):
        if y is None and not reset:
            return _validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return _validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32),
                              multi_output=True, y_numeric=True)

    def _encode_targets(self, y, first, classes):
        y = np.asarray(y, dtype=np.float32)
        if first:
            self._y_1d = y.ndim == 1
            self._n_out = 1 if y.ndim == 1 else y.shape[1]
            self._out_act = "identity"
            self._loss_name = "squared-error"
        y2 = y.reshape(len(y), -1)
        if y2.shape[1] != self._n_out:
            raise ValueError(f"y has {y2.shape[1]} targets per sample, the model {self._n_out}")
        return np.ascontiguousarray(y2)

    def _set_train(self, model, X, targets):
        model.set_train_data(X, values=np.ascontiguousarray(targets, np.float32))

    def _val_score(self, model, X_val, y_val):
        pred = model.predict(X_val).astype(np.float64)
        y = np.asarray(y_val, np.float64)
        ss_res = ((y - pred) ** 2).sum(axis=0)
        ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
        return float(np.mean(1 - ss_res / np.where(ss_tot == 0, 1, ss_tot)))

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing the current model."""
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """y [n] (or [n, k] when trained on [n, k] targets), float64."""
        y = self._outputs(X)
        return y.ravel() if getattr(self, "_y_1d", y.shape[1] == 1) else y


def _label_values(labels):
    """Labels saved as strings back to numbers where they all are integers or floats."""
    if all(re.fullmatch(r"-?\d+", s) for s in labels):
        return np.array([int(s) for s in labels])
    try:
        return np.array([float(s) for s in labels])
    except ValueError:
        return np.array(labels)


def load(path, device="auto"):
    """Loads a checkpoint written by ``model.save`` or ``gpumlp train --out``: an
    :class:`MLPClassifier` for a classifier (cross-entropy or binary cross-entropy loss), else an
    :class:`MLPRegressor`, ready to predict on ``device``. Its normalization, if the command line
    trained it with one, is applied to X before the network."""
    d = _gpumlp.load_checkpoint(str(path))
    sizes, acts, loss = list(d["sizes"]), list(d["activations"]), d["loss"]
    classifier = loss in ("cross-entropy", "binary-cross-entropy")
    hidden = acts[:-1]
    name = lambda a: _OUT_NAMES.get(a, a) if a == "sigmoid" else a  # noqa: E731
    activation = name(hidden[0]) if hidden and len(set(hidden)) == 1 else tuple(map(name, hidden))
    cls = MLPClassifier if classifier else MLPRegressor
    est = cls(hidden_layer_sizes=tuple(sizes[1:-1]), activation=activation or "relu", device=device)
    est._sizes, est._acts, est._loss = sizes, acts, loss
    est._normalization = d["normalization"]
    est.n_features_in_ = sizes[0]
    est._n_out = sizes[-1]
    est._out_act = acts[-1]
    if classifier:
        labels = d["labels"]
        est.classes_ = _label_values(labels) if labels else np.arange(max(2, sizes[-1]))
    else:
        est._y_1d = sizes[-1] == 1
    est._set_fitted_params(d["params"])
    est._model = est._placed()
    est.device_ = est._model.device
    return est


__all__ = ["MLPClassifier", "MLPRegressor", "load", "HAVE_SKLEARN"]
