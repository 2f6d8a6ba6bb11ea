"""Running models in apps and scripts: reading a manifest, pre- and post-processing, and the
predictors behind ``zoo.load`` (``zoo.inference.predictor``)."""
