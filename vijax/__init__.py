"""vijax: variational inference in JAX.

Capabilities, each a subpackage or module:

- :mod:`vijax.cavi`: coordinate-ascent VI for the earthquake mixture model.
- :mod:`vijax.samplers`: reparameterised samplers (Gaussian, exponential, Gumbel, Concrete,
  straight-through) taking explicit PRNG keys.
- :mod:`vijax.estimators`: ELBO gradient estimators (score function, reparameterisation,
  sticking the landing), per-sample gradients and their moments, a conjugate Gaussian model.
- :mod:`vijax.vae`: a Flax VAE trained with Optax: objectives (analytic/Monte-Carlo KL,
  sticking the landing, importance weighting), sharded training, checkpoints, evaluation.
- :mod:`vijax.data`: embedded data sets and loaders (the Fiji catalogue, MNIST sources).
"""

__version__ = "0.1.0"
