"""Coordinate-ascent variational inference for the earthquake mixture model.

Specification: ``docs/MODEL.md`` section 1. The model and its block updates are pure
functions in :mod:`vijax.cavi.model`; :func:`fit` runs restarts in parallel under ``jit``;
:mod:`vijax.cavi.simulate` draws data from the model. Every public function checks its
arguments at its top (:mod:`vijax.cavi._validate`) and raises a ``ValueError`` that names
the argument, before anything is compiled.
"""

from vijax.cavi.fit import (
    FitResult,
    as_observations,
    as_prior,
    event_scores,
    fit,
    init,
    predict,
    predict_labels,
    shard_events,
)
from vijax.cavi.model import (
    EventTerms,
    Observations,
    Params,
    Prior,
    Statistics,
    assign_with_elbo,
    assignment_logits,
    elbo,
    event_terms,
    event_weights,
    global_terms,
    responsibilities,
    statistics,
    sweep,
    update_assignments,
    update_globals,
    update_locations,
    update_precisions,
    update_rates,
    update_weights,
)
from vijax.cavi.simulate import Truth, sample_events, simulate
from vijax.cavi.stochastic import (
    EVENT_DTYPE,
    SVIHistory,
    SVIInfo,
    SVIResult,
    SVIState,
    fit_stochastic,
    held_out_elbo,
    minibatches,
    stochastic_init,
    stochastic_step,
    stochastic_step_size,
    write_events,
)

__all__ = [
    "EventTerms", "FitResult", "Observations", "Params", "Prior", "Statistics", "Truth",
    "as_observations", "as_prior", "assign_with_elbo", "assignment_logits", "elbo",
    "event_scores", "event_terms", "event_weights", "fit",
    "global_terms", "init", "predict", "predict_labels", "responsibilities", "sample_events",
    "shard_events",
    "simulate", "statistics", "sweep", "update_assignments", "update_globals",
    "update_locations", "update_precisions", "update_rates", "update_weights",
    # stochastic VI (vijax.cavi.stochastic)
    "EVENT_DTYPE", "SVIHistory", "SVIInfo", "SVIResult", "SVIState", "fit_stochastic",
    "held_out_elbo", "minibatches", "stochastic_init", "stochastic_step",
    "stochastic_step_size", "write_events",
]
