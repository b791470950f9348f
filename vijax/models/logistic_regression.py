"""Bayesian logistic regression: a log joint over the weights, for the estimators to fit.

For features ``x`` of shape ``(N, D)``, labels ``y_n`` in ``{0, 1}`` and weights ``z`` of shape
``(D,)`` with the prior ``z ~ N(0, prior_scale^2 I)``,

    log p(y, z | x) = sum_n [y_n l_n - softplus(l_n)] + log N(z; 0, prior_scale^2 I),
    l = x @ z,
    log N(z; 0, s^2 I) = -D/2 log(2 pi) - D log s - |z|^2 / (2 s^2).

The likelihood term ``y_n log sigmoid(l_n) + (1 - y_n) log sigmoid(-l_n)`` is computed as
``y_n l_n - softplus(l_n)`` (equal, one transcendental per point), which never takes the log
of a rounded probability: it stays finite and accurate at logits of any size.

- :class:`LogisticRegression`: the data and prior scale, with ``log_joint(z)``.
- :func:`logistic_regression`: the checked constructor.
- :func:`load_breast_cancer`: scikit-learn's Wisconsin breast cancer data (569 x 30, shipped with
  the wheel, no download), standardised, with an intercept column.

``log_joint`` takes one weight vector; the estimators ``vmap`` it over a batch of samples.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax._checks import check_finite, check_scalar, check_shape, is_concrete, shape_of

Array = jax.Array
ArrayLike = Any

__all__ = ["LogisticRegression", "logistic_regression", "load_breast_cancer"]


class LogisticRegression(NamedTuple):
    """Bayesian logistic regression with an isotropic Gaussian prior on the weights.

    A pytree of arrays, so it passes through ``jax.jit`` as an argument. Build it with
    :func:`logistic_regression`, which checks the arguments; this class does not.

    Attributes:
      x: features, shape ``(N, D)``, a float dtype.
      y: labels in ``{0, 1}``, shape ``(N,)``, the dtype of ``x``.
      prior_scale: the prior standard deviation ``s > 0`` of every weight, a scalar.
    """

    x: Array
    y: Array
    prior_scale: Array

    def log_joint(self, z: ArrayLike) -> Array:
        """``log p(y, z | x)`` at one weight vector ``z``, every constant included.

        ``sum_n [y_n log sigmoid(l_n) + (1 - y_n) log sigmoid(-l_n)] - D/2 log(2 pi)
        - D log s - |z|^2 / (2 s^2)`` with ``l = x @ z`` and ``s = prior_scale``. Its gradient
        is ``x^T (y - sigmoid(x @ z)) - z / s^2``.

        Args:
          z: the weights, shape ``(D,)``.

        Returns:
          The log joint density, a scalar.
        """
        d = self.x.shape[-1]
        check_shape("z", z, (d,))
        z = jnp.asarray(z)
        logits = self.x @ z
        # y log sigmoid(l) + (1 - y) log sigmoid(-l) = y l - softplus(l): one transcendental
        log_likelihood = jnp.sum(self.y * logits - jax.nn.softplus(logits))
        scale = self.prior_scale
        log_prior = (-0.5 * d * jnp.log(2 * jnp.pi) - d * jnp.log(scale)
                     - 0.5 * jnp.sum(z ** 2) / scale ** 2)
        return log_likelihood + log_prior


def logistic_regression(x: ArrayLike, y: ArrayLike,
                        prior_scale: float | ArrayLike = 1.0) -> LogisticRegression:
    """Checks the data and builds a :class:`LogisticRegression`.

    Args:
      x: features, shape ``(N, D)`` with ``N >= 1`` and ``D >= 1``, finite real numbers.
      y: labels, shape ``(N,)``, every value 0 or 1 (bool, integer or float).
      prior_scale: the prior standard deviation of every weight, a finite scalar > 0.

    Returns:
      A :class:`LogisticRegression` whose ``x``, ``y`` and ``prior_scale`` have the float dtype
      ``jnp.result_type(float, x)`` (``float32`` unless 64-bit JAX is enabled).

    Raises:
      ValueError: naming ``x``, ``y`` or ``prior_scale`` when one is not as described.
    """
    n, d = check_shape("x", x, (None, None))
    x = x if hasattr(x, "dtype") else np.asarray(x)
    if n < 1 or d < 1:
        raise ValueError(f"x must have at least one row (data point) and one column (feature); "
                         f"got shape {(n, d)}")
    check_finite("x", x)
    check_shape("y", y, (n,))
    y = y if hasattr(y, "dtype") else np.asarray(y)
    if y.dtype != np.bool_:
        check_finite("y", y)
    if is_concrete(y):
        values = np.asarray(y)
        bad = (values != 0) & (values != 1)
        if np.any(bad):
            raise ValueError(f"y must hold labels 0 or 1 only; found {values[bad][0].item()!r} "
                             f"({int(bad.sum())} value(s) not 0 or 1)")
    if is_concrete(prior_scale):
        check_scalar("prior_scale", prior_scale, minimum=0.0, strict=True)
    elif shape_of("prior_scale", prior_scale) != ():
        raise ValueError(f"prior_scale must be a scalar; got shape "
                         f"{shape_of('prior_scale', prior_scale)}")
    dtype = jnp.result_type(float, x)
    return LogisticRegression(x=jnp.asarray(x, dtype), y=jnp.asarray(y, dtype),
                              prior_scale=jnp.asarray(prior_scale, dtype))


def load_breast_cancer(prior_scale: float = 1.0, intercept: bool = True) -> LogisticRegression:
    """The Wisconsin diagnostic breast cancer data as a :class:`LogisticRegression`.

    scikit-learn's ``sklearn.datasets.load_breast_cancer``: 569 tumours, 30 features, label 1
    for benign and 0 for malignant. It ships with scikit-learn, so nothing is downloaded. Each
    feature column is standardised to mean 0 and standard deviation 1 (``ddof=0``, computed in
    NumPy float64), then a column of ones is appended when ``intercept`` is true; the intercept
    gets the same ``N(0, prior_scale^2)`` prior as the other weights.

    Args:
      prior_scale: the prior standard deviation of every weight, a finite scalar > 0.
      intercept: whether to append the column of ones (``D = 31``) or not (``D = 30``).

    Returns:
      A :class:`LogisticRegression` with ``x`` of shape ``(569, 31)`` (or ``(569, 30)``) and
      float labels ``y`` of shape ``(569,)``.

    Raises:
      ValueError: naming ``prior_scale`` or ``intercept`` when one is not as described.
    """
    if not isinstance(intercept, bool | np.bool_):
        raise ValueError(f"intercept must be True or False; got {intercept!r}")
    from sklearn import datasets

    features, labels = datasets.load_breast_cancer(return_X_y=True)
    features = np.asarray(features, dtype=np.float64)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    if intercept:
        features = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)
    return logistic_regression(features, np.asarray(labels, dtype=np.float64), prior_scale)
