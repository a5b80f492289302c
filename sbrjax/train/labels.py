"""One function of the parameter path names what each parameter is.

Freezing masks, sharding rules and adapter-only checkpoints all read these
labels, so a parameter's role is decided in exactly one place.

The parameter tree of every sbrjax model has top-level groups:
``sbr`` (graph backbone), ``llm`` (LLaMA; adapters live under ``.../lora/``),
``f_in`` (SBR -> LLM projection), ``f_out`` (item head), ``fusion``
(LLM4SBR intent projection and fusion). Leaves under a ``global_graph/``
scope are data, not weights (GCE-GNN's global item graph, S^2-DHCN's
hypergraph; ``sbrjax.models.backbone.GlobalGraphParams``): their label
"constant" is never among a stage's trainable labels, so every optimizer
leaves them unchanged (no weight decay, no optimizer state).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Tuple

import jax

LABEL_RULES: Tuple[Tuple[str, str], ...] = (
    (r"(^|/)global_graph/", "constant"),
    (r"(^|/)lora/", "lora"),
    (r"^sbr/", "sbr"),
    (r"^f_in/", "f_in"),
    (r"^f_out/", "f_out"),
    (r"^fusion/", "fusion"),
    (r"^llm/", "llm_base"),
)
LABELS = tuple(dict.fromkeys(label for _, label in LABEL_RULES))


def path_str(path) -> str:
  """'a/b/c' for a jax key path (dict keys, attributes or sequence indices)."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def param_label(path) -> str:
  """The label of one parameter, from its path (a key path or 'a/b/c')."""
  name = path if isinstance(path, str) else path_str(path)
  for pattern, label in LABEL_RULES:
    if re.search(pattern, name):
      return label
  raise ValueError(
      f"Parameter {name!r} matches no label rule in sbrjax.train.labels.LABEL_RULES; "
      "put it under one of the top-level groups sbr/, llm/, f_in/, f_out/, fusion/.")


def label_tree(params: Any) -> Any:
  """A tree like ``params`` holding each leaf's label."""
  return jax.tree_util.tree_map_with_path(lambda p, _: param_label(p), params)


def trainable_mask(params: Any, trainable: Iterable[str]) -> Any:
  """A tree of 'trainable' / 'frozen' for optax.multi_transform."""
  trainable = set(trainable)
  unknown = trainable - set(LABELS)
  if unknown:
    raise ValueError(f"Unknown trainable labels {sorted(unknown)}; choose from {LABELS}.")
  if "constant" in trainable:
    raise ValueError("The label 'constant' (global_graph/ data arrays) cannot be trained.")
  return jax.tree_util.tree_map_with_path(
      lambda p, _: "trainable" if param_label(p) in trainable else "frozen", params)
