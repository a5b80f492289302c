"""S^2-DHCN against a NumPy transcription of its equations; per-session vs per-batch parts."""

import functools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbrjax.data import item_graphs
from sbrjax.models.backbone import GlobalGraph, SBRConfig
from sbrjax.models.hypergraph import corrupt, ssl_loss
from sbrjax.models.sbr import create_model
from sbrjax.sbr import train as train_sbr
from tests.models import graph_fixtures as fx
from tests.sbr.test_train import read_scalars

LAYERS = 2
COO = item_graphs.hypergraph_operator(item_graphs.training_sequences(fx.SPLIT), fx.NUM_ITEMS)


def operator(form):
  arrays = item_graphs.operator_arrays(COO, fx.NUM_ITEMS,
                                       dense_fraction=0.0 if form == "dense" else 2.0)
  return GlobalGraph("hypergraph", f"toy-{form}", arrays)


def config(form="dense", **kw):
  kw = dict(dict(embed_dim=8, s2dhcn_layers=LAYERS, s2dhcn_beta=0.5,
                 global_graph=operator(form)), **kw)
  return SBRConfig("s2dhcn", fx.NUM_ITEMS, **kw)


@functools.lru_cache(maxsize=None)
def built(form="dense", mix="mean"):
  model = create_model(config(form, s2dhcn_layer_mix=mix))
  return model, fx.init_params(model), fx.apply_fn(model)


@functools.lru_cache(maxsize=None)
def line_graph_fn():
  model = built()[0]
  return jax.jit(lambda p, b: model.apply({"params": p}, b, method="line_graph_embeddings"))


def dense_operator():
  m = np.zeros((fx.NUM_ITEMS, fx.NUM_ITEMS))
  m[COO["rows"], COO["cols"]] = COO["values"]
  return m


def np_item_table(emb, mix="mean"):
  m, x, total = dense_operator(), emb, emb
  for _ in range(LAYERS):
    x = m @ x
    total = total + x
  return total if mix == "sum" else total / (LAYERS + 1)


def np_line_graph(emb, sessions):
  sets = [set(s) for s in sessions]
  n = len(sessions)
  a = np.eye(n)
  for i in range(n):
    for j in range(n):
      if i != j:
        a[i, j] = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
  prop = a / a.sum(1, keepdims=True)
  x = np.array([emb[s].mean(0) for s in sessions])
  total = x
  for _ in range(LAYERS):
    x = prop @ x
    total = total + x
  return total / (LAYERS + 1)


def np_ssl(theta_h, theta_l, corrupted):
  sig = lambda z: 1 / (1 + np.exp(-z))
  pos = (theta_h * theta_l).sum(1)
  neg = (theta_l * corrupted).sum(1)
  return np.sum(-np.log(1e-8 + sig(pos)) - np.log(1e-8 + 1 - sig(neg)))


@pytest.mark.parametrize("form,mix", [("dense", "mean"), ("coo", "mean"), ("dense", "sum")])
def test_s2dhcn_matches_numpy_equations(form, mix):
  model, params, apply = built(form, mix)
  out = apply(params, fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH))
  p = fx.f64(params)
  emb = p["item_embedding"]["embedding"]
  x_h = np_item_table(emb, mix)
  np.testing.assert_allclose(out.item_embeddings, x_h, rtol=1e-5, atol=1e-6)
  for i in range(len(fx.SESSIONS)):
    seq = fx.kept(i)
    x = x_h[seq]
    theta = fx.np_reversed_position_readout(p["readout"], x)
    np.testing.assert_allclose(out.seq_states[i, :len(seq)], x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.local[i], x[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.final[i], theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.global_[i], theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.logits[i], x_h @ theta, rtol=1e-5, atol=1e-5)
  assert out.aux_losses is None  # evaluation: no self-supervised loss
  no_ssl = create_model(config(form, s2dhcn_layer_mix=mix, s2dhcn_beta=0.0))
  train = no_ssl.apply({"params": params}, fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH),
                       deterministic=False, rngs={"dropout": jax.random.key(0)})
  assert train.aux_losses is None  # beta = 0 trains on the cross-entropy alone


def test_dense_and_coo_operators_give_the_same_model():
  _, params, apply_dense = built("dense")
  _, params_coo, apply_coo = built("coo")
  assert set(params_coo["global_graph"]) == {"rows", "cols", "values"}
  params_coo = dict(params_coo, **{k: v for k, v in params.items() if k != "global_graph"})
  batch = fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH)
  a, b = apply_dense(params, batch), apply_coo(params_coo, batch)
  for f in fx.FIELDS:
    np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-5, atol=1e-6)


def test_line_graph_channel_and_self_supervised_loss_match_numpy():
  model, params, _ = built()
  batch = fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH)
  rngs = {"dropout": jax.random.key(3)}
  train = jax.jit(lambda p: model.apply({"params": p}, batch, deterministic=False, rngs=rngs))
  out = train(params)
  # The key the model's first make_rng("dropout") draws (no dropout submodules come first).
  key = model.apply({"params": params}, method=lambda m: m.make_rng("dropout"), rngs=rngs)
  n, d = len(fx.SESSIONS), model.cfg.embed_dim
  code = np.arange(fx.BATCH)[:, None] * 100.0 + np.arange(d)[None, :]
  real = np.arange(fx.BATCH) < n
  shuffled = np.asarray(corrupt(key, jnp.asarray(code, jnp.float32), jnp.asarray(real)))
  rows, cols = (shuffled[:, 0] // 100).astype(int), (shuffled[0] % 100).astype(int)
  assert sorted(rows[:n]) == list(range(n)) and (rows[n:] == np.arange(n, fx.BATCH)).all()

  p = fx.f64(params)
  emb = p["item_embedding"]["embedding"]
  theta_h = np.asarray(out.final, np.float64)[:n]
  theta_l = np_line_graph(emb, [fx.kept(i) for i in range(n)])
  got_l = line_graph_fn()(params, batch)
  np.testing.assert_allclose(got_l[:n], theta_l, rtol=1e-5, atol=1e-6)
  corrupted = np.asarray(out.final, np.float64)[rows][:, cols][:n]
  want = 0.5 * np_ssl(theta_h, theta_l, corrupted)  # beta = 0.5
  np.testing.assert_allclose(out.aux_losses["s2dhcn_ssl"], want, rtol=1e-5)


def test_self_supervised_loss_stays_finite_under_jit_when_the_scores_saturate():
  # pos very negative / neg very positive: the reference's 1e-8 caps each term at
  # -log(1e-8) = 18.42. Written as log(1e-8 + (1 - sigmoid(neg))), jit folded the 1e-8
  # away (1e-8 + 1 == 1 in float32) and returned inf, with NaN gradients.
  theta_h = jnp.array([[-10.0, 0.0], [0.5, 0.2], [1.0, 1.0]])
  theta_l = jnp.array([[10.0, 0.0], [0.3, -0.1], [0.0, 0.0]])
  corrupted = jnp.array([[10.0, 0.0], [0.1, 0.4], [0.0, 0.0]])
  real = jnp.array([True, True, False])
  h, l, c = (np.asarray(x, np.float64)[:2] for x in (theta_h, theta_l, corrupted))
  want = np_ssl(h, l, c)
  loss = jax.jit(ssl_loss)(theta_h, theta_l, corrupted, real)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert want > 2 * 18.4  # both saturated terms of row 0 at the cap
  grads = jax.jit(jax.grad(lambda a, b, c: 0.0 * ssl_loss(a, b, c, real), argnums=(0, 1, 2)))(
      theta_h, theta_l, corrupted)
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()


def test_per_session_outputs_ignore_the_batch_but_the_line_graph_does_not():
  _, params, apply = built()
  fx.assert_batch_equals_each_session_alone(apply, params)
  fx.assert_padding_does_not_matter(apply, params)
  lg = lambda b: np.asarray(line_graph_fn()(params, b))
  # Session 0 shares item 2 with sessions 4 and 7 and item 1 with session 3: its line-graph
  # view changes with its batch mates (the batch-level channel of the paper) ...
  together = lg(fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH))[0]
  alone = lg(fx.batch_of([0], 1))[0]
  assert not np.allclose(together, alone)
  # ... but not with padding rows.
  padded = lg(fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH + 3))
  np.testing.assert_allclose(padded[:len(fx.SESSIONS)],
                             lg(fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH))[
                                 :len(fx.SESSIONS)], rtol=1e-5, atol=1e-6)


def test_sum_mix_scales_the_line_graph_channel_and_a_bad_mix_is_named():
  _, params, _ = built()
  batch = fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH)
  model_sum = built("dense", "sum")[0]
  got_sum = model_sum.apply({"params": params}, batch, method="line_graph_embeddings")
  np.testing.assert_allclose(got_sum, (LAYERS + 1) * np.asarray(line_graph_fn()(params, batch)),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="s2dhcn_layer_mix='median'.*mean, sum"):
    jax.eval_shape(create_model(config(s2dhcn_layer_mix="median")).init, jax.random.key(0),
                   fx.batch_of([0], 1))


def test_missing_graph_raises():
  init = lambda cfg: jax.eval_shape(create_model(cfg).init, jax.random.key(0),
                                    fx.batch_of([0], 1))
  with pytest.raises(ValueError, match="global_graph of kind 'hypergraph'"):
    init(config(global_graph=None))


@pytest.mark.slow
def test_tiny_end_to_end_run_logs_the_self_supervised_loss(tiny_config, tmp_path):
  tiny_config.sbr.backbone = "s2dhcn"
  tiny_config.sbr.s2dhcn_hyperedges = "examples"
  tiny_config.train.epochs = 2
  wd = str(tmp_path / "run")
  summary = train_sbr.train_and_evaluate(tiny_config, wd)
  assert summary["global_graph"]["kind"] == "hypergraph"
  assert 0 <= summary["test"]["sampled/NDCG@10"] <= 1
  scalars = read_scalars(glob.glob(os.path.join(wd, "tensorboard", "sbr", "events.*"))[0])
  loss, rec, ssl = (np.array(scalars[k]) for k in ("train/loss", "train/rec_loss",
                                                   "train/s2dhcn_ssl"))
  assert (ssl > 0).all()
  np.testing.assert_allclose(loss, rec + ssl, rtol=1e-5)
