"""Training and evaluation of an SBR backbone (graph, hypergraph or sequence; any of ``sbrjax.models.sbr.BACKBONES``).

``train_and_evaluate(config, workdir)`` prepares the data, trains with early
stopping on the validation split, restores the best epoch and scores the
test split with both protocols (sampled and full ranking). The parameter
tree is ``{"sbr": backbone_params}`` so its checkpoints drop straight into
LLMGR and LLM4SBR, whose trees hold the backbone under the same key.

The loss is the masked cross-entropy plus any auxiliary losses the backbone
reports while training (``SBROutput.aux_losses``: S^2-DHCN's self-supervised
loss, HCGR's contrastive term); TensorBoard then shows ``train/rec_loss`` and
each named part beside ``train/loss``. Backbones with a catalog-wide graph
(GCE-GNN, S^2-DHCN) get it from ``sbr_config``, which builds it from the
training split with ``sbrjax.data.item_graphs`` (cached beside the prepared
data, keyed by its fingerprint and the graph settings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax.training import train_state

from sbrjax import errors
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import item_graphs
from sbrjax.data import prepared as prepared_lib
from sbrjax.data.types import PreparedData
from sbrjax.models import backbone as backbone_lib
from sbrjax.models import sbr as sbr_lib
from sbrjax.train import checkpoints as ckpt_lib
from sbrjax.train import evaluate as evaluate_lib
from sbrjax.train import labels as labels_lib
from sbrjax.train import loop
from sbrjax.train import losses
from sbrjax.train import optim
from sbrjax.train import steps
from sbrjax.train import writer as writer_lib

STAGE = "sbr"


def sbr_config(config: ml_collections.ConfigDict, num_items: int,
               data: Optional[PreparedData] = None) -> sbr_lib.SBRConfig:
  """The frozen model config from the ``sbr`` section (fields checked by name).

  For a backbone with a catalog-wide graph (``global_graph_spec``) the graph
  of the training split of ``data`` (default: ``load_prepared(config.data)``,
  read from its cache) is loaded or built and attached as ``global_graph``.
  """
  fields = {f.name for f in dataclasses.fields(sbr_lib.SBRConfig)} - {"global_graph"}
  values = {k: v for k, v in config.sbr.to_dict().items() if k in fields}
  unknown = set(config.sbr.keys()) - fields
  if unknown:
    raise errors.ConfigError(f"config.sbr has keys the backbone does not take: {sorted(unknown)}.")
  values["num_items"] = num_items
  # NISER+'s position table must cover the longest session the data yields.
  values["niser_max_len"] = max(int(config.data.max_len), values.get("niser_max_len", 0))
  cfg = sbr_lib.SBRConfig(**values)
  spec = global_graph_spec(cfg)
  if spec is None:
    return cfg
  kind, settings = spec
  if data is None:
    data = prepared_lib.load_prepared(config.data)
  if data.num_items != num_items:
    raise ValueError(f"sbr_config: num_items={num_items} but the prepared data "
                     f"{data.name} has {data.num_items} items; build the config for that data.")
  arrays, meta = item_graphs.load_or_build(data, kind, settings,
                                           prepared_lib.validate(config.data).data_dir)
  if kind == "hypergraph":
    arrays = item_graphs.operator_arrays(arrays, num_items)
  return dataclasses.replace(cfg, global_graph=backbone_lib.GlobalGraph(kind, meta["key"], arrays))


def global_graph_spec(cfg: sbr_lib.SBRConfig) -> Optional[Tuple[str, Dict[str, Any]]]:
  """(kind, settings) of the catalog-wide graph ``cfg.backbone`` needs, or None."""
  if cfg.backbone == "gcegnn":
    return "gcegnn", {"window": cfg.gcegnn_window, "num_neighbors": cfg.gcegnn_neighbors,
                      "seed": cfg.gcegnn_seed}
  if cfg.backbone == "s2dhcn":
    if cfg.s2dhcn_hyperedges not in item_graphs.HYPEREDGES:
      raise ValueError(f"config.sbr.s2dhcn_hyperedges={cfg.s2dhcn_hyperedges!r} is not "
                       f"supported; choose one of {', '.join(item_graphs.HYPEREDGES)}.")
    return "hypergraph", {"hyperedges": cfg.s2dhcn_hyperedges}
  return None


def signature(cfg: sbr_lib.SBRConfig, fingerprint: str) -> Dict[str, Any]:
  """What a checkpoint must agree on to be restored into this run."""
  sig = {"model": f"sbr/{cfg.backbone}", "num_items": cfg.num_items,
         "embed_dim": cfg.embed_dim, "data": fingerprint}
  if cfg.global_graph is not None:
    sig["global_graph"] = cfg.global_graph.digest
  return sig


def init_params(model, batch, seed: int):
  variables = model.init({"params": jax.random.PRNGKey(seed),
                          "dropout": jax.random.PRNGKey(seed + 1)}, batch, deterministic=True)
  return {"sbr": variables["params"]}


def jitted_train_step(model, schedule, seed: int, trainable_mask: Any = None):
  """The backbone's jitted train step (masked cross-entropy + auxiliary losses, dropout on)."""

  def loss_fn(params, batch, rng):
    out = model.apply({"params": params["sbr"]}, batch, deterministic=False,
                      rngs={"dropout": rng})
    rec = losses.masked_xent(out.logits, batch.targets, batch.graph_mask)
    aux, parts = backbone_lib.auxiliary_loss(out)
    if not parts:
      return rec, {}
    return rec + aux, {"rec_loss": rec, **parts}

  return steps.jit_train_step(
      steps.make_train_step(loss_fn, schedule, jax.random.PRNGKey(seed + 2),
                            trainable_mask=trainable_mask))


def graph_ranks(batch, logits, top_k: int = 0):
  """Per-example evaluation outputs of a ``GraphBatch`` scored by ``logits`` [B, I]
  (with ``top_k`` > 0 also its top-k items)."""
  return {**evaluate_lib.ranks_from_scores(logits, batch.targets, batch.graph_mask,
                                           batch.negatives, top_k=top_k),
          "index": batch.index, "target": batch.targets}


def save_examples(workdir: str, split_name: str, examples, split, train, *,
                  model: str, num_items: int, ks, extra=None) -> str:
  """Writes the per-example results of ``split`` (``sbrjax.train.evaluate``)."""
  return evaluate_lib.save_split_examples(
      workdir, split_name, examples, lengths=split.lengths,
      train_counts=evaluate_lib.train_counts(train.targets, num_items),
      metadata={"model": model, "num_items": int(num_items), "ks": list(ks),
                **(extra or {})})


def make_evaluator(model, ks, top_k: Optional[int] = None):
  """``evaluate(params, graphs, batch_size, aliases=False, return_examples=False)``;
  the per-example rows carry the top ``top_k`` items (default: the largest K)."""
  top_k = max(ks) if top_k is None else top_k

  def rank_fn(params, batch):
    out = model.apply({"params": params["sbr"]}, batch, deterministic=True)
    return graph_ranks(batch, out.logits, top_k)

  inner = evaluate_lib.make_evaluator(rank_fn, ks)

  def evaluate(params, graphs, batch_size, aliases=False, return_examples=False):
    return inner(params, graphs_lib.iterate_batches(graphs, batch_size, shuffle=False),
                 aliases, return_examples)

  return evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains the configured backbone and writes ``results.json`` in ``workdir``."""
  t_start = time.perf_counter()
  data = prepared_lib.load_prepared(config.data)
  cfg = sbr_config(config, data.num_items, data)
  model = sbr_lib.create_model(cfg)
  max_len = int(config.data.max_len)
  train_graphs = graphs_lib.build_graphs(data.train, max_len)
  valid_graphs = graphs_lib.build_graphs(data.valid, max_len)
  test_graphs = graphs_lib.build_graphs(data.test, max_len)

  bs = int(config.train.batch_size)
  if bs < 1:
    raise errors.ConfigError(f"config.train.batch_size must be >= 1, got {bs}.")
  # Packed batches (graphs_lib node cap) can add a batch in rare epochs;
  # epoch 0's count sets the schedule's epoch length.
  steps_per_epoch = graphs_lib.num_batches(train_graphs, bs, node_cap="auto", shuffle=True,
                                           seed=int(config.seed), epoch=0)
  first = next(iter(graphs_lib.iterate_batches(train_graphs, bs, shuffle=False)))
  params = init_params(model, first, int(config.seed))
  sig = signature(cfg, data.fingerprint)
  if config.restore_from:
    params["sbr"] = restore_backbone(config.restore_from, params, sig)["sbr"]

  schedule = optim.make_schedule(config.train, steps_per_epoch,
                                 steps_per_epoch * int(config.train.epochs))
  tx = optim.make_optimizer(config.train, schedule, params, trainable=("sbr",))
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  # An int32 array step (not Python 0) keeps the jitted step to one compile.
  state = state.replace(step=jnp.zeros((), jnp.int32))

  writer = writer_lib.MetricWriter(os.path.join(workdir, "tensorboard", STAGE))
  writer.write_text("config", config.to_json_best_effort(indent=2))
  ks = tuple(config.eval.ks)
  evaluate = make_evaluator(model, ks)
  eval_bs = int(config.eval.batch_size)
  spec = loop.StageSpec.from_config(STAGE, config.train)
  seed = int(config.seed)
  result = loop.run_stage(
      spec, stage_dir=loop.stage_dir(workdir, STAGE), state=state, signature=sig,
      train_step=jitted_train_step(model, schedule, seed,
                                   labels_lib.trainable_mask(params, ("sbr",))),
      train_batches=lambda epoch: graphs_lib.iterate_batches(
          train_graphs, bs, shuffle=True, seed=seed, epoch=epoch),
      steps_per_epoch=steps_per_epoch, batch_size=bs,
      evaluate=lambda p: evaluate(p, valid_graphs, eval_bs),
      writer=writer)

  best = result["best_params"]
  aliases = bool(config.eval.p_at_k_alias)
  test, test_rows = evaluate(best, test_graphs, eval_bs, aliases, return_examples=True)
  valid, valid_rows = evaluate(best, valid_graphs, eval_bs, aliases, return_examples=True)
  for name, rows in (("test", test_rows), ("valid", valid_rows)):
    save_examples(workdir, name, rows, getattr(data, name), data.train, model=cfg.backbone,
                  num_items=data.num_items, ks=ks,
                  extra={"job": "sbr", "dataset": data.name, "data_fingerprint": data.fingerprint})
  writer.write_scalars(int(result["state"].step),
                       {f"eval/test/{k}": v for k, v in test.items()})
  writer.close()
  summary = {
      "model": cfg.backbone, "dataset": data.name, "protocol": data.protocol,
      "num_items": data.num_items, "data_fingerprint": data.fingerprint,
      "best_epoch": result["meta"]["best_epoch"], "epochs_run": result["meta"]["epoch"] + 1,
      "train_seconds": result["meta"]["train_seconds"],
      "wall_seconds": time.perf_counter() - t_start,
      "valid": valid, "test": test, "config": json.loads(config.to_json_best_effort()),
  }
  if cfg.global_graph is not None:
    summary["global_graph"] = {"kind": cfg.global_graph.kind, "key": cfg.global_graph.digest,
                               "arrays": {k: list(v.shape)
                                          for k, v in cfg.global_graph.arrays.items()}}
  writer_lib.write_json_atomic(os.path.join(workdir, "results.json"), summary)
  logging.info("Test metrics: %s", json.dumps(test))
  return summary


def restore_backbone(source: str, params, sig) -> Any:
  """Backbone parameters of another run (its workdir or its ``best`` dir)."""
  source = os.path.abspath(source)
  candidates = [source, os.path.join(source, "best"), os.path.join(source, STAGE, "best")]
  for path in candidates:
    if os.path.isdir(path) and os.path.basename(os.path.normpath(path)) == "best":
      # Any data fingerprint is accepted: restoring from another preparation of
      # the same catalog is a legitimate warm start; model and catalog must match.
      restored, _ = ckpt_lib.restore_params(path, ckpt_lib.abstract(params), sig,
                                            keys=("model", "num_items", "embed_dim"))
      return restored
  raise errors.CheckpointError(
      f"config.restore_from={source!r}: no checkpoint found (looked for "
      f"{', '.join(candidates[1:])}). Give a run directory written by an sbr job.")
