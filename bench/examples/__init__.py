"""Real training runs with pairloss inside the frameworks people use (each ≤ 2 minutes on a 2-core CPU):

- ``python -m bench.examples.metric_learning_digits``: PML vs pairloss's drop-in on scikit-learn's digits;
- ``python -m bench.examples.clip_ddp``: a two-tower CLIP model trained with DDP on 2 gloo processes;
- ``python -m bench.examples.sentence_transformers_finetune``: a tiny local text model fine-tuned with
  SentenceTransformerTrainer and the fused MultipleNegativesRankingLoss;
- ``python -m bench.examples.largest_batch``: each framework's own loss against pairloss's drop-in as the batch
  grows, up to the largest batch the framework's loss survives under a memory cap.

Each writes a JSON file (and a PNG when matplotlib is installed) to ``bench/results/examples/``; ``--steps``
shortens a run (the tests smoke-test them that way).
"""
