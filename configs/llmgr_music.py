"""LLMGR on Amazon Musical_Instruments (2018) with LLaMA-2-7B, as in Guo et al.

LLaMA-2-7B is not bundled: download an HF LlamaForCausalLM directory (e.g.
meta-llama/Llama-2-7b-hf, after accepting its licence) and pass
--config.llm.path=/path/to/Llama-2-7b-hf. The Amazon files download from
their public URLs or are read from --config.data.manual_dir.
Paper settings: AdamW, weight decay 1e-2, cosine schedule, batch 16, stage 1
(auxiliary prompts) 1 epoch, stage 2 (behavior prompt) 3 epochs, GC-SAN backbone,
the "Instruction: ... Response:" frame with the head on its last token, ID
embeddings in every in-session node slot, contrastive prompts answered by all
listed successors, the paper's item head f_out trained from scratch, one
learning rate per stage, every prefix of every session (no train_limit).
Meant for GPUs: bf16 compute, frozen base weights stored in bf16.

Options (each one line; "beyond" = beyond the paper):
  --config.llmgr.head_init=backbone          beyond: f_out starts from GC-SAN's scores
  --config.llmgr.head=tied                   beyond: MLP to the SBR space x live item table
  --config.llmgr.head=residual               beyond: tied head + GC-SAN's own scores (a skip
                                             around the LLM; starts at the backbone)
  --config.stages.major.label_learning_rates.sbr=1e-4     beyond: a rate per label
  --config.stages.major.label_learning_rates.f_out=1e-4   (0 = the stage's rate)
  --config.train.warmup_steps=100            linear warm-up before the cosine decay
  --config.llmgr.node_source=gnn             node slots take GNN states (table = paper)
  --config.llmgr.prompt_frame=none           bare task text (the pre-issue-12 prompts)
  --config.llmgr.contrastive=legacy          one drawn successor (the pre-issue-12 task)
  --config.llmgr.control=no_decoder|shuffle_slots   controls: no decoder blocks /
                                             another session's slot vectors
  --config.sbr.backbone=srgnn|niser|tagnn|...       any backbone sbrjax.models.sbr knows
  --config.llmgr.shared_prefix=False         run every row's whole prompt through the LLM
                                             (on by default: the prompt text before the
                                             first slot runs once per batch; same math)
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
