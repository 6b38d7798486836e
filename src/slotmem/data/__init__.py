"""Data: MQAR synthetic recall, language-modelling text, time-series forecasting CSVs.

Every dataset yields labels aligned with its inputs (already shifted for next-token
tasks); see each module's docstring for the exact protocol.
"""
from .mqar import IGNORE_INDEX, MQARConfig, generate_mqar, query_slot_probs
from .text import (
    LMData,
    LMDataset,
    byte_tokenizer,
    is_byte_tokenizer,
    load_lm_data,
    load_tokenizer,
    pack_tokens,
    read_documents,
    special_token_ids,
    split_tokens,
    tokenize_documents,
)
from .timeseries import (
    STANDARD_HORIZONS,
    ForecastDataset,
    SeriesTable,
    load_forecast_splits,
    read_series_csv,
    split_borders,
)

__all__ = [
    "IGNORE_INDEX",
    "MQARConfig",
    "generate_mqar",
    "query_slot_probs",
    "byte_tokenizer",
    "is_byte_tokenizer",
    "special_token_ids",
    "LMData",
    "LMDataset",
    "load_lm_data",
    "load_tokenizer",
    "pack_tokens",
    "read_documents",
    "split_tokens",
    "tokenize_documents",
    "STANDARD_HORIZONS",
    "ForecastDataset",
    "SeriesTable",
    "load_forecast_splits",
    "read_series_csv",
    "split_borders",
]
