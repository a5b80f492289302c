"""Amazon review builders: ``amazon`` (per-user reviews) + ``amazon_items``.

Configs (file names as published; URLs in ``sbrjax.data.raw.PUBLIC_URLS``):

  * music (2018): Musical_Instruments_5.json.gz,
    meta_Musical_Instruments.json.gz
  * beauty (2018): Luxury_Beauty_5.json.gz, meta_Luxury_Beauty.json.gz
  * pantry (2018): Prime_Pantry_5.json.gz, meta_Prime_Pantry.json.gz
  * beauty2014 (2014): reviews_Beauty_5.json.gz, meta_Beauty.json.gz

Reviews are JSON lines with reviewerID, asin, unixReviewTime.  Metadata lines
are JSON (2018) or Python dict literals (2014, parsed with ast.literal_eval).
Each file may be gzip or plain, with or without the ".gz" in its name.

Item text: title, else description (lists joined), else "item <asin>"; the
count of placeholders is reported in the prepared statistics.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from sbrjax.data import raw
from sbrjax.data.builders import (SourceBuilder, interaction_features,
                                  item_base_features, item_examples,
                                  user_examples)

# config -> (reviews file, metadata file)
FILES = {
    "music": ("Musical_Instruments_5.json.gz",
              "meta_Musical_Instruments.json.gz"),
    "beauty": ("Luxury_Beauty_5.json.gz", "meta_Luxury_Beauty.json.gz"),
    "pantry": ("Prime_Pantry_5.json.gz", "meta_Prime_Pantry.json.gz"),
    "beauty2014": ("reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"),
}

_CONFIGS = [
    tfds.core.BuilderConfig(name="music",
                            description="Amazon 2018 Musical_Instruments."),
    tfds.core.BuilderConfig(name="beauty",
                            description="Amazon 2018 Luxury_Beauty."),
    tfds.core.BuilderConfig(name="pantry",
                            description="Amazon 2018 Prime_Pantry."),
    tfds.core.BuilderConfig(name="beauty2014",
                            description="Amazon 2014 Beauty 5-core."),
]


class Amazon(SourceBuilder, skip_registration=True):
  """Amazon reviews, one example per reviewer, in time order."""

  name = "amazon"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = _CONFIGS

  def _features(self):
    return interaction_features()

  def raw_files(self):
    reviews, _ = FILES[self.builder_config.name]
    return [self._resolve([reviews])[reviews]]

  def _generate_examples(self):
    path = self.raw_files()[0]
    yield from user_examples(raw.require_interactions(raw.parse_amazon_reviews(path), path))


class AmazonItems(SourceBuilder, skip_registration=True):
  """Amazon product metadata: asin, text, title, description."""

  name = "amazon_items"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = _CONFIGS

  def _features(self):
    spec = item_base_features()
    spec.update({"title": tfds.features.Text(),
                 "description": tfds.features.Text()})
    return tfds.features.FeaturesDict(spec)

  def raw_files(self):
    _, meta = FILES[self.builder_config.name]
    return [self._resolve([meta])[meta]]

  def _generate_examples(self):
    path = self.raw_files()[0]
    yield from item_examples(
        raw.parse_amazon_meta(path),
        lambda it: {"title": it.extra["title"],
                    "description": it.extra["description"]})
