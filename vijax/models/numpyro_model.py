"""A NumPyro model as a log joint on one flat unconstrained vector.

A variational family in vijax lives on ``R^D``; a NumPyro model has named sites with
constrained supports (a scale > 0, a simplex, ...). :func:`from_numpyro` bridges the two with
NumPyro's own machinery (``numpyro.infer.util.initialize_model``, what its HMC uses): each latent
site ``theta_i`` is written ``theta_i = T_i(u_i)`` with ``T_i = biject_to(support_i)``, the
unconstrained values are flattened into one vector ``z = ravel(u)`` (``jax.flatten_util``, sites
in sorted name order), and

    log_joint(z) = log p(x, T(u)) + sum_i log |det J_{T_i}(u_i)|,    u = unravel(z),

the model's log joint in unconstrained space, Jacobians included; it is ``-potential_fn(u)`` of
NumPyro. A Gaussian ``q(z)`` fitted to it is a Gaussian in the unconstrained space; push its
samples through ``constrain`` to read them as model values.

Observed sites are conditioned as usual in NumPyro, through the model's arguments
(``numpyro.sample("y", ..., obs=y)``). Discrete latent sites are handled as NumPyro's HMC
handles them: summed out by enumeration, which needs the ``funsor`` package.

NumPyro is an optional dependency (``pip install numpyro`` or ``pip install vijax[numpyro]``);
it is imported when :func:`from_numpyro` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from vijax._checks import check_key, check_shape

Array = jax.Array

__all__ = ["NumPyroLogJoint", "from_numpyro"]


class NumPyroLogJoint(NamedTuple):
    """A NumPyro model seen as a log density on ``R^D``, with the maps back to its sites.

    Attributes:
      log_joint: ``z`` of shape ``(D,)`` -> the scalar ``log p(x, T(u)) + log |det J_T(u)|``
        with ``u = unravel(z)``. Works under ``jax.jit``, ``jax.grad`` and ``jax.vmap``; it is
        one function object, so ``jax.jit(log_joint)`` compiles once per input shape.
      init_z: an initial unconstrained point, shape ``(D,)``, a float dtype: NumPyro's
        ``init_to_uniform`` draw (each unconstrained value uniform in ``(-2, 2)``), checked by
        NumPyro to give a finite log joint and gradient.
      unravel: ``z`` of shape ``(D,)`` -> the dict of unconstrained values of the latent sites,
        each of its site's unconstrained shape.
      constrain: ``z`` of shape ``(D,)`` -> the dict of latent sample sites in their support
        (``T(unravel(z))``), keyed by site name.
    """

    log_joint: Callable[[Array], Array]
    init_z: Array
    unravel: Callable[[Array], dict[str, Array]]
    constrain: Callable[[Array], dict[str, Array]]


def from_numpyro(key: Any, model: Callable[..., Any], /, *model_args: Any,
                 **model_kwargs: Any) -> NumPyroLogJoint:
    """Turns a NumPyro model into a log joint on one flat unconstrained vector.

    Calls ``numpyro.infer.util.initialize_model(key, model, model_args=model_args,
    model_kwargs=model_kwargs)``. Its ``potential_fn(u) = -[log p(x, T(u)) + log |det J_T(u)|]``
    gives ``log_joint(z) = -potential_fn(unravel(z))``; its initial unconstrained point
    ``param_info.z`` gives ``init_z`` and ``unravel`` (``jax.flatten_util.ravel_pytree``); its
    ``postprocess_fn`` gives ``constrain``, restricted to the latent sample sites.

    Args:
      key: a JAX PRNG key (``jax.random.key(seed)`` or ``jax.random.PRNGKey(seed)``), used to
        trace the model and draw ``init_z``.
      model: a callable holding NumPyro primitives, with at least one latent (unobserved)
        continuous sample site. Positional-only, like ``key``, so ``model_kwargs`` may use any
        names.
      *model_args: positional arguments of ``model`` (the data, observed values).
      **model_kwargs: keyword arguments of ``model``.

    Returns:
      A :class:`NumPyroLogJoint` ``(log_joint, init_z, unravel, constrain)``.

    Raises:
      ValueError: naming ``key`` when it is no PRNG key; naming ``model`` when it is not
        callable or has no continuous latent sample site.
      ImportError: when NumPyro is not installed.
    """
    check_key("key", key)
    if not callable(model):
        raise ValueError(f"model must be a callable holding NumPyro primitives; "
                         f"got {type(model).__name__}")
    try:
        from numpyro.infer.util import initialize_model
    except ImportError as e:
        raise ImportError("from_numpyro needs NumPyro, an optional dependency of vijax: "
                          "pip install numpyro (or pip install 'vijax[numpyro]')") from e

    info = initialize_model(key, model, model_args=model_args, model_kwargs=model_kwargs)
    init_params = info.param_info.z
    if not init_params:
        raise ValueError(f"model {getattr(model, '__name__', model)!r} has no continuous latent "
                         "sample site, so there is nothing to infer; every numpyro.sample site "
                         "is observed (obs=...) or discrete and enumerated")
    init_z, unravel = ravel_pytree(init_params)
    potential_fn = info.potential_fn
    postprocess_fn = info.postprocess_fn
    latent_names = tuple(init_params)
    size = init_z.shape[0]

    def log_joint(z: Array) -> Array:
        check_shape("z", z, (size,))
        return -potential_fn(unravel(z))

    def constrain(z: Array) -> dict[str, Array]:
        check_shape("z", z, (size,))
        values = postprocess_fn(unravel(z))
        return {name: values[name] for name in latent_names}

    return NumPyroLogJoint(log_joint=log_joint, init_z=jnp.asarray(init_z), unravel=unravel,
                           constrain=constrain)
