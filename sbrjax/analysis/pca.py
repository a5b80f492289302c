"""PCA of item embeddings: the backbone's table vs what LLMGR feeds its LLM.

LLMGR (Figs. 7-8) shows item embeddings before and after its instruction
tuning. Here "before" is the pre-trained backbone's item table (the run in
``llmgr.sbr_checkpoint`` or ``<workdir>/sbr_pretrain``) and "after" is the
vector LLMGR actually places in a prompt for an item: ``f_in`` (SBR dim ->
LLM dim) applied to the item table of the tuned run (whose backbone the
major stage trains), i.e. ``table @ f_in.kernel + f_in.bias``.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np


def pca(x: np.ndarray, k: int = 2) -> Tuple[np.ndarray, np.ndarray]:
  """Projections on the top-``k`` principal components, by SVD.

  Args:
    x: float [N, D] rows (items), N >= 2.
    k: components kept (1 <= k <= min(N, D)).

  Returns:
    (coords float64 [N, k], explained variance ratio float64 [k]). The
    columns are centred; each component's sign is fixed so that its largest
    absolute loading is positive (the SVD alone leaves it arbitrary).
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"pca: need an [N >= 2, D] matrix, got shape {x.shape}.")
  if not 1 <= k <= min(x.shape):
    raise ValueError(f"pca: k={k} must be in [1, {min(x.shape)}].")
  if not np.isfinite(x).all():
    raise ValueError("pca: the matrix holds NaN or inf.")
  centred = x - x.mean(axis=0, keepdims=True)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  components = vt[:k]  # [k, D]
  signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
  components = components * np.where(signs == 0, 1.0, signs)[:, None]
  total = float((s ** 2).sum())
  ratio = (s[:k] ** 2) / total if total > 0 else np.zeros(k)
  return centred @ components.T, ratio


def backbone_table(run_dir: str) -> np.ndarray:
  """float32 [I, D] item table of a finished sbr run (its best checkpoint)."""
  from sbrjax.analysis import runs as runs_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.models import sbr as sbr_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.sbr import export  # pylint: disable=g-import-not-at-top
  from sbrjax.sbr import train as sbr_train  # pylint: disable=g-import-not-at-top
  run = runs_lib.open_run(run_dir)
  if run.job != "sbr":
    raise ValueError(f"{run_dir}: a {run.job} run, not a backbone (sbr) run.")
  params, _ = runs_lib.restore_best_params(run.stage_best_dir())
  model = sbr_lib.create_model(sbr_train.sbr_config(run.config, int(run.results["num_items"])))
  return export.item_embeddings(model, params)


def llmgr_item_inputs(run, params: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
  """(tuned item table [I, d_sbr], f_in of it [I, d_llm]) of an LLMGR run's parameters."""
  from sbrjax.models import sbr as sbr_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.sbr import export  # pylint: disable=g-import-not-at-top
  from sbrjax.sbr import train as sbr_train  # pylint: disable=g-import-not-at-top
  for key in ("sbr", "f_in"):
    if key not in params:
      raise ValueError(f"{run.workdir}: its parameters have no {key!r} subtree; "
                       "not an LLMGR checkpoint.")
  num_items = int(run.results.get("num_items") or 0) or None
  if num_items is None:
    raise ValueError(f"{run.workdir}/results.json has no num_items.")
  model = sbr_lib.create_model(sbr_train.sbr_config(run.config, num_items))
  table = export.item_embeddings(model, params["sbr"])  # [I, d_sbr]
  f_in = params["f_in"]
  projected = table.astype(np.float64) @ np.asarray(f_in["kernel"], np.float64)
  projected = projected + np.asarray(f_in["bias"], np.float64)
  return table, projected.astype(np.float32)
