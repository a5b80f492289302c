"""LLMGR end to end: SBR pre-training, LLM import, the configured stages, test metrics.

Flow of ``train_and_evaluate(config, workdir)``:
  1. prepare the data (``sbrjax.data.prepared``);
  2. the SBR backbone: restore ``config.llmgr.sbr_checkpoint`` or train one in
     ``workdir/sbr_pretrain`` (resumable; a finished run is reused);
  3. the LLM (``sbrjax.llm.load_llm``: GGUF / HF checkpoint or a random
     preset for tests, optionally only the first ``llm.num_layers`` blocks)
     and the LLMGR tree with fresh LoRA adapters, f_in and f_out
     (``sbrjax.llmgr.model.assemble_params``);
  4. each stage of ``config.stage_order``: its prompt tasks, its trainable
     labels (``optax.multi_transform``; frozen leaves get ``set_to_zero`` and
     no optimiser state), a new train state placed on ``config.mesh``
     (``sbrjax.llmgr.rules``), the shared train step
     (``sbrjax.train.steps``) and loop (``sbrjax.train.loop.run_stage``:
     Orbax checkpoints in ``workdir/<stage>``, TensorBoard);
  5. test metrics (sampled and full ranking) of the final parameters and of the
     SBR backbone alone, written to ``workdir/results.json``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from sbrjax import llm as llm_api
from sbrjax import metrics as metrics_lib
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import prepared as prepared_lib
from sbrjax.llmgr import config as llmgr_config
from sbrjax.llmgr import examples as examples_lib
from sbrjax.llmgr import head_init
from sbrjax.llmgr import model as model_lib
from sbrjax.llmgr import prompts as prompts_lib
from sbrjax.llmgr import rules as llmgr_rules
from sbrjax.models import lora as lora_lib
from sbrjax.parallel import catalog_softmax
from sbrjax.parallel import mesh as mesh_lib
from sbrjax.parallel import state as state_lib
from sbrjax.sbr import train as sbr_train
from sbrjax.train import evaluate as evaluate_lib
from sbrjax.train import labels as labels_lib
from sbrjax.train import loop
from sbrjax.train import losses
from sbrjax.train import optim
from sbrjax.train import steps
from sbrjax.train import writer as writer_lib


# ---------------------------------------------------------------------------
# Steps.


def catalog_sharded(mesh) -> bool:
  """Whether the item head splits the catalog across devices (mesh of > 1 device)."""
  return mesh is not None and mesh.size > 1


def make_loss(model, mesh=None):
  """``loss(params, batch, rng) -> (loss, {})``: mean cross-entropy over real examples.

  Each prompt's target is the uniform distribution over its labels (one for
  behavior and node_text prompts, the listed successors for contrastive
  ones; ``sbrjax.train.losses.masked_multilabel_xent``). On a mesh of several
  devices the softmax over items runs in ``sbrjax.parallel.catalog_softmax``
  (``shard_map``: per-device partial logits and a distributed log-sum-exp)
  on the head's output rows, so catalogs of millions of items never
  materialise whole logits on one device; otherwise the dense logits.
  """
  def loss(params, batch, rng):
    kwargs = dict(deterministic=False, rngs={"dropout": rng})
    labels, label_mask = batch.labels, batch.label_mask
    if labels is None:
      labels, label_mask = batch.targets[:, None], jnp.ones_like(batch.targets[:, None], bool)
    if not catalog_sharded(mesh):
      logits = model.apply({"params": params}, batch, **kwargs)
      return losses.masked_multilabel_xent(logits, labels, label_mask, batch.mask), {}
    feats, rows = model.apply({"params": params}, batch, features_only=True, **kwargs)
    # The mean of the per-label cross-entropies is the multi-label one.
    w = label_mask.astype(jnp.float32)
    ce = sum(w[:, j] * catalog_softmax.sharded_softmax_xent(
        feats, rows, labels[:, j], mesh, axis=tuple(mesh.axis_names))
             for j in range(labels.shape[1])) / jnp.maximum(w.sum(1), 1.0)
    return losses.masked_mean(ce, batch.mask), {}
  return loss


def jitted_train_step(model, schedule, trainable_mask, seed: int, mesh=None,
                    state_shardings=None, rules=llmgr_rules.LLMGR_LOGICAL_AXIS_RULES):
  """The shared train step (``sbrjax.train.steps``) with LLMGR's loss.

  Jitted on one device without ``mesh``; with it, with the state's
  shardings and ``PromptBatch`` rows over the batch axes.
  """
  step = steps.make_train_step(make_loss(model, mesh), schedule,
                               jax.random.PRNGKey(seed + 7), trainable_mask=trainable_mask)
  if mesh is None:
    return steps.jit_train_step(step)
  return steps.jit_train_step(
      step, mesh=mesh, state_shardings=state_shardings,
      batch_shardings=lambda b: llmgr_rules.batch_shardings(b, mesh, rules),
      place_batch=lambda b: llmgr_rules.place_batch(b, mesh, rules))


def make_evaluator(model, ks, mesh=None, rules=llmgr_rules.LLMGR_LOGICAL_AXIS_RULES,
                   top_k=None):
  """``evaluate(params, batcher, aliases=False, return_examples=False)``.

  On a mesh, batches are split over its batch axes, full-ranking target ranks
  come from the catalog-sharded ``catalog_softmax.sharded_target_rank`` (top
  items from ``sharded_topk``) and the sampled candidates' scores from their
  own head rows; per-example ranks come back replicated to every process.
  The per-example rows carry the top ``top_k`` items (default: the largest K).
  """
  top_k = max(ks) if top_k is None else top_k

  def extras(batch):
    return {"index": batch.sessions.index, "target": batch.targets}

  def dense_ranks(params, batch):
    logits = model.apply({"params": params}, batch, deterministic=True)
    return {**evaluate_lib.ranks_from_scores(logits, batch.targets, batch.mask,
                                             batch.negatives, top_k=top_k), **extras(batch)}

  def sharded_ranks(params, batch):
    h, table = model.apply({"params": params}, batch, deterministic=True,
                           features_only=True)  # [B, H + 1], [M, H + 1]
    axis = tuple(mesh.axis_names)
    out = {"mask": batch.mask,
           "rank/full": catalog_softmax.sharded_target_rank(
               h, table, batch.targets, mesh, axis=axis),
           **extras(batch)}
    if top_k:
      scores, ids = catalog_softmax.sharded_topk(h, table, min(top_k, table.shape[0]), mesh,
                                                 axis=axis)
      out["top/items"], out["top/scores"] = ids.astype(jnp.int32), scores
    if batch.negatives is not None:
      cands = jnp.concatenate([batch.targets[:, None], batch.negatives], axis=1)  # [B, K+1]
      scores = jnp.einsum("bd,bkd->bk", h, table[cands])
      out["rank/sampled"] = metrics_lib.target_ranks(scores, jnp.zeros_like(batch.targets))
    return out

  if mesh is None:
    inner = evaluate_lib.make_evaluator(dense_ranks, ks)
  else:
    inner = evaluate_lib.make_evaluator(
        sharded_ranks if catalog_sharded(mesh) else dense_ranks, ks,
        place=lambda b: llmgr_rules.place_batch(b, mesh, rules),
        out_shardings=NamedSharding(mesh, PartitionSpec()))

  def evaluate(params, batcher, aliases=False, return_examples=False):
    return inner(params, batcher.iterate(shuffle=False), aliases, return_examples)

  return evaluate


# ---------------------------------------------------------------------------
# The pipeline.


def pretrained_sbr(config, data, workdir):
  """Backbone parameters ({"sbr": ...}) and the backbone-alone results."""
  if config.llmgr.sbr_checkpoint:
    source = config.llmgr.sbr_checkpoint
  elif jax.process_count() > 1:
    raise ValueError(
        "Multi-process LLMGR runs need a trained backbone: train it once in a single "
        "process (python -m sbrjax.main --config=... --config.job=sbr --workdir=RUN) and "
        "pass --config.llmgr.sbr_checkpoint=RUN.")
  else:
    source = os.path.join(workdir, "sbr_pretrain")
    sbr_cfg = ml_collections.ConfigDict(config.to_dict())
    sbr_cfg.job = "sbr"
    sbr_cfg.train = ml_collections.ConfigDict(config.sbr_train.to_dict())
    # --config.train.progress_bar=False silences every stage, pre-training included.
    sbr_cfg.train.progress_bar = bool(config.sbr_train.progress_bar and config.train.progress_bar)
    sbr_cfg.restore_from = ""
    sbr_train.train_and_evaluate(sbr_cfg, source)
  cfg = sbr_train.sbr_config(config, data.num_items)
  model = sbr_train.sbr_lib.create_model(cfg)
  first = graphs_lib.probe_batch(int(config.data.max_len))
  # Restore onto this process's own device; the LLMGR state is placed on the
  # mesh afterwards (the checkpoint's recorded device may belong to another process).
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local),
      jax.eval_shape(lambda: sbr_train.init_params(model, first, 0)))
  params = sbr_train.restore_backbone(source, abstract,
                                      sbr_train.signature(cfg, data.fingerprint))
  results_path = os.path.join(source, "results.json")
  alone = json.load(open(results_path)) if os.path.exists(results_path) else None
  return cfg, params, alone


def lora_config(config) -> lora_lib.LoraConfig:
  return lora_lib.LoraConfig(rank=int(config.lora.rank), alpha=float(config.lora.alpha),
                             dropout=float(config.lora.dropout),
                             targets=tuple(config.lora.targets))


def node_source(config, sbr_cfg) -> str:
  """config.llmgr.node_source, "table" where the backbone has no per-click states."""
  source = str(config.llmgr.node_source)
  if source != "table" and not model_lib.backbone_traits(sbr_cfg)["click_states"]:
    logging.info("Backbone %s computes no per-click states: node slots take its item table.",
                 sbr_cfg.backbone)
    return "table"
  return source


def model_config(config, sbr_cfg, llm_cfg, num_items: int) -> model_lib.LLMGRConfig:
  """The frozen LLMGR config: the LLM's shape with this run's LoRA and dtypes
  (no decoder blocks and no adapters for the ``no_decoder`` control)."""
  g = config.llmgr
  if g.head_init not in ("random", "backbone"):
    raise ValueError(f"config.llmgr.head_init={g.head_init!r} is not supported; choose "
                     f"'random' (the paper) or 'backbone'.")
  if g.head_init == "backbone" and g.head == "residual":
    raise ValueError("config.llmgr.head_init='backbone' does not apply to head='residual', "
                     "which starts at the backbone's scores already; use head_init='random'.")
  llm_cfg = llm_cfg.replace(lora=lora_config(config))
  if g.control == "no_decoder":  # no blocks, so nothing for LoRA to adapt
    llm_cfg = llm_cfg.replace(num_layers=0, lora=None)
  return model_lib.LLMGRConfig(sbr=sbr_cfg, llm=llm_cfg, num_items=num_items,
                               head_hidden=int(g.head_hidden), head=str(g.head),
                               node_source=node_source(config, sbr_cfg),
                               control=str(g.control),
                               shared_prefix=bool(g.shared_prefix))


def build_model_and_params(config, data, sbr_cfg, sbr_params, seed):
  """(LLMGR module, its parameters, the LLM's tokenizer)."""
  spec = llm_api.LLMSpec.from_config(config.llm)
  hint = llm_api.bf16_hint(spec)
  if hint:
    logging.info(hint)
  llm_model, llm_params, tokenizer = llm_api.load_llm(spec, seed=seed)
  model_cfg = model_config(config, sbr_cfg, llm_model.config, data.num_items)
  params = model_lib.assemble_params(model_cfg, llm_params, sbr_params["sbr"], seed)
  return model_lib.LLMGR(model_cfg), params, tokenizer


def check_tree(model, params, batch):
  """Fails early (naming the path) if assembled params do not fit the model."""
  expected = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, batch))["params"]
  exp_flat = {labels_lib.path_str(p): v for p, v in
              jax.tree_util.tree_flatten_with_path(expected)[0]}
  got_flat = {labels_lib.path_str(p): v for p, v in
              jax.tree_util.tree_flatten_with_path(params)[0]}
  missing = sorted(set(exp_flat) - set(got_flat))
  extra = sorted(set(got_flat) - set(exp_flat))
  bad = [k for k in set(exp_flat) & set(got_flat) if exp_flat[k].shape != got_flat[k].shape]
  if missing or extra or bad:
    raise ValueError(f"Assembled LLMGR parameters do not fit the model: missing {missing[:5]}, "
                     f"unexpected {extra[:5]}, wrong shape {bad[:5]}.")


def make_encoder(config, data, tokenizer):
  """(the prompt encoder of this run, the pad id); the graph placeholder is
  hidden when the configured backbone reads no session graph."""
  tokenize = lambda text: list(tokenizer.encode(text, add_special_tokens=False))
  item_tokens = [tokenize(" " + t) for t in data.item_texts]
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
  sbr_cfg = sbr_train.sbr_config(config, data.num_items)
  encoder = prompts_lib.PromptEncoder(
      tokenize, bos_id=tokenizer.bos_token_id, placeholder_id=pad or 0,
      max_len=int(config.data.max_len), max_nodes=int(config.llmgr.max_nodes),
      max_text_tokens=int(config.llmgr.max_text_tokens), item_text_tokens=item_tokens,
      frame=str(config.llmgr.prompt_frame),
      graph_slot=model_lib.backbone_traits(sbr_cfg)["session_graph"],
      node_source=node_source(config, sbr_cfg))
  return encoder, int(pad or 0)


def stage_started(stage_path: str) -> bool:
  """Whether a stage directory holds a saved train state (the stage resumes)."""
  latest = os.path.join(stage_path, "latest")
  return os.path.isdir(latest) and any(n.isdigit() for n in os.listdir(latest))


def fit_head_on(model, params, behavior: examples_lib.TaskExamples, config, pad_id: int):
  """``head_init.fit_head`` on up to ``config.llmgr.head_init_prompts`` training
  behavior prompts (a random subset, seeded by ``config.seed``)."""
  n = int(config.llmgr.head_init_prompts)
  rng = np.random.default_rng([int(config.seed), 5])
  idx = np.arange(len(behavior)) if n <= 0 or n >= len(behavior) else np.sort(
      rng.choice(len(behavior), n, replace=False))
  batcher = examples_lib.PromptBatcher(
      [examples_lib.subset(behavior, idx)], max_len=int(config.data.max_len),
      batch_size=int(config.eval.batch_size), length_buckets=tuple(config.llmgr.length_buckets),
      pad_id=pad_id)
  return head_init.fit_head(model, params, batcher.iterate(shuffle=False),
                            ridge=float(config.llmgr.head_init_ridge))


def eval_batcher(config, split, encoder, pad_id: int):
  """(batcher, source rows) of the behavior prompts an evaluation of ``split`` scores
  (``config.llmgr.eval_limit`` of its rows, drawn with ``config.seed``)."""
  ex = examples_lib.behavior_examples(split, encoder, limit=int(config.llmgr.eval_limit),
                                      seed=int(config.seed))
  batcher = examples_lib.PromptBatcher(
      [ex], max_len=int(config.data.max_len), batch_size=int(config.eval.batch_size),
      length_buckets=tuple(config.llmgr.length_buckets), pad_id=pad_id)
  return batcher, ex.source_rows


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  t_start = time.perf_counter()
  seed = int(config.seed)
  llmgr_config.adopt_checkpoint_sbr(config)  # (done already when run through the pipeline)
  data = prepared_lib.load_prepared(config.data)
  sbr_cfg, sbr_params, sbr_alone = pretrained_sbr(config, data, workdir)
  model, params, tokenizer = build_model_and_params(config, data, sbr_cfg, sbr_params, seed)
  encoder, pad_id = make_encoder(config, data, tokenizer)
  g = config.llmgr
  max_len, bs = int(config.data.max_len), int(config.train.batch_size)
  buckets = tuple(g.length_buckets)

  cache: Dict[str, examples_lib.TaskExamples] = {}

  def task_examples(task):
    if task not in cache:
      if task == "behavior":
        cache[task] = examples_lib.behavior_examples(data.train, encoder,
                                                   limit=int(g.train_limit), seed=seed)
      elif task == "node_text":
        cache[task] = examples_lib.node_text_examples(data.num_items, encoder,
                                                    limit=int(g.train_limit), seed=seed)
      elif task == "contrastive":
        cache[task] = examples_lib.contrastive_examples(
            data.train, data.num_items, encoder, num_candidates=int(g.num_candidates),
            max_successors=int(g.max_successors), limit=int(g.train_limit), seed=seed,
            mode=str(g.contrastive))
      else:
        raise ValueError(f"Unknown prompt task {task!r} in config.stages; choose one of "
                         f"{prompts_lib.TASKS}.")
    return cache[task]

  (valid_batcher, _), (test_batcher, test_rows) = (
      eval_batcher(config, data.valid, encoder, pad_id),
      eval_batcher(config, data.test, encoder, pad_id))
  check_tree(model, params, next(valid_batcher.iterate(shuffle=False)))
  writer = writer_lib.MetricWriter(os.path.join(workdir, "tensorboard", "llmgr"))
  writer.write_text("config", config.to_json_best_effort(indent=2))
  signature = {"model": f"llmgr/{sbr_cfg.backbone}", "num_items": data.num_items,
               "data": data.fingerprint, "variant": config.variant,
               "llm_layers": model.config.llm.num_layers,
               "llm_hidden": model.config.llm.hidden_size,
               # What the prompts and the head are: a run resumed with other
               # choices would mix two models.
               "llmgr": {k: str(g[k]) for k in ("prompt_frame", "node_source", "contrastive",
                                                 "head", "head_init", "control")}}

  mesh = mesh_lib.mesh_from_config(config.mesh)
  rules = llmgr_rules.logical_rules(config.logical_axis_rules)
  evaluate = make_evaluator(model, tuple(config.eval.ks), mesh, rules)
  stage_summaries = {}
  head_fit = None
  for name in config.stage_order:
    if name not in config.stages:
      raise ValueError(f"config.stage_order names {name!r}, which config.stages lacks.")
    st = config.stages[name]
    stage_path = loop.stage_dir(workdir, name)
    if (g.head_init == "backbone" and head_fit is None and "behavior" in st.tasks
        and "f_out" in st.trainable):
      head_fit = {"stage": name}
      if not stage_started(stage_path):  # a resumed stage restores its fitted head
        params, fit = fit_head_on(model, params, task_examples("behavior"), config, pad_id)
        head_fit.update(fit)
        logging.info("Stage %s: head fitted to the backbone on %d prompts (r2 %.3f)", name,
                     fit["prompts"], fit["r2"])
    batcher = examples_lib.PromptBatcher([task_examples(t) for t in st.tasks], max_len=max_len,
                                       batch_size=bs, length_buckets=buckets, pad_id=pad_id)
    n_steps = batcher.num_batches()
    train_cfg = ml_collections.ConfigDict(config.train.to_dict())
    train_cfg.learning_rate = float(st.learning_rate)
    schedule = optim.make_schedule(train_cfg, n_steps, n_steps * int(st.epochs))
    tx = optim.make_optimizer(train_cfg, schedule, params, trainable=tuple(st.trainable),
                              label_learning_rates=st.label_learning_rates.to_dict())
    mask = labels_lib.trainable_mask(params, tuple(st.trainable))
    state, shardings = state_lib.create_train_state(model.apply, params, tx, mesh, rules,
                                                     llmgr_rules.LLMGR_PARAM_RULES)
    validate = "behavior" in st.tasks and bool(config.train.early_stop_metric)
    spec = loop.StageSpec.from_config(
        name, config.train, epochs=int(st.epochs),
        early_stop_metric=config.train.early_stop_metric if validate else "")
    result = loop.run_stage(
        spec, stage_dir=stage_path, state=state,
        signature={**signature, "stage": name, "tasks": list(st.tasks),
                   "trainable": list(st.trainable)},
        train_step=jitted_train_step(model, schedule, mask, seed, mesh, shardings, rules),
        train_batches=lambda epoch, b=batcher: b.iterate(shuffle=True, seed=seed, epoch=epoch),
        steps_per_epoch=n_steps, batch_size=bs,
        evaluate=(lambda p: evaluate(p, valid_batcher)) if validate else None,
        writer=writer)
    params = result["best_params"]
    stage_summaries[name] = {"prompts": len(batcher), "steps_per_epoch": n_steps,
                             "history": result["meta"]["history"],
                             "train_seconds": result["meta"]["train_seconds"]}

  # The printed model name says which head scores (beyond the paper unless "paper").
  run_name = f"LLMGR[{config.variant}]({sbr_cfg.backbone})" + (
      "" if g.head == "paper" else f" head={g.head}")
  aliases = bool(config.eval.p_at_k_alias)
  test, test_examples = evaluate(params, test_batcher, aliases, return_examples=True)
  # Batcher rows -> rows of data.test (eval_limit may subsample the split).
  test_examples["index"] = test_rows[test_examples["index"]]
  sbr_train.save_examples(
      workdir, "test", test_examples, data.test, data.train,
      model=run_name, num_items=data.num_items,
      ks=tuple(config.eval.ks),
      extra={"job": "llmgr", "variant": config.variant, "dataset": data.name,
             "data_fingerprint": data.fingerprint})
  writer.write_scalars(0, {f"eval/test/{k}": v for k, v in test.items()})
  writer.close()
  summary = {
      "model": run_name, "dataset": data.name,
      "protocol": data.protocol, "num_items": data.num_items, "test": test,
      "test_examples": len(test_batcher), "sbr_alone": (sbr_alone or {}).get("test"),
      "stages": stage_summaries, "prompt_stats": vars(encoder.stats),
      "head_init": head_fit,
      "backbone_traits": model_lib.backbone_traits(sbr_cfg),
      "llm": {"source": config.llm.source, "layers": model.config.llm.num_layers,
              "hidden": model.config.llm.hidden_size},
      "wall_seconds": time.perf_counter() - t_start,
      "config": json.loads(config.to_json_best_effort()),
  }
  writer_lib.write_json_atomic(os.path.join(workdir, "results.json"), summary)
  logging.info("LLMGR test metrics: %s", json.dumps(test))
  return summary
