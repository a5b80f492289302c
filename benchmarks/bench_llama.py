"""Throughput of sbrjax's LLaMA beside transformers' PyTorch LlamaForCausalLM.

At the SmolLM2-135M shape (random weights), batch 4 x length 96, it times:
  * forward (logits) tokens/s;
  * forward + backward with LoRA r=8 on q_proj and v_proj (gradients for the
    adapters only; the PyTorch side gets the same adapters written by hand);
and prints one JSON object with medians over repeats after warm-up, the
JAX/PyTorch ratios, XLA's FLOP count of each JAX function as a fraction of a
matmul peak timed in the same process, the machine's load before and after,
the compile time, and the parameter count and bf16 bytes of llama2_7b from
``jax.eval_shape`` (nothing allocated).

  python benchmarks/bench_llama.py [--repeats 5] [--dtype float32]
"""

import argparse
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from sbrjax.models import lora as lora_lib
from sbrjax.models.llama import Llama, LlamaConfig, param_shapes

_median_time = common.median_time


def _flops(jitted, *args) -> float:
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def _ce(logits, ids):
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
  return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))


def bench_jax(cfg, ids, repeats, warmup):
  lcfg = lora_lib.LoraConfig(rank=8, alpha=16.0, targets=("q_proj", "v_proj"))
  model = Llama(cfg)
  lmodel = Llama(cfg.replace(lora=lcfg))
  params = model.init(jax.random.PRNGKey(0), ids[:, :2])["params"]
  params = lora_lib.add_lora(params, lcfg, jax.random.PRNGKey(1))
  base = lora_lib.strip_lora(params)

  fwd = jax.jit(lambda p, i: model.apply({"params": p}, i).logits)

  def split(p):
    adapters = jax.tree_util.tree_map_with_path(
        lambda path, x: x if lora_lib.param_label(path) == "lora" else None, p)
    return adapters

  def loss(adapters, frozen, i):
    merged = jax.tree_util.tree_map(lambda a, f: f if a is None else a,
                                    adapters, frozen,
                                    is_leaf=lambda x: x is None)
    return _ce(lmodel.apply({"params": merged}, i).logits, i)

  grad_fn = jax.jit(jax.value_and_grad(loss))
  adapters = split(params)

  t0 = time.perf_counter()
  jax.block_until_ready(fwd(base, ids))
  compile_fwd = time.perf_counter() - t0
  t0 = time.perf_counter()
  jax.block_until_ready(grad_fn(adapters, params, ids))
  compile_grad = time.perf_counter() - t0

  t_fwd = _median_time(lambda: jax.block_until_ready(fwd(base, ids)),
                       repeats, warmup)
  t_bwd = _median_time(
      lambda: jax.block_until_ready(grad_fn(adapters, params, ids)),
      repeats, warmup)
  flops = {"forward": _flops(fwd, base, ids), "lora_fwd_bwd": _flops(grad_fn, adapters, params, ids)}
  return t_fwd, t_bwd, compile_fwd, compile_grad, flops


def bench_torch(cfg, ids, repeats, warmup):
  import torch
  import transformers
  torch.manual_seed(0)
  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, rope_theta=cfg.rope_theta,
      rms_norm_eps=cfg.rms_norm_eps,
      tie_word_embeddings=cfg.tie_word_embeddings,
      max_position_embeddings=cfg.max_position_embeddings)
  model = transformers.LlamaForCausalLM(hf_cfg).float().eval()

  class LoraLinear(torch.nn.Module):
    """y = base(x) + x A B * alpha / r, base frozen (as sbrjax's LoraDense)."""

    def __init__(self, base, r=8, alpha=16.0):
      super().__init__()
      self.base = base
      self.a = torch.nn.Parameter(torch.empty(base.in_features, r))
      torch.nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
      self.b = torch.nn.Parameter(torch.zeros(r, base.out_features))
      self.scaling = alpha / r

    def forward(self, x):
      return self.base(x) + (x @ self.a @ self.b) * self.scaling

  x = torch.tensor(np.asarray(ids), dtype=torch.long)

  def fwd():
    with torch.no_grad():
      model(input_ids=x).logits

  t_fwd = _median_time(fwd, repeats, warmup)

  for p in model.parameters():
    p.requires_grad_(False)
  for layer in model.model.layers:
    layer.self_attn.q_proj = LoraLinear(layer.self_attn.q_proj)
    layer.self_attn.v_proj = LoraLinear(layer.self_attn.v_proj)
  model.train()  # dropout is 0 in the config; train() only mirrors training
  trainable = [p for n, p in model.named_parameters() if p.requires_grad]

  def fwd_bwd():
    for p in trainable:
      p.grad = None
    logits = model(input_ids=x).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    loss = -logp.gather(-1, x[:, 1:, None]).mean()
    loss.backward()

  t_bwd = _median_time(fwd_bwd, repeats, warmup)
  return t_fwd, t_bwd, torch.get_num_threads()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--length", type=int, default=96)
  parser.add_argument("--dtype", default="float32",
                      choices=("float32", "bfloat16"))
  parser.add_argument("--skip-torch", action="store_true")
  args = parser.parse_args()

  machine = common.Machine()
  dtype = jnp.dtype(args.dtype)
  cfg = LlamaConfig.smollm2_135m(dtype=dtype, param_dtype=dtype)
  ids = jnp.asarray(np.random.RandomState(0).randint(
      0, cfg.vocab_size, size=(args.batch, args.length)), jnp.int32)
  tokens = args.batch * args.length

  j_fwd, j_bwd, c_fwd, c_bwd, flops = bench_jax(cfg, ids, args.repeats, args.warmup)
  result = {
      "shape": "smollm2_135m", "batch": args.batch, "length": args.length,
      "dtype": args.dtype, "repeats": args.repeats, "warmup": args.warmup,
      "jax_forward_tokens_per_s": tokens / j_fwd,
      "jax_lora_fwd_bwd_tokens_per_s": tokens / j_bwd,
      "jax_compile_forward_s": c_fwd,
      "jax_compile_lora_fwd_bwd_s": c_bwd,
      "jax_forward_gflops": flops["forward"] / j_fwd / 1e9,
      "jax_lora_fwd_bwd_gflops": flops["lora_fwd_bwd"] / j_bwd / 1e9,
      "jax_forward_fraction_of_matmul_peak": flops["forward"] / j_fwd / 1e9 / machine.peak,
      "jax_lora_fwd_bwd_fraction_of_matmul_peak":
          flops["lora_fwd_bwd"] / j_bwd / 1e9 / machine.peak,
  }
  if not args.skip_torch and args.dtype == "float32":
    t_fwd, t_bwd, threads = bench_torch(cfg, ids, args.repeats, args.warmup)
    result.update({
        "torch_threads": threads,
        "torch_forward_tokens_per_s": tokens / t_fwd,
        "torch_lora_fwd_bwd_tokens_per_s": tokens / t_bwd,
        "forward_ratio_jax_over_torch": t_fwd / j_fwd,
        "lora_fwd_bwd_ratio_jax_over_torch": t_bwd / j_bwd,
    })

  shapes = param_shapes(LlamaConfig.llama2_7b(param_dtype=jnp.bfloat16))
  leaves = jax.tree_util.tree_leaves(shapes)
  result["llama2_7b_params"] = int(sum(math.prod(x.shape) for x in leaves))
  result["llama2_7b_bf16_bytes"] = int(sum(
      math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in leaves))
  result.update(machine.report())
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
