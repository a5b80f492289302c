"""LLM4SBR building blocks: intent prompts, intent texts/arrays, localization.

Submodules (imported explicitly; nothing heavy is imported here):
  prompts: the paper's intent-inference prompt per perspective.
  intents: intent-text import, intent arrays on disk, official-format import.
  localize: eqs. 3-4, top-f cosine localization onto the item catalog.
"""
