"""LLMGR on Amazon Musical_Instruments (2018) with LLaMA-2-7B, as in Guo et al.

LLaMA-2-7B is not bundled: download an HF LlamaForCausalLM directory (e.g.
meta-llama/Llama-2-7b-hf, after accepting its licence) and pass
--config.llm.path=/path/to/Llama-2-7b-hf. The Amazon files download from
their public URLs or are read from --config.data.manual_dir.
Paper settings: AdamW, weight decay 1e-2, cosine schedule, batch 16, stage 1
(auxiliary prompts) 1 epoch, stage 2 (behavior prompt) 3 epochs, GC-SAN backbone.
Meant for GPUs: bf16 compute, frozen base weights stored in bf16.
"""

from sbrjax.llmgr.config import llmgr_config


def get_config():
  config = llmgr_config("llmgr")
  config.data.dataset = "amazon"
  config.data.variant = "music"
  config.llm.source = "hf"
  config.llm.path = ""           # required: an HF LLaMA-2-7B directory
  config.llm.dtype = "bfloat16"
  config.llm.frozen_dtype = "bfloat16"
  config.llm.remat = True
  config.sbr.embed_dim = 100
  config.llmgr.max_nodes = 20
  config.llmgr.max_text_tokens = 48
  config.llmgr.length_buckets = (64, 96, 128, 160)
  config.sbr_train.epochs = 30
  config.sbr_train.patience = 5
  return config
