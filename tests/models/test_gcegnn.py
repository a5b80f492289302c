"""GCE-GNN against a NumPy transcription of its equations; batching, padding, training."""

import functools
import glob
import os

import jax
import numpy as np
import pytest

from sbrjax import pipeline
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import prepared
from sbrjax.models.backbone import GlobalGraph, SBRConfig
from sbrjax.models.gcegnn import RELATIONS, session_times_neighbours
from sbrjax.models.sbr import create_model
from sbrjax.sbr import export
from sbrjax.sbr import train as train_sbr
from tests.models import graph_fixtures as fx
from tests.sbr.test_train import read_scalars

S = 4  # sampled neighbours per item


def toy_global_graph(seed=0):
  """Random neighbours with repeats; items 6 and 11 have none (weight 0)."""
  rng = np.random.default_rng(seed)
  neighbors = rng.integers(0, fx.NUM_ITEMS, (fx.NUM_ITEMS, S)).astype(np.int32)
  weights = rng.integers(1, 6, (fx.NUM_ITEMS, S)).astype(np.float32)
  weights[[6, 11]] = 0
  neighbors[3, :2] = neighbors[3, 2]  # a resampled duplicate
  return GlobalGraph("gcegnn", f"toy{seed}", {"neighbors": neighbors, "weights": weights})


def config(**kw):
  kw = dict(dict(embed_dim=8, gcegnn_dropout_global=0.5, gcegnn_dropout_local=0.3,
                 gcegnn_dropout_gcn=0.2, global_graph=toy_global_graph()), **kw)
  return SBRConfig("gcegnn", fx.NUM_ITEMS, **kw)


@functools.lru_cache(maxsize=None)
def built(hops):
  """(model, params, jitted apply) per setting, shared by the tests (compiles once)."""
  model = create_model(config(gcegnn_hops=hops))
  return model, fx.init_params(model), fx.apply_fn(model)


def leaky(x):
  return np.where(x > 0, x, 0.2 * x)


def softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def np_local(p, seq, emb):
  """Session-level states of each distinct item of ``seq`` (dict item -> [D])."""
  items = list(dict.fromkeys(seq))
  edges = {(a, b) for a, b in zip(seq[:-1], seq[1:]) if a != b}
  a = p["local_agg"]["a"]
  out = {}
  for i in items:
    logits, vecs = [], []
    for j in items:
      if i == j:
        r = "self"
      elif (i, j) in edges and (j, i) in edges:
        r = "inout"
      elif (j, i) in edges:
        r = "in"
      elif (i, j) in edges:
        r = "out"
      else:
        continue
      logits.append(leaky(a[RELATIONS.index(r)] @ (emb[i] * emb[j])))
      vecs.append(emb[j])
    out[i] = softmax(np.array(logits)) @ np.array(vecs)
  return out


def np_aggregate(p, self_vec, items, s, emb, graph):
  """One GlobalAggregator call for one self vector and its neighbour items."""
  nb, w = graph["neighbors"][items], graph["weights"][items]
  vecs = emb[nb]  # [S, D]
  pi = leaky(np.concatenate([s * vecs, w[:, None]], -1) @ p["w_1"]) @ p["w_2"]
  agg = softmax(pi[:, 0]) @ vecs if (w > 0).any() else np.zeros_like(self_vec)
  return np.maximum(np.concatenate([self_vec, agg]) @ p["w_3"], 0)


def np_global(p, item, s, emb, graph, hops):
  """The reference's hop recursion for one node (hops 1 or 2)."""
  if hops == 1:
    return np_aggregate(p["global_agg_0"], emb[item], item, s, emb, graph)
  nb = graph["neighbors"][item]
  # Layer 0 updates the node and each of its neighbours; layer 1 aggregates those.
  new_self = np_aggregate(p["global_agg_0"], emb[item], item, s, emb, graph)
  new_nb = np.array([np_aggregate(p["global_agg_0"], emb[j], j, s, emb, graph) for j in nb])
  w = graph["weights"][item]
  q = p["global_agg_1"]
  pi = leaky(np.concatenate([s * new_nb, w[:, None]], -1) @ q["w_1"]) @ q["w_2"]
  agg = softmax(pi[:, 0]) @ new_nb if (w > 0).any() else np.zeros_like(new_self)
  return np.maximum(np.concatenate([new_self, agg]) @ q["w_3"], 0)


@pytest.mark.parametrize("hops", [1, 2])
def test_gcegnn_matches_numpy_equations(hops):
  model, params, apply = built(hops)
  out = apply(params, fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH))
  p = fx.f64(params)
  emb = p["item_embedding"]["embedding"]
  graph = {k: np.asarray(v) for k, v in model.cfg.global_graph.arrays.items()}
  for i in range(len(fx.SESSIONS)):
    seq = fx.kept(i)
    s = emb[seq].mean(0)
    local = np_local(p, seq, emb)
    states = {v: local[v] + np_global(p, v, s, emb, graph, hops) for v in local}
    x = np.array([states[v] for v in seq])  # click states in order
    final = fx.np_reversed_position_readout(p["readout"], x)
    np.testing.assert_allclose(out.seq_states[i, :len(seq)], x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.local[i], x[-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.final[i], final, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.global_[i], final, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.logits[i], emb @ final, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out.item_embeddings, params["item_embedding"]["embedding"])


def test_batched_equals_each_session_alone():
  _, params, apply = built(2)
  fx.assert_batch_equals_each_session_alone(apply, params)


def test_eager_apply_equals_jitted_apply():
  model, params, apply = built(1)
  batch = fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH)
  eager = model.apply({"params": params}, batch)
  for f in fx.FIELDS:
    np.testing.assert_allclose(getattr(eager, f), getattr(apply(params, batch), f), rtol=1e-5,
                               atol=1e-5)


def test_padding_graphs_and_nodes_do_not_influence_outputs():
  _, params, apply = built(2)
  fx.assert_padding_does_not_matter(apply, params)


def test_dropout_is_active_only_when_training_and_graph_leaves_get_no_gradient():
  batch = fx.batch_of(np.arange(len(fx.SESSIONS)), fx.BATCH)
  model, params, apply = built(2)
  train = lambda p: model.apply({"params": p}, batch, deterministic=False,
                                rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(jax.jit(train)(params).logits, apply(params, batch).logits)
  grads = jax.jit(jax.grad(lambda p: train(p).logits.sum()))(params)
  assert not np.asarray(grads["global_graph"]["weights"]).any()
  assert np.asarray(grads["global_agg_0"]["w_1"]).any()


def test_session_times_neighbours_backward_equals_autodiff_of_the_product():
  rng = np.random.default_rng(3)
  session = rng.normal(size=(7, 5)).astype(np.float32)
  neigh = rng.normal(size=(7, 2, 4, 5)).astype(np.float32)
  g = rng.normal(size=(7, 2, 4, 5)).astype(np.float32)
  plain = lambda s, n: s[:, None, None, :] * n
  out, vjp = jax.vjp(session_times_neighbours, session, neigh)
  ref_out, ref_vjp = jax.vjp(plain, session, neigh)
  np.testing.assert_array_equal(out, ref_out)
  (ds, dn), (rs, rn) = vjp(g), ref_vjp(g)
  np.testing.assert_allclose(ds, rs, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(dn, rn)
  np.testing.assert_allclose(ds, np.einsum("nmsd,nmsd->nd", g, neigh), rtol=1e-5, atol=1e-6)


def test_missing_or_wrong_global_graph_raises():
  batch = fx.batch_of([0], 1)
  init = lambda cfg: jax.eval_shape(create_model(cfg).init, jax.random.key(0), batch)
  with pytest.raises(ValueError, match="global_graph of kind 'gcegnn'"):
    init(config(global_graph=None))
  wrong = GlobalGraph("hypergraph", "x", {"adjacency": np.eye(fx.NUM_ITEMS, dtype=np.float32)})
  with pytest.raises(ValueError, match="global_graph of kind 'gcegnn'"):
    init(config(global_graph=wrong))
  with pytest.raises(ValueError, match="pos_max_len"):
    init(config(pos_max_len=fx.MAX_LEN - 1))


@pytest.mark.slow
def test_tiny_end_to_end_run_builds_the_graph_from_training_data(tiny_config, tmp_path):
  tiny_config.sbr.backbone = "gcegnn"
  tiny_config.train.epochs = 2
  wd = str(tmp_path / "run")
  summary = pipeline.run(tiny_config, wd)  # writes config.json, which export reads
  assert summary["model"] == "gcegnn" and summary["global_graph"]["kind"] == "gcegnn"
  assert summary["test"]["count"] > 0 and 0 <= summary["test"]["full/HR@20"] <= 1
  graphs = glob.glob(os.path.join(tiny_config.data.data_dir, "item_graphs", "gcegnn-*",
                                  "graph.json"))
  assert len(graphs) == 1
  # The exported backbone (graph rebuilt from config.json's data) scores like the run.
  model, params, cfg, _ = export.load_backbone(wd)
  assert cfg.global_graph.digest == summary["global_graph"]["key"]
  evaluate = train_sbr.make_evaluator(model, (5, 10, 20))
  data = prepared.load_prepared(tiny_config.data)
  test = evaluate(params, graphs_lib.build_graphs(data.test, tiny_config.data.max_len), 16)
  assert test == pytest.approx(summary["test"], abs=1e-12)
  scalars = read_scalars(glob.glob(os.path.join(wd, "tensorboard", "sbr", "events.*"))[0])
  assert "train/loss" in scalars and "train/rec_loss" not in scalars  # no auxiliary loss
