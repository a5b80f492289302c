"""RecBole 1.2.1 on ml-100k under sbrjax's LLMGR protocol: the issue-13 cross-check.

RecBole's sequential setting on ml-100k is the protocol sbrjax calls LLMGR's:
users and items with fewer than 5 interactions dropped (RecBole repeats the
filter to a fixed point), each user's clicks in time order, leave-one-out
(last click test, second-last validation), every prefix a training example,
inputs cut to the most recent 50 clicks (5 for Caser, its L; see
MODEL_OVERRIDES), full ranking of every item. This
script runs RecBole's own implementations of the sequence baselines, and of
SR-GNN and GC-SAN (which RecBole 1.2.1 also ships), with the settings of
``configs/sbr_ml100k_base.py`` (d = 64, batch 1024, Adam 1e-3, dropout 0.3,
at most 30 epochs, early stopping with patience 5, here on full NDCG@10 of the
validation split since RecBole has no sampled metric in this mode) and prints
one JSON object per model with its full-ranking test metrics, so they can be
read beside sbrjax's "full" rows.

RecBole needs PyTorch, which sbrjax does not; run it in a venv of its own
(CPU wheels, no CUDA download; the ml-100k files ship inside the wheel):

    python -m venv /tmp/rb && /tmp/rb/bin/pip install torch==2.13.0 "numpy<2" scipy \\
        pandas tqdm colorlog==4.7.2 colorama==0.4.4 scikit-learn pyyaml tensorboard thop \\
        tabulate texttable psutil plotly && /tmp/rb/bin/pip install --no-deps recbole==1.2.1
    /tmp/rb/bin/python benchmarks/recbole_ml100k.py --models GRU4Rec NARM STAMP Caser FPMC
    /tmp/rb/bin/python benchmarks/recbole_ml100k.py --models SRGNN GCSAN   # the graph models

(``--no-deps`` skips RecBole's pin of an old ``ray``, used only by its
hyper-parameter search.) Each model's loss is RecBole's default for it:
full-softmax cross-entropy for GRU4Rec, NARM, STAMP and Caser, as sbrjax
trains every model; BPR with one sampled negative for FPMC, which RecBole
requires (so that row is not the same loss as sbrjax's FPMC).
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time


# RecBole's Caser convolves over all MAX_ITEM_LIST_LENGTH clicks (heights 1..50
# at the protocol's 50: its first epoch had not finished after five minutes on
# one CPU core, against 7-18 s an epoch at L = 5); Caser's L is that
# length, so the Caser run reads the paper's L = 5 most recent clicks with the
# paper's n_h = 16, n_v = 4, as configs/caser_ml100k.py does. RecBole's own L2
# term (reg_weight 1e-4 on the convolution and dense weights) is kept.
# GC-SAN: RecBole's defaults (2 blocks, 2 heads, FFN 256 with GELU, dropout
# 0.5) set to the architecture of sbrjax's GC-SAN (sbr.gcsan_*: one block, one
# head, a ReLU FFN as wide as d, weight 0.6) with the baseline settings'
# dropout 0.3 on attention and FFN. RecBole's own L2 term (reg_weight 5e-5 on the
# item table) is kept. SR-GNN: RecBole's defaults (one GNN step) are sbrjax's.
MODEL_OVERRIDES = {
    "Caser": {"MAX_ITEM_LIST_LENGTH": 5, "nh": 16, "nv": 4},
    "GCSAN": {"n_layers": 1, "n_heads": 1, "inner_size": 64, "hidden_act": "relu",
              "hidden_dropout_prob": 0.3, "attn_dropout_prob": 0.3, "weight": 0.6},
}


def run(model, config_dict, Config, create_dataset, data_preparation, get_model, get_trainer,
        init_logger, init_seed):
  """RecBole's ``quick_start.run_recbole`` without its import of ``ray`` (which
  only its hyper-parameter search uses): train, keep the best validation
  epoch, test it."""
  config = Config(model=model, dataset="ml-100k", config_dict=config_dict)
  init_seed(config["seed"], config["reproducibility"])
  init_logger(config)
  dataset = create_dataset(config)
  counts = {"users": int(dataset.user_num) - 1, "items": int(dataset.item_num) - 1,
            "interactions": int(dataset.inter_num)}  # after the 5-core filter (ids 0 = pad)
  train_data, valid_data, test_data = data_preparation(config, dataset)
  init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
  net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
  trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
  _, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
  test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
  return {"best_valid_result": best_valid, "test_result": test, **counts}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", default=["GRU4Rec", "NARM", "STAMP", "Caser",
                                                       "FPMC", "SRGNN", "GCSAN"])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--threads", type=int, default=1)
  args = parser.parse_args(argv)
  try:
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed
  except ImportError as e:
    sys.exit(f"benchmarks/recbole_ml100k.py needs recbole==1.2.1 and torch in this Python "
             f"({e}); see the module docstring for the venv commands.")
  torch.set_num_threads(args.threads)
  # RecBole 1.2.1 saves its config objects in checkpoints and reloads them with
  # torch.load, whose default became weights_only=True in torch 2.6.
  _load = torch.load
  torch.load = lambda *a, **k: _load(*a, **{"weights_only": False, **k})
  data_path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
  for model in args.models:
    config = {
        "data_path": data_path, "seed": args.seed,
        "reproducibility": True, "show_progress": False, "save_dataset": False,
        "user_inter_num_interval": "[5,inf)", "item_inter_num_interval": "[5,inf)",
        "MAX_ITEM_LIST_LENGTH": 50,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full",
                      "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [5, 10, 20],
        "valid_metric": "NDCG@10", "epochs": args.epochs, "stopping_step": 5,
        "train_batch_size": 1024, "eval_batch_size": 4096, "learning_rate": 1e-3,
        "embedding_size": 64, "hidden_size": 64, "dropout_prob": 0.3,
        "train_neg_sample_args": None if model != "FPMC" else
        {"distribution": "uniform", "sample_num": 1},
        "loss_type": "BPR" if model == "FPMC" else "CE",
        **MODEL_OVERRIDES.get(model, {}),
    }
    # RecBole writes log/ and log_tensorboard/ into the working directory.
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
      t0 = time.perf_counter()
      out = run(model, {**config, "checkpoint_dir": tmp}, Config, create_dataset,
                data_preparation, get_model, get_trainer, init_logger, init_seed)
    print(json.dumps({
        "model": model, "seed": args.seed, "recbole": recbole.__version__,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "users": out["users"], "items": out["items"], "interactions": out["interactions"],
        "best_valid": {k: float(v) for k, v in out["best_valid_result"].items()},
        "test": {k: float(v) for k, v in out["test_result"].items()}}), flush=True)


if __name__ == "__main__":
  main()
