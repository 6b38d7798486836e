"""Long-horizon forecasting data in the ETT / Autoformer layout.

A CSV with a date column (``date``) followed by numeric channel columns (ETTh1:
``HUFL,HULL,MUFL,MULL,LUFL,LULL,OT``). The split, normalisation and windows follow the
standard code of Informer / Autoformer / Time-Series-Library (``Dataset_ETT_hour``,
``Dataset_ETT_minute``, ``Dataset_Custom``):

* split borders (rows) for protocol
    - ``'ETTh'`` (hourly): train 12 months, val 4, test 4 of 30-day months:
      ``[0, 8640, 11520, 14400]``; rows after 14400 are unused;
    - ``'ETTm'`` (15 minutes): the same times 4, ``[0, 34560, 46080, 57600]``;
    - ``'ratio'`` (any other CSV): ``n_train = int(0.7 n)``, ``n_test = int(0.2 n)``,
      ``n_val = n - n_train - n_test`` (``ratios`` changes 0.7 / 0.2);
    - ``'auto'``: ``'ETTh'`` / ``'ETTm'`` when the file name starts with ``ETTh`` / ``ETTm``,
      else ``'ratio'``;
* the val and test splits start ``lookback`` rows before their border, so their first
  forecast begins exactly at the border (their lookback reaches into the previous split);
* z-normalisation with the mean and (population) standard deviation of the TRAIN rows
  only (a constant channel gets std 1, as scikit-learn's StandardScaler does);
* sample ``i`` of a split is ``x = data[i : i+L]``, ``y = data[i+L : i+L+H]``, for every
  ``i`` with ``i+L+H`` inside the split (stride 1);
* ``features``: ``'M'`` all channels in and out, ``'S'`` the ``target`` channel only,
  ``'MS'`` all channels in and the target out. As in the standard code the ``'ratio'``
  protocol moves the target column last; the ETT protocols keep the file's order.

Not reproduced: the decoder ``label_len`` prefix of ``y`` and the calendar time
features (``x_mark`` / ``y_mark``) of the Informer-family code.
The metrics (MSE / MAE over every element of the normalised data, the standard protocol) are
``slotmem.eval.forecast.evaluate_forecast``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checks import check_choice, check_positive_int

SPLITS = ("train", "val", "test")
FEATURES = ("M", "S", "MS")
PROTOCOLS = ("auto", "ETTh", "ETTm", "ratio")
STANDARD_HORIZONS = (96, 192, 336, 720)
ETTH_BORDERS = (0, 12 * 30 * 24, 16 * 30 * 24, 20 * 30 * 24)  # (0, 8640, 11520, 14400)
ETTM_BORDERS = tuple(4 * b for b in ETTH_BORDERS)  # (0, 34560, 46080, 57600)


@dataclass
class SeriesTable:
    """A CSV read into memory: ``dates [n]`` (str), ``columns`` (channel names), ``values [n, C]`` float64."""

    path: str
    dates: np.ndarray
    columns: list[str]
    values: np.ndarray


def read_series_csv(path, date_col: str = "date") -> SeriesTable:
    """Read an ETT-layout CSV: a header, ``date_col`` and numeric channel columns.

    Strict: every row must have exactly the header's number of fields, every channel value
    must parse as a finite number whose magnitude fits float32 after normalisation
    (``|x| < 1e30``); the error names the row (1-based data row, file line) and column."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{str(p)!r} is a directory, not a CSV file")
    if not p.is_file():
        raise FileNotFoundError(f"no such CSV file: {str(p)!r}")
    try:
        with p.open("r", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text (byte {e.start}); expected a CSV file") from None
    except csv.Error as e:
        raise ValueError(f"{p}: not a readable CSV ({e})") from None
    if not rows or not any(h.strip() for h in rows[0]):
        raise ValueError(f"{p}: empty file (expected a header with {date_col!r} and channel columns)")
    header = [h.strip() for h in rows[0]]
    if date_col not in header:
        raise ValueError(f"{p}: no date column {date_col!r} in header {header}; set date_col")
    if len(set(header)) != len(header):
        raise ValueError(f"{p}: duplicate column names in header {header}")
    d = header.index(date_col)
    channel_idx = [i for i in range(len(header)) if i != d]
    if not channel_idx:
        raise ValueError(f"{p}: no channel columns besides {date_col!r}")
    body = [(n, r) for n, r in enumerate(rows[1:], 2) if r and any(x.strip() for x in r)]  # blank lines skipped
    if not body:
        raise ValueError(f"{p}: no data rows")
    values = np.empty((len(body), len(channel_idx)), dtype=np.float64)
    dates = np.empty(len(body), dtype=object)
    for i, (line, r) in enumerate(body):
        if len(r) != len(header):
            raise ValueError(f"{p}: line {line} has {len(r)} fields, the header has {len(header)}; fix the row "
                             "(a stray comma, a missing value)")
        dates[i] = r[d].strip()
        for j, c in enumerate(channel_idx):
            try:
                values[i, j] = float(r[c])
            except ValueError:
                raise ValueError(f"{p}: line {line}, column {header[c]!r}: {r[c]!r} is not a number") from None
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{p}: non-finite value {float(values[r, c])!r} in column {header[channel_idx[c]]!r} at line {body[r][0]}")
    big = np.abs(values) >= 1e30
    if big.any():
        r, c = np.argwhere(big)[0]
        raise ValueError(f"{p}: value {float(values[r, c])!r} in column {header[channel_idx[c]]!r} at line {body[r][0]} is too "
                         "large (|x| >= 1e30 overflows the statistics and float32); rescale the column")
    return SeriesTable(str(p), dates.astype(str), [header[i] for i in channel_idx], values)


def resolve_protocol(path: str, protocol: str = "auto") -> str:
    """``'auto'`` → ``'ETTh'`` / ``'ETTm'`` by file-name prefix, else ``'ratio'``."""
    check_choice("protocol", protocol, PROTOCOLS)
    if protocol != "auto":
        return protocol
    name = Path(path).name
    return "ETTh" if name.startswith("ETTh") else "ETTm" if name.startswith("ETTm") else "ratio"


def split_borders(
    n_rows: int, lookback: int, protocol: str, ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> dict[str, tuple[int, int]]:
    """Row ranges ``{split: (start, end)}`` (end exclusive) of each split, val and test
    starting ``lookback`` rows before their border. ``protocol`` is 'ETTh', 'ETTm' or 'ratio'."""
    check_choice("protocol", protocol, PROTOCOLS[1:])
    if protocol in ("ETTh", "ETTm"):
        b = ETTH_BORDERS if protocol == "ETTh" else ETTM_BORDERS
        if n_rows < b[3]:
            raise ValueError(f"the {protocol} protocol needs at least {b[3]} rows (borders {list(b)}), got {n_rows}")
    else:
        if len(ratios) != 3 or any(not 0 < r < 1 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
            raise ValueError(f"ratios must be three fractions in (0, 1) summing to 1 (train, val, test), got {ratios}")
        n_train, n_test = int(n_rows * ratios[0]), int(n_rows * ratios[2])
        b = (0, n_train, n_rows - n_test, n_rows)
    if lookback > b[1]:
        raise ValueError(f"lookback={lookback} is longer than the train split ({b[1]} rows)")
    return {"train": (b[0], b[1]), "val": (b[1] - lookback, b[2]), "test": (b[2] - lookback, b[3])}


class ForecastDataset(Dataset):
    """Sliding forecasting windows of one split; item ``i`` is ``(x [L, C_in], y [H, C_out])`` float32.

    ``source`` is a CSV path or a ``SeriesTable`` (read once, share it between splits).
    Attributes: ``mean`` / ``std`` ``[C]`` (train statistics of the selected channels),
    ``columns`` (selected channels, in order), ``target_index`` (the target's index in
    ``columns``), ``rows`` (the split's row range in the file), ``data`` (normalised
    split ``[n, C]``), ``protocol``.
    """

    def __init__(
        self,
        source,
        split: str = "train",
        *,
        lookback: int = 96,
        horizon: int = 96,
        features: str = "M",
        target: str = "OT",
        protocol: str = "auto",
        ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
        scale: bool = True,
        date_col: str = "date",
    ) -> None:
        check_choice("split", split, SPLITS)
        check_choice("features", features, FEATURES)
        check_positive_int("lookback", lookback)
        check_positive_int("horizon", horizon)
        table = source if isinstance(source, SeriesTable) else read_series_csv(source, date_col)
        if target not in table.columns:
            raise ValueError(f"{table.path}: target column {target!r} not found; channels are {table.columns}")
        self.protocol = resolve_protocol(table.path, protocol)

        columns = list(table.columns)
        if self.protocol == "ratio":  # Dataset_Custom: target column last
            columns = [c for c in columns if c != target] + [target]
        if features == "S":
            columns = [target]
        idx = [table.columns.index(c) for c in columns]
        values = table.values[:, idx]

        borders = split_borders(values.shape[0], lookback, self.protocol, ratios)
        tr0, tr1 = borders["train"]
        if scale:
            mean = values[tr0:tr1].mean(axis=0)
            std = values[tr0:tr1].std(axis=0)
            std = np.where(std > 0, std, 1.0)
        else:
            mean, std = np.zeros(values.shape[1]), np.ones(values.shape[1])
        r0, r1 = borders[split]
        n_windows = (r1 - r0) - lookback - horizon + 1
        if n_windows < 1:
            raise ValueError(
                f"{table.path}: the {split} split has {r1 - r0} rows (rows {r0}..{r1}, lookback included), too few "
                f"for one window of lookback {lookback} + horizon {horizon}"
            )
        self.columns = columns
        self.target_index = columns.index(target)
        self.split, self.lookback, self.horizon, self.features = split, lookback, horizon, features
        self.rows = (r0, r1)
        self.borders = borders
        self.mean = torch.from_numpy(mean.astype(np.float32))
        self.std = torch.from_numpy(std.astype(np.float32))
        self.data = torch.from_numpy(((values[r0:r1] - mean) / std).astype(np.float32))
        self._n = n_windows

    @property
    def n_channels(self) -> int:
        return self.data.shape[1]

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self._n <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} windows")
        i %= self._n
        x = self.data[i : i + self.lookback]
        y = self.data[i + self.lookback : i + self.lookback + self.horizon]
        if self.features == "MS":
            y = y[:, self.target_index : self.target_index + 1]
        return x, y

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation of ``[..., C]`` (all channels) or ``[..., 1]`` (the target)."""
        if y.shape[-1] == self.n_channels:
            return y * self.std.to(y) + self.mean.to(y)
        if y.shape[-1] == 1:
            t = self.target_index
            return y * self.std[t].to(y) + self.mean[t].to(y)
        raise ValueError(f"last dim must be {self.n_channels} (all channels) or 1 (target), got {tuple(y.shape)}")


def load_forecast_splits(path, **kwargs) -> dict[str, ForecastDataset]:
    """``{'train', 'val', 'test'}`` datasets from one read of the CSV; ``kwargs`` as ``ForecastDataset``."""
    date_col = kwargs.pop("date_col", "date")
    table = read_series_csv(path, date_col)
    return {s: ForecastDataset(table, s, **kwargs) for s in SPLITS}
