"""Sequence session-based recommendation backbones: FPMC, Caser, GRU4Rec, NARM, STAMP.

They read the same ``sbrjax.data.graphs.GraphBatch`` as the graph backbones
(one batcher, one compiled shape per batch size): the clicks of row ``b``
are ``graph.nodes[positions[b, :lengths[b]]]``, oldest first, and every
click at or beyond ``lengths`` is masked (its item id is replaced by 0 before
any lookup, so padding never reaches a state that is read). They return the
same ``SBROutput``:

  * ``item_embeddings`` [I, D]: the scoring table (``item_output`` where the
    model scores with a table of its own, else ``item_embedding``);
  * ``seq_states`` [B, L, D]: per-click states where the model has them
    (GRU4Rec, NARM: GRU hidden states), else the click's input embedding
    (Caser, STAMP, FPMC), zero past ``lengths``;
  * ``node_states``: rows of ``item_embeddings`` of the graph's nodes (no
    message passing);
  * ``local`` / ``global_`` / ``final``: named per model below;
  * ``logits`` [B, I] = ``final . item_embeddings^T`` (+ an item bias for
    GRU4Rec and Caser, whose output layers have one).

Shared choices: every backbone trains with the full-softmax cross-entropy of
``sbrjax.sbr.train`` over all items (none of the papers' sampled or pairwise
losses); parameters are initialised U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (item
tables: U(-1/sqrt(D), 1/sqrt(D))), as the graph backbones are; the batch
carries no user id (sessions are anonymous), so the personalised user
factors of FPMC and Caser are replaced or dropped as their docstrings say.
Parameter names: ``item_embedding`` is the table the session is built from,
``item_output`` / ``item_bias`` a separate scoring table and its bias.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbrjax.models.backbone import SBRConfig, SBROutput, click_mask, dense, last_click
from sbrjax.models.gnn import uniform_init

BACKBONES = ("fpmc", "caser", "gru4rec", "narm", "stamp")


def click_items(batch) -> tuple[jax.Array, jax.Array]:
  """(items int32 [B, L], mask bool [B, L]): each row's clicks in order, 0 past ``lengths``."""
  mask = click_mask(batch.lengths, batch.positions.shape[1])
  return jnp.where(mask, batch.graph.nodes[batch.positions], 0), mask


def _table(cfg: SBRConfig, width: int, name: str) -> nn.Embed:
  return nn.Embed(cfg.num_items, width, dtype=cfg.dtype, name=name,
                  embedding_init=uniform_init(1.0 / cfg.embed_dim**0.5))


def _check_dropout(cfg: SBRConfig) -> None:
  for key in ("dropout", "hidden_dropout"):
    rate = getattr(cfg, key)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"SBRConfig.{key}={rate} must be in [0, 1).")


class GRU(nn.Module):
  """The GRU of GRU4Rec and NARM (Cho et al. 2014, as both papers write it).

  With ``x_t`` the input-gate terms ``W x + b`` (computed by the caller:
  an item-table row for GRU4Rec's one-hot input, a dense layer for NARM)::

    r_t = sigmoid(x_r + U_r h_{t-1})
    z_t = sigmoid(x_z + U_z h_{t-1})
    c_t = tanh(x_c + U_c (r_t * h_{t-1}))
    h_t = (1 - z_t) * h_{t-1} + z_t * c_t,     h_0 = 0.

  ``r`` multiplies ``h`` before ``U_c`` as in the papers (cuDNN/PyTorch apply
  it after). Returns ``h`` [B, L, H] for every step; step t reads inputs
  0..t only, so states of real clicks never see padding.
  """

  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, gate_inputs: jax.Array) -> jax.Array:
    """gate_inputs: [B, L, 3H] the (r, z, c) input terms of each click."""
    h = self.dim
    u = self.param("recurrent", uniform_init(1.0 / h**0.5), (h, 3 * h)).astype(self.dtype)

    def step(prev, x):  # prev [B, H], x [B, 3H]
      rz = prev @ u[:, :2 * h]  # [B, 2H]
      r = jax.nn.sigmoid(x[:, :h] + rz[:, :h])
      z = jax.nn.sigmoid(x[:, h:2 * h] + rz[:, h:])
      c = jnp.tanh(x[:, 2 * h:] + (r * prev) @ u[:, 2 * h:])
      new = (1.0 - z) * prev + z * c
      return new, new

    h0 = jnp.zeros((gate_inputs.shape[0], h), gate_inputs.dtype)
    _, states = jax.lax.scan(step, h0, jnp.swapaxes(gate_inputs, 0, 1))
    return jnp.swapaxes(states, 0, 1)  # [B, L, H]


class _Sequence(nn.Module):
  """Scores = the subclass's ``session_representations`` . its table (+ item bias).

  LLMGR traits (``sbrjax.llmgr.model.backbone_traits``): no session graph
  (the behavior prompt hides its graph placeholder, LLMGR Section 4.3); no
  contextual per-click states unless a subclass says so (GRU4Rec, NARM).
  """

  cfg: SBRConfig
  session_graph = False
  click_states = False

  def item_bias(self):
    """[I] bias added to every row's scores, or None."""
    return None

  def __call__(self, batch, *, deterministic: bool = True) -> SBROutput:
    out = self.session_representations(batch, deterministic=deterministic)
    return out.replace(logits=self.score(out, out.final, batch))

  def score(self, out: SBROutput, final: jax.Array, batch) -> jax.Array:
    """float32 [B, I]: ``final . item_embeddings^T`` (+ the item bias)."""
    del batch
    logits = jnp.einsum("bd,id->bi", final, out.item_embeddings).astype(jnp.float32)
    bias = self.item_bias()
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)[None, :]
    return logits


class FPMC(_Sequence):
  """FPMC (Rendle et al., WWW 2010), first order, for anonymous sessions.

  FPMC scores ``x(u, l, i) = <v_u^{U,I}, v_i^{I,U}> + <v_l^{L,I}, v_i^{I,L}>``:
  matrix factorisation of user u and item i plus a factorised first-order
  Markov chain from the last item l (the paper's basket is one click here).
  Deviation: the batch has no user id, so the user factor is the mean of
  the session's clicks' factors, ``v_u = mean_j w_{s_j}`` (an item-based
  user as in FISM / Fossil), learned like any other factor.

  Factors have K = D / 2 dimensions so that one [I, D] table scores:
  ``item_embedding`` rows are ``[w_j; v_j^{L,I}]`` (what a click contributes),
  ``item_output`` rows are ``[v_i^{I,U}; v_i^{I,L}]``, and

    ``global_ = [v_u; 0]`` (the MF term's session factor),
    ``local   = [0; v_l^{L,I}]`` (the Markov-chain term of the last click),
    ``final   = global_ + local``, so ``logits = final . item_output^T``
    is exactly FPMC's score.

  ``seq_states`` are the clicks' ``item_embedding`` rows. No dropout (the
  paper has none); ``embed_dim`` must be even.
  """

  def setup(self):
    cfg = self.cfg
    if cfg.embed_dim % 2:
      raise ValueError(f"FPMC splits SBRConfig.embed_dim={cfg.embed_dim} into an MF and a "
                       "Markov-chain factor of D / 2 each; use an even embed_dim.")
    self.item_embedding = _table(cfg, cfg.embed_dim, "item_embedding")
    self.item_output = _table(cfg, cfg.embed_dim, "item_output")

  def session_representations(self, batch, *, deterministic: bool = True) -> SBROutput:
    del deterministic  # FPMC has no dropout
    k = self.cfg.embed_dim // 2
    items, mask = click_items(batch)
    seq = jnp.where(mask[..., None], self.item_embedding(items), 0)  # [B, L, D]
    count = jnp.maximum(batch.lengths, 1)[:, None].astype(seq.dtype)
    user = jnp.sum(seq[..., :k], axis=1) / count  # [B, K] v_u
    markov = last_click(seq, batch.lengths)[:, k:]  # [B, K] v_l^{L,I}
    zeros = jnp.zeros_like(user)
    global_ = jnp.concatenate([user, zeros], axis=-1)
    local = jnp.concatenate([zeros, markov], axis=-1)
    table = self.item_output.embedding.astype(self.cfg.dtype)
    return SBROutput(table, table[batch.graph.nodes], seq, local, global_, global_ + local)


class Caser(_Sequence):
  """Caser (Tang & Wang, WSDM 2018): convolutions over the last L clicks.

  ``E`` [L, D] holds the ``item_embedding`` rows of the L most recent clicks,
  the last click in row L - 1; sessions shorter than L have zero rows at the
  old end (RecBole's zero padding item). L is ``SBRConfig.caser_len``
  (default 5, the paper's setting; clicks older than L are not read).

    horizontal: for each height h = 1..L, n_h filters F [h, D] (+ bias):
      ``c_i = relu(sum(E[i:i+h] * F) + b)``, ``o_h = max_i c_i`` -> o [L n_h]
    vertical: n_v filters f [L]: ``o'_k = sum_l f_l E_l`` (no activation,
      as in the paper) -> o' [n_v D]
    ``z = relu(W [o; o'] + b)`` (dropout ``hidden_dropout`` on [o; o'])
    ``y_i = W'_i . z + b'_i``

  Deviations: the paper's output layer reads ``[z; P_u]`` with a user
  embedding P_u; the batch has no user id, so it reads z alone (``item_output``
  = W', ``item_bias`` = b'). The paper trains on the next T = 3 items with
  sampled negatives and a binary loss; here T = 1 with the full softmax.
  ``local`` = the last click's ``item_embedding`` row (Caser has no separate
  short-term vector), ``global_`` = ``final`` = z; ``seq_states`` are the
  clicks' ``item_embedding`` rows.
  """

  dot_scores = False  # its output layer adds an item bias

  def setup(self):
    cfg = self.cfg
    for key in ("caser_len", "caser_h_filters", "caser_v_filters"):
      if getattr(cfg, key) < 1:
        raise ValueError(f"Caser needs SBRConfig.{key} >= 1, got {getattr(cfg, key)}.")
    _check_dropout(cfg)
    d, length = cfg.embed_dim, cfg.caser_len
    self.item_embedding = _table(cfg, d, "item_embedding")
    self.horizontal = [
        nn.Conv(cfg.caser_h_filters, (h,), padding="VALID", dtype=cfg.dtype,
                kernel_init=uniform_init(1.0 / (h * d)**0.5),
                bias_init=uniform_init(1.0 / (h * d)**0.5), name=f"horizontal_{h}")
        for h in range(1, length + 1)]
    self.vertical = self.param("vertical", uniform_init(1.0 / length**0.5),
                               (length, cfg.caser_v_filters))
    width = length * cfg.caser_h_filters + cfg.caser_v_filters * d
    self.fc = dense(d, width, cfg.dtype, name="fc")
    self.conv_dropout = nn.Dropout(cfg.hidden_dropout)
    self.item_output = _table(cfg, d, "item_output")
    self.bias = self.param("item_bias", uniform_init(1.0 / d**0.5), (cfg.num_items,))

  def item_bias(self):
    return self.bias

  def session_representations(self, batch, *, deterministic: bool = True) -> SBROutput:
    cfg = self.cfg
    length = cfg.caser_len
    items, mask = click_items(batch)
    seq = jnp.where(mask[..., None], self.item_embedding(items), 0)  # [B, L_max, D]
    b = seq.shape[0]
    # Window slot j holds click lengths - caser_len + j (row L - 1: the last click).
    clicks = batch.lengths[:, None] - length + jnp.arange(length)[None, :]  # [B, L]
    valid = clicks >= 0
    window = jnp.take_along_axis(seq, jnp.clip(clicks, 0, seq.shape[1] - 1)[..., None], axis=1)
    window = jnp.where(valid[..., None], window, 0)  # [B, L, D]
    o = jnp.concatenate([jnp.max(nn.relu(conv(window)), axis=1)  # [B, n_h] each
                         for conv in self.horizontal], axis=-1)  # [B, L n_h]
    o_v = jnp.einsum("bld,lk->bkd", window,
                     self.vertical.astype(cfg.dtype)).reshape(b, -1)  # [B, n_v D]
    conv_out = self.conv_dropout(jnp.concatenate([o, o_v], axis=-1), deterministic=deterministic)
    z = nn.relu(self.fc(conv_out))  # [B, D]
    table = self.item_output.embedding.astype(cfg.dtype)
    return SBROutput(table, table[batch.graph.nodes], seq, last_click(seq, batch.lengths), z, z)


class GRU4Rec(_Sequence):
  """GRU4Rec (Hidasi et al., ICLR 2016): one GRU layer over one-hot clicks.

  The one-hot input times the input weights is a row lookup, so the input
  weights are the table ``item_input`` [I, 3D] (+ ``input_bias`` [3D]) of
  the (r, z, c) gate terms; the paper found 1-of-N input better than an
  extra embedding layer. Hidden states ``h_t`` (``GRU``, D units) are the
  ``seq_states``; the output layer scores ``y_i = W_i . h_n + b_i`` with
  ``item_output`` W and ``item_bias`` b, after dropout ``hidden_dropout`` on
  ``h_n`` (the paper's hidden-layer dropout; ``dropout`` is unused).

  Deviation, as the issue asks: trained with the full-softmax cross-entropy
  over all items, not the paper's session-parallel mini-batches with
  sampled BPR / TOP1 losses (every prefix is an example here, so each click
  still predicts its successor). GRU4Rec has one session vector:
  ``local`` = ``global_`` = ``h_n`` (the last click's state), ``final`` =
  ``h_n`` after dropout.
  """

  dot_scores = False  # its output layer adds an item bias

  click_states = True  # GRU hidden states

  def setup(self):
    cfg = self.cfg
    _check_dropout(cfg)
    d = cfg.embed_dim
    self.item_input = _table(cfg, 3 * d, "item_input")
    self.input_bias = self.param("input_bias", uniform_init(1.0 / d**0.5), (3 * d,))
    self.gru = GRU(d, dtype=cfg.dtype)
    self.hidden_dropout = nn.Dropout(cfg.hidden_dropout)
    self.item_output = _table(cfg, d, "item_output")
    self.bias = self.param("item_bias", uniform_init(1.0 / d**0.5), (cfg.num_items,))

  def item_bias(self):
    return self.bias

  def session_representations(self, batch, *, deterministic: bool = True) -> SBROutput:
    items, mask = click_items(batch)
    gates = self.item_input(items) + self.input_bias.astype(self.cfg.dtype)  # [B, L, 3D]
    states = jnp.where(mask[..., None], self.gru(gates), 0)  # [B, L, D]
    h_n = last_click(states, batch.lengths)
    final = self.hidden_dropout(h_n, deterministic=deterministic)
    table = self.item_output.embedding.astype(self.cfg.dtype)
    return SBROutput(table, table[batch.graph.nodes], states, h_n, h_n, final)


class NARM(_Sequence):
  """NARM (Li et al., CIKM 2017): GRU encoder with a global and a local view.

  Clicks are embedded (``item_embedding``, dropout ``dropout``) and run
  through one GRU (``GRU`` with input layer ``gru_input``), whose states
  h_1..h_n serve both encoders as in the reference code:

    global encoder: ``c_g = h_n``
    local encoder:  ``alpha_j = v^T sigmoid(A_1 h_n + A_2 h_j)``,
                    ``c_l = sum_j alpha_j h_j`` (no softmax, as the paper)
    bilinear decoder: ``S_i = e_i^T B [c_g; c_l]``, e_i the item's embedding.

  ``final`` = ``B dropout([c_g; c_l])`` (dropout ``hidden_dropout``), so
  ``logits = final . item_embedding^T``. ``local`` = c_l and ``global_`` =
  c_g, NARM's own names (by role, c_l is the attention summary of the whole
  session and c_g the most recent state; SR-GNN's s_g / s_l are the other way
  round). ``seq_states`` are the GRU states.
  """

  click_states = True  # GRU hidden states

  def setup(self):
    cfg = self.cfg
    _check_dropout(cfg)
    d = cfg.embed_dim
    self.item_embedding = _table(cfg, d, "item_embedding")
    self.embed_dropout = nn.Dropout(cfg.dropout)
    self.gru_input = dense(3 * d, d, cfg.dtype, name="gru_input")
    self.gru = GRU(d, dtype=cfg.dtype)
    self.a1 = dense(d, d, cfg.dtype, use_bias=False, name="a1")
    self.a2 = dense(d, d, cfg.dtype, use_bias=False, name="a2")
    self.v = dense(1, d, cfg.dtype, use_bias=False, name="v")
    self.context_dropout = nn.Dropout(cfg.hidden_dropout)
    self.decoder = dense(d, 2 * d, cfg.dtype, use_bias=False, name="decoder")  # B

  def session_representations(self, batch, *, deterministic: bool = True) -> SBROutput:
    items, mask = click_items(batch)
    x = self.embed_dropout(self.item_embedding(items), deterministic=deterministic)
    states = jnp.where(mask[..., None], self.gru(self.gru_input(x)), 0)  # [B, L, D]
    c_g = last_click(states, batch.lengths)  # [B, D]
    e = self.v(jax.nn.sigmoid(self.a1(c_g)[:, None, :] + self.a2(states)))[..., 0]  # [B, L]
    c_l = jnp.einsum("bl,bld->bd", jnp.where(mask, e, 0), states)
    context = self.context_dropout(jnp.concatenate([c_g, c_l], axis=-1),
                                   deterministic=deterministic)
    table = self.item_embedding.embedding.astype(self.cfg.dtype)
    return SBROutput(table, table[batch.graph.nodes], states, c_l, c_g, self.decoder(context))


class STAMP(_Sequence):
  """STAMP (Liu et al., KDD 2018): short-term attention/memory priority.

  With x_i the clicks' ``item_embedding`` rows, x_t the last click:

    ``m_s = mean_i x_i``, ``m_t = x_t``
    ``alpha_i = w_0 . sigmoid(W_1 x_i + W_2 x_t + W_3 m_s + b_a)``,
    ``m_a = sum_i alpha_i x_i`` (``stamp_add_mean``: m_a + m_s, as the
    official code and RecBole compute it)
    ``h_s = tanh(W_s m_a + b_s)``, ``h_t = tanh(W_t m_t + b_t)``
    ``z_i = <h_s, h_t, x_i> = (h_s * h_t) . x_i`` (trilinear composition)

  then softmax over all items. The paper wraps z_i in a sigmoid before the
  softmax; the official code and RecBole feed z_i to the softmax directly,
  and so does this module. ``local`` = h_t (short-term memory), ``global_``
  = h_s (general interest), ``final`` = h_s * h_t; ``seq_states`` are the
  clicks' embeddings. No dropout (the paper has none).
  """

  def setup(self):
    cfg = self.cfg
    d = cfg.embed_dim
    self.item_embedding = _table(cfg, d, "item_embedding")
    self.w1 = dense(d, d, cfg.dtype, use_bias=False, name="w1")
    self.w2 = dense(d, d, cfg.dtype, use_bias=False, name="w2")
    self.w3 = dense(d, d, cfg.dtype, name="w3")  # its bias is b_a
    self.w0 = dense(1, d, cfg.dtype, use_bias=False, name="w0")
    self.mlp_s = dense(d, d, cfg.dtype, name="mlp_s")
    self.mlp_t = dense(d, d, cfg.dtype, name="mlp_t")

  def session_representations(self, batch, *, deterministic: bool = True) -> SBROutput:
    del deterministic  # STAMP has no dropout
    items, mask = click_items(batch)
    x = jnp.where(mask[..., None], self.item_embedding(items), 0)  # [B, L, D]
    count = jnp.maximum(batch.lengths, 1)[:, None].astype(x.dtype)
    m_s = jnp.sum(x, axis=1) / count  # [B, D]
    x_t = last_click(x, batch.lengths)  # [B, D]
    e = self.w0(jax.nn.sigmoid(self.w1(x) + (self.w2(x_t) + self.w3(m_s))[:, None, :]))
    m_a = jnp.einsum("bl,bld->bd", jnp.where(mask, e[..., 0], 0), x)
    if self.cfg.stamp_add_mean:
      m_a = m_a + m_s
    h_s = jnp.tanh(self.mlp_s(m_a))
    h_t = jnp.tanh(self.mlp_t(x_t))
    table = self.item_embedding.embedding.astype(self.cfg.dtype)
    return SBROutput(table, table[batch.graph.nodes], x, h_t, h_s, h_s * h_t)


MODELS = {"fpmc": FPMC, "caser": Caser, "gru4rec": GRU4Rec, "narm": NARM, "stamp": STAMP}
