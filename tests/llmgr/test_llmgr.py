"""LLMGR: prompt slots, hybrid encoding, stage freezing, variants, end to end."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax.training import train_state

from sbrjax import config as config_lib
from sbrjax import llm as llm_api
from sbrjax.llmgr import config as llmgr_config_lib
from sbrjax.train import labels as labels_lib
from sbrjax.train import checkpoints
from sbrjax.train import losses
from sbrjax.train import optim
from sbrjax.llmgr import train as train_llmgr
from sbrjax.sbr import train as train_sbr
from sbrjax.llmgr import examples as llmgr_data
from sbrjax.data import prepared
from sbrjax.llmgr import prompts as prompts_lib
from sbrjax.llmgr import model as llmgr_lib
from tests.llmgr import tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PH = 0  # placeholder id of the byte tokenizer (its pad id)


def _encoder(max_len=8, max_nodes=3, **kwargs):
  tok = llm_api.ByteTokenizer()
  texts = [tok.encode(" item number %d" % i) for i in range(30)]
  return prompts_lib.PromptEncoder(
      tok.encode, bos_id=tok.bos_token_id, placeholder_id=PH, max_len=max_len,
      max_nodes=max_nodes, max_text_tokens=5, item_text_tokens=texts, **kwargs), tok


def _text(tokens):
  return bytes(int(t) - 3 for t in tokens).decode()


# ---------------------------------------------------------------- prompts


def test_behavior_prompt_slots_keep_the_most_recent_clicks():
  enc, tok = _encoder(max_nodes=3)
  p = enc.encode("behavior", session=[4, 7, 4, 9, 2])
  assert list(p.tokens[p.slot_pos]) == [PH] * 4          # graph + 3 nodes
  assert list(p.slot_src) == [0, 1 + 2, 1 + 3, 1 + 4]    # graph, clicks 2..4
  assert np.all(np.diff(p.slot_pos) > 0)
  assert _text(p.tokens[1:p.slot_pos[0]]) == (
      "Instruction: Please recommend a suitable next item according to the session graph "
      "and its corresponding nodes ")
  assert _text(p.tokens[p.slot_pos[-1] + 1:]) == ".\nResponse:"
  assert enc.stats.sessions_truncated == 1


@pytest.mark.parametrize("task", ["behavior", "node_text", "contrastive"])
def test_paper_frame_wraps_every_prompt_and_the_head_reads_its_last_token(task):
  framed, tok = _encoder()
  bare, _ = _encoder(frame="none")
  kw = dict(session=[4, 7, 9], item=2, click=1, candidates=[5, 6])
  p, q = framed.encode(task, **kw), bare.encode(task, **kw)
  head, tail = "Instruction: ", "\nResponse:"
  assert p.tokens[0] == q.tokens[0] == tok.bos_token_id
  assert list(p.tokens[1:]) == tok.encode(head) + list(q.tokens[1:]) + tok.encode(tail)
  # Slots keep their order and sources; only positions shift by the frame's head.
  np.testing.assert_array_equal(p.slot_src, q.slot_src)
  np.testing.assert_array_equal(p.slot_pos, q.slot_pos + len(head))
  assert len(p.tokens) == len(q.tokens) + len(head) + len(tail)
  batch = prompts_lib.collate([p], length=192, max_slots=8, max_items=4, pad_id=0)
  assert _text([batch["input_ids"][0, batch["last_pos"][0]]]) == ":"  # "Response:"
  batch = prompts_lib.collate([q], length=192, max_slots=8, max_items=4, pad_id=0)
  assert _text([batch["input_ids"][0, batch["last_pos"][0]]]) == "."


def test_graph_placeholder_is_hidden_for_backbones_without_a_graph():
  enc, _ = _encoder(graph_slot=False)
  p = enc.encode("behavior", session=[4, 7, 9])
  assert list(p.slot_src) == [1, 2, 3]  # nodes only
  assert _text(p.tokens[1:p.slot_pos[0]]).endswith("its corresponding nodes ")
  with pytest.raises(ValueError, match="config.llmgr.prompt_frame"):
    _encoder(frame="chat")
  with pytest.raises(ValueError, match="config.llmgr.node_source"):
    _encoder(node_source="text")


def test_one_node_session_has_graph_and_one_node_slot():
  enc, _ = _encoder()
  p = enc.encode("behavior", session=[5])
  assert list(p.slot_src) == [0, 1]
  assert p.slot_pos[1] == p.slot_pos[0] + 2  # "<graph> <node>": a space between


def test_contrastive_prompt_node_is_a_click_and_candidates_are_item_slots():
  enc, _ = _encoder(max_len=8)
  p = enc.encode("contrastive", item=3, click=2, candidates=[9, 1, 4])
  assert list(p.items) == [9, 1, 4]
  assert list(p.slot_src) == [1 + 2, 9, 10, 11]  # click block, then 1 + max_len + q
  assert list(p.tokens[p.slot_pos]) == [PH] * 4
  # The pre-issue-12 encoding lists the target node as an item instead.
  mixed, _ = _encoder(max_len=8, node_source="mixed")
  p = mixed.encode("contrastive", item=3, click=2, candidates=[9, 1, 4])
  assert list(p.items) == [3, 9, 1, 4]
  assert list(p.slot_src) == [9, 10, 11, 12]


def test_node_text_prompt_inlines_truncated_item_text_and_has_no_slots():
  enc, tok = _encoder()
  p = enc.encode("node_text", item=2)
  assert len(p.slot_pos) == 0
  assert bytes(t - 3 for t in tok.encode(" item")).decode() in bytes(
      t - 3 for t in p.tokens[1:]).decode()
  assert enc.stats.texts_truncated == 1  # " item number 2" > 5 tokens


def test_prompt_longer_than_every_bucket_is_an_error():
  with pytest.raises(ValueError, match="max_prompt_len|largest length bucket"):
    prompts_lib.bucket_length(300, (64, 128))


def test_unknown_task_is_an_error():
  enc, _ = _encoder()
  with pytest.raises(ValueError, match="Unknown prompt task"):
    enc.encode("summarize")


# ---------------------------------------------------------------- model + steps


_setup = tiny_model.build


def _batch(examples, pad):
  b = llmgr_data.PromptBatcher(examples, max_len=8, batch_size=8,
                               length_buckets=(128, 192), pad_id=pad)
  return next(b.iterate(shuffle=False))


# A hand-built batch: three sessions (one with a repeated item, one of one click,
# one longer than max_len = 8), a behavior prompt each, and two contrastive prompts
# whose target node is a known click.
HAND_SESSIONS = [[3, 5, 3, 7], [2], [9, 1, 2, 3, 4, 5, 6, 8, 1, 6]]


def _hand_batch(enc, pad):
  seqs = [np.asarray(s, np.int32) for s in HAND_SESSIONS]
  beh = llmgr_data.TaskExamples(
      "behavior", llmgr_data._split_from_sequences(seqs, [0, 0, 0], [0, 0, 0]),
      [enc.encode("behavior", session=s) for s in seqs])
  # Session 0: node 5 (click 1), session 2 (window = its last 8 clicks): node 4 (click 2).
  con = llmgr_data.TaskExamples(
      "contrastive", llmgr_data._split_from_sequences([seqs[0], seqs[2][-8:]], [3, 5], [0, 0]),
      [enc.encode("contrastive", item=5, click=1, candidates=[3, 8, 0]),
       enc.encode("contrastive", item=4, click=2, candidates=[7, 5, 2])],
      labels=[np.asarray([3], np.int32), np.asarray([5], np.int32)])
  return _batch([beh, con], pad)


@pytest.mark.parametrize("source", ["table", "gnn", "mixed"])
def test_each_slot_source_writes_the_vector_it_names_at_its_position(cfg, source):
  cfg.llmgr.node_source = source
  data, model, params, enc, pad = _setup(cfg)
  batch = _hand_batch(enc, pad)
  got = np.asarray(model.apply({"params": params}, batch,
                               method=llmgr_lib.LLMGR.hybrid_embeddings))
  sbr_out = model.apply({"params": params}, batch.sessions, method=lambda m, s: m.sbr(s))
  tokens = np.asarray(model.apply({"params": params}, jnp.asarray(batch.input_ids),
                                  method=lambda m, i: m.llm.embed(i)))
  table = np.asarray(params["sbr"]["encoder"]["item_embedding"]["embedding"])
  w, b = np.asarray(params["f_in"]["kernel"]), np.asarray(params["f_in"]["bias"])
  windows = [np.asarray(x[-8:]) for x in HAND_SESSIONS] + [
      np.asarray(HAND_SESSIONS[0]), np.asarray(HAND_SESSIONS[2][-8:])]

  def node(i, click):  # the vector the configured source names for a click
    if source == "table":
      return table[windows[i][click]]
    return np.asarray(sbr_out.seq_states[i, click])

  expected = {  # row -> [(position in the prompt's slot order, vector)]
      i: [np.asarray(sbr_out.final[i])] + [node(i, c) for c in
                                           range(max(0, len(windows[i]) - enc.max_nodes), len(windows[i]))]
      for i in range(3)}
  con_node = {3: (5, 1), 4: (4, 2)}
  for i, cands in ((3, [3, 8, 0]), (4, [7, 5, 2])):
    item, click = con_node[i]
    first = table[item] if source == "mixed" else node(i, click)
    assert windows[i][click] == item
    expected[i] = [first] + [table[c] for c in cands]
  for i, vecs in expected.items():
    used = batch.slot_pos[i] < batch.input_ids.shape[1]
    pos = batch.slot_pos[i][used]
    assert len(pos) == len(vecs), i
    for p, v in zip(pos, vecs):
      np.testing.assert_allclose(got[i, p], v @ w + b, atol=1e-5, rtol=1e-5)
    other = np.setdiff1d(np.arange(batch.input_ids.shape[1]), pos)
    np.testing.assert_array_equal(got[i, other], tokens[i, other])


def _one_step(cfg, model, params, batch, trainable):
  tcfg = ml_collections.ConfigDict(cfg.train.to_dict())
  tcfg.learning_rate = 1e-2
  sched = optim.make_schedule(tcfg, 10, 10)
  tx = optim.make_optimizer(tcfg, sched, params, trainable)
  mask = labels_lib.trainable_mask(params, trainable)
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  before = jax.tree_util.tree_map(np.array, params)
  state, _ = train_llmgr.jitted_train_step(model, sched, mask, 0)(state, batch)
  return before, jax.tree_util.tree_map(np.asarray, state.params)


def _changed_by_label(before, after):
  out = {}
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(before)[0],
                          jax.tree_util.tree_leaves(after)):
    label = labels_lib.param_label(path)
    out.setdefault(label, []).append(not np.array_equal(a, b))
  return out


@pytest.mark.parametrize("stage", ["aux", "major"])
def test_stage_step_changes_only_its_trainable_labels(cfg, stage):
  data, model, params, enc, pad = _setup(cfg)
  if stage == "aux":
    ex = [llmgr_data.node_text_examples(data.num_items, enc, limit=4),
          llmgr_data.contrastive_examples(data.train, data.num_items, enc, num_candidates=5,
                                          max_successors=2, limit=4)]
  else:
    ex = [llmgr_data.behavior_examples(data.train, enc, limit=8)]
  trainable = tuple(cfg.stages[stage].trainable)
  # The fresh LoRA B is zero, so the first aux step moves B only if A gets through.
  before, after = _one_step(cfg, model, params, _batch(ex, pad), trainable)
  changed = _changed_by_label(before, after)
  for label, flags in changed.items():
    if label in trainable:
      assert any(flags), f"{stage}: no {label} parameter changed"
    else:
      assert not any(flags), f"{stage}: frozen {label} parameters changed"
  assert set(changed) == {"sbr", "llm_base", "lora", "f_in", "f_out"}


def test_gradients_reach_the_sbr_model_through_the_frozen_llm(cfg):
  data, model, params, enc, pad = _setup(cfg)
  batch = _batch([llmgr_data.behavior_examples(data.train, enc, limit=8)], pad)

  def loss(sbr_params):
    logits = model.apply({"params": {**params, "sbr": sbr_params}}, batch)
    return losses.masked_xent(logits, batch.targets, batch.mask)

  grads = jax.jit(jax.grad(loss))(params["sbr"])
  gnn_grads = [np.abs(np.asarray(g)).max() for p, g in
               jax.tree_util.tree_flatten_with_path(grads)[0] if "gnn" in labels_lib.path_str(p)]
  assert gnn_grads and max(gnn_grads) > 0


def test_frozen_leaves_have_no_optimizer_state(cfg):
  _, model, params, _, _ = _setup(cfg)
  tcfg = cfg.train
  sched = optim.make_schedule(tcfg, 10, 10)
  tx = optim.make_optimizer(tcfg, sched, params, ("lora", "f_in", "f_out"))
  state = tx.init(params)
  n_trainable = sum(x.size for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
                    if labels_lib.param_label(p) in ("lora", "f_in", "f_out"))
  n_state = sum(x.size for x in jax.tree_util.tree_leaves(state) if x.ndim > 0)
  assert n_state == 2 * n_trainable  # Adam's two moments, nothing for frozen leaves


def test_variants_differ_only_in_their_stages():
  cfgs = {v: llmgr_config_lib.llmgr_config(v) for v in llmgr_config_lib.LLMGR_VARIANTS}
  base = cfgs["llmgr"].to_dict()
  for name, c in cfgs.items():
    d = c.to_dict()
    diff = {k for k in set(base) | set(d) if base.get(k) != d.get(k)}
    assert diff <= {"variant", "stages", "stage_order"}, (name, diff)
  trained = {v: {t for s in c.stages.values() for t in s.trainable} for v, c in cfgs.items()}
  assert trained["llmgr_m"] == {"sbr", "f_out"}
  assert trained["llmgr_o"] == trained["llmgr_f"] == {"sbr", "lora", "f_in", "f_out"}
  assert cfgs["llmgr_f"].stages.aux.tasks == cfgs["llmgr"].stages.aux.tasks
  assert len(cfgs["llmgr_o"].stage_order) == 1 and len(cfgs["llmgr_m"].stage_order) == 1


# ---------------------------------------------------------------- end to end + bad input


@pytest.mark.slow
def test_llmgr_killed_mid_stage_resumes_to_the_uninterrupted_result(cfg, tmp_path, monkeypatch):
  cfg.stages.major.epochs = 2
  ref_dir = str(tmp_path / "ref")
  ref = train_llmgr.train_and_evaluate(cfg, ref_dir)
  per_epoch = ref["stages"]["major"]["steps_per_epoch"]
  # The uninterrupted run: both stages, their checkpoints, the evaluated counts.
  results = json.load(open(os.path.join(ref_dir, "results.json")))
  assert set(results["stages"]) == {"aux", "major"}
  for stage in ("sbr_pretrain/sbr", "aux", "major"):
    assert os.listdir(os.path.join(ref_dir, stage, "best")), stage
  # LLMGR scores the configured sample of test users once each; the backbone all of them.
  n_test = len(prepared.load_prepared(cfg.data).test)
  assert results["test"]["count"] == results["test_examples"] == min(cfg.llmgr.eval_limit,
                                                                      n_test)
  assert results["sbr_alone"]["count"] == n_test
  # A second run finds every stage done and reproduces the metrics.
  assert train_llmgr.train_and_evaluate(cfg, ref_dir)["test"] == ref["test"]
  real = train_llmgr.jitted_train_step
  calls = {}

  def counting(crash_after=None):
    def factory(model, schedule, mask, seed, *args, **kwargs):
      step = real(model, schedule, mask, seed, *args, **kwargs)
      stage = "aux" if len(calls) == 0 else "major"
      calls[stage] = 0

      def wrapped(state, batch):
        calls[stage] += 1
        if stage == "major" and calls[stage] == crash_after:
          raise KeyboardInterrupt("simulated kill in the second major epoch")
        return step(state, batch)
      return wrapped
    return factory

  wd = str(tmp_path / "run")
  monkeypatch.setattr(train_llmgr, "jitted_train_step", counting(crash_after=per_epoch + 2))
  with pytest.raises(KeyboardInterrupt):
    train_llmgr.train_and_evaluate(cfg, wd)
  # A changed stage signature (what the stage trains) refuses the saved state.
  changed = ml_collections.ConfigDict(cfg.to_dict())
  changed.stages.major.trainable = ("sbr", "f_in", "f_out")
  with pytest.raises(checkpoints.CheckpointMismatchError, match="trainable"):
    train_llmgr.train_and_evaluate(changed, wd)
  calls.clear()
  monkeypatch.setattr(train_llmgr, "jitted_train_step", counting())
  out = train_llmgr.train_and_evaluate(cfg, wd)
  # Only the unfinished epoch ran again: aux was done, major resumed after epoch 0.
  assert calls == {"aux": 0, "major": per_epoch}
  assert out["test"] == ref["test"]
  for stage in ("aux", "major"):
    a = _best_params(os.path.join(str(tmp_path / "ref"), stage))
    b = _best_params(os.path.join(wd, stage))
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def _best_params(stage_dir):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = ocp.CheckpointManager(os.path.join(stage_dir, "best"))
  tree = mngr.restore(mngr.latest_step(),
                      args=ocp.args.Composite(params=ocp.args.StandardRestore()))
  return jax.tree_util.tree_map(np.asarray, tree["params"])


def test_sbr_checkpoint_with_another_item_count_is_refused(cfg, tmp_path):
  from sbrjax.data import rawfiles
  other = tmp_path / "raw50"
  rows = rawfiles.synthetic_ratings(num_users=60, num_items=50, per_user=14)
  rawfiles.write_grouplens_100k(other, rows, {i: f"Film {i} (1991)" for i in range(1, 51)})
  sbr_cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "sbr_tiny.py"))
  sbr_cfg.data.manual_dir = str(other)
  sbr_cfg.data.data_dir = str(tmp_path / "data50")
  sbr_cfg.train.epochs = 1
  train_sbr.train_and_evaluate(sbr_cfg, str(tmp_path / "sbr50"))
  cfg.llmgr.sbr_checkpoint = str(tmp_path / "sbr50")
  cfg.sbr.backbone = "srgnn"
  with pytest.raises(checkpoints.CheckpointMismatchError, match="num_items"):
    train_llmgr.train_and_evaluate(cfg, str(tmp_path / "run"))


def _sbr_run_config(path, **sbr):
  raw = {"job": "sbr", "sbr": sbr}
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(raw, f)


def test_sbr_checkpoint_settings_are_taken_from_the_checkpoints_run(cfg, tmp_path):
  from sbrjax.llmgr import config as llmgr_config  # pylint: disable=g-import-not-at-top
  theirs = dict(cfg.sbr.to_dict(), backbone="stamp", embed_dim=16, dropout=0.3,
                caser_len=7, not_a_key_here=1)
  theirs = {k: list(v) if isinstance(v, tuple) else v for k, v in theirs.items()}
  _sbr_run_config(str(tmp_path / "stamp_run"), **theirs)
  os.makedirs(tmp_path / "stamp_run" / "sbr" / "best")
  before = cfg.sbr.to_dict()
  # "config" keeps this config's section.
  cfg.llmgr.sbr_checkpoint = str(tmp_path / "stamp_run" / "sbr" / "best")
  cfg.llmgr.sbr_settings = "config"
  assert llmgr_config.adopt_checkpoint_sbr(cfg) == [] and cfg.sbr.to_dict() == before
  # "checkpoint" (the default) takes every differing key, found from the best/ folder too.
  cfg.llmgr.sbr_settings = "checkpoint"
  changes = llmgr_config.adopt_checkpoint_sbr(cfg)
  changed = {c.split(":")[0] for c in changes}
  expected = {f"config.sbr.{k}" for k in ("backbone", "embed_dim", "dropout", "caser_len")
              if before[k] != theirs[k]}
  assert changed == expected and "config.sbr.backbone" in changed
  assert (cfg.sbr.backbone, cfg.sbr.embed_dim, cfg.sbr.dropout) == ("stamp", 16, 0.3)
  assert llmgr_config.adopt_checkpoint_sbr(cfg) == []  # idempotent
  # An LLMGR run's sbr_pretrain folder: the config its results.json records.
  pre = tmp_path / "llmgr_run" / "sbr_pretrain"
  os.makedirs(pre)
  with open(pre / "results.json", "w") as f:
    json.dump({"config": {"job": "sbr", "sbr": dict(theirs, backbone="narm")}}, f)
  cfg.llmgr.sbr_checkpoint = str(pre)
  assert llmgr_config.adopt_checkpoint_sbr(cfg) == ["config.sbr.backbone: 'stamp' -> 'narm'"]
  # No run config beside the checkpoint: nothing changes; a bad mode names the key.
  cfg.llmgr.sbr_checkpoint = str(tmp_path / "bare")
  assert llmgr_config.adopt_checkpoint_sbr(cfg) == []
  cfg.llmgr.sbr_settings = "mine"
  with pytest.raises(ValueError, match="config.llmgr.sbr_settings='mine'"):
    llmgr_config.adopt_checkpoint_sbr(cfg)


@pytest.mark.slow
def test_llmgr_on_a_stamp_checkpoint_needs_no_backbone_flags(cfg, tmp_path):
  sbr_cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "sbr_tiny.py"))
  sbr_cfg.data = cfg.data
  sbr_cfg.sbr.backbone = "stamp"
  sbr_cfg.sbr.embed_dim = 24
  sbr_cfg.train.epochs = 1
  train_sbr.train_and_evaluate(sbr_cfg, str(tmp_path / "stamp"))
  assert cfg.sbr.backbone != "stamp"
  cfg.llmgr.sbr_checkpoint = str(tmp_path / "stamp")
  cfg.llmgr.train_limit = 16
  for st in cfg.stages.values():
    st.epochs = 1
  summary = train_llmgr.train_and_evaluate(cfg, str(tmp_path / "run"))
  assert "(stamp)" in summary["model"] and cfg.sbr.embed_dim == 24
  # Without adoption the same command fails on the backbone's signature.
  cfg.sbr.backbone, cfg.sbr.embed_dim = "gcsan", 32
  cfg.llmgr.sbr_settings = "config"
  with pytest.raises(checkpoints.CheckpointMismatchError, match="model"):
    train_llmgr.train_and_evaluate(cfg, str(tmp_path / "run2"))


def test_missing_llm_checkpoint_is_explained(cfg, tmp_path):
  cfg.llm.source = "hf"
  cfg.llm.path = str(tmp_path / "no-llama")
  with pytest.raises(FileNotFoundError, match="config.llm.path"):
    llm_api.load_llm(llm_api.LLMSpec.from_config(cfg.llm))


@pytest.mark.parametrize("train_bar,sbr_bar,expected", [(False, True, False),
                                                        (True, True, True),
                                                        (True, False, False)])
def test_train_progress_bar_false_silences_the_backbone_pretraining(
    cfg, tmp_path, monkeypatch, train_bar, sbr_bar, expected):
  seen = {}

  class Stop(Exception):
    pass

  def fake_train(sbr_cfg, workdir):
    seen["bar"] = sbr_cfg.train.progress_bar
    raise Stop

  monkeypatch.setattr(train_sbr, "train_and_evaluate", fake_train)
  cfg.train.progress_bar = train_bar
  cfg.sbr_train.progress_bar = sbr_bar
  with pytest.raises(Stop):
    train_llmgr.pretrained_sbr(cfg, None, str(tmp_path / "run"))
  assert seen["bar"] is expected
  assert cfg.sbr_train.progress_bar is sbr_bar  # the user's config is not modified


def test_bf16_hint_only_for_float32_on_a_cpu_with_bf16_units(monkeypatch):
  monkeypatch.setattr(llm_api, "cpu_bf16_flags", lambda: ["amx_bf16"])
  hint = llm_api.bf16_hint(llm_api.LLMSpec(dtype="float32"))
  assert "amx_bf16" in hint and "--config.llm.dtype=bfloat16" in hint
  assert "--config.llm.frozen_dtype=bfloat16" in hint
  assert llm_api.bf16_hint(llm_api.LLMSpec(dtype="bfloat16")) is None
  monkeypatch.setattr(llm_api, "cpu_bf16_flags", lambda: [])
  assert llm_api.bf16_hint(llm_api.LLMSpec(dtype="float32")) is None
