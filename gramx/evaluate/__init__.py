"""Evaluation: retrieval metrics, zero-shot accuracy and the evaluation report of a model."""

from gramx.evaluate.metrics import ranks, retrieval_metrics, zeroshot_accuracy
from gramx.evaluate.report import evaluate, summarize

__all__ = ["evaluate", "ranks", "retrieval_metrics", "summarize", "zeroshot_accuracy"]
