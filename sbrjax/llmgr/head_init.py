"""Start LLMGR's item head from its backbone (beyond the paper).

The paper's ``f_out`` maps the LLM state to |V| logits from scratch; with a
few thousand prompts it sees each item a handful of times. The backbone
already scores items well: ``logits = final @ E^T`` (its session vector
against its item table). :func:`fit_head` finds, by ridge regression over
training prompts, the affine map ``W`` that best sends the input of the
head's last linear layer (the LLM state, or the MLP's hidden layer) to the
backbone's session vector, and composes it with the item table:

  * paper head: ``out.kernel = W[:H] E^T``, ``out.bias = W[H] E^T``
    (the paper's architecture, started where the backbone is);
  * tied head: ``proj = W`` and a zero item bias (the table stays live).

The fit is exact for backbones that score with ``final @ E^T`` (SR-GNN,
GC-SAN; NISER+ up to its scale, TAGNN without its target-aware term).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from sbrjax.llmgr import model as model_lib


def ridge_solve(xtx: np.ndarray, xty: np.ndarray, ridge: float) -> np.ndarray:
  """``argmin_W |X W - Y|^2 + lam |W[:-1]|^2`` from the normal equations.

  ``X``'s last column is the intercept (not penalised); ``lam`` is ``ridge``
  times the mean diagonal of ``X^T X`` over the other columns, so the
  penalty does not depend on the features' scale.
  """
  h = xtx.shape[0] - 1
  lam = ridge * float(np.trace(xtx[:h, :h])) / max(h, 1)
  reg = np.zeros_like(xtx)
  reg[np.arange(h), np.arange(h)] = lam
  return np.linalg.solve(xtx + reg, xty)


def fit_head(model: model_lib.LLMGR, params: Any, batches: Iterable[Any], *,
             ridge: float = 1e-3) -> Tuple[Any, Dict[str, float]]:
  """``params`` with ``f_out`` fitted to the backbone (see the module docstring).

  Args:
    model: the LLMGR module.
    params: its parameters (everything but the head's last layer is used as is).
    batches: ``PromptBatch``es of behavior prompts (training split).
    ridge: relative ridge penalty (config.llmgr.head_init_ridge).

  Returns:
    (new params, {"prompts", "r2"}): r2 is the fraction of the session
    vectors' variance the map explains on the fitted prompts.
  """
  fn = jax.jit(lambda p, b: model.apply({"params": p}, b,
                                        method=model_lib.LLMGR.head_fit_inputs))
  xtx = xty = None
  n, s_sum, s_sq = 0, 0.0, 0.0
  table = None
  for batch in batches:
    feats, final, table = jax.device_get(fn(params, batch))
    real = np.asarray(batch.mask, bool)
    x = np.concatenate([feats[real], np.ones((real.sum(), 1))], 1).astype(np.float64)
    y = final[real].astype(np.float64)  # [n, d]
    xtx = x.T @ x if xtx is None else xtx + x.T @ x
    xty = x.T @ y if xty is None else xty + x.T @ y
    n += len(y)
    s_sum = s_sum + y.sum(0)
    s_sq = s_sq + (y * y).sum(0)
  if not n:
    raise ValueError("config.llmgr.head_init='backbone' needs behavior prompts to fit on; "
                     "the stage has none.")
  w = ridge_solve(xtx, xty, ridge)  # [H + 1, d]
  # Residual sum of squares from the normal equations: |Y|^2 - 2 tr(W^T X^T Y) + tr(W^T X^T X W).
  sse = float(s_sq.sum() - 2 * np.sum(w * xty) + np.sum(w * (xtx @ w)))
  sst = float((s_sq - s_sum ** 2 / n).sum())
  table = np.asarray(table, np.float64)  # [M, d]
  head = dict(params["f_out"])
  if model.config.head == "tied":
    head["proj"] = {"kernel": jnp.asarray(w[:-1], jnp.float32),
                    "bias": jnp.asarray(w[-1], jnp.float32)}
    head["item_bias"] = jnp.zeros_like(head["item_bias"])
  else:
    head["out"] = {"kernel": jnp.asarray(w[:-1] @ table.T, jnp.float32),
                   "bias": jnp.asarray(w[-1] @ table.T, jnp.float32)}
  return {**params, "f_out": head}, {"prompts": n, "r2": 1.0 - sse / max(sst, 1e-30)}
