"""Evaluation: MQAR accuracy per (T, kv) slice, perplexity (and perplexity against context
length), forecasting MSE/MAE, and the MQAR model comparison behind ``slotmem compare``."""
from .forecast import evaluate_forecast
from .mqar import evaluate_mqar_slices
from .perplexity import evaluate_nll, perplexity_vs_length

__all__ = ["evaluate_forecast", "evaluate_mqar_slices", "evaluate_nll", "perplexity_vs_length"]
