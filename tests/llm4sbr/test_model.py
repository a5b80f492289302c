"""LLM4SBR fusion model: backbone identity, losses, labels, a training step."""


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax.training import train_state

from sbrjax.train import labels as labels_lib
from sbrjax.llm4sbr import train as train_llm4sbr
from sbrjax.data import graphs as graphs_lib
from sbrjax.data.types import Split
from sbrjax.llm4sbr import model as llm4sbr_lib
from sbrjax.data import item_graphs
from sbrjax.models import sbr as sbr_lib
from sbrjax.models.backbone import GlobalGraph

NUM_ITEMS, DIM, TEXT_DIM = 12, 8, 6


_SEQS = [[3], [1, 2, 1, 4], [5, 5, 6], [7, 8, 9, 10, 11], [0, 2]]


def _batch(batch_size=6):
  # One-click session, repeated items, a consecutive repeat; plus padding rows.
  seqs = _SEQS
  values = np.concatenate(seqs).astype(np.int32)
  offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
  split = Split(values, offsets, np.array([4, 3, 7, 1, 9], np.int32),
                np.arange(5, dtype=np.int32),
                np.array([[0, 1], [4, 5], [8, 9], [2, 3], [6, 7]], np.int32))
  graphs = graphs_lib.build_graphs(split, max_len=5)
  return graphs_lib.make_batch(graphs, np.arange(5), batch_size)


def _global_graph(backbone):
  """GCE-GNN's / S2-DHCN's catalog-wide arrays from _batch's sessions (else None)."""
  seqs = (np.concatenate(_SEQS).astype(np.int32),
          np.concatenate([[0], np.cumsum([len(s) for s in _SEQS])]).astype(np.int64))
  if backbone == "gcegnn":
    return GlobalGraph("gcegnn", "toy", item_graphs.gcegnn_graph(seqs, NUM_ITEMS, 3, 4))
  if backbone == "s2dhcn":
    coo = item_graphs.hypergraph_operator(seqs, NUM_ITEMS)
    return GlobalGraph("hypergraph", "toy", item_graphs.operator_arrays(coo, NUM_ITEMS))
  return None


def _cfg(backbone="srgnn", perspectives=("long_term", "short_term"), tau=0.1):
  sbr = sbr_lib.SBRConfig(backbone=backbone, num_items=NUM_ITEMS, embed_dim=DIM,
                          global_graph=_global_graph(backbone))
  return llm4sbr_lib.LLM4SBRConfig(sbr=sbr, text_dim=TEXT_DIM,
                                   perspectives=tuple(perspectives), tau=tau)


def _init(cfg, batch):
  model = llm4sbr_lib.LLM4SBR(cfg)
  intents = jnp.zeros((batch.lengths.shape[0], len(cfg.perspectives), TEXT_DIM))
  params = model.init(jax.random.PRNGKey(0), batch, intents)["params"]
  return model, params, intents


@pytest.mark.parametrize("backbone,jit", [("srgnn", False), ("srgnn", True),
                                          ("niser", False), ("tagnn", False)])
def test_fused_model_reduces_to_backbone_when_w2_copies_w3(backbone, jit):
  # Identity: SR-GNN's s_h = W3 [s_l; s_g] + b3 and the fusion computes
  # W2 [s_l; s_g; e_long; e_short] + b2. With W2's first 2D rows = W3, b2 =
  # b3 and the intent rows zero, final == s_h whatever the intents are, so
  # the logits equal the plain backbone's (same `sbr` parameters): NISER+
  # normalises and scales it the same way, TAGNN adds the same target-aware
  # term s_t,i . v_i.
  batch = _batch()
  cfg = _cfg(backbone)
  model, params, _ = _init(cfg, batch)
  w3 = params["sbr"]["readout"]["w3"]
  w2 = params["fusion"]["w2"]
  kernel = jnp.zeros_like(w2["kernel"]).at[:2 * DIM].set(w3["kernel"])
  params = dict(params, fusion=dict(params["fusion"], w2={"kernel": kernel, "bias": w3["bias"]}))
  intents = jax.random.normal(jax.random.PRNGKey(3), (6, 2, TEXT_DIM))
  plain = sbr_lib.create_model(cfg.sbr)

  def fused_fn(p, x):
    return model.apply({"params": p}, batch, x).logits

  def plain_fn(p):
    return plain.apply({"params": p}, batch).logits

  if jit:
    fused_fn, plain_fn = jax.jit(fused_fn), jax.jit(plain_fn)
  got = fused_fn(params, intents)
  want = plain_fn(params["sbr"])
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
  # Zeroed intents give the same scores (the intent rows of W2 are zero).
  np.testing.assert_allclose(np.asarray(fused_fn(params, jnp.zeros_like(intents))),
                             np.asarray(want), atol=1e-5, rtol=1e-5)


def test_fused_gcsan_reduces_to_backbone():
  # GC-SAN: final = w * a_t + (1 - w) * s_l = [(1-w) I; w I] [s_l; s_g].
  batch = _batch()
  cfg = _cfg("gcsan", perspectives=("short_term",))
  model, params, intents = _init(cfg, batch)
  w = cfg.sbr.gcsan_weight
  eye = jnp.eye(DIM)
  kernel = jnp.concatenate([(1 - w) * eye, w * eye, jnp.zeros((DIM, DIM))], axis=0)
  params = dict(params, fusion=dict(params["fusion"],
                                    w2={"kernel": kernel, "bias": jnp.zeros(DIM)}))
  got = model.apply({"params": params}, batch, intents + 1.0).logits
  want = sbr_lib.create_model(cfg.sbr).apply({"params": params["sbr"]}, batch).logits
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


def test_parameter_tree_has_one_shared_w1_and_ablations():
  batch = _batch()
  model, params, _ = _init(_cfg(), batch)
  labels = jax.tree_util.tree_leaves(labels_lib.label_tree(params))
  assert set(labels) == {"sbr", "fusion"}
  # Eq. 6: one (W1, b1) for both perspectives.
  assert sorted(params["fusion"]) == ["w1", "w2"]
  assert params["fusion"]["w1"]["kernel"].shape == (TEXT_DIM, DIM)
  assert params["fusion"]["w1"]["bias"].shape == (DIM,)
  assert params["fusion"]["w2"]["kernel"].shape == (4 * DIM, DIM)
  # Both perspectives go through that one projection.
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (6, 2, TEXT_DIM)))
  reps = np.asarray(model.apply({"params": params}, batch, x).intent_reps)
  w1 = {k: np.asarray(v, np.float64) for k, v in params["fusion"]["w1"].items()}
  for k in range(2):
    np.testing.assert_allclose(reps[:, k], x[:, k] @ w1["kernel"] + w1["bias"],
                               atol=1e-5, rtol=1e-5)
  _, short, _ = _init(_cfg(perspectives=("short_term",)), batch)
  assert sorted(short["fusion"]) == ["w1", "w2"]
  assert short["fusion"]["w2"]["kernel"].shape == (3 * DIM, DIM)
  _, none, _ = _init(_cfg(perspectives=()), batch)
  assert sorted(none["fusion"]) == ["w2"]
  assert none["fusion"]["w2"]["kernel"].shape == (2 * DIM, DIM)


@pytest.mark.parametrize("backbone", sbr_lib.BACKBONES)
def test_score_of_the_backbones_own_final_is_its_logits(backbone):
  # Whatever backbone is registered: the fused model scores a session vector
  # the way the backbone does, so its own `final` gives its own logits.
  batch = _batch()
  cfg = _cfg(backbone)
  model, params, _ = _init(cfg, batch)

  def own(m, b):
    out = m.sbr.session_representations(b)
    return m.score(out, out.final, b)

  got = jax.jit(lambda p: model.apply({"params": p}, batch, method=own))(params)
  backbone = sbr_lib.create_model(cfg.sbr)
  want = jax.jit(lambda p: backbone.apply({"params": p}, batch).logits)(params["sbr"])
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone,unused", [
    ("srgnn", ["sbr/readout/w3/bias", "sbr/readout/w3/kernel"]),
    ("niser", ["sbr/readout/w3/bias", "sbr/readout/w3/kernel"]),
    ("tagnn", ["sbr/readout/w3/bias", "sbr/readout/w3/kernel"]),
    ("gcsan", []),
    # Their global graph arrays have no gradient (stop_gradient) but are read:
    # pruning (and zero-filling) them would silently cut the global channel.
    ("gcegnn", []),
    ("s2dhcn", []),
])
def test_unused_backbone_parameters_are_found_and_pruned(backbone, unused):
  batch = _batch()
  cfg = _cfg(backbone)
  model, params, _ = _init(cfg, batch)
  found = llm4sbr_lib.unused_parameters(model, params, batch)
  assert sorted(found) == unused
  shapes = train_llm4sbr.leaf_shapes(params, found)
  pruned = llm4sbr_lib.prune(params, found)
  n = lambda t: sum(x.size for x in jax.tree_util.tree_leaves(t))
  assert n(pruned) == n(params) - sum(int(np.prod(s)) for s, _ in shapes.values())
  # The pruned tree, filled with zeros at those paths, scores exactly as the
  # full one: nothing read them.
  x = jax.random.normal(jax.random.PRNGKey(2), (6, 2, TEXT_DIM))
  want = model.apply({"params": params}, batch, x).logits
  got = model.apply({"params": llm4sbr_lib.fill(pruned, shapes)}, batch, x).logits
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_bad_config_and_intent_shape_are_refused():
  with pytest.raises(ValueError, match="config.sbr.backbone='sasrec'"):
    _cfg("sasrec")
  with pytest.raises(ValueError, match="perspectives"):
    _cfg(perspectives=("mid_term",))
  batch = _batch()
  model, params, _ = _init(_cfg(), batch)
  with pytest.raises(ValueError, match=r"intents must be \[B, 2, 6\]"):
    model.apply({"params": params}, batch, jnp.zeros((6, 1, TEXT_DIM)))


def _np_unit(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def test_alignment_and_uniformity_match_numpy_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 5)).astype(np.float32)
  y = rng.normal(size=(7, 5)).astype(np.float32)
  mask = np.array([1, 1, 0, 1, 1, 0, 1], bool)
  xs, ys = _np_unit(x[mask]), _np_unit(y[mask])
  want_a = np.mean(np.sum((xs - ys) ** 2, -1))
  i, j = np.triu_indices(len(xs), 1)
  want_u = np.log(np.mean(np.exp(-2.0 * np.sum((xs[i] - xs[j]) ** 2, -1))))
  for fn in (lambda f: f, jax.jit):
    got_a = fn(llm4sbr_lib.alignment_loss)(x, y, mask)
    got_u = fn(lambda a, m: llm4sbr_lib.uniformity_loss(a, m, 2.0))(x, mask)
    np.testing.assert_allclose(float(got_a), want_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(got_u), want_u, rtol=1e-5, atol=1e-6)
  # Fewer than two real rows: no pair, zero loss.
  one = np.zeros(7, bool)
  one[2] = True
  assert float(llm4sbr_lib.uniformity_loss(x, one)) == 0.0
  assert float(llm4sbr_lib.alignment_loss(x, y, np.zeros(7, bool))) == 0.0


def test_loss_gradients_finite_with_zero_padding_rows():
  x = jnp.zeros((4, 3)).at[0].set(1.0).at[1].set(jnp.array([0.0, 2.0, 1.0]))
  mask = jnp.array([True, True, False, False])
  g = jax.grad(lambda a: llm4sbr_lib.alignment_loss(a, a[::-1] + 0.5, mask) +
               llm4sbr_lib.uniformity_loss(a, mask))(x)
  assert np.isfinite(np.asarray(g)).all()


def test_training_steps_lower_the_loss():
  batch = _batch()
  cfg = _cfg()
  model = llm4sbr_lib.LLM4SBR(cfg)
  intents = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (6, 2, TEXT_DIM)))
  params = dict(model.init(jax.random.PRNGKey(0), batch, jnp.asarray(intents))["params"])
  forward = train_llm4sbr.make_forward(model, cfg)
  train = ml_collections.ConfigDict(dict(
      optimizer="adam", learning_rate=1e-2, schedule="constant", weight_decay=0.0,
      weight_decay_mode="l2", grad_clip_norm=0.0))
  from sbrjax.train import optim  # pylint: disable=g-import-not-at-top
  schedule = optim.make_schedule(train, 1, 10)
  tx = optim.make_optimizer(train, schedule, params, trainable=("sbr", "fusion"))
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  step = train_llm4sbr.jitted_train_step(forward, schedule, seed=0)
  losses = []
  for _ in range(8):
    state, m = step(state, (batch, intents))
    losses.append(float(m["loss"]))
    assert set(m) >= {"rec_loss", "align_long_term", "uniform_short_term"}
  assert losses[-1] < losses[0] - 0.1, losses
  # The total is L_rec + tau * sum_p (align + uniform).
  loss, parts, _ = forward(state.params, (batch, intents), True)
  aux = sum(float(parts[f"{k}_{p}"]) for k in ("align", "uniform")
            for p in cfg.perspectives)
  np.testing.assert_allclose(float(loss), float(parts["rec_loss"]) + 0.1 * aux, rtol=1e-5)


@pytest.mark.parametrize("backbone,name", [("s2dhcn", "s2dhcn_ssl"),
                                           ("hcgr", "hcgr_contrastive")])
def test_backbone_training_losses_are_kept(backbone, name):
  # LLM4SBR(S2-DHCN) trains with S2-DHCN's self-supervised loss, as S2-DHCN
  # does; so does the plain-backbone variant. Same rng and module path -> the
  # same term the backbone reports in training mode.
  batch = _batch()
  cfg = _cfg(backbone)
  model, params, _ = _init(cfg, batch)
  x = jax.random.normal(jax.random.PRNGKey(2), (6, 2, TEXT_DIM))
  rngs = {"dropout": jax.random.PRNGKey(5)}
  want = float(model.apply(
      {"params": params}, batch, rngs=rngs,
      method=lambda m, b: m.sbr.session_representations(b, deterministic=False)
  ).aux_losses[name])
  assert want != 0.0
  loss, parts, _ = train_llm4sbr.make_forward(model, cfg)(params, (batch, x), False, rngs)
  np.testing.assert_allclose(float(parts[name]), want, rtol=1e-5)
  aux = sum(float(parts[f"{k}_{p}"]) for k in ("align", "uniform")
            for p in cfg.perspectives)
  np.testing.assert_allclose(float(loss), float(parts["rec_loss"]) + 0.1 * aux + want,
                             rtol=1e-5)
  plain = sbr_lib.create_model(cfg.sbr)
  want = float(plain.apply({"params": params["sbr"]}, batch, deterministic=False,
                           rngs=rngs).aux_losses[name])
  loss, parts, _ = train_llm4sbr.make_forward(plain, None)(params, (batch, x), False, rngs)
  np.testing.assert_allclose(float(parts[name]), want, rtol=1e-5)
  np.testing.assert_allclose(float(loss), float(parts["rec_loss"]) + want, rtol=1e-5)
  # Nothing the backbone's own loss reads is pruned as unused.
  assert not llm4sbr_lib.unused_parameters(model, params, batch)
