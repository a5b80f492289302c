"""LLMGR heads, controls and backbones: against NumPy computations of the same formulas."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbrjax.llmgr import examples as llmgr_data
from sbrjax.llmgr import head_init
from sbrjax.llmgr import model as llmgr_lib
from sbrjax.llmgr import train as train_llmgr
from sbrjax.models import sbr as sbr_lib
from tests.llmgr import tiny_model


def _gelu(x):  # flax's nn.gelu (tanh approximation)
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


@pytest.mark.parametrize("hidden", [0, 7])
def test_tied_head_logits_equal_numpy(hidden):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 10)).astype(np.float32)
  table = rng.normal(size=(6, 4)).astype(np.float32)
  head = llmgr_lib.TiedHead(num_items=6, sbr_dim=4, hidden=hidden)
  params = head.init(jax.random.PRNGKey(1), x, table)["params"]
  params["item_bias"] = jnp.asarray(rng.normal(size=6), jnp.float32)
  h = x
  if hidden:
    h = _gelu(h @ np.asarray(params["hidden"]["kernel"]) + np.asarray(params["hidden"]["bias"]))
  z = h @ np.asarray(params["proj"]["kernel"]) + np.asarray(params["proj"]["bias"])
  want = z @ table.T + np.asarray(params["item_bias"])
  for fn in (head.apply, jax.jit(head.apply)):
    np.testing.assert_allclose(fn({"params": params}, x, table), want, rtol=1e-5, atol=1e-5)
  feats, rows = head.apply({"params": params}, x, table, mode="scoring")
  np.testing.assert_allclose(np.asarray(feats) @ np.asarray(rows).T, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the whole model


_setup = tiny_model.build


def _batch(data, enc, pad, limit=8):
  ex = llmgr_data.behavior_examples(data.train, enc, limit=limit)
  b = llmgr_data.PromptBatcher([ex], max_len=8, batch_size=8, length_buckets=(128, 192),
                               pad_id=pad)
  return next(b.iterate(shuffle=False))


def test_tied_llmgr_scores_the_pooled_state_against_the_live_item_table(cfg):
  cfg.llmgr.head = "tied"
  cfg.llmgr.head_hidden = 5
  data, model, params, enc, pad = _setup(cfg)
  batch = _batch(data, enc, pad)
  params["f_out"]["item_bias"] = jnp.linspace(-1, 1, data.num_items)
  last, sbr_out = model.apply({"params": params}, batch, method=llmgr_lib.LLMGR.pooled)
  f = {k: jax.tree_util.tree_map(np.asarray, v) for k, v in params["f_out"].items()}
  z = _gelu(np.asarray(last) @ f["hidden"]["kernel"] + f["hidden"]["bias"])
  z = z @ f["proj"]["kernel"] + f["proj"]["bias"]
  table = np.asarray(params["sbr"]["encoder"]["item_embedding"]["embedding"])
  np.testing.assert_allclose(np.asarray(sbr_out.item_embeddings), table)
  want = z @ table.T + f["item_bias"]
  logits = model.apply({"params": params}, batch)
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
  feats, rows = model.apply({"params": params}, batch, features_only=True)
  np.testing.assert_allclose(np.asarray(feats) @ np.asarray(rows).T, want, rtol=1e-4, atol=1e-5)
  # The table is live: the logits follow the backbone's item embeddings.
  moved = jax.tree_util.tree_map(lambda x: x, params)
  moved["sbr"]["encoder"]["item_embedding"]["embedding"] = 2.0 * jnp.asarray(table)
  assert not np.allclose(model.apply({"params": moved}, batch), logits)


@pytest.mark.parametrize("hidden", [0, 7])
def test_residual_head_logits_equal_numpy(hidden):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 10)).astype(np.float32)
  final = rng.normal(size=(3, 4)).astype(np.float32)
  table = rng.normal(size=(6, 4)).astype(np.float32)
  backbone = final @ table.T
  behavior = np.array([True, False, True])
  head = llmgr_lib.ResidualHead(num_items=6, sbr_dim=4, hidden=hidden)
  params = head.init(jax.random.PRNGKey(1), x, final, table, backbone, behavior)["params"]
  # Fresh: the behavior rows score exactly as the backbone.
  fresh = np.asarray(head.apply({"params": params}, x, final, table, backbone, behavior))
  np.testing.assert_array_equal(fresh[behavior], backbone[behavior])
  params = jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  f = jax.tree_util.tree_map(np.asarray, params)
  h = x
  if hidden:
    h = _gelu(h @ f["hidden"]["kernel"] + f["hidden"]["bias"])
  z_a = h @ f["proj"]["kernel"] + f["proj"]["bias"]
  z_b = h @ f["proj_behavior"]["kernel"] + f["proj_behavior"]["bias"]
  want = np.where(behavior[:, None], backbone + z_b @ table.T + f["bias_behavior"],
                  z_a @ table.T + f["item_bias"])
  for fn in (head.apply, jax.jit(head.apply)):
    np.testing.assert_allclose(fn({"params": params}, x, final, table, backbone, behavior),
                               want, rtol=1e-5, atol=1e-5)
  feats, rows = head.apply({"params": params}, x, final, table, backbone, behavior,
                           mode="scoring")
  np.testing.assert_allclose(np.asarray(feats) @ np.asarray(rows).T, want, rtol=1e-5, atol=1e-5)


def test_residual_llmgr_starts_at_the_backbone_and_gates_auxiliary_prompts(cfg):
  cfg.llmgr.head = "residual"
  data, model, params, enc, pad = _setup(cfg)
  behavior = llmgr_data.behavior_examples(data.train, enc, limit=6)
  node_text = llmgr_data.node_text_examples(data.num_items, enc, limit=6)
  batcher = llmgr_data.PromptBatcher([behavior, node_text], max_len=8, batch_size=16,
                                     length_buckets=(128, 192), pad_id=pad)
  batch = next(batcher.iterate(shuffle=False))
  np.testing.assert_array_equal(batch.behavior, [True] * 6 + [False] * 10)
  sbr_model = sbr_lib.create_model(model.config.sbr)
  backbone = np.asarray(sbr_model.apply({"params": params["sbr"]}, batch.sessions).logits)
  # The auxiliary projection trained (as the auxiliary stage would) changes
  # nothing on behavior prompts.
  params["f_out"]["proj"] = jax.tree_util.tree_map(lambda p: p + 0.5, params["f_out"]["proj"])
  params["f_out"]["item_bias"] = params["f_out"]["item_bias"] + 1.0
  logits = np.asarray(model.apply({"params": params}, batch))
  np.testing.assert_allclose(logits[:6], backbone[:6], rtol=1e-6, atol=1e-6)
  last, sbr_out = model.apply({"params": params}, batch, method=llmgr_lib.LLMGR.pooled)
  f = jax.tree_util.tree_map(np.asarray, params["f_out"])
  z_a = np.asarray(last) @ f["proj"]["kernel"] + f["proj"]["bias"]
  np.testing.assert_allclose(logits[6:], (z_a @ np.asarray(sbr_out.item_embeddings).T
                                          + f["item_bias"])[6:], rtol=1e-4, atol=1e-4)
  feats, rows = model.apply({"params": params}, batch, features_only=True)
  np.testing.assert_allclose(np.asarray(feats) @ np.asarray(rows).T, logits, rtol=1e-4,
                             atol=1e-5)


def test_residual_head_cannot_split_scores_that_are_not_dot_products(cfg):
  cfg.llmgr.head = "residual"
  cfg.sbr.backbone = "niser"
  data, model, params, enc, pad = _setup(cfg)
  batch = _batch(data, enc, pad)
  assert np.isfinite(np.asarray(model.apply({"params": params}, batch))).all()
  with pytest.raises(ValueError, match="cannot split the catalog"):
    model.apply({"params": params}, batch, features_only=True)


def test_residual_head_rejects_head_init_backbone(cfg):
  cfg.llmgr.head = "residual"
  cfg.llmgr.head_init = "backbone"
  with pytest.raises(ValueError, match="head_init='backbone' does not apply"):
    _setup(cfg)


def test_paper_head_features_and_rows_multiply_to_its_logits(cfg):
  data, model, params, enc, pad = _setup(cfg)
  batch = _batch(data, enc, pad)
  feats, rows = model.apply({"params": params}, batch, features_only=True)
  np.testing.assert_allclose(np.asarray(feats) @ np.asarray(rows).T,
                             model.apply({"params": params}, batch), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head", ["paper", "tied"])
def test_head_fitted_to_the_backbone_reproduces_the_ridge_map(cfg, head):
  cfg.llmgr.head = head
  data, model, params, enc, pad = _setup(cfg)
  ex = llmgr_data.behavior_examples(data.train, enc)
  batcher = llmgr_data.PromptBatcher([ex], max_len=8, batch_size=32, length_buckets=(128, 192),
                                     pad_id=pad)
  fitted, fit = head_init.fit_head(model, params, batcher.iterate(shuffle=False), ridge=1e-2)
  # Reference: the same regression in NumPy on the same features.
  xs, ys, table = [], [], None
  for b in batcher.iterate(shuffle=False):
    feats, final, table = model.apply({"params": params}, b,
                                      method=llmgr_lib.LLMGR.head_fit_inputs)
    xs.append(np.asarray(feats)[b.mask])
    ys.append(np.asarray(final)[b.mask])
  x = np.concatenate([np.concatenate(xs), np.ones((sum(map(len, xs)), 1))], 1).astype(np.float64)
  y = np.concatenate(ys).astype(np.float64)
  h = x.shape[1] - 1
  lam = 1e-2 * np.trace(x[:, :h].T @ x[:, :h]) / h
  w = np.linalg.solve(x.T @ x + np.diag([lam] * h + [0.0]), x.T @ y)
  assert fit["prompts"] == len(y)
  np.testing.assert_allclose(fit["r2"], 1 - ((x @ w - y) ** 2).sum() / (
      (y - y.mean(0)) ** 2).sum(), rtol=1e-5)
  # The fitted head scores items as (X W) E^T, the backbone's own formula.
  b0 = next(batcher.iterate(shuffle=False))
  feats, _, table = model.apply({"params": params}, b0, method=llmgr_lib.LLMGR.head_fit_inputs)
  xf = np.concatenate([np.asarray(feats), np.ones((len(feats), 1))], 1)
  want = (xf @ w) @ np.asarray(table, np.float64).T
  got = model.apply({"params": fitted}, b0)
  np.testing.assert_allclose(np.asarray(got)[b0.mask], want[b0.mask], rtol=1e-3, atol=1e-4)
  # Nothing but the head changed.
  for key in ("sbr", "llm", "f_in"):
    jax.tree_util.tree_map(np.testing.assert_array_equal, fitted[key], params[key])


def test_ridge_solve_without_penalty_is_least_squares():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(size=(50, 4)), np.ones((50, 1))], 1)
  y = rng.normal(size=(50, 3))
  np.testing.assert_allclose(head_init.ridge_solve(x.T @ x, x.T @ y, 0.0),
                             np.linalg.lstsq(x, y, rcond=None)[0], rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------- controls


def test_shuffled_slots_carry_the_previous_rows_vectors(cfg):
  data, model, params, enc, pad = _setup(cfg)
  batch = _batch(data, enc, pad)
  plain = np.asarray(model.apply({"params": params}, batch,
                                 method=llmgr_lib.LLMGR.hybrid_embeddings))
  cfg.llmgr.control = "shuffle_slots"
  _, shuffled_model, _, _, _ = _setup(cfg)
  got = np.asarray(shuffled_model.apply({"params": params}, batch,
                                        method=llmgr_lib.LLMGR.hybrid_embeddings))
  n, length = int(batch.mask.sum()), batch.input_ids.shape[1]
  for i in range(1, n):
    for s, pos in enumerate(batch.slot_pos[i]):
      if pos < length:
        src_pos = batch.slot_pos[i - 1][s]
        if src_pos == length:  # an unused slot of row i - 1 gathers source 0 (its graph)
          assert batch.slot_src[i - 1][0] == 0
          src_pos = batch.slot_pos[i - 1][0]
        np.testing.assert_allclose(got[i, pos], plain[i - 1, src_pos], atol=1e-6)
  text = batch.slot_pos[1:n].min()  # before the first slot: untouched text
  np.testing.assert_array_equal(got[:, :text], plain[:, :text])


def test_no_decoder_control_drops_the_blocks_and_pools_the_slots(cfg):
  cfg.llmgr.control = "no_decoder"
  data, model, params, enc, pad = _setup(cfg)
  assert model.config.llm.num_layers == 0
  assert not [k for k in params["llm"] if k.startswith("layers_")]
  train_llmgr.check_tree(model, params, _batch(data, enc, pad))
  batch = _batch(data, enc, pad)
  embeds = np.asarray(model.apply({"params": params}, batch,
                                  method=llmgr_lib.LLMGR.hybrid_embeddings))
  scale = np.asarray(params["llm"]["norm"]["scale"])
  eps = model.config.llm.rms_norm_eps
  last, _ = model.apply({"params": params}, batch, method=llmgr_lib.LLMGR.pooled)
  for i in range(int(batch.mask.sum())):
    pos = batch.slot_pos[i][batch.slot_pos[i] < batch.input_ids.shape[1]]
    v = embeds[i, pos]
    normed = v / np.sqrt((v ** 2).mean(-1, keepdims=True) + eps) * scale
    np.testing.assert_allclose(last[i], normed.mean(0), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- backbones


class FakeSequenceModel(nn.Module):
  """A graph-free backbone (as a sequence model would be): mean of the click embeddings."""
  cfg: sbr_lib.SBRConfig
  session_graph = False
  click_states = False

  @nn.compact
  def __call__(self, batch, deterministic: bool = True):
    table = nn.Embed(self.cfg.num_items, self.cfg.embed_dim, name="item_embedding")
    items = batch.graph.nodes[batch.positions]  # [B, L]
    seq = table(items)  # [B, L, d]
    mask = sbr_lib.click_mask(batch.lengths, items.shape[1])[..., None]
    final = (seq * mask).sum(1) / jnp.maximum(mask.sum(1), 1)
    emb = table.embedding
    return sbr_lib.SBROutput(emb, emb[batch.graph.nodes], seq, final, final, final,
                             final @ emb.T)


# backbone -> (reads a session graph, has contextual per-click states, scores = final . E^T)
TRAITS = {"srgnn": (True, True, True), "gcsan": (True, True, True),
          "niser": (True, True, False), "tagnn": (True, True, False),
          "fakeseq": (False, False, True), "fpmc": (False, False, True),
          "caser": (False, False, False), "stamp": (False, False, True),
          "gru4rec": (False, True, False), "narm": (False, True, True)}


@pytest.mark.parametrize("backbone", list(TRAITS))
def test_every_backbone_plugs_in(cfg, backbone, monkeypatch):
  monkeypatch.setitem(sbr_lib._MODELS, "fakeseq", FakeSequenceModel)
  cfg.sbr.backbone = backbone
  cfg.llmgr.node_source = "gnn"
  data, model, params, enc, pad = _setup(cfg)
  traits = llmgr_lib.backbone_traits(model.config.sbr)
  graph, states, dots = TRAITS[backbone]
  graph_free = not graph
  assert traits == {"session_graph": graph, "click_states": states, "dot_scores": dots}
  assert enc.graph_slot == graph
  # Without per-click states the node slots take the item table.
  assert model.config.node_source == ("gnn" if states else "table")
  batch = _batch(data, enc, pad)
  assert (0 in batch.slot_src[batch.mask][:, 0]) == (not graph_free)
  train_llmgr.check_tree(model, params, batch)
  logits = model.apply({"params": params}, batch)
  assert logits.shape == (8, data.num_items) and np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("head", llmgr_lib.HEADS)
def test_every_head_leaf_has_a_sharding_rule(cfg, head):
  from sbrjax.llmgr import rules as llmgr_rules
  from sbrjax.parallel import rules as rules_lib
  cfg.llmgr.head = head
  cfg.llmgr.head_hidden = 5
  _, _, params, _, _ = _setup(cfg)
  # Raises, naming the leaves, if a head's parameter has no rule.
  axes = rules_lib.logical_axes_from_rules(params, llmgr_rules.LLMGR_PARAM_RULES)
  assert jax.tree_util.tree_structure(axes["f_out"], is_leaf=lambda x: isinstance(x, tuple)) \
      == jax.tree_util.tree_structure(params["f_out"])
