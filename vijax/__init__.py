"""vijax: variational inference in JAX.

Capabilities, each a subpackage or module:

- :mod:`vijax.cavi`: coordinate-ascent VI for the earthquake mixture model.
- :mod:`vijax.samplers`: reparameterised samplers (Gaussian, exponential, Gumbel, Concrete,
  straight-through) taking explicit PRNG keys.
- :mod:`vijax.families`: variational families (mean-field and full-rank Gaussians, batched
  for amortised inference): sample, log_prob, entropy, KL.
- :mod:`vijax.estimators`: objectives (ELBO, IWAE) and gradient estimators for any model and
  family through one k-sample surrogate: total derivative, STL, DReG, the score function with
  moving-average and leave-one-out baselines, the score term as a control variate.
- :mod:`vijax.diagnostics`: per-sample gradients (vmap over keys), moments, SNR, per group.
- :mod:`vijax.vi`: ``init`` / ``step`` / ``fit`` for any model, estimator and Optax optimizer,
  with gradient diagnostics along the run.
- :mod:`vijax.models`: the conjugate Gaussian (closed forms), a Bayesian logistic regression,
  and NumPyro models as log joints.
- :mod:`vijax.vae`: a Flax VAE trained with Optax, a client of the estimator layer (its
  encoder an amortised family): sharded training, checkpoints, IWAE evaluation.
- :mod:`vijax.data`: embedded data sets and loaders (the Fiji catalogue, MNIST sources).
"""

__version__ = "0.1.0"
