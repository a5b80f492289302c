"""Graph SBR backbones: batching invariance, padding, readouts, training."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbrjax.data import item_graphs
from sbrjax.data.graphs import build_graphs, make_batch
from sbrjax.data.types import Split
from sbrjax.models import sequence
from sbrjax.models.backbone import GlobalGraph
from sbrjax.models.sbr import (BACKBONES, SBRConfig, SBROutput, create_model,
                               target_aware_scores)

# The sequence backbones have their own tests (tests/models/test_sequence.py).
GRAPH_BACKBONES = tuple(b for b in BACKBONES if b not in sequence.BACKBONES)

NUM_ITEMS = 13
MAX_LEN = 6
# One-item sessions, consecutive repeats, revisits, and a truncated session.
SESSIONS = [[1, 2, 3, 2, 4], [5], [7, 7, 8, 7], [0, 1, 0, 1, 0, 1],
            [9, 3, 9, 3, 3, 2, 6, 6, 12], [4, 4], [11]]


def make_split(seqs):
  offsets = np.zeros(len(seqs) + 1, np.int64)
  np.cumsum([len(s) for s in seqs], out=offsets[1:])
  values = np.concatenate([np.asarray(s) for s in seqs]).astype(np.int32)
  n = len(seqs)
  targets = (np.arange(n) * 5 % NUM_ITEMS).astype(np.int32)
  return Split(values, offsets, targets, np.zeros(n, np.int32))


GRAPHS = build_graphs(make_split(SESSIONS), MAX_LEN)


def global_graph(name):
  """The catalog-wide graph a backbone needs, built from the toy sessions (or None)."""
  seqs = item_graphs.training_sequences(make_split(SESSIONS))
  if name == "gcegnn":
    return GlobalGraph("gcegnn", "toy", item_graphs.gcegnn_graph(seqs, NUM_ITEMS, 3, 4))
  if name == "s2dhcn":
    coo = item_graphs.hypergraph_operator(seqs, NUM_ITEMS)
    return GlobalGraph("hypergraph", "toy", item_graphs.operator_arrays(coo, NUM_ITEMS))
  return None


def config(name, **kw):
  # Non-zero dropout everywhere: deterministic=True must switch it off.
  kw = dict(dict(embed_dim=8, dropout=0.3, gcsan_dropout=0.3, gcsan_heads=2,
                 gcsan_blocks=1, gnn_steps=1, gcegnn_dropout_local=0.3,
                 global_graph=global_graph(name)), **kw)
  return SBRConfig(name, NUM_ITEMS, **kw)


def init(name, batch, **kw):
  model = create_model(config(name, **kw))
  params = model.init(jax.random.key(0), batch)["params"]
  return model, params


FIELDS = ("local", "global_", "final", "logits")


@pytest.mark.parametrize("name,jit", [(name, True) for name in GRAPH_BACKBONES] +
                         [("srgnn", False)])  # eager once (op-by-op dispatch is slow)
def test_batched_equals_each_session_alone(name, jit):
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 9)  # 2 padding rows
  model, params = init(name, batch, gnn_steps=2, gcsan_blocks=2)
  fn = lambda p, b: model.apply({"params": p}, b)
  fn = jax.jit(fn) if jit else fn
  full = fn(params, batch)
  for i in range(len(SESSIONS)):
    alone = fn(params, make_batch(GRAPHS, np.array([i]), 1))
    for f in FIELDS:
      np.testing.assert_allclose(getattr(full, f)[i], getattr(alone, f)[0],
                                 rtol=1e-5, atol=1e-5, err_msg=f"{f} row {i}")
    n = GRAPHS.lengths[i]
    np.testing.assert_allclose(full.seq_states[i, :n], alone.seq_states[0, :n],
                               rtol=1e-5, atol=1e-5)
  assert full.logits.shape == (9, NUM_ITEMS)
  assert full.local.shape == full.final.shape == (9, 8)
  assert np.isfinite(np.asarray(full.logits)).all()  # padding rows included


@pytest.mark.parametrize("name", GRAPH_BACKBONES)
def test_padding_graphs_and_nodes_do_not_influence_outputs(name):
  batch = make_batch(GRAPHS, np.arange(4), 7)
  model, params = init(name, batch)
  apply = jax.jit(lambda p, b: model.apply({"params": p}, b))
  ref = apply(params, batch)
  # Scramble everything that belongs to padding: node items and padding rows'
  # positions (which point at padding nodes).
  g = batch.graph
  num_real = int(g.n_node[:-1].sum())
  nodes = g.nodes.copy()
  nodes[num_real:] = np.random.default_rng(0).integers(
      0, NUM_ITEMS, len(nodes) - num_real)
  positions = batch.positions.copy()
  positions[4:] = num_real + 3
  scrambled = batch._replace(graph=g._replace(nodes=nodes),
                             positions=positions)
  out = apply(params, scrambled)
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(out, f)[:4], getattr(ref, f)[:4])
  # And equal to a batch without padding rows.
  tight = apply(params, make_batch(GRAPHS, np.arange(4), 4))
  for f in FIELDS:
    np.testing.assert_allclose(getattr(tight, f), getattr(ref, f)[:4],
                               rtol=1e-5, atol=1e-5)


def np_readout(p, seq, n, softmax):
  """SR-GNN / TAGNN soft-attention readout for one session (float64)."""
  f = lambda x: np.asarray(x, np.float64)
  seq = f(seq[:n])
  last = seq[-1]
  e = (1 / (1 + np.exp(-(last @ f(p["w1"]["kernel"]) + f(p["w1"]["bias"]) +
                         seq @ f(p["w2"]["kernel"]))))) @ f(p["q"]["kernel"])
  e = e[:, 0]
  alpha = np.exp(e - e.max()) / np.exp(e - e.max()).sum() if softmax else e
  s_g = alpha @ seq
  s_h = np.concatenate([last, s_g]) @ f(p["w3"]["kernel"]) + f(p["w3"]["bias"])
  return s_g, s_h


@pytest.mark.parametrize("name", ["srgnn", "tagnn", "niser"])
def test_readout_matches_numpy(name):
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 8)
  model, params = init(name, batch)
  out = model.apply({"params": params}, batch)
  table = np.asarray(out.item_embeddings, np.float64)
  for i in range(len(SESSIONS)):
    n = GRAPHS.lengths[i]
    s_g, s_h = np_readout(params["readout"], np.asarray(out.seq_states[i]), n,
                          softmax=name == "tagnn")
    np.testing.assert_allclose(out.global_[i], s_g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.local[i], out.seq_states[i, n - 1])
    if name == "niser":
      s_h = s_h / np.linalg.norm(s_h)
      np.testing.assert_allclose(out.logits[i], 12.0 * table @ s_h,
                                 rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(np.linalg.norm(table, axis=-1), 1, rtol=1e-6)
    np.testing.assert_allclose(out.final[i], s_h, rtol=1e-5, atol=1e-5)
    if name == "srgnn":
      np.testing.assert_allclose(out.logits[i], table @ s_h, rtol=1e-5,
                                 atol=1e-5)
    if name == "tagnn":
      # Naive [I, D] per-candidate target embedding.
      seq = np.asarray(out.seq_states[i, :n], np.float64)
      w_t = np.asarray(params["target"]["kernel"], np.float64)
      att = table @ (seq @ w_t).T  # [I, n]
      beta = np.exp(att - att.max(1, keepdims=True))
      beta /= beta.sum(1, keepdims=True)
      s_t = beta @ seq  # [I, D]
      logits = ((s_h[None] + s_t) * table).sum(-1)
      np.testing.assert_allclose(out.logits[i], logits, rtol=1e-5, atol=1e-5)


def test_gcsan_final_mixes_attention_and_last_click():
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 8)
  model, params = init("gcsan", batch, gcsan_weight=0.0)
  out = model.apply({"params": params}, batch)
  np.testing.assert_allclose(out.final, out.local, rtol=1e-6)
  model = create_model(config("gcsan", gcsan_weight=0.6))
  out = model.apply({"params": params}, batch)
  np.testing.assert_allclose(out.final, 0.6 * out.global_ + 0.4 * out.local,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.logits, out.final @ out.item_embeddings.T,
                             rtol=1e-5, atol=1e-5)


def np_attention_block(p, x, n):
  """GC-SAN eqs. 6-7 in float64: causal multi-head attention over the first n
  clicks (no output projection), then E = ReLU(F W1 + b1) W2 + b2 + F."""
  f = lambda a: np.asarray(a, np.float64)
  d = x.shape[-1]
  q = np.einsum("ld,dhk->lhk", x, f(p["query"]["kernel"]))
  k = np.einsum("ld,dhk->lhk", x, f(p["key"]["kernel"]))
  v = np.einsum("ld,dhk->lhk", x, f(p["value"]["kernel"]))
  heads, head_dim = q.shape[1], q.shape[2]
  out = np.zeros((n, heads, head_dim))
  for h in range(heads):
    for t in range(n):
      logits = q[t, h] @ k[:t + 1, h].T / np.sqrt(head_dim)  # clicks 0..t
      w = np.exp(logits - logits.max())
      out[t, h] = (w / w.sum()) @ v[:t + 1, h]
  out = out.reshape(n, d)
  hidden = np.maximum(out @ f(p["ffn_in"]["kernel"]) + f(p["ffn_in"]["bias"]), 0)
  return hidden @ f(p["ffn_out"]["kernel"]) + f(p["ffn_out"]["bias"]) + out


def test_gcsan_attention_block_matches_numpy():
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 8)
  # Two blocks: the second reads every click's first-block output, so the
  # causal mask of the first shows in the last click's state.
  model, params = init("gcsan", batch, gcsan_heads=2, gcsan_blocks=2)
  out = model.apply({"params": params}, batch)
  for i in range(len(SESSIONS)):
    n = GRAPHS.lengths[i]
    x = np.asarray(out.seq_states[i, :n], np.float64)
    e = np_attention_block(params["blocks_1"], np_attention_block(params["blocks_0"], x, n), n)
    np.testing.assert_allclose(out.global_[i], e[n - 1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.final[i], 0.6 * e[n - 1] + 0.4 * x[n - 1],
                               rtol=1e-5, atol=1e-5)


def test_gcsan_bert_block_matches_torch_post_ln_layer():
  """gcsan_block="bert" is RecBole's TransformerLayer, i.e. PyTorch's post-LN
  nn.TransformerEncoderLayer (ReLU, causal mask) with sbrjax's weights."""
  torch = pytest.importorskip("torch")
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 8)
  model, params = init("gcsan", batch, gcsan_heads=2, gcsan_blocks=2,
                       gcsan_block="bert", gcsan_init="normal")
  # Non-trivial LayerNorm affine parameters, so both norms are exercised.
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
      lambda path, a: a + rng.normal(0, 0.1, a.shape).astype(a.dtype)
      if "norm" in jax.tree_util.keystr(path) else a, params)
  out = model.apply({"params": params}, batch)
  d = 8
  t = lambda a: torch.tensor(np.asarray(a, np.float64))
  layers = []
  for name in ("blocks_0", "blocks_1"):
    p = params[name]
    layer = torch.nn.TransformerEncoderLayer(
        d, 2, dim_feedforward=d, dropout=0.0, activation="relu",
        layer_norm_eps=1e-12, batch_first=True, norm_first=False).double().eval()
    with torch.no_grad():
      attn = layer.self_attn
      attn.in_proj_weight.copy_(torch.cat([t(p[k]["kernel"]).reshape(d, d).T
                                           for k in ("query", "key", "value")]))
      attn.in_proj_bias.copy_(torch.cat([t(p[k]["bias"]).reshape(d)
                                         for k in ("query", "key", "value")]))
      attn.out_proj.weight.copy_(t(p["output"]["kernel"]).T)
      attn.out_proj.bias.copy_(t(p["output"]["bias"]))
      for lin, key in ((layer.linear1, "ffn_in"), (layer.linear2, "ffn_out")):
        lin.weight.copy_(t(p[key]["kernel"]).T)
        lin.bias.copy_(t(p[key]["bias"]))
      for norm, key in ((layer.norm1, "attn_norm"), (layer.norm2, "ffn_norm")):
        norm.weight.copy_(t(p[key]["scale"]))
        norm.bias.copy_(t(p[key]["bias"]))
    layers.append(layer)
  for i in range(len(SESSIONS)):
    n = GRAPHS.lengths[i]
    x = t(out.seq_states[i, :n])[None]
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    with torch.no_grad():
      for layer in layers:
        x = layer(x, src_mask=causal)
    np.testing.assert_allclose(out.global_[i], x[0, n - 1].numpy(), rtol=1e-4, atol=1e-5)


def test_gcsan_init_options():
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 8)
  _, paper = init("gcsan", batch, embed_dim=64)
  _, normal = init("gcsan", batch, embed_dim=64, gcsan_init="normal")
  bound = 1 / 8
  for leaf in jax.tree.leaves(paper):  # SR-GNN's U(-1/sqrt(D), 1/sqrt(D)) everywhere
    assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > bound / 2
  table = normal["encoder"]["item_embedding"]["embedding"]
  assert 0.015 < np.std(table) < 0.025  # N(0, 0.02), 13 x 64 draws
  for layer in ("edge_in", "edge_out"):
    assert 0.015 < np.std(normal["encoder"]["gnn"][layer]["kernel"]) < 0.025
    np.testing.assert_array_equal(normal["encoder"]["gnn"][layer]["bias"], 0)
  for layer in ("ffn_in", "ffn_out"):
    np.testing.assert_array_equal(normal["blocks_0"][layer]["bias"], 0)
  # The GRU gates keep SR-GNN's uniform init, as in RecBole's GC-SAN.
  np.testing.assert_array_equal(normal["encoder"]["gnn"]["input_gates"]["kernel"],
                                paper["encoder"]["gnn"]["input_gates"]["kernel"])


def test_niser_adds_position_embeddings_in_click_order():
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 8)
  model, params = init("niser", batch)
  out = model.apply({"params": params}, batch)
  pos = np.asarray(params["position_embedding"]["embedding"])  # [niser_max_len, D]
  nodes = np.asarray(out.node_states)
  for i in range(len(SESSIONS)):
    n = GRAPHS.lengths[i]
    # Position j is the j-th kept click, oldest first (the 9-click session
    # keeps its last 6 clicks: p_0 goes to its 4th click).
    ref = nodes[batch.positions[i, :n]] + pos[:n]
    np.testing.assert_allclose(out.seq_states[i, :n], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.local[i], ref[n - 1], rtol=1e-6, atol=1e-6)
  # NISER's node inputs are unit-norm item embeddings (before the GNN).
  table = np.asarray(params["encoder"]["item_embedding"]["embedding"])
  np.testing.assert_allclose(out.item_embeddings,
                             table / np.linalg.norm(table, axis=-1, keepdims=True),
                             rtol=1e-6, atol=1e-6)


def test_tagnn_item_chunks_equal_full_scores():
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 8)
  model, params = init("tagnn", batch)
  full = model.apply({"params": params}, batch).logits
  chunked = jax.jit(lambda p, b: create_model(config(
      "tagnn", tagnn_item_chunk=5)).apply({"params": p}, b).logits)(
          params, batch)
  np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-5)
  # The helper alone: masked clicks are ignored.
  rng = np.random.default_rng(0)
  table, seq = rng.normal(size=(4, 3)), rng.normal(size=(1, 5, 3))
  mask = np.array([[True, True, False, False, False]])
  got = target_aware_scores(table, seq, seq, mask)
  ref = target_aware_scores(table, seq[:, :2], seq[:, :2], mask[:, :2])
  np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("name", GRAPH_BACKBONES)
def test_adam_steps_lower_cross_entropy(name):
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 8)
  model, params = init(name, batch)
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  mask = jnp.asarray(batch.graph_mask, jnp.float32)

  def loss_fn(p, key):
    out = model.apply({"params": p}, batch, deterministic=False,
                      rngs={"dropout": key})
    ce = optax.softmax_cross_entropy_with_integer_labels(out.logits,
                                                         batch.targets)
    return jnp.sum(ce * mask) / jnp.sum(mask)

  @jax.jit
  def step(p, s, key):
    loss, grads = jax.value_and_grad(loss_fn)(p, key)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  apply = jax.jit(lambda p: model.apply({"params": p}, batch).logits)
  no_dropout = lambda p: float(optax.softmax_cross_entropy_with_integer_labels(
      apply(p), batch.targets)[batch.graph_mask].mean())
  start = no_dropout(params)
  for k in range(20):
    params, opt_state, loss = step(params, opt_state, jax.random.key(k))
    assert np.isfinite(float(loss))
  assert no_dropout(params) < 0.8 * start, (start, no_dropout(params))


def test_session_representations_method_has_no_logits():
  batch = make_batch(GRAPHS, np.arange(3), 4)
  model, params = init("srgnn", batch)
  reps = model.apply({"params": params}, batch,
                     method="session_representations")
  assert isinstance(reps, SBROutput) and reps.logits is None
  full = model.apply({"params": params}, batch)
  np.testing.assert_array_equal(reps.final, full.final)


def test_unknown_backbone_and_bad_configs_raise():
  with pytest.raises(ValueError, match="Unsupported backbone: 'nope'; "
                     "choose one of srgnn, gcsan, niser, tagnn"):
    create_model(SBRConfig("nope", 10))
  with pytest.raises(ValueError, match="num_items"):
    create_model(SBRConfig("srgnn", 0))
  batch = make_batch(GRAPHS, np.arange(2), 2)
  with pytest.raises(ValueError, match="gcsan_heads"):
    create_model(config("gcsan", gcsan_heads=3)).init(jax.random.key(0), batch)
  with pytest.raises(ValueError, match=r"config.sbr.gcsan_block='post_ln'.*choose one of paper, bert"):
    create_model(config("gcsan", gcsan_block="post_ln")).init(jax.random.key(0), batch)
  with pytest.raises(ValueError, match=r"config.sbr.gcsan_init='xavier'.*choose one of paper, normal"):
    create_model(config("gcsan", gcsan_init="xavier")).init(jax.random.key(0), batch)
  with pytest.raises(ValueError, match="niser_max_len"):
    create_model(config("niser", niser_max_len=MAX_LEN - 1)).init(
        jax.random.key(0), batch)


def test_config_is_frozen():
  cfg = config("srgnn")
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.embed_dim = 3  # type: ignore[misc]
