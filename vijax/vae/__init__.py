"""A variational autoencoder on 28x28 images (``docs/MODEL.md`` section 2), in Flax and Optax.

One module per concern, as in Flax's examples: :mod:`~vijax.vae.models` (the networks),
:mod:`~vijax.vae.objectives` (ELBOs and the importance-weighted bound),
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
    elbo,
    gaussian_kl,
    iwae_bound,
    negative_elbo,
)
from vijax.vae.train import (
    FitResult,
    TrainState,
    adam,
    fit,
    init,
    load_checkpoint,
    make_mesh,
    train_epoch,
    train_step,
)

__all__ = ["VAE", "VAEConfig", "Encoder", "Decoder", "elbo", "negative_elbo", "gaussian_kl",
           "bernoulli_log_likelihood", "iwae_bound", "TrainState", "FitResult", "adam", "init",
           "train_step", "train_epoch", "make_mesh", "fit", "load_checkpoint",
           "negative_elbo_dataset", "iwae_nll", "reconstruction_grid", "sample_grid",
           "save_grid", "plot_training_curve", "matmul_flops"]
