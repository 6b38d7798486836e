"""``slotmem compare``: train several models under one protocol (lr sweep scored on validation,
seeds, spread) and report tables, plots and JSON. It sits above ``slotmem.train`` (it trains) and
``slotmem.eval`` (it scores); see ``runner.py`` for the protocol."""
from .runner import DEFAULT_CONFIG, fit_and_score, load_compare_config, run_compare

__all__ = ["DEFAULT_CONFIG", "fit_and_score", "load_compare_config", "run_compare"]
