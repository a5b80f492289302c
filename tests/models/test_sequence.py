"""Sequence backbones (FPMC, Caser, GRU4Rec, NARM, STAMP): published equations in
NumPy, batching and padding invariance, dropout, config errors, end to end."""

import dataclasses
import glob
import os

import jax
import numpy as np
import pytest

from sbrjax import config as config_lib
from sbrjax.data.graphs import build_graphs, make_batch
from sbrjax.data.types import Split
from sbrjax.models.sbr import BACKBONES, SBRConfig, SBROutput, create_model
from sbrjax.models.sequence import BACKBONES as SEQUENCE
from sbrjax.sbr import train as train_sbr

NUM_ITEMS = 13
MAX_LEN = 6
D = 8
# One click, consecutive repeats, revisits, sessions shorter and longer than
# Caser's L = 4, and one longer than MAX_LEN (its first 3 clicks are cut).
SESSIONS = [[1, 2, 3, 2, 4], [5], [7, 7, 8, 7], [0, 1, 0, 1, 0, 1],
            [9, 3, 9, 3, 3, 2, 6, 6, 12], [4, 4], [11, 10, 12]]
FIELDS = ("local", "global_", "final", "logits")


def make_split(seqs):
  offsets = np.zeros(len(seqs) + 1, np.int64)
  np.cumsum([len(s) for s in seqs], out=offsets[1:])
  values = np.concatenate([np.asarray(s) for s in seqs]).astype(np.int32)
  n = len(seqs)
  return Split(values, offsets, (np.arange(n) * 5 % NUM_ITEMS).astype(np.int32),
               np.zeros(n, np.int32))


GRAPHS = build_graphs(make_split(SESSIONS), MAX_LEN)


def config(name, **kw):
  # Non-zero dropout everywhere: deterministic=True must switch it off.
  kw = dict(dict(embed_dim=D, dropout=0.3, hidden_dropout=0.3, caser_len=4,
                 caser_h_filters=3, caser_v_filters=2), **kw)
  return SBRConfig(name, NUM_ITEMS, **kw)


_PARAMS = {}


def init(name, batch, **kw):
  """The model and its parameters (cached: they depend on the config only)."""
  cfg = config(name, **kw)
  model = create_model(cfg)
  shapes = dataclasses.replace(cfg, dropout=0.0, hidden_dropout=0.0)
  if shapes not in _PARAMS:
    _PARAMS[shapes] = jax.jit(model.init)(jax.random.key(0), batch)["params"]
  return model, _PARAMS[shapes]


def f64(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def kept(i, max_len=MAX_LEN):
  """Clicks of session i that the batch keeps (its last max_len)."""
  return SESSIONS[i][-max_len:]


# ---- NumPy references of the published equations, one session at a time.

def np_gru(gates, u):
  """Cho/Hidasi GRU: z, r gates; candidate tanh(W x + U (r * h))."""
  h_dim = u.shape[0]
  u_r, u_z, u_c = u[:, :h_dim], u[:, h_dim:2 * h_dim], u[:, 2 * h_dim:]
  h, out = np.zeros(h_dim), []
  for g in gates:
    r = sigmoid(g[:h_dim] + h @ u_r)
    z = sigmoid(g[h_dim:2 * h_dim] + h @ u_z)
    c = np.tanh(g[2 * h_dim:] + (r * h) @ u_c)
    h = (1 - z) * h + z * c
    out.append(h)
  return np.stack(out)


def np_fpmc(p, clicks, cfg):
  """x(s, l, i) = <mean_j w_j, v_i^{I,U}> + <v_l^{L,I}, v_i^{I,L}>."""
  k = cfg.embed_dim // 2
  w, out = p["item_embedding"]["embedding"], p["item_output"]["embedding"]
  user = np.mean([w[j, :k] for j in clicks], axis=0)
  markov = w[clicks[-1], k:]
  logits = np.array([user @ out[i, :k] + markov @ out[i, k:] for i in range(NUM_ITEMS)])
  zeros = np.zeros(k)
  return dict(local=np.concatenate([zeros, markov]), global_=np.concatenate([user, zeros]),
              final=np.concatenate([user, markov]), logits=logits,
              seq=np.stack([w[j] for j in clicks]))


def np_caser(p, clicks, cfg):
  """Horizontal (max-pooled ReLU) and vertical convolutions over the last L clicks."""
  q = p["item_embedding"]["embedding"]
  length = cfg.caser_len
  e = np.zeros((length, cfg.embed_dim))
  for j in range(length):  # row L - 1 is the last click
    idx = len(clicks) - length + j
    if idx >= 0:
      e[j] = q[clicks[idx]]
  o = []
  for h in range(1, length + 1):
    kern, bias = p[f"horizontal_{h}"]["kernel"], p[f"horizontal_{h}"]["bias"]  # [h, D, n_h]
    for k in range(cfg.caser_h_filters):
      conv = [max(np.sum(e[i:i + h] * kern[:, :, k]) + bias[k], 0.0)
              for i in range(length - h + 1)]
      o.append(max(conv))
  f = p["vertical"]  # [L, n_v]
  o_v = np.concatenate([sum(f[l, k] * e[l] for l in range(length))
                        for k in range(cfg.caser_v_filters)])
  z = np.maximum(np.concatenate([o, o_v]) @ p["fc"]["kernel"] + p["fc"]["bias"], 0)
  logits = p["item_output"]["embedding"] @ z + p["item_bias"]
  return dict(local=q[clicks[-1]], global_=z, final=z, logits=logits,
              seq=np.stack([q[j] for j in clicks]))


def np_gru4rec(p, clicks, cfg):
  """One-hot input through the GRU; y = W h_n + b."""
  gates = np.stack([p["item_input"]["embedding"][j] + p["input_bias"] for j in clicks])
  states = np_gru(gates, p["gru"]["recurrent"])
  h_n = states[-1]
  logits = p["item_output"]["embedding"] @ h_n + p["item_bias"]
  return dict(local=h_n, global_=h_n, final=h_n, logits=logits, seq=states)


def np_narm(p, clicks, cfg):
  """c_g = h_n, c_l = sum_j v^T sigmoid(A1 h_n + A2 h_j) h_j, S_i = e_i^T B [c_g; c_l]."""
  emb = p["item_embedding"]["embedding"]
  gates = np.stack([emb[j] @ p["gru_input"]["kernel"] + p["gru_input"]["bias"] for j in clicks])
  states = np_gru(gates, p["gru"]["recurrent"])
  c_g = states[-1]
  alpha = [sigmoid(c_g @ p["a1"]["kernel"] + h @ p["a2"]["kernel"]) @ p["v"]["kernel"][:, 0]
           for h in states]
  c_l = sum(a * h for a, h in zip(alpha, states))
  final = np.concatenate([c_g, c_l]) @ p["decoder"]["kernel"]
  return dict(local=c_l, global_=c_g, final=final, logits=emb @ final, seq=states)


def np_stamp(p, clicks, cfg):
  """m_s, m_t, attention m_a; h_s, h_t; z_i = <h_s, h_t, x_i>."""
  emb = p["item_embedding"]["embedding"]
  x = np.stack([emb[j] for j in clicks])
  m_s, x_t = x.mean(0), x[-1]
  alpha = [sigmoid(xi @ p["w1"]["kernel"] + x_t @ p["w2"]["kernel"] + m_s @ p["w3"]["kernel"]
                   + p["w3"]["bias"]) @ p["w0"]["kernel"][:, 0] for xi in x]
  m_a = sum(a * xi for a, xi in zip(alpha, x))
  if cfg.stamp_add_mean:
    m_a = m_a + m_s
  h_s = np.tanh(m_a @ p["mlp_s"]["kernel"] + p["mlp_s"]["bias"])
  h_t = np.tanh(x_t @ p["mlp_t"]["kernel"] + p["mlp_t"]["bias"])
  logits = np.array([np.sum(h_s * h_t * emb[i]) for i in range(NUM_ITEMS)])
  return dict(local=h_t, global_=h_s, final=h_s * h_t, logits=logits, seq=x)


REFERENCES = {"fpmc": np_fpmc, "caser": np_caser, "gru4rec": np_gru4rec, "narm": np_narm,
              "stamp": np_stamp}
CASES = [("fpmc", {}, MAX_LEN), ("caser", {}, MAX_LEN),
         ("caser", {}, 3),  # L = 4 > max_len: the oldest window row is always empty
         ("caser", {"caser_len": 1}, MAX_LEN), ("gru4rec", {}, MAX_LEN), ("narm", {}, MAX_LEN),
         ("stamp", {}, MAX_LEN), ("stamp", {"stamp_add_mean": True}, MAX_LEN)]


@pytest.mark.parametrize("name,kw,max_len", CASES)
def test_outputs_match_numpy_reference_of_the_paper(name, kw, max_len):
  graphs = GRAPHS if max_len == MAX_LEN else build_graphs(make_split(SESSIONS), max_len)
  batch = make_batch(graphs, np.arange(len(SESSIONS)), 9)  # 2 padding rows
  model, params = init(name, batch, **kw)
  out = model.apply({"params": params}, batch)  # not jitted (the next tests jit)
  cfg = config(name, **kw)
  p = f64(params)
  for i in range(len(SESSIONS)):
    ref = REFERENCES[name](p, kept(i, max_len), cfg)
    for field in FIELDS:
      np.testing.assert_allclose(getattr(out, field)[i], ref[field], rtol=1e-5, atol=1e-5,
                                 err_msg=f"{name} {field} session {i}")
    n = graphs.lengths[i]
    np.testing.assert_allclose(out.seq_states[i, :n], ref["seq"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.seq_states[i, n:], 0)
  np.testing.assert_allclose(out.node_states, np.asarray(out.item_embeddings)[batch.graph.nodes])
  assert out.logits.shape == (9, NUM_ITEMS) and np.isfinite(np.asarray(out.logits)).all()


def test_gru_resets_before_the_recurrent_matrix_as_the_papers():
  """c_t = tanh(x_c + U_c (r * h)), not cuDNN's tanh(x_c + r * (U_c h)), by hand.

  Step 1 (h_0 = 0, z = 1/2): h_1 = tanh(x_c) / 2 = (a, -a). Step 2 with
  U_c = swap, r = (1, 0), x_c = 0: U_c (r * h_1) = (0, a), so
  h_2 = h_1 / 2 + tanh((0, a)) / 2; cuDNN's form would give tanh((-a, 0)).
  """
  from sbrjax.models.sequence import GRU
  h = 2
  u = np.zeros((h, 3 * h), np.float32)
  u[:, 2 * h:] = [[0, 1], [1, 0]]  # U_c swaps; U_r = U_z = 0
  gates = np.zeros((1, 2, 3 * h), np.float32)
  gates[0, 0, 2 * h:] = [0.5, -0.5]
  gates[0, 1, :h] = [1e4, -1e4]  # r = (1, 0) at step 2
  states = GRU(h).apply({"params": {"recurrent": u}}, gates)
  a = 0.5 * np.tanh(0.5)
  np.testing.assert_allclose(states[0, 0], [a, -a], atol=1e-7)
  np.testing.assert_allclose(states[0, 1], [a / 2, -a / 2 + np.tanh(a) / 2], atol=1e-7)


@pytest.mark.parametrize("name", SEQUENCE)
def test_batched_equals_each_session_alone(name):
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 9)
  model, params = init(name, batch)
  fn = jax.jit(lambda p, b: (model.apply({"params": p}, b),
                             model.apply({"params": p}, b, method="session_representations")))
  full, reps = fn(params, batch)
  for i in range(len(SESSIONS)):
    alone, _ = fn(params, make_batch(GRAPHS, np.array([i]), 1))
    for f in FIELDS:
      np.testing.assert_allclose(getattr(full, f)[i], getattr(alone, f)[0], rtol=1e-5,
                                 atol=1e-5, err_msg=f"{f} row {i}")
  # session_representations (what LLM4SBR reads): the same vectors, no logits.
  assert isinstance(reps, SBROutput) and reps.logits is None
  np.testing.assert_array_equal(reps.final, full.final)


@pytest.mark.parametrize("name", SEQUENCE)
def test_padding_changes_nothing(name):
  batch = make_batch(GRAPHS, np.arange(4), 7)
  model, params = init(name, batch)
  fn = jax.jit(lambda p, b: model.apply({"params": p}, b))
  ref = fn(params, batch)
  # Scramble what belongs to padding: padding nodes' items, the click slots
  # past each row's length, and the padding rows' positions.
  g = batch.graph
  num_real = int(g.n_node[:-1].sum())
  rng = np.random.default_rng(0)
  nodes = g.nodes.copy()
  nodes[num_real:] = rng.integers(0, NUM_ITEMS, len(nodes) - num_real)
  positions = batch.positions.copy()
  past = np.arange(MAX_LEN)[None, :] >= batch.lengths[:, None]
  positions[past] = rng.integers(0, num_real, int(past.sum()))
  out = fn(params, batch._replace(graph=g._replace(nodes=nodes), positions=positions))
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(out, f)[:4], getattr(ref, f)[:4], err_msg=f)
  # Graphs padded to a wider max_len (more masked click columns) give the
  # same rows (sessions 0-3 fit both widths).
  wide = build_graphs(make_split(SESSIONS[:4]), MAX_LEN + 5)
  out = fn(params, make_batch(wide, np.arange(4), 7))
  for f in FIELDS:
    np.testing.assert_allclose(getattr(out, f)[:4], getattr(ref, f)[:4], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,has_dropout", [
    ("fpmc", False), ("stamp", False), ("caser", True), ("gru4rec", True), ("narm", True)])
def test_dropout_acts_only_in_training_and_where_the_model_has_it(name, has_dropout):
  batch = make_batch(GRAPHS, np.arange(len(SESSIONS)), 8)
  model, params = init(name, batch, dropout=0.5, hidden_dropout=0.5)
  train, test = jax.jit(lambda p, b: (
      model.apply({"params": p}, b, deterministic=False, rngs={"dropout": jax.random.key(1)}),
      model.apply({"params": p}, b)))(params, batch)
  assert (not np.allclose(train.logits, test.logits)) == has_dropout


def test_bad_configs_name_the_key():
  batch = make_batch(GRAPHS, np.arange(2), 2)

  def build(name, **kw):  # setup runs (and checks) when the module is traced
    model = create_model(config(name, **kw))
    jax.eval_shape(model.init, jax.random.key(0), batch)

  with pytest.raises(ValueError, match="embed_dim=7 .* even"):
    build("fpmc", embed_dim=7)
  with pytest.raises(ValueError, match="SBRConfig.caser_len >= 1"):
    build("caser", caser_len=0)
  with pytest.raises(ValueError, match=r"SBRConfig.hidden_dropout=1.0 must be in \[0, 1\)"):
    build("gru4rec", hidden_dropout=1.0)
  assert set(SEQUENCE) <= set(BACKBONES)


def test_every_model_config_builds_its_backbone():
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  batch = make_batch(GRAPHS, np.arange(2), 2)
  for name in SEQUENCE:
    cfg = config_lib.load_config_file(os.path.join(repo, "configs", f"{name}_ml100k.py"))
    assert cfg.sbr.backbone == name
    assert (cfg.sbr.embed_dim, cfg.train.batch_size) == (64, 1024)
    assert cfg.train.learning_rate in (1e-4, 1e-3, 1e-2)
    model = create_model(train_sbr.sbr_config(cfg, NUM_ITEMS))
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), batch), batch))
    assert out.logits.shape == (2, NUM_ITEMS) and out.final.shape == (2, 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", SEQUENCE)
def test_end_to_end_through_the_sbr_trainer(name, tiny_config, tmp_path):
  from tests.sbr.test_train import read_scalars
  tiny_config.sbr.backbone = name
  tiny_config.sbr.hidden_dropout = 0.1
  tiny_config.sbr.caser_len = 3
  tiny_config.train.epochs = 3
  tiny_config.train.schedule = "constant"
  tiny_config.train.learning_rate = 1e-2
  wd = str(tmp_path / "run")
  summary = train_sbr.train_and_evaluate(tiny_config, wd)
  assert summary["model"] == name and summary["epochs_run"] == 3
  for split in ("valid", "test"):
    metrics = summary[split]
    assert metrics["count"] > 0
    for key in ("sampled/HR@10", "full/NDCG@20", "full/MRR@5"):
      assert 0.0 <= metrics[key] <= 1.0, (split, key)
  files = glob.glob(os.path.join(wd, "tensorboard", "sbr", "events.out.tfevents.*"))
  losses = read_scalars(files[0])["train/loss"]
  assert losses[-1] < losses[0], losses
