"""Fine-tuning a tiny text model with sentence-transformers' own trainer and pairloss's drop-in
MultipleNegativesRankingLoss. The model (a randomly initialised one-layer BERT, built locally) must learn that
"cat red sat" and "kitten crimson rested" mean the same: every word of a paraphrase is a synonym, so it starts
at chance. The same run with sentence-transformers' own loss is made alongside (same seed, same batches):
Recall@1 on held-out paraphrases, loss curves, time per step.

    python -m bench.examples.sentence_transformers_finetune [--steps 60] [--batch 64]
"""

import tempfile
import time
from pathlib import Path

import datasets
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer import losses
from transformers import PrinterCallback
from transformers.utils import logging as transformers_logging

from pairloss.integrations import sentence_transformers as fused

from ._common import arguments, plot_curves, save
from ._tiny_text import paraphrase_pairs, tiny_sentence_transformer

WORDS_PER_SENTENCE = 4
TEST_PAIRS = 300


def recall_at_1(model, queries, documents):
    """Share of queries whose most similar document (cosine) is their own paraphrase."""
    with torch.no_grad():
        q = model.encode(queries, convert_to_tensor=True, normalize_embeddings=True)
        d = model.encode(documents, convert_to_tensor=True, normalize_embeddings=True)
    return float(((q @ d.T).argmax(1) == torch.arange(len(queries))).float().mean())


def fine_tune(loss_class, steps, batch, seed, directory):
    model = tiny_sentence_transformer(directory / "model", seed=seed)
    queries, documents = paraphrase_pairs(steps * batch, WORDS_PER_SENTENCE, seed)
    test = paraphrase_pairs(TEST_PAIRS, WORDS_PER_SENTENCE, seed + 1)
    before = recall_at_1(model, *test)
    arguments_ = SentenceTransformerTrainingArguments(
        output_dir=str(directory / "out"), max_steps=steps, per_device_train_batch_size=batch, learning_rate=5e-3,
        warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", seed=seed, use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(
        model=model,
        args=arguments_,
        train_dataset=Dataset.from_dict({"anchor": queries, "positive": documents}),
        loss=loss_class(model),
    )
    trainer.remove_callback(PrinterCallback)  # the per-step loss goes to the JSON, not the terminal
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    curve = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"loss": curve, "recall_at_1_before": before, "recall_at_1": recall_at_1(model, *test),
            "ms_per_step": seconds * 1e3 / steps}  # fmt: skip


def plot(out, runs):
    curves = {f"{name}: Recall@1 {run['recall_at_1']:.2f}": run["loss"] for name, run in runs.items()}
    return plot_curves(out, "sentence_transformers_finetune", curves, "MultipleNegativesRankingLoss", "paraphrases")


def main(argv=None):
    args = arguments(__doc__.splitlines()[0], steps=60, argv=argv, batch=64, seed=0)
    transformers_logging.disable_progress_bar()  # loading and saving bars; the results are printed below
    datasets.disable_progress_bars()
    runs = {}
    for name, loss_class in (
        ("sentence-transformers", losses.MultipleNegativesRankingLoss),
        ("pairloss", fused.MultipleNegativesRankingLoss),
    ):
        with tempfile.TemporaryDirectory() as directory:
            runs[name] = fine_tune(loss_class, args.steps, args.batch, args.seed, Path(directory))
        run = runs[name]
        print(
            f"{name:22s} Recall@1 {run['recall_at_1_before']:.3f} -> {run['recall_at_1']:.3f}, final loss "
            f"{run['loss'][-1]:.4f}, {run['ms_per_step']:.0f} ms per step"
        )
    first = abs(runs["pairloss"]["loss"][0] - runs["sentence-transformers"]["loss"][0])
    print(f"first-step loss difference {first:.1e} (the same batch through the same initial model)")
    payload = {"steps": args.steps, "batch": args.batch, "first_step_loss_difference": first, "runs": runs}
    written = save(args.out, "sentence_transformers_finetune", payload)
    print("wrote", written, plot(args.out, runs) or "(no matplotlib: no plot)")


if __name__ == "__main__":
    main()
