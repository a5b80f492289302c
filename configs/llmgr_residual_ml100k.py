"""LLMGR on ml-100k with the residual head (beyond the paper).

The embedded default until configs/llmgr_residual_tuned_ml100k.py (this file
with the head's rate in the major stage at 3e-4, chosen on validation); the
README's earlier "default" figures and the scaling study ran this file.

configs/llmgr_ml100k.py (the paper's prompts, stages and head, at the CPU
scale that file lists) with two labelled options that are not in the paper:

  * llmgr.head = "residual": on behavior prompts the item scores are GC-SAN's
    own scores plus a correction the LLM learns, logits = GC-SAN(session) +
    proj_b(h) . E^T + b_b, with proj_b and b_b starting at zero (a skip
    connection around the LLM; auxiliary prompts keep a tied head of their
    own). The paper's f_out maps the LLM state to |V| logits from scratch,
    which 4,096 prompts cannot train (README: sampled NDCG@10 0.218 vs
    GC-SAN's 0.372 on one seed).
  * stages.major.label_learning_rates.sbr = 1e-4: the pre-trained backbone
    moves at a tenth of the head's rate in the major stage (the paper has one
    rate per stage).

Why it was the default: issue 12 asks the main command to use the best
labelled option when the paper-exact configuration cannot match its backbone
within the CPU budget; the README's LLMGR table has every option measured
beside the paper's choices. The paper-exact run is
``python -m sbrjax.main --config=configs/llmgr_ml100k.py``.
"""

from sbrjax.config import sibling_config


def get_config():
  config = sibling_config(__file__, "llmgr_ml100k.py")
  config.llmgr.head = "residual"
  config.stages.major.label_learning_rates.sbr = 1e-4
  return config
