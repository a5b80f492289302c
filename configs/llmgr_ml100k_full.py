"""LLMGR on ml-100k at the paper's data and model depth: for a GPU, not run here.

configs/llmgr_ml100k.py (the paper's prompts, stages and head) with the
reductions of its CPU scale undone where they are about scale:

  * every training prefix is a prompt (llmgr.train_limit = 0; 96,458 behavior
    prompts per epoch on ml-100k instead of 4,096);
  * all 30 decoder blocks of SmolLM2-135M-Instruct (llm.num_layers = 0);
  * aux 1 epoch, major 3 epochs (the paper's schedule);
  * GC-SAN pre-trained to convergence (10 epochs, patience 2) instead of 3.

Kept from the CPU file: SmolLM2-135M instead of LLaMA-2-7B (that one is
configs/llmgr_music.py), 10 node placeholders, 16-token item texts, 8
contrastive candidates, batch 16, width 64. At the CPU throughput measured in
the README (about 20 prompts/s at 6 blocks on 2 cores, so about 4/s at 30)
one major epoch alone would take days; the README's scaling study says which
points were run. On a GPU add --config.llm.dtype=bfloat16.
"""

from sbrjax.config import sibling_config


def get_config():
  config = sibling_config(__file__, "llmgr_ml100k.py")
  config.llmgr.train_limit = 0
  config.llm.num_layers = 0
  config.stages.aux.epochs = 1
  config.stages.major.epochs = 3
  config.sbr_train.epochs = 10
  config.sbr_train.patience = 2
  return config
