"""Evaluation of a model (no training): the objectives (loss sums), MQAR accuracy per (T, kv) slice,
perplexity (and perplexity against context length), forecasting MSE/MAE, S-NIAH, and the
``slotmem eval`` / ``lm-eval`` commands. The trainer (``slotmem.train``) and ``slotmem compare``
(``slotmem.compare``) build on it; it imports neither."""
from .forecast import evaluate_forecast
from .mqar import evaluate_mqar_slices
from .perplexity import evaluate_nll, perplexity_vs_length

__all__ = ["evaluate_forecast", "evaluate_mqar_slices", "evaluate_nll", "perplexity_vs_length"]
