"""Models to study estimators on: log joints a user can pass to :mod:`vijax.estimators`.

- :mod:`~vijax.models.conjugate_gaussian`: posterior, ELBO, gradient and estimator variances
  in closed form (the reference of the tests).
- :mod:`~vijax.models.logistic_regression`: Bayesian logistic regression, with the breast
  cancer data shipped by scikit-learn.
- :mod:`~vijax.models.numpyro_model`: any NumPyro model as a log joint on one unconstrained
  vector (NumPyro is optional: ``pip install 'vijax[numpyro]'``).
"""

from vijax.models.conjugate_gaussian import (
    ConjugateGaussian,
    conjugate_gaussian,
    simulate_conjugate_gaussian,
)
from vijax.models.logistic_regression import (
    LogisticRegression,
    load_breast_cancer,
    logistic_regression,
)
from vijax.models.numpyro_model import NumPyroLogJoint, from_numpyro

__all__ = ["ConjugateGaussian", "conjugate_gaussian", "simulate_conjugate_gaussian",
           "LogisticRegression", "logistic_regression", "load_breast_cancer",
           "NumPyroLogJoint", "from_numpyro"]
