"""Flax modules of the VAE (``docs/MODEL.md`` section 2): an encoder, a Bernoulli decoder.

    (mu, log sigma^2) = f(x)          q(z|x) = N(mu, diag sigma^2)       (latent="gaussian")
    l = f(x)                          q(z|x) = Bernoulli(sigmoid(l))     (latent="bernoulli")
    l = f(x), (D, K)                  q(z|x) = Categorical(softmax(l))   (latent="categorical")
    logits = g(z)                     p(x_i|z) = Bernoulli(sigmoid(logits_i))

The discrete latents are those of Jang, Gu and Poole (2017): 200 Bernoulli units, or 20
ten-way categorical variables (one-hot, flattened into the decoder), each with a uniform prior.

The default :class:`VAEConfig` is the course's network: encoder 784-400-400 with
LeakyReLU(0.2) into a 200-d mean and a 200-d log-variance; decoder 200-400-400-784 giving
logits (the sigmoid is applied inside the likelihood, never explicitly).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vijax._checks import check_int, check_scalar

__all__ = ["VAEConfig", "Encoder", "Decoder", "VAE", "ACTIVATIONS", "LATENTS", "matmul_flops"]


def _leaky_relu(x: jax.Array, negative_slope: float) -> jax.Array:
    return jnp.where(x >= 0, x, negative_slope * x)


#: Latent kinds accepted by :class:`VAEConfig`.
LATENTS = ("gaussian", "bernoulli", "categorical")

#: Activation names accepted by :class:`VAEConfig`.
ACTIVATIONS: dict[str, Callable[[jax.Array, float], jax.Array]] = {
    "leaky_relu": _leaky_relu,
    "relu": lambda x, _: jax.nn.relu(x),
    "tanh": lambda x, _: jnp.tanh(x),
    "elu": lambda x, _: jax.nn.elu(x),
    "gelu": lambda x, _: jax.nn.gelu(x),
    "softplus": lambda x, _: jax.nn.softplus(x),
}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Sizes and activation of the VAE; the defaults are the course's network.

    Attributes:
        input_dim: pixels per image (784 for 28x28).
        hidden: widths of the hidden layers of the encoder; the decoder uses them reversed.
        latent_dim: ``D``, the size of ``z``.
        activation: a name in :data:`ACTIVATIONS`.
        negative_slope: slope of ``leaky_relu`` for negative inputs.
        latent: a kind in :data:`LATENTS`: Gaussian ``z`` (the course's), ``latent_dim``
            Bernoulli units, or ``latent_dim`` categorical variables of ``categories`` values.
        categories: ``K`` of the categorical latents (``>= 2``).
    """

    input_dim: int = 784
    hidden: tuple[int, ...] = (400, 400)
    latent_dim: int = 200
    activation: str = "leaky_relu"
    negative_slope: float = 0.2
    latent: str = "gaussian"
    categories: int = 10

    def __post_init__(self) -> None:
        check_int("VAEConfig.input_dim", self.input_dim, minimum=1)
        check_int("VAEConfig.latent_dim", self.latent_dim, minimum=1)
        if not isinstance(self.hidden, list | tuple):
            raise ValueError(f"VAEConfig.hidden must be a tuple of integers >= 1; "
                             f"got {self.hidden!r}")
        for i, h in enumerate(self.hidden):
            check_int(f"VAEConfig.hidden[{i}]", h, minimum=1)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"VAEConfig.activation must be one of {sorted(ACTIVATIONS)}; "
                             f"got {self.activation!r}")
        check_scalar("VAEConfig.negative_slope", self.negative_slope)
        if self.latent not in LATENTS:
            raise ValueError(f"VAEConfig.latent must be one of {LATENTS}; got {self.latent!r}")
        check_int("VAEConfig.categories", self.categories, minimum=2)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one latent ``z``: ``(D,)``, or ``(D, K)`` for categorical latents."""
        if self.latent == "categorical":
            return (self.latent_dim, self.categories)
        return (self.latent_dim,)

    def act(self, x: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.activation](x, self.negative_slope)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        return cls(**{**d, "hidden": tuple(d["hidden"])})


class Encoder(nn.Module):
    """``x (B, input_dim) -> (mean (B, D), log_var (B, D))``, or the logits ``(B, D)`` /
    ``(B, D, K)`` of discrete latents."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array] | jax.Array:
        c = self.config
        h = x
        for i, width in enumerate(c.hidden):
            h = c.act(nn.Dense(width, name=f"hidden_{i}")(h))
        if c.latent == "gaussian":
            mean = nn.Dense(c.latent_dim, name="mean")(h)
            log_var = nn.Dense(c.latent_dim, name="log_var")(h)
            return mean, log_var
        logits = nn.Dense(math.prod(c.latent_shape), name="logits")(h)
        return logits.reshape(logits.shape[:-1] + c.latent_shape)


class Decoder(nn.Module):
    """``z (..., D) -> logits (..., input_dim)`` of the Bernoulli pixels."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = z.reshape(z.shape[:-2] + (-1,)) if self.config.latent == "categorical" else z
        for i, width in enumerate(reversed(self.config.hidden)):
            h = self.config.act(nn.Dense(width, name=f"hidden_{i}")(h))
        return nn.Dense(self.config.input_dim, name="logits")(h)


class VAE(nn.Module):
    """Encoder and decoder together. Parameters: ``{"encoder": ..., "decoder": ...}``.

    ``model.apply({"params": p}, x, method="encode")`` gives ``(mean, log_var)`` (or the
    logits of discrete latents); ``model.apply({"params": p}, z, method="decode")`` gives the
    pixels' logits.
    """

    config: VAEConfig = VAEConfig()

    def setup(self) -> None:
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def __call__(self, x: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The encoder's output for ``x`` and the decoder's for ``z`` (used to initialise)."""
        return self.encode(x), self.decode(z)

    def init_params(self, key: jax.Array) -> dict:
        """Fresh parameters (Flax's default initialisers), as a plain ``dict``."""
        c = self.config
        x = jnp.zeros((1, c.input_dim), jnp.float32)
        z = jnp.zeros((1, *c.latent_shape), jnp.float32)
        return dict(self.init(key, x, z)["params"])


def matmul_flops(config: VAEConfig) -> dict[str, int]:
    """Floating-point operations of the matrix products, per image (2 per multiply-add).

    Returns:
        ``encoder`` and ``decoder`` (one forward pass each), ``train_step`` (forward and
        backward of the one-sample loss: three times the forward, less the gradient with
        respect to the input image, which is never formed) and ``iwae_sample`` (one decoder
        pass per importance sample). Biases, activations and the optimiser are not counted.
    """
    widths = (config.input_dim, *config.hidden)
    encoder = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    latent_size = math.prod(config.latent_shape)
    heads = 2 * config.latent_dim if config.latent == "gaussian" else latent_size
    encoder += widths[-1] * heads
    dec_widths = (latent_size, *reversed(config.hidden), config.input_dim)
    decoder = sum(a * b for a, b in zip(dec_widths[:-1], dec_widths[1:], strict=True))
    first = config.input_dim * (config.hidden[0] if config.hidden else heads)
    return {"encoder": 2 * encoder, "decoder": 2 * decoder,
            "train_step": 6 * (encoder + decoder) - 2 * first, "iwae_sample": 2 * decoder}
