"""The base experiment configuration that every file in ``configs/`` extends.

A config is an ``ml_collections.ConfigDict`` with nested sections:
``data`` (dataset and preparation protocol), ``sbr`` (graph SBR backbone),
``train`` (optimiser, schedule, early stopping, checkpoints), ``eval``
(ranking protocol). The methods add their sections on top
(``sbrjax.llmgr.config``: ``llm``, ``lora``, ``llmgr``, ``stages``;
``sbrjax.llm4sbr.config``: ``llm``, ``text_encoder``, ``llm4sbr``). Models
never see a ConfigDict: the trainers turn sections into frozen dataclasses.
"""

from __future__ import annotations

import importlib.util
import linecache
import os
import re

import ml_collections

from sbrjax import errors

JOBS = ("data", "sbr", "llmgr", "llm4sbr")


def base_config(locked: bool = True) -> ml_collections.ConfigDict:
  """Defaults shared by every experiment (SR-GNN on ml-100k, LLMGR protocol).

  The result is locked: a config file that sets a key the schema lacks (a
  typo such as ``config.train.learning_rat``) fails at that line instead of
  adding a key nothing reads. Builders that add sections pass
  ``locked=False`` and lock their result.
  """
  config = ml_collections.ConfigDict()
  # What to run: "data" (prepare + print Table 1) or "sbr" (train a backbone).
  config.job = "sbr"
  config.seed = 0
  # A run directory (or its checkpoint directory) whose best parameters
  # initialise this run; "" starts from scratch.
  config.restore_from = ""

  # ---- Data: builder, protocol, sampled-evaluation negatives.
  config.data = data = ml_collections.ConfigDict()
  data.dataset = "movielens"        # "movielens" | "amazon"
  data.variant = "ml-100k"          # ml-100k, ml-1m | music, beauty, pantry, beauty2014
  data.protocol = "llmgr"           # "llmgr" (leave-one-out) | "llm4sbr" (sessions)
  data.max_len = 50                 # most recent clicks kept per input sequence
  data.min_count = 5                # k-core threshold for users and items
  data.session_gap_s = 600          # llm4sbr (MovieLens): 10-minute sessions
  # llm4sbr (MovieLens): "window" cuts fixed 10-minute clock windows (the
  # released LLM4SBR code, which printed the paper's Table 1); "gap" starts a
  # session after more than session_gap_s seconds without a click.
  data.session_rule = "window"
  # llm4sbr examples per session: "last" (one: [v1..v(n-1)] -> vn), "prefixes"
  # (every prefix), "auto" = the paper's choice (MovieLens last, Amazon prefixes).
  data.augmentation = "auto"
  data.test_fraction = 0.1          # llm4sbr: chronologically last 10% of sessions
  data.valid_fraction = 0.1         # llm4sbr: last 10% of the rest (81/9/10 overall)
  data.num_negatives = 99           # sampled protocol: negatives per example
  data.negatives_exclude = "sequence"  # "sequence" (history + target) | "target"
  data.seed = 0                     # seed of the fixed negatives
  data.data_dir = ""                # "" -> $SBRJAX_DATA_DIR or ~/.cache/sbrjax
  data.manual_dir = ""              # directory holding raw files downloaded by hand
  data.download = True              # try the public URLs when raw files are absent

  # ---- SBR backbone (sbrjax.models.sbr.create_model; fields of SBRConfig).
  config.sbr = sbr = ml_collections.ConfigDict()
  sbr.backbone = "srgnn"            # srgnn | gcsan | niser | tagnn | gcegnn | s2dhcn | hcgr | fpmc | caser | gru4rec | narm | stamp
  sbr.embed_dim = 100
  sbr.gnn_steps = 1
  sbr.dropout = 0.0                 # item-embedding dropout (NISER+, NARM); 0 in SR-GNN/GC-SAN
  sbr.hidden_dropout = 0.0          # dropout on the session vector before scoring (GRU4Rec, NARM, Caser)
  sbr.gcsan_blocks = 1
  sbr.gcsan_heads = 1
  sbr.gcsan_weight = 0.6
  sbr.gcsan_dropout = 0.0           # attention/FFN dropout of GC-SAN's blocks
  sbr.gcsan_block = "paper"         # "paper" (eqs. 6-7) | "bert" (beyond the paper: RecBole's post-LN layer)
  sbr.gcsan_init = "paper"          # "paper" (SR-GNN's uniform) | "normal" (beyond the paper: RecBole's N(0, 0.02))
  sbr.niser_scale = 12.0
  sbr.tagnn_item_chunk = 0          # >0: TAGNN target-aware scores over item chunks (memory)
  sbr.caser_len = 5                 # Caser's L: most recent clicks its convolutions read (paper: 5)
  sbr.caser_h_filters = 16          # Caser's n_h: horizontal filters per height 1..L (paper: 16)
  sbr.caser_v_filters = 4           # Caser's n_v: vertical filters (paper: 4)
  sbr.stamp_add_mean = False        # STAMP: h_s from m_a + m_s (official code, RecBole) not m_a (paper)
  sbr.pos_max_len = 200             # GCE-GNN / S2-DHCN reversed-position table (reference: 200)
  # GCE-GNN (reference defaults): global graph from the training split, items within
  # `window` clicks linked, top `neighbors` by frequency kept (resampled with `seed`).
  sbr.gcegnn_hops = 1               # global aggregation depth (n_iter: 1 or 2)
  sbr.gcegnn_neighbors = 12
  sbr.gcegnn_window = 3
  sbr.gcegnn_seed = 0
  sbr.gcegnn_dropout_local = 0.0    # on session-level item representations
  sbr.gcegnn_dropout_global = 0.5   # on global-level item representations
  sbr.gcegnn_dropout_gcn = 0.0      # inside the global aggregator
  # S2-DHCN (reference defaults): hypergraph of the training split + line-graph SSL loss.
  sbr.s2dhcn_layers = 3
  sbr.s2dhcn_beta = 0.01            # SSL weight; L_S is a batch sum: 0.01 at batch 100 (reference), x 100/batch
  sbr.s2dhcn_hyperedges = "sessions"  # "sessions" (paper) | "examples" (reference code: prefixes)
  sbr.s2dhcn_layer_mix = "mean"      # "mean" (paper eqs. 3, 8) | "sum" (reference code)
  # HCGR (a reconstruction, see sbrjax/models/hcgr.py): Lorentz model, contrastive term.
  sbr.hcgr_layers = 1
  sbr.hcgr_curvature = 1.0          # K (sectional curvature -1/K)
  sbr.hcgr_cl_weight = 0.1          # lambda of the geodesic contrastive term (0 disables it)
  sbr.hcgr_cl_temperature = 1.0
  sbr.hcgr_cl_negatives = 100       # items drawn per session as negatives

  # ---- Optimisation (SR-GNN paper defaults: Adam 1e-3, x0.1 every 3 epochs, L2 1e-5).
  config.train = train = ml_collections.ConfigDict()
  train.optimizer = "adam"          # "adam" | "adamw"
  train.learning_rate = 1e-3
  train.schedule = "step"           # "constant" | "step" | "cosine"
  train.decay_epochs = 3            # step: multiply by decay_rate every N epochs
  train.decay_rate = 0.1
  train.warmup_steps = 0            # cosine: linear warm-up steps
  train.weight_decay = 1e-5
  train.weight_decay_mode = "l2"    # "l2" (added to the gradient) | "decoupled" (AdamW)
  train.grad_clip_norm = 0.0        # 0 disables clipping
  train.batch_size = 100
  train.epochs = 30
  train.patience = 5                # epochs without validation gain before stopping
  train.early_stop_metric = "sampled/NDCG@10"
  train.log_every_steps = 50
  train.checkpoint_every_epochs = 1
  train.progress_bar = True

  # ---- Evaluation.
  config.eval = ev = ml_collections.ConfigDict()
  ev.batch_size = 1024
  ev.ks = (5, 10, 20)
  ev.p_at_k_alias = False           # also report P@K (= HR@K), LLM4SBR's name
  if locked:
    config.lock()
  return config


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Loads ``get_config()`` from a config file path (as config_flags does).

  Raises:
    errors.ConfigError: a missing file, no ``get_config``, or a key the
      (locked) schema lacks, named with its file, line and the closest keys.
  """
  if not os.path.exists(path):
    raise errors.ConfigError(f"Config file {path!r} does not exist; give --config=configs/NAME.py.")
  spec = importlib.util.spec_from_file_location("_sbrjax_config", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise errors.ConfigError(f"Config file {path!r} defines no get_config().")
    return module.get_config()
  except AttributeError as e:
    raise _locked_key_error(e, path) from e


def _locked_key_error(e: AttributeError, path: str) -> Exception:
  """A ConfigError for a key set or read that the locked schema lacks."""
  key = _missing_key(e)
  tb = e.__traceback__
  where, line, section = path, "", None
  while tb is not None:
    frame = tb.tb_frame
    if os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path):
      where = f"{path}:{tb.tb_lineno}"
      line = linecache.getline(path, tb.tb_lineno).strip()
    if isinstance(frame.f_locals.get("self"), ml_collections.ConfigDict):
      section = frame.f_locals["self"]
    tb = tb.tb_next
  if key is None or section is None:
    return e
  m = re.search(r"([A-Za-z_]\w*(?:\.\w+)*)\." + re.escape(key) + r"\b", line)
  name = ("config" + m.group(1)[m.group(1).find("."):] if m and "." in m.group(1)
          else "config") if m else "this section"
  return errors.ConfigError(
      f"{where}: `{line}`: {name} has no key {key!r}.{errors.closest(key, section.keys())}"
      f" Keys of {name}: {', '.join(sorted(section.keys()))}.")


def _missing_key(e: Exception):
  text = str(e)
  for pattern in (r'Key \\?"([^"\\]+)\\?" does not exist', r"^\W*'([^']+)'\W*$"):
    m = re.search(pattern, text)
    if m:
      return m.group(1)
  return None


def check_override(config: ml_collections.ConfigDict, dotted: str) -> None:
  """Raises ConfigError unless ``--config.<dotted>`` names an existing key.

  The message names the section and its closest keys, e.g. ``--config.data.max_lenn:
  config.data has no key 'max_lenn'. Did you mean 'max_len'?``.
  """
  node, path = config, "config"
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict):
      raise errors.ConfigError(f"--config.{dotted}: {path} is a value, not a section.")
    if part not in node:
      raise errors.ConfigError(
          f"--config.{dotted}: {path} has no key {part!r}.{errors.closest(part, node.keys())}"
          f" Keys of {path}: {', '.join(sorted(node.keys()))}.")
    node, path = node[part], f"{path}.{part}"


def validate_choice(config: ml_collections.ConfigDict, key: str, choices) -> None:
  """Raises a ConfigError naming ``config.<key>`` when its value is not a choice."""
  value = config
  for part in key.split("."):
    value = value[part]
  if value not in choices:
    raise errors.ConfigError(f"config.{key}={value!r} is not supported; choose one of "
                             f"{', '.join(map(repr, choices))}.")


def sibling_config(config_file: str, name: str) -> ml_collections.ConfigDict:
  """``get_config()`` of another file in the same ``configs/`` folder."""
  return load_config_file(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))
