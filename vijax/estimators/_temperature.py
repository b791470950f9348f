"""Temperatures of the relaxation-based estimators: a constant, or Jang et al.'s schedule."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from vijax._checks import check_int, check_scalar
from vijax.samplers import anneal_temperature

__all__ = ["Anneal", "check_temperature", "temperature_at"]


@dataclasses.dataclass(frozen=True)
class Anneal:
    """``max(min_temperature, initial * exp(-rate * t))`` with ``t`` the step rounded down to a
    multiple of ``every`` (Jang, Gu, Poole 2017: ``rate`` in {1e-5, 1e-4}, every N steps, floor
    0.5). The estimator counts its steps in its state."""

    rate: float = 1e-4
    min_temperature: float = 0.5
    initial: float = 1.0
    every: int = 1000

    def __post_init__(self) -> None:
        check_scalar("rate", self.rate, minimum=0.0)
        check_scalar("min_temperature", self.min_temperature, minimum=0.0, strict=True)
        check_scalar("initial", self.initial, minimum=0.0, strict=True)
        check_int("every", self.every, minimum=1)


def check_temperature(temperature: Any) -> None:
    if not isinstance(temperature, Anneal):
        check_scalar("temperature", temperature, minimum=0.0, strict=True)


def temperature_at(temperature: Any, step: Any) -> Any:
    """The temperature at ``step`` (a traced step count for :class:`Anneal`)."""
    if isinstance(temperature, Anneal):
        return anneal_temperature(jnp.asarray(step, jnp.int32), temperature.rate,
                                  temperature.min_temperature, temperature.initial,
                                  temperature.every)
    return temperature
