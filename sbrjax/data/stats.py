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


def llm4sbr_table1(sessions: np.ndarray, split_sessions: dict,
                   augmentation: str) -> dict:
  """The LLM4SBR paper's Table 1 columns for a session protocol.

  Args:
    sessions: [n] session of each kept click.
    split_sessions: split name -> session ids of its examples.
    augmentation: "last" or "prefixes" (examples per session).

  Returns:
    train_sessions (train + valid: validation is carved from the paper's
    train side), test_sessions, clicks (every click, targets included) and
    avg_length: the mean untruncated input length of the examples (with one
    example per session, clicks / sessions - 1, as the paper's 17.59 for
    987,610 / 53,121).
  """
  _, lengths = np.unique(sessions, return_counts=True)
  n = lengths.astype(np.float64)
  if augmentation == "last":
    avg = float(np.mean(n - 1)) if len(n) else 0.0
  else:  # prefixes of length 1 .. n-1
    avg = float(np.sum(n * (n - 1) / 2) / max(np.sum(n - 1), 1))
  count = lambda s: int(len(np.unique(split_sessions[s])))
  return {"train_sessions": count("train") + count("valid"),
          "test_sessions": count("test"), "clicks": int(len(sessions)),
          "avg_length": avg}


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
  text = fmt(heads) + "\n" + fmt(cells)
  paper = stats.get("llm4sbr_table1")
  if paper:
    heads = ["LLM4SBR Table 1", "#train sessions", "#test sessions", "#clicks",
             "avg. length"]
    cells = [name, f"{paper['train_sessions']:,}", f"{paper['test_sessions']:,}",
             f"{paper['clicks']:,}", f"{paper['avg_length']:.2f}"]
    widths = [max(len(h), len(c)) for h, c in zip(heads, cells)]
    text += "\n" + fmt(heads) + "\n" + fmt(cells)
  return text
