"""LLM4SBR representation enhancement (Qiao et al.) around a graph SBR backbone.

Per batch the model reads the backbone's two session views, ``local`` (s_l)
and ``global_`` (s_g), and the batch rows' intent embeddings ``intents``
[B, P, d_text] (one column per perspective, already localized onto the
catalog in stage 1):

  * eq. 6: one projection ``W1`` (with bias ``b1``), shared by the
    perspectives as the paper writes it and as the released code has it
    (``fusion/w1``): ``e_p = W1 x_p + b1`` [B, D];
  * alignment + uniformity (DirectAU, Wang et al. 2022) pull the text view
    towards the ID view per perspective: long-term intent <-> global rep,
    short-term intent <-> local rep (``PAIRED_VIEW``);
  * fusion ``W2`` over ``[s_l; s_g; e_long; e_short]`` gives the final session
    rep (``fusion/w2``), scored against the backbone's item table the way the
    backbone scores its own session vector (``LLM4SBR.score``).

What plays "local" and "global" (``SBROutput.local`` / ``.global_``):

  * SR-GNN, NISER+: s_l = the last click's node state, s_g = the soft-attention
    readout (NISER+: after its position embeddings); their ``s_h = W3 [s_l;
    s_g]`` is replaced by W2 and so unused. NISER+ keeps its scoring: the fused
    vector is L2-normalised and scaled cosines are the logits.
  * GC-SAN: s_l = the last click's GNN state, s_g = the self-attention output
    at the last click (its ``final`` mixes the two with a fixed weight w;
    W2 learns the mix instead).
  * TAGNN: s_l and s_g as SR-GNN (softmax readout). Its logits are
    ``(s_h + s_t,i) . v_i``, where the target-aware ``s_t,i`` depends on
    the candidate i and on the click states, not on the session vector: the
    fused model replaces ``s_h`` by the fused vector and keeps the
    target-aware term, ``logits_i = final . v_i + s_t,i . v_i``.
  * Any other backbone of ``sbrjax.models.sbr.create_model`` (its
    ``SBROutput`` carries ``local`` and ``global_``) is scored as
    ``final . v_i``; ``tests/llm4sbr/test_model.py`` checks for every
    registered backbone that ``score`` applied to the backbone's own
    ``final`` gives the backbone's logits.

Parameters the fused model never reads (the backbone's W3 above) carry no
gradient; ``unused_parameters`` finds them by a gradient probe and the
trainer drops them from the trained tree (no Adam moments, not counted),
filling zeros at apply time, which XLA removes as dead code.

Loss: ``L = L_rec + tau * sum_p (L_align,p + L_uniform,p)`` with
``L_align = mean_b ||n(e_b) - n(s_b)||^2`` over real rows (n = L2
normalisation) and ``L_uniform = (U(n(e)) + U(n(s))) / 2``,
``U(z) = log mean_{b != b'} exp(-t ||z_b - z_b'||^2)`` over pairs of real
rows (DirectAU's ``pdist`` form: each unordered pair once, no self-pairs).

Parameter tree: ``{"sbr": backbone, "fusion": {w1, w2}}`` so backbone
checkpoints load unchanged and ``sbrjax.train.labels`` tells the parts apart.
Ablations: ``perspectives`` names the columns used (drop one for "w/o long"
or "w/o short"; both dropped fuses ``[s_l; s_g]`` only).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sbrjax.models import backbone as backbone_lib
from sbrjax.models import sbr as sbr_lib
from sbrjax.models.gnn import uniform_init
from sbrjax.train import labels as labels_lib
from sbrjax.train import losses

PAIRED_VIEW = {"long_term": "global_", "short_term": "local"}


@dataclasses.dataclass(frozen=True)
class LLM4SBRConfig:
  """Configuration of the fused model.

  Attributes:
    sbr: the backbone (any of ``sbrjax.models.sbr.BACKBONES``).
    text_dim: width of the intent embeddings (384 for MiniLM).
    perspectives: intent columns used, in the order of ``intents``' axis 1;
      each must be a key of ``PAIRED_VIEW``.
    tau: weight of the alignment + uniformity terms.
    uniformity_t: temperature t of the uniformity loss.
  """

  sbr: sbr_lib.SBRConfig
  text_dim: int
  perspectives: Tuple[str, ...] = ("long_term", "short_term")
  tau: float = 0.1
  uniformity_t: float = 2.0

  def __post_init__(self):
    if self.sbr.backbone not in sbr_lib.BACKBONES:
      raise ValueError(f"config.sbr.backbone={self.sbr.backbone!r}; LLM4SBR wraps one of "
                       f"{', '.join(sbr_lib.BACKBONES)}.")
    unknown = [p for p in self.perspectives if p not in PAIRED_VIEW]
    if unknown or len(set(self.perspectives)) != len(self.perspectives):
      raise ValueError(f"config.llm4sbr.perspectives={self.perspectives} must be distinct "
                       f"keys of {sorted(PAIRED_VIEW)}")
    if self.text_dim < 1:
      raise ValueError(f"text_dim must be >= 1, got {self.text_dim}")


@flax.struct.dataclass
class LLM4SBROutput:
  """What the fused model computes for one batch.

  Attributes:
    logits: [B, I] float32 scores.
    final: [B, D] fused session rep.
    local: [B, D] backbone s_l.
    global_: [B, D] backbone s_g.
    intent_reps: [B, P, D] projected intents (W1 x), P = len(perspectives).
    backbone_final: [B, D] the backbone's own session rep (for reference).
    aux_losses: the backbone's own training losses (S^2-DHCN's self-supervised
      loss, HCGR's contrastive term; None for the others and when
      deterministic), added to the fused loss as the backbone adds them.
  """

  logits: jax.Array
  final: jax.Array
  local: jax.Array
  global_: jax.Array
  intent_reps: jax.Array
  backbone_final: jax.Array
  aux_losses: Optional[Dict[str, jax.Array]] = None


class Fusion(nn.Module):
  """W1 (eq. 6, one for every perspective) and W2 over [s_l; s_g; e_1; ...; e_P]."""

  dim: int
  text_dim: int
  perspectives: Tuple[str, ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, local, global_, intents):
    init = uniform_init(1.0 / self.text_dim**0.5)
    reps = []
    if self.perspectives:
      w1 = nn.Dense(self.dim, dtype=self.dtype, kernel_init=init, bias_init=init, name="w1")
      reps = [w1(intents[:, k]) for k in range(len(self.perspectives))]  # P x [B, D]
    parts = [local, global_] + reps
    width = self.dim * len(parts)
    init = uniform_init(1.0 / width**0.5)
    final = nn.Dense(self.dim, dtype=self.dtype, kernel_init=init, bias_init=init,
                     name="w2")(jnp.concatenate(parts, axis=-1))  # [B, D]
    intent_reps = (jnp.stack(reps, axis=1) if reps else
                   jnp.zeros(local.shape[:1] + (0, self.dim), local.dtype))
    return final, intent_reps


class LLM4SBR(nn.Module):
  """SBR backbone (``sbr``) + intent fusion (``fusion``)."""

  cfg: LLM4SBRConfig

  def setup(self):
    self.sbr = sbr_lib.create_model(self.cfg.sbr)
    self.fusion = Fusion(self.cfg.sbr.embed_dim, self.cfg.text_dim,
                         tuple(self.cfg.perspectives), dtype=self.cfg.sbr.dtype)

  def score(self, out: sbr_lib.SBROutput, final: jax.Array, batch) -> jax.Array:
    """float32 [B, I] logits of session vectors ``final`` the backbone's way
    (its ``score``: NISER+'s scaled cosines, TAGNN's target-aware term, an
    item bias ...)."""
    return self.sbr.score(out, final, batch)

  def __call__(self, batch, intents: jax.Array, *,
               deterministic: bool = True) -> LLM4SBROutput:
    """Scores a ``GraphBatch`` with its rows' intents [B, P, d_text]."""
    p = len(self.cfg.perspectives)
    if intents.ndim != 3 or intents.shape[1:] != (p, self.cfg.text_dim):
      raise ValueError(f"intents must be [B, {p}, {self.cfg.text_dim}] (perspectives "
                       f"{self.cfg.perspectives}), got {intents.shape}")
    out = self.sbr.session_representations(batch, deterministic=deterministic)
    x = intents.astype(self.cfg.sbr.dtype)
    final, reps = self.fusion(out.local, out.global_, x)
    logits = self.score(out, final, batch)
    return LLM4SBROutput(logits, final, out.local, out.global_, reps, out.final,
                         out.aux_losses)


# --------------------------------------------------------------------------
# Parameters the fused model never reads.


def unused_parameters(model: LLM4SBR, params, batch, seed: int = 0) -> List[str]:
  """Paths ('sbr/readout/w3/kernel' ...) of leaves nothing the loss reads depends on.

  A gradient probe: random intents and random cotangents on every output the
  loss uses (logits, intent reps, local, global, and the backbone's own
  training losses, computed in training mode) — not on ``backbone_final`` —
  pulled back to the parameters; a leaf whose gradient is exactly zero
  everywhere is not on any path to them (JAX's zero cotangents for unused
  inputs are exact zeros; a used leaf would need a measure-zero accident).
  """
  b = batch.lengths.shape[0]
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  intents = jax.random.normal(k1, (b, len(model.cfg.perspectives), model.cfg.text_dim))

  def outputs(p):
    out = model.apply({"params": p}, batch, intents)
    train = model.apply({"params": p}, batch, intents, deterministic=False,
                        rngs={"dropout": k3})
    aux, _ = backbone_lib.auxiliary_loss(train)
    return (out.logits, out.intent_reps, out.local, out.global_, aux)

  primal, pullback = jax.vjp(outputs, params)
  keys = jax.random.split(k2, len(primal))
  cot = tuple(jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, primal))
  (grads,) = pullback(cot)
  unused = []
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    # Data arrays (label "constant": a global graph behind stop_gradient) are
    # read but have no gradient by design; they are never pruned.
    if labels_lib.param_label(path) == "constant":
      continue
    if not np.any(np.asarray(g)):
      unused.append(labels_lib.path_str(path))
  return unused


def prune(params, paths) -> Dict[str, Any]:
  """``params`` without the leaves at ``paths`` (empty dicts removed)."""
  drop = set(paths)

  def walk(node, prefix):
    out = {}
    for k, v in node.items():
      name = f"{prefix}{k}"
      if isinstance(v, dict) or hasattr(v, "items"):
        sub = walk(v, name + "/")
        if sub:
          out[k] = sub
      elif name not in drop:
        out[k] = v
    return out

  return walk(params, "")


def fill(params, shapes: Dict[str, Tuple[Tuple[int, ...], Any]]) -> Dict[str, Any]:
  """``params`` with zeros put back at pruned paths (``{path: (shape, dtype)}``)."""
  out = jax.tree_util.tree_map(lambda x: x, dict(params))
  out = flax.core.unfreeze(out) if isinstance(out, flax.core.FrozenDict) else out
  for path, (shape, dtype) in shapes.items():
    node = out
    parts = path.split("/")
    for part in parts[:-1]:
      node[part] = dict(node.get(part, {}))
      node = node[part]
    node[parts[-1]] = jnp.zeros(shape, dtype)
  return out


# --------------------------------------------------------------------------
# Losses.


def _unit(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) with a finite gradient at x = 0 (padding rows)."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def alignment_loss(x: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
  """mean over real rows of ||n(x) - n(y)||^2; x, y [B, D], mask [B]."""
  d = jnp.sum(jnp.square(_unit(x) - _unit(y)), axis=-1)
  m = mask.astype(jnp.float32)
  return jnp.sum(d * m) / jnp.maximum(jnp.sum(m), 1.0)


def uniformity_loss(x: jax.Array, mask: jax.Array, t: float = 2.0) -> jax.Array:
  """log mean_{pairs b<b' of real rows} exp(-t ||n(x_b) - n(x_b')||^2).

  Zero when fewer than two rows are real (no pair exists).
  """
  z = _unit(x)  # [B, D]
  sq = jnp.sum(z * z, axis=-1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)  # [B, B]
  b = x.shape[0]
  pair = (mask[:, None] & mask[None, :]) & (jnp.arange(b)[:, None] < jnp.arange(b)[None, :])
  n_pairs = jnp.sum(pair)
  fill = jnp.finfo(jnp.float32).min
  lse = jax.nn.logsumexp(jnp.where(pair, -t * d2, fill))
  return jnp.where(n_pairs > 0, lse - jnp.log(jnp.maximum(n_pairs, 1).astype(jnp.float32)),
                   0.0)


def llm4sbr_loss(cfg: LLM4SBRConfig, out: LLM4SBROutput, targets: jax.Array,
                 mask: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """``L_rec + tau * sum_p (L_align + L_uniform)`` (+ the backbone's own
  training losses, e.g. S^2-DHCN's beta L_S) and its parts."""
  parts = {"rec_loss": losses.masked_xent(out.logits, targets, mask)}
  backbone_aux, named = backbone_lib.auxiliary_loss(out)
  parts.update(named)
  aux = jnp.zeros((), jnp.float32)
  for k, name in enumerate(cfg.perspectives):
    e = out.intent_reps[:, k]
    s = getattr(out, PAIRED_VIEW[name])
    align = alignment_loss(e, s, mask)
    unif = 0.5 * (uniformity_loss(e, mask, cfg.uniformity_t) +
                  uniformity_loss(s, mask, cfg.uniformity_t))
    parts[f"align_{name}"], parts[f"uniform_{name}"] = align, unif
    aux = aux + align + unif
  loss = parts["rec_loss"] + cfg.tau * aux + backbone_aux
  return loss, parts
