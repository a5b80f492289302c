"""The papers' analyses of finished runs, and recommendations from a trained run.

Entry points: ``python -m sbrjax.analyze`` (``sbrjax.analysis.report``) and
``python -m sbrjax.recommend`` (``sbrjax.analysis.recommend``).

  runs       a run directory: config, results, per-example files, parameters
  groups     metrics by session length and by cold / warm target items
  pca        principal components (SVD) and the LLMGR embeddings they are taken of
  cases      LLM4SBR case studies: intent texts and the items they localized to
  plots      matplotlib figures (Agg backend), written atomically
  report     the Markdown summary joining them
  recommend  top-K items for new sessions from any trained run
"""
