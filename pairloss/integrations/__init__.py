"""pairloss inside the frameworks people train with, each an optional import (the framework is needed only
where the classes subclass its own):

- ``pairloss.integrations.sentence_transformers``: MultipleNegativesRankingLoss, its symmetric and cached forms
  (needs sentence-transformers);
- ``pairloss.integrations.open_clip``: ClipLoss and SigLipLoss with OpenCLIP's signatures;
- ``pairloss.integrations.pml``: pytorch-metric-learning's loss, miner and CrossBatchMemory names and calls.
"""
