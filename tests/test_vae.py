"""Tests of vijax.vae: the maths of the objectives, training, resume, sharding, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import no_compilation
from scipy import stats

from vijax import estimators as E
from vijax.data.mnist import binarize, load_mnist
from vijax.vae import (
    VAE,
    VAEConfig,
    bernoulli_log_likelihood,
    elbo,
    fit,
    init,
    iwae_bound,
    iwae_nll,
    load_checkpoint,
    loss,
    matmul_flops,
    negative_elbo_dataset,
    plot_training_curve,
    reconstruction_grid,
    sample_grid,
    save_grid,
    train_epoch,
    train_step,
)
from vijax.vae.objectives import log_weights, variational_params
from vijax.vae.train import _batch_order

TINY = VAEConfig(hidden=(32,), latent_dim=4)
MODEL = VAE(TINY)
ADAM = optax.adam(1e-3)  # one object: compiled epochs are shared between tests


def negative_elbo(key, model, params, x, objective=E.ELBO(kl="analytic"), estimator=E.Reparam()):
    return loss(key, model, params, x, objective=objective, estimator=estimator)[0]


@pytest.fixture(scope="module")
def data():
    return load_mnist("mnist5k")


@pytest.fixture(scope="module")
def params():
    return MODEL.init_params(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def batch(data):
    return jnp.asarray(np.round(data.test_images[:8]))


_elbo = jax.jit(elbo, static_argnames=("model", "kl"))
_iwae = jax.jit(iwae_bound, static_argnames=("model", "num_samples", "chunk_size"))


def test_default_config_is_the_course_network():
    shapes = jax.eval_shape(VAE().init_params, jax.random.PRNGKey(0))
    enc, dec = shapes["encoder"], shapes["decoder"]
    assert [enc[n]["kernel"].shape for n in ("hidden_0", "hidden_1", "mean", "log_var")] == [
        (784, 400), (400, 400), (400, 200), (400, 200)]
    assert [dec[n]["kernel"].shape for n in ("hidden_0", "hidden_1", "logits")] == [
        (200, 400), (400, 400), (400, 784)]
    x = jnp.array([-1.0, 2.0])
    np.testing.assert_allclose(VAEConfig().act(x), [-0.2, 2.0])


def test_matmul_flops_by_hand():
    flops = matmul_flops(VAEConfig())
    encoder = 784 * 400 + 400 * 400 + 2 * 400 * 200
    decoder = 200 * 400 + 400 * 400 + 400 * 784
    assert flops["encoder"] == 2 * encoder and flops["decoder"] == 2 * decoder
    # Forward, then backward: weight gradients and input gradients, except for the image.
    assert flops["train_step"] == 2 * (encoder + decoder) * 3 - 2 * 784 * 400
    assert flops["iwae_sample"] == 2 * decoder


def test_bernoulli_log_likelihood_is_stable_and_exact():
    logits = jnp.array([[-3.0, 0.0, 2.5, 100.0, -100.0]])
    x = jnp.array([[0.0, 1.0, 1.0, 0.0, 0.0]])
    expected = -optax.sigmoid_binary_cross_entropy(logits, x).sum(-1)
    np.testing.assert_allclose(bernoulli_log_likelihood(logits, x), expected, rtol=1e-6)
    # log p(x=0 | logit=100) = -100 exactly; log(sigmoid + 1e-8) would give about -18.4.
    np.testing.assert_allclose(bernoulli_log_likelihood(jnp.array([100.0]), jnp.array([0.0])),
                               -100.0, rtol=1e-6)


def test_encoder_family_is_the_course_gaussian(params, batch):
    """q(z|x) = N(mean, exp(log_var)): the family's density and KL from the encoder's output."""
    mean, log_var = MODEL.apply({"params": params}, batch, method="encode")
    q = variational_params(MODEL, params, batch)
    z = np.asarray(mean + jnp.exp(0.5 * log_var), np.float64)
    want = stats.norm.logpdf(z, np.asarray(mean), np.exp(np.asarray(log_var) / 2)).sum(-1)
    from vijax.vae.objectives import FAMILY

    np.testing.assert_allclose(FAMILY.log_prob(q, jnp.asarray(z, jnp.float32)), want, rtol=1e-5)
    kl = 0.5 * np.sum(np.exp(log_var) + np.square(mean) - 1 - log_var, -1)
    np.testing.assert_allclose(FAMILY.kl_to_standard_normal(q), kl, rtol=1e-5)


def test_mc_elbo_has_the_analytic_expectation_and_stl_its_value(params, batch):
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    analytic = jax.vmap(lambda k: _elbo(k, MODEL, params, batch, "analytic"))(keys)
    mc = jax.vmap(lambda k: _elbo(k, MODEL, params, batch, "mc"))(keys)
    stl = jax.vmap(lambda k: loss(k, MODEL, params, batch, objective=E.ELBO(),
                                   estimator=E.STL())[1][0])(keys)
    np.testing.assert_allclose(stl, mc.mean(1), rtol=1e-5)  # STL changes gradients, not values
    # Same eps: mc - analytic = log p(z) - log q(z|x) + KL, which has mean zero.
    diff = np.asarray(mc - analytic, np.float64)
    se = diff.std(0) / np.sqrt(len(keys))
    assert np.all(np.abs(diff.mean(0)) < 5 * se), (diff.mean(0), se)


def test_stl_gradient_is_the_total_gradient_minus_the_score(params, batch):
    key = jax.random.PRNGKey(2)

    def score_term(p):  # -E log q_phi(z) with z held fixed: the term STL drops
        mean, log_var = MODEL.apply({"params": p}, batch, method="encode")
        sg_mean, sg_log_var = jax.lax.stop_gradient((mean, log_var))
        eps = jax.random.normal(key, mean.shape)
        z = jax.lax.stop_gradient(sg_mean + jnp.exp(0.5 * sg_log_var) * eps)
        log_q = -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + log_var
                               + (z - mean) ** 2 * jnp.exp(-log_var), -1)
        return jnp.mean(log_q)

    g_mc = jax.grad(lambda p: negative_elbo(key, MODEL, p, batch, E.ELBO()))(params)
    g_stl = jax.grad(lambda p: negative_elbo(key, MODEL, p, batch, E.ELBO(), E.STL()))(params)
    g_score = jax.grad(score_term)(params)
    for a, b, c in zip(jax.tree.leaves(g_mc), jax.tree.leaves(g_stl), jax.tree.leaves(g_score),
                       strict=True):
        np.testing.assert_allclose(a, b + c, rtol=1e-4, atol=1e-4)
    enc_diff = max(float(jnp.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(g_mc["encoder"]), jax.tree.leaves(g_stl["encoder"]), strict=True))
    assert enc_diff > 1e-3  # the score term is not zero for one sample
    for a, b in zip(jax.tree.leaves(g_mc["decoder"]), jax.tree.leaves(g_stl["decoder"]),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_iwae_chunks_compute_the_log_mean_exp(params, batch):
    key = jax.random.PRNGKey(3)
    q = variational_params(MODEL, params, batch)
    k, c = 10, 4  # chunks of 4, 4 and 2 (the last one masked)
    keys = jax.random.split(key, 3)
    lw = jnp.concatenate([log_weights(kk, MODEL, params, batch, q, c) for kk in keys])[:k]
    expected = jax.scipy.special.logsumexp(lw, axis=0) - np.log(k)
    np.testing.assert_allclose(_iwae(key, MODEL, params, batch, k, c), expected, rtol=1e-5)


def test_iwae_increases_with_k_and_equals_the_elbo_at_k1(params, batch):
    repeats = 400
    keys = jax.random.split(jax.random.PRNGKey(4), repeats)
    means, ses = {}, {}
    for k in (1, 10, 100):
        b = np.asarray(jax.vmap(lambda kk, k=k: _iwae(kk, MODEL, params, batch, k, 50))(keys),
                       np.float64).mean(1)  # average over the batch: one number per repeat
        means[k], ses[k] = b.mean(), b.std() / np.sqrt(repeats)
    analytic = np.asarray(jax.vmap(lambda kk: _elbo(kk, MODEL, params, batch, "analytic"))(
        jax.random.split(jax.random.PRNGKey(5), repeats)), np.float64).mean(1)
    se = np.hypot(ses[1], analytic.std() / np.sqrt(repeats))
    assert abs(means[1] - analytic.mean()) < 5 * se
    assert means[10] - means[1] > 5 * np.hypot(ses[1], ses[10])
    assert means[100] - means[10] > 5 * np.hypot(ses[10], ses[100])


def test_a_gradient_step_lowers_the_loss_on_a_fixed_batch(params, batch):
    optimizer = ADAM
    state = init(jax.random.PRNGKey(6), MODEL, optimizer)
    step_key = jax.random.split(state.key)[1]  # the key train_step uses for eps
    before = negative_elbo(step_key, MODEL, state.params, batch)
    state, loss = train_step(state, batch, model=MODEL, optimizer=optimizer)
    after = negative_elbo(step_key, MODEL, state.params, batch)
    np.testing.assert_allclose(loss, before, rtol=1e-5)
    assert float(after) < float(before) - 1e-3
    assert int(state.step) == 1


def test_resume_is_exact_and_nonfinite_loss_keeps_the_last_checkpoint(data, tmp_path):
    x = data.train_images[:400]
    kwargs = {"config": TINY, "batch_size": 50, "progress": False, "optimizer": ADAM}
    fit(jax.random.PRNGKey(7), x, epochs=2, workdir=tmp_path / "run", **kwargs)
    resumed = fit(jax.random.PRNGKey(7), x, epochs=4, workdir=tmp_path / "run", resume=True,
                  **kwargs)
    straight = fit(jax.random.PRNGKey(7), x, epochs=4, **kwargs)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(straight.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"]
                                                          for h in straight.history]
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    # A learning rate that blows up: the error names epoch and step; epoch 4 stays loadable.
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at epoch 5, step \d+ of 8"
                       r".*last good checkpoint \(epoch 4\)"):
        fit(jax.random.PRNGKey(7), x, epochs=6, workdir=tmp_path / "run", resume=True,
            **{**kwargs, "optimizer": optax.adam(1e9)})
    # a changed setting is refused, naming it
    with pytest.raises(ValueError, match=r"trained with objective=.*kl='analytic'.*; resuming "
                                         r"with objective=.*kl='mc'"):
        fit(jax.random.PRNGKey(7), x, epochs=6, workdir=tmp_path / "run", resume=True,
            objective=E.ELBO(), estimator=E.STL(), **kwargs)
    with pytest.raises(ValueError,
                       match=r"trained with batch_size=50; resuming with batch_size=40"):
        fit(jax.random.PRNGKey(7), x, epochs=6, workdir=tmp_path / "run", resume=True,
            **{**kwargs, "batch_size": 40})
    state, model = load_checkpoint(tmp_path / "run", ADAM)
    assert int(state.epoch) == 4 and model.config == TINY
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(straight.state.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_dynamic_binarization_and_stl_train(data):
    x = data.train_images[:400]
    result = fit(jax.random.PRNGKey(11), x, config=TINY, epochs=3, batch_size=50,
                 optimizer=ADAM, objective=E.ELBO(), estimator=E.STL(),
                 binarization="dynamic", progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 20


def test_training_beats_the_mean_image_baseline(data):
    train, test = data.train_images, np.round(data.test_images)
    p = np.clip(np.round(train).mean(0), 1e-3, 1 - 1e-3)
    baseline = -np.mean((test * np.log(p) + (1 - test) * np.log1p(-p)).sum(1))
    result = fit(jax.random.PRNGKey(8), train, config=VAEConfig(hidden=(128,), latent_dim=16),
                 optimizer=ADAM, epochs=8, progress=False)
    model, params = result.model, result.state.params
    test_neg_elbo = negative_elbo_dataset(jax.random.PRNGKey(9), model, params, test)
    nll = iwae_nll(jax.random.PRNGKey(10), model, params, test[:200], 50, chunk_size=25)
    # -ELBO bounds the NLL from above; both must beat the baseline by a wide margin.
    assert test_neg_elbo < baseline - 50, (test_neg_elbo, baseline)
    assert np.mean(nll) < test_neg_elbo + 1.0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] - 50


def test_pictures(data, params, tmp_path):
    grid = reconstruction_grid(MODEL, params, data.test_images, columns=6)
    assert grid.shape == (56, 168) and 0 <= grid.min() and grid.max() <= 1
    np.testing.assert_array_equal(grid[:28, :28], data.test_images[0].reshape(28, 28))
    samples = sample_grid(jax.random.PRNGKey(0), MODEL, params, rows=2, columns=3)
    assert samples.shape == (56, 84)
    assert save_grid(grid, tmp_path / "g.png").stat().st_size > 100
    history = [{"epoch": 1, "train_loss": 3.0, "test_loss": 3.5},
               {"epoch": 2, "train_loss": 2.0, "test_loss": 2.5}]
    assert plot_training_curve(history, tmp_path / "c.png").stat().st_size > 100


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"train_images": np.zeros((10, 783), np.float32)}, r"train_images must have shape"),
    ({"train_images": np.zeros((10, 784), np.uint8)}, r"floating-point pixels.*uint8"),
    ({"train_images": np.full((10, 784), 255.0, np.float32)}, r"values in \[0, 1\]"),
    ({"train_images": np.full((10, 784), np.nan, np.float32)}, r"values in \[0, 1\]"),
    ({"batch_size": 11}, r"batch_size must be <= the number of training images \(10\)"),
    ({"optimizer": 1e-3}, r"optimizer must be an optax.GradientTransformation"),
    ({"epochs": 0}, r"epochs must be >= 1"),
    ({"estimator": "reinforce"}, r"estimators are objects now"),
    ({"estimator": E.DReG()}, r"DReG\(\) applies to objective IWAE"),
    ({"objective": E.ELBO(kl="analytic"), "estimator": E.STL()}, r"needs log q at the samples"),
    ({"binarization": "threshold"}, r"binarization must be one of"),
    ({"resume": True}, r"resume=True needs a workdir"),
])
def test_bad_input_fails_before_training(kwargs, message):
    args = {"train_images": np.full((10, 784), 0.5, np.float32), "config": TINY,
            "batch_size": 5, "progress": False, "optimizer": ADAM, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit(jax.random.PRNGKey(0), **args)


def test_incompatible_checkpoint_folders(tmp_path):
    x = np.full((20, 784), 0.5, np.float32)
    fit(jax.random.PRNGKey(0), x, optimizer=ADAM, config=TINY, epochs=1, batch_size=10,
        workdir=tmp_path / "a",
        progress=False)
    other = VAEConfig(hidden=(16,), latent_dim=4)
    with pytest.raises(ValueError, match="incompatible model"):
        fit(jax.random.PRNGKey(0), x, optimizer=ADAM, config=other, epochs=2, batch_size=10,
            workdir=tmp_path / "a", resume=True, progress=False)
    with pytest.raises(ValueError, match="already holds a training run"):
        fit(jax.random.PRNGKey(0), x, optimizer=ADAM, config=TINY, epochs=2, batch_size=10,
            workdir=tmp_path / "a", progress=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a vijax VAE checkpoint folder"):
        fit(jax.random.PRNGKey(0), x, optimizer=ADAM, config=TINY, epochs=1, batch_size=10,
            workdir=tmp_path / "b", progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "vijax_vae.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        fit(jax.random.PRNGKey(0), x, optimizer=ADAM, config=TINY, epochs=1, batch_size=10,
            workdir=tmp_path / "c", resume=True, progress=False)
    done = fit(jax.random.PRNGKey(0), x, optimizer=ADAM, config=TINY, epochs=1, batch_size=10,
               workdir=tmp_path / "a", resume=True, progress=False)
    assert int(done.state.epoch) == 1 and len(done.history) == 1  # nothing left to train


_orders = jax.vmap(_batch_order, in_axes=(0, None, None, None))  # eager: small, few calls


def _global_orders(epochs, batch_size, shards, images):
    """``(epochs, n_batches, B)`` global image indices of each epoch's batches."""
    keys = jax.random.split(jax.random.PRNGKey(0), epochs)
    local = np.asarray(_orders(keys, batch_size, shards, images // shards))
    assert local.min() >= 0 and local.max() < images // shards
    return local + np.arange(batch_size) // (batch_size // shards) * (images // shards)


@pytest.mark.parametrize("shards", [1, 2])
def test_the_shuffle_uses_every_image_equally_often_and_once_at_most_per_epoch(shards):
    # N = 1000, B = 64: 15 batches, 40 images left out of each epoch (20 of each of 2 shards).
    epochs, n, b = 200, 1000, 64
    order = _global_orders(epochs, b, shards, n)
    assert order.shape == (epochs, n // b, b)
    flat = np.sort(order.reshape(epochs, -1), axis=1)
    assert np.all(np.diff(flat, axis=1) > 0)  # distinct images within each epoch
    assert len(np.unique(order[:5])) == n  # every image within 5 epochs
    # Each image is used in an epoch with probability 960 / 1000: binomial counts.
    counts = np.bincount(order.ravel(), minlength=n)
    mean, sd = epochs * 0.96, np.sqrt(epochs * 0.96 * 0.04)
    assert np.all(np.abs(counts - mean) < 6 * sd), (counts.min(), counts.max())


def test_the_shuffle_does_not_depend_on_the_device_count_when_the_batch_divides_n():
    # N = 512, B = 64: no image left out, the same batches on 1, 2 and 8 devices.
    one = _global_orders(3, 64, 1, 512)
    for shards in (2, 8):
        np.testing.assert_array_equal(_global_orders(3, 64, shards, 512), one)


_SHARDED = textwrap.dedent("""
    import json, jax, numpy as np, optax
    from vijax.vae import VAEConfig, fit
    x = np.random.default_rng(0).uniform(size=(512, 784)).astype(np.float32)
    out = {"devices": len(jax.devices())}
    for n in (1, 8):
        r = fit(jax.random.PRNGKey(0), x, config=VAEConfig(hidden=(32,), latent_dim=4),
                optimizer=optax.adam(1e-3),
                epochs=2, batch_size=64, progress=False, devices=jax.devices()[:n])
        leaf = jax.tree.leaves(r.state.params)[0]
        out[n] = {"losses": [h["train_loss"] for h in r.history],
                  "mesh": len(leaf.sharding.device_set),
                  "replicated": bool(leaf.sharding.is_fully_replicated)}
    print(json.dumps(out))
""")


def test_sharded_training_equals_unsharded():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    assert out["8"]["mesh"] == 8 and out["8"]["replicated"] and out["1"]["mesh"] == 1
    np.testing.assert_allclose(out["8"]["losses"], out["1"]["losses"], rtol=1e-4)


# ------------------------------------------------------ checks at the other public entries


K0 = jax.random.PRNGKey(0)
KEYS = jax.random.split(K0, 3)
GOOD = np.full((4, 784), 0.5, np.float32)
WIDE = np.full((4, 785), 0.5, np.float32)
GREY = np.full((4, 784), 255.0, np.float32)

#: (public function, call with one bad argument, the argument the message must name)
BAD_CALLS = [
    ("elbo", lambda p, s: elbo(K0, MODEL, p, np.ones((2, 5), np.float32)), r"x must have shape"),
    ("elbo", lambda p, s: elbo(K0, MODEL, p, np.ones((2, 784), np.uint8)), r"x must hold floa"),
    ("elbo", lambda p, s: elbo(K0, MODEL, p, GREY), r"x must hold pixels in \[0, 1\]"),
    ("elbo", lambda p, s: elbo(K0, MODEL, p, GOOD, kl="exact"), r"kl must be one of"),
    ("elbo", lambda p, s: elbo(KEYS, MODEL, p, GOOD), r"key must be a single"),
    ("elbo", lambda p, s: elbo(K0, "VAE", p, GOOD), r"model must be a vijax.vae.VAE"),
    ("loss", lambda p, s: loss(42, MODEL, p, GOOD), r"key must be"),
    ("loss", lambda p, s: loss(K0, MODEL, p, WIDE), r"x must have shape"),
    ("loss", lambda p, s: loss(K0, MODEL, p, GOOD, estimator="stl"), r"estimator"),
    ("loss", lambda p, s: loss(K0, MODEL, p, GOOD, estimator=E.STL()), r"needs log q at the"),
    ("loss", lambda p, s: loss(K0, MODEL, p, GOOD, objective=E.ELBO(2), estimator=E.DReG()),
     r"DReG\(\) applies to objective IWAE"),
    ("loss", lambda p, s: loss(K0, MODEL, p, GOOD, objective=E.ELBO(2),
                               estimator=E.Score(E.MovingAverage())), r"carries a state"),
    ("train_step", lambda p, s: train_step(s, GOOD, model=MODEL, optimizer=ADAM,
                                           objective=E.ELBO(2),
                                           estimator=E.Score(E.MovingAverage())),
     r"state.estimator_state does not belong"),
    ("iwae_bound", lambda p, s: iwae_bound(K0, MODEL, p, np.ones(4, np.float32), 3), r"x must"),
    ("iwae_bound", lambda p, s: iwae_bound(K0, MODEL, p, GOOD, 2.5), r"num_samples must be an"),
    ("iwae_bound", lambda p, s: iwae_bound(K0, MODEL, p, GOOD, 4, 0), r"chunk_size must be >="),
    ("init", lambda p, s: init(K0, "VAE", ADAM), r"model must be a vijax.vae.VAE"),
    ("init", lambda p, s: init(K0, MODEL, "adam"), r"optimizer must be an optax"),
    ("init", lambda p, s: init(KEYS, MODEL, ADAM), r"key must be a single"),
    ("init", lambda p, s: init(K0, MODEL, ADAM, estimator="stl"), r"estimator must be"),
    ("train_step", lambda p, s: train_step(s, WIDE, model=MODEL, optimizer=ADAM),
     r"x must have shape"),
    ("train_step", lambda p, s: train_step(p, GOOD, model=MODEL, optimizer=ADAM),
     r"state must be a vijax.vae.TrainState"),
    ("train_step", lambda p, s: train_step(s, GOOD, model=MODEL, optimizer=ADAM,
                                           estimator=E.DReG()), r"DReG\(\) applies"),
    ("train_epoch", lambda p, s: train_epoch(s, GOOD, model=MODEL, optimizer=ADAM,
                                             batch_size=0), r"batch_size must be in \[1, 4\]"),
    ("train_epoch", lambda p, s: train_epoch(s, GOOD, model=MODEL, optimizer=ADAM,
                                             batch_size=5), r"batch_size must be in \[1, 4\]"),
    ("train_epoch", lambda p, s: train_epoch(s, WIDE, model=MODEL, optimizer=ADAM),
     r"images must have shape"),
    ("train_epoch", lambda p, s: train_epoch(s, GOOD, model=MODEL, optimizer=ADAM, batch_size=2,
                                             mesh="cpu"), r"mesh must be a jax.sharding.Mesh"),
    ("fit", lambda p, s: fit(K0, GOOD, optimizer=ADAM, config=TINY, batch_size=2, devices=[],
                             progress=False), r"devices must be a non-empty list"),
    ("fit", lambda p, s: fit(K0, GOOD, optimizer=ADAM, config="tiny"), r"config must be"),
    ("negative_elbo_dataset", lambda p, s: negative_elbo_dataset(K0, MODEL, p, GREY),
     r"images must have pixel values in \[0, 1\]"),
    ("negative_elbo_dataset", lambda p, s: negative_elbo_dataset(K0, MODEL, p, GOOD, kl="x"),
     r"kl must be one of"),
    ("iwae_nll", lambda p, s: iwae_nll(K0, MODEL, p, GOOD, 0), r"num_samples must be >= 1"),
    ("iwae_nll", lambda p, s: iwae_nll(K0, None, p, GOOD), r"model must be a vijax.vae.VAE"),
    ("reconstruction_grid", lambda p, s: reconstruction_grid(MODEL, p, np.ones((2, 5),
                                                                               np.float32)),
     r"images must have"),
    ("reconstruction_grid", lambda p, s: reconstruction_grid(MODEL, p, GOOD, columns=0),
     r"columns must be >= 1"),
    ("sample_grid", lambda p, s: sample_grid(K0, MODEL, p, rows=0), r"rows must be >= 1"),
    ("sample_grid", lambda p, s: sample_grid(KEYS, MODEL, p), r"key must be a single"),
    ("save_grid", lambda p, s: save_grid(np.ones(10), "/tmp/x.png"), r"grid must have shape"),
    ("save_grid", lambda p, s: save_grid(np.full((2, 2), np.nan), "/tmp/x.png"),
     r"grid must be finite"),
    ("plot_training_curve", lambda p, s: plot_training_curve([], "/tmp/x.png"),
     r"history must be a non-empty list"),
    ("load_checkpoint", lambda p, s: load_checkpoint("/nonexistent", ADAM),
     r"workdir /nonexistent holds no"),
    ("load_checkpoint", lambda p, s: load_checkpoint("/tmp", ADAM, epoch=-1),
     r"epoch must be >= 0"),
    ("VAEConfig", lambda p, s: VAEConfig(negative_slope=float("nan")),
     r"VAEConfig.negative_slope must be finite"),
    ("VAEConfig", lambda p, s: VAEConfig(hidden=(32, 0)), r"VAEConfig.hidden\[1\] must be >="),
    ("VAEConfig", lambda p, s: VAEConfig(latent_dim=2.0), r"VAEConfig.latent_dim must be an"),
    ("VAEConfig", lambda p, s: VAEConfig(activation="swish"), r"VAEConfig.activation must be"),
    ("binarize", lambda p, s: binarize(np.full((2, 784), 255.0)), r"grey levels in \[0, 1\]"),
]


@pytest.fixture(scope="module")
def state(params):
    return init(jax.random.PRNGKey(0), MODEL, ADAM)


@pytest.mark.parametrize(("name", "call", "match"), BAD_CALLS,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_CALLS)])
def test_public_vae_functions_reject_bad_input_before_any_work(params, state, name, call,
                                                               match):
    with no_compilation(), pytest.raises(ValueError, match=match):
        call(params, state)


def test_iwae_bound_keeps_the_parameters_precision_under_x64(batch):
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                           MODEL.init_params(jax.random.PRNGKey(0)))
        bound = iwae_bound(jax.random.PRNGKey(1), MODEL, p64, jnp.asarray(batch[:4], jnp.float32),
                           3)
        assert bound.dtype == jnp.float64 and np.all(np.isfinite(bound))
