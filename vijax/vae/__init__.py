"""A variational autoencoder on 28x28 images (``docs/MODEL.md`` section 2), in Flax and Optax.

One module per concern, as in Flax's examples: :mod:`~vijax.vae.models` (the networks),
:mod:`~vijax.vae.objectives` (the VAE as a client of :mod:`vijax.estimators`: its
amortised family and log joint, the training loss, the chunked importance-weighted bound),
:mod:`~vijax.vae.train` (``init``, ``train_step``, ``train_epoch``, ``fit`` with checkpoints)
and :mod:`~vijax.vae.evaluate` (test ELBO, IWAE NLL, pictures).
"""

from vijax.vae.evaluate import (
    iwae_nll,
    negative_elbo_dataset,
    plot_training_curve,
    reconstruction_grid,
    sample_grid,
    save_grid,
)
from vijax.vae.models import VAE, Decoder, Encoder, VAEConfig, matmul_flops
from vijax.vae.objectives import (
    bernoulli_log_likelihood,
    bound_gradient,
    elbo,
    iwae_bound,
    log_joint,
    loss,
    variational_params,
)
from vijax.vae.train import (
    COURSE_OBJECTIVE,
    FitResult,
    TrainState,
    fit,
    init,
    load_checkpoint,
    make_mesh,
    train_epoch,
    train_step,
)

__all__ = ["VAE", "VAEConfig", "Encoder", "Decoder", "elbo", "loss", "bound_gradient",
           "variational_params", "log_joint", "bernoulli_log_likelihood", "iwae_bound",
           "TrainState", "FitResult", "COURSE_OBJECTIVE", "init", "train_step", "train_epoch",
           "make_mesh", "fit", "load_checkpoint", "negative_elbo_dataset", "iwae_nll",
           "reconstruction_grid", "sample_grid", "save_grid", "plot_training_curve",
           "matmul_flops"]
