"""The tiny LLMGR model the model-level tests build (one place)."""

import numpy as np

from sbrjax.data import graphs as graphs_lib
from sbrjax.data import prepared
from sbrjax.llmgr import train as train_llmgr
from sbrjax.models import sbr as sbr_lib
from sbrjax.sbr import train as train_sbr


def build(cfg, backbone_params=None):
  """(data, model, params, encoder, pad id) of ``cfg`` (configs/llmgr_tiny.py):
  the backbone initialised with seed 0 unless ``backbone_params`` is given."""
  data = prepared.load_prepared(cfg.data)
  sbr_cfg = train_sbr.sbr_config(cfg, data.num_items)
  first = graphs_lib.make_batch(graphs_lib.build_graphs(data.train, 8), np.arange(2), 2)
  sbr_params = backbone_params or train_sbr.init_params(sbr_lib.create_model(sbr_cfg), first, 0)
  model, params, tok = train_llmgr.build_model_and_params(cfg, data, sbr_cfg, sbr_params, 0)
  enc, pad = train_llmgr.make_encoder(cfg, data, tok)
  return data, model, params, enc, pad
