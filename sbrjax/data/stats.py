"""Dataset statistics: the papers' Table 1 columns and split sizes."""

from __future__ import annotations

import numpy as np

from sbrjax.data.types import Split

TABLE1_COLUMNS = (
    ("num_users", "#users"),
    ("num_items", "#items"),
    ("avg_seq_len", "avg. length"),
    ("sparsity", "sparsity"),
    ("num_actions", "#actions"),
)


def table1(users: np.ndarray, items: np.ndarray) -> dict:
  """Table 1 of the filtered interactions.

  Args:
    users: [n] user (or session) of each interaction.
    items: [n] item of each interaction.

  Returns:
    num_users, num_items, num_actions, avg_seq_len (= actions / users) and
    sparsity (= 1 - actions / (users * items)).
  """
  n = int(len(users))
  nu = int(len(np.unique(users)))
  ni = int(len(np.unique(items)))
  return {
      "num_users": nu,
      "num_items": ni,
      "num_actions": n,
      "avg_seq_len": n / nu if nu else 0.0,
      "sparsity": 1.0 - n / (nu * ni) if nu and ni else 1.0,
  }


def split_stats(train: Split, valid: Split, test: Split) -> dict:
  """Example counts and mean (truncated) input length of each split."""
  out = {}
  for name, s in (("train", train), ("valid", valid), ("test", test)):
    out[f"num_{name}"] = len(s)
    out[f"avg_{name}_input_len"] = float(s.lengths.mean()) if len(s) else 0.0
  return out


def format_stats(name: str, stats: dict) -> str:
  """One-row Table 1 (plus split sizes when present) as aligned text."""
  heads = ["dataset"] + [h for _, h in TABLE1_COLUMNS]
  cells = [name]
  for key, _ in TABLE1_COLUMNS:
    v = stats.get(key)
    if key == "sparsity":
      cells.append(f"{100 * v:.2f}%")
    elif key == "avg_seq_len":
      cells.append(f"{v:.2f}")
    else:
      cells.append(f"{v:,}")
  for key in ("num_train", "num_valid", "num_test"):
    if key in stats:
      heads.append("#" + key[4:])
      cells.append(f"{stats[key]:,}")
  widths = [max(len(h), len(c)) for h, c in zip(heads, cells)]
  fmt = lambda row: "  ".join(c.rjust(w) for c, w in zip(row, widths))
  return fmt(heads) + "\n" + fmt(cells)
