"""Peers for the CAVI benchmark: the same updates in plain vectorised NumPy, and
scikit-learn's ``BayesianGaussianMixture``. Used by ``cavi.py`` only."""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, gammaln

LOG_2PI = np.log(2 * np.pi)


class NumpyCAVI:
    """One CAVI sweep of MODEL.md section 1 (fixed uniform ``pi``), ELBO included, written
    the way a NumPy user would: vectorised over events and clusters, in ``dtype``."""

    def __init__(self, locations, strengths, num_clusters, prior, dtype=np.float32, seed=0):
        self.x = np.asarray(locations, dtype)
        self.s = np.asarray(strengths, dtype)
        self.k = num_clusters
        self.tau, self.alpha, self.beta, self.rho = (dtype(getattr(prior, n))
                                                     for n in ("tau", "alpha", "beta", "rho"))
        self.nu = np.asarray(prior.nu, dtype)
        self.log_fact = gammaln(self.s + 1).astype(dtype)
        rng = np.random.default_rng(seed)
        n = len(self.s)
        seeds = rng.choice(n, num_clusters, replace=False)
        per = dtype(n / num_clusters)
        self.m = self.x[seeds].copy()
        self.sp = np.full(num_clusters, self.rho + self.tau * per, dtype)
        self.a = self.alpha + per * self.s[seeds]
        self.b = np.full(num_clusters, self.beta + per, dtype)
        self.r, _ = self._assign()

    def _assign(self):
        x, s = self.x, self.s
        d2 = ((x[:, None, :] - self.m[None, :, :]) ** 2).sum(-1)
        e_log_rate = digamma(self.a) - np.log(self.b)
        per_k = -np.log(self.k) - self.tau / self.sp - self.a / self.b
        per_n = np.log(self.tau) - LOG_2PI - self.log_fact
        logits = per_k - 0.5 * self.tau * d2 + s[:, None] * e_log_rate + per_n[:, None]
        mx = logits.max(1, keepdims=True)
        e = np.exp(logits - mx)
        z = e.sum(1, keepdims=True)
        log_norm = (np.log(z) + mx)[:, 0]
        return e / z, log_norm.sum() + self._global_terms()

    def _global_terms(self):
        a, b, m, sp = self.a, self.b, self.m, self.sp
        e_log_rate = digamma(a) - np.log(b)
        t = (np.log(self.rho) - LOG_2PI
             - 0.5 * self.rho * (((m - self.nu) ** 2).sum(-1) + 2 / sp))
        t = t + (self.alpha * np.log(self.beta) - gammaln(self.alpha)
                 + (self.alpha - 1) * e_log_rate - self.beta * a / b)
        t = t + 1 + LOG_2PI - np.log(sp) + a - np.log(b) + gammaln(a) + (1 - a) * digamma(a)
        return t.sum()

    def sweep(self):
        r = self.r
        counts = r.sum(0)
        self.a = self.alpha + self.s @ r
        self.b = self.beta + counts
        self.sp = self.rho + self.tau * counts
        self.m = (self.rho * self.nu + self.tau * (r.T @ self.x)) / self.sp[:, None]
        self.r, elbo = self._assign()
        return elbo


def sklearn_mixture(num_clusters, max_iter, seed=0):
    """scikit-learn's variational Gaussian mixture, spherical covariance, a fixed number of
    iterations (``tol=0``), on the locations only (it has no Poisson strengths)."""
    from sklearn.mixture import BayesianGaussianMixture

    return BayesianGaussianMixture(
        n_components=num_clusters, covariance_type="spherical", max_iter=max_iter, tol=0.0,
        init_params="random_from_data", n_init=1, random_state=seed,
        weight_concentration_prior_type="dirichlet_distribution")
