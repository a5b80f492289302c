"""HCGR against a float64 NumPy transcription (Lorentz maps from np_hyperbolic); batching."""

import functools
import glob
import os

import jax
import numpy as np
import pytest

from sbrjax.models.backbone import SBRConfig
from sbrjax.models.hcgr import HCGR_RELATIONS
from sbrjax.models.sbr import create_model
from sbrjax.sbr import train as train_sbr
from tests.models import graph_fixtures as fx
from tests.models import np_hyperbolic as ref
from tests.sbr.test_train import read_scalars

K = 0.7
NEGATIVES = 5


def config(**kw):
  kw = dict(dict(embed_dim=8, dropout=0.3, hcgr_layers=2, hcgr_curvature=K,
                 hcgr_cl_weight=0.4, hcgr_cl_temperature=0.5,
                 hcgr_cl_negatives=NEGATIVES), **kw)
  return SBRConfig("hcgr", fx.NUM_ITEMS, **kw)


@functools.lru_cache(maxsize=None)
def built():
  model = create_model(config())
  return model, fx.init_params(model), fx.apply_fn(model)


def leaky(x):
  return np.where(x > 0, x, 0.2 * x)


def np_layer(p, x, seq):
  """One HCGR layer over a session's distinct items; x: dict item -> point."""
  items = list(x)
  h = {v: ref.hyperbolic_linear(x[v][None], p["kernel"], p["bias"], K)[0] for v in items}
  t = {v: ref.logmap0(h[v][None], K)[0] for v in items}
  edges = list(dict.fromkeys((a, b) for a, b in zip(seq[:-1], seq[1:]) if a != b))
  out = {}
  for v in items:
    entries = [("self", v)] + [("in", a) for a, b in edges if b == v] + \
        [("out", b) for a, b in edges if a == v]
    logits = np.array([leaky(p["q"][HCGR_RELATIONS.index(r)] @ np.concatenate([t[v], t[u]]))
                       for r, u in entries])
    w = np.exp(logits - logits.max())
    w /= w.sum()
    agg = sum(wi * t[u] for wi, (_, u) in zip(w, entries))
    out[v] = ref.expmap0(np.maximum(agg, 0)[None], K)[0]
  return out


def np_session(p, seq):
  emb = p["item_embedding"]["embedding"]
  x = {v: ref.expmap0(emb[v][None], K)[0] for v in dict.fromkeys(seq)}
  for layer in range(2):
    x = np_layer(p[f"layer_{layer}"], x, seq)
  z = np.array([ref.logmap0(x[v][None], K)[0] for v in seq])
  s_g, s_h = fx.np_soft_attention_readout(p["readout"], z)
  return z, s_g, s_h


def test_hcgr_matches_numpy_equations():
  model, params, apply = built()
  out = apply(params, fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH))
  p = fx.f64(params)
  emb = p["item_embedding"]["embedding"]
  for i in range(len(fx.SESSIONS)):
    seq = fx.kept(i)
    z, s_g, s_h = np_session(p, seq)
    np.testing.assert_allclose(out.seq_states[i, :len(seq)], z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.local[i], z[-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.global_[i], s_g, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.final[i], s_h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.logits[i], emb @ s_h, rtol=1e-4, atol=1e-5)
  assert out.aux_losses is None


def test_contrastive_term_matches_numpy():
  model, params, _ = built()
  batch = fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH)
  rngs = {"dropout": jax.random.key(7)}
  out = jax.jit(lambda p: model.apply({"params": p}, batch, deterministic=False,
                                      rngs=rngs))(params)
  # The model's own make_rng("dropout") key (its Dropout submodule draws from its own scope).
  key = model.apply({"params": params}, method=lambda m: m.make_rng("dropout"), rngs=rngs)
  neg = np.asarray(jax.random.randint(key, (fx.BATCH, NEGATIVES), 0, fx.NUM_ITEMS))
  emb = np.asarray(params["item_embedding"]["embedding"], np.float64)
  s_h = np.asarray(out.final, np.float64)  # with dropout on, as the loss saw it
  losses = []
  for b in range(len(fx.SESSIONS)):
    t = int(batch.targets[b])
    cand = [t] + [j for j in neg[b] if j != t]
    s = ref.expmap0(s_h[b][None], K)
    logits = -ref.dist(s, ref.expmap0(emb[cand], K), K) / 0.5
    losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0])
  np.testing.assert_allclose(out.aux_losses["hcgr_contrastive"], 0.4 * np.mean(losses),
                             rtol=1e-4)


def test_batched_equals_each_session_alone_and_padding_does_not_matter():
  _, params, apply = built()
  fx.assert_batch_equals_each_session_alone(apply, params)
  fx.assert_padding_does_not_matter(apply, params)


def test_gradients_are_finite_with_dropout_and_the_contrastive_term():
  model, params, _ = built()
  batch = fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH)

  def loss(p):
    out = model.apply({"params": p}, batch, deterministic=False,
                      rngs={"dropout": jax.random.key(2)})
    return out.logits.mean() + out.aux_losses["hcgr_contrastive"]

  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert np.asarray(grads["layer_1"]["q"]).any()


def test_bad_curvature_raises():
  with pytest.raises(ValueError, match="hcgr_curvature"):
    jax.eval_shape(create_model(config(hcgr_curvature=0.0)).init, jax.random.key(0),
                   fx.batch_of([0], 1))


@pytest.mark.slow
def test_tiny_end_to_end_run_logs_the_contrastive_term(tiny_config, tmp_path):
  tiny_config.sbr.backbone = "hcgr"
  tiny_config.train.epochs = 2
  wd = str(tmp_path / "run")
  summary = train_sbr.train_and_evaluate(tiny_config, wd)
  assert summary["model"] == "hcgr" and "global_graph" not in summary
  assert 0 <= summary["test"]["full/MRR@20"] <= 1
  scalars = read_scalars(glob.glob(os.path.join(wd, "tensorboard", "sbr", "events.*"))[0])
  np.testing.assert_allclose(scalars["train/loss"], np.add(scalars["train/rec_loss"],
                                                           scalars["train/hcgr_contrastive"]),
                             rtol=1e-5)
