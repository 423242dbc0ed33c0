#!/usr/bin/env python3
"""Naive forecasts of the forecasting tasks (docs/experiments/sequences.md), as a yardstick for the
trained mixers: the same split (70/10/20 % by time), standardisation (the training part's mean and
std) and test windows as metaformer's data/series.cpp, and the test MSE and MAE of
  - persistence: every future step is the context's last value;
  - seasonal naive: each future step repeats the value one season earlier;
  - the mean: every future step is 0 (the training part's mean).
Usage: tools/series_baselines.py co2 104 26 52 | sunspots 44 11 11   (name, context, horizon, season)
Needs numpy and Debian's python3-statsmodels (only its CSV files are read)."""
import csv
import sys

import numpy as np

DIR = "/usr/lib/python3/dist-packages/statsmodels/datasets"
SERIES = {"co2": ("co2/co2.csv", "co2"), "sunspots": ("sunspots/sunspots.csv", "SUNACTIVITY")}


def load(name):
    path, column = SERIES[name]
    with open(f"{DIR}/{path}") as f:
        rows = list(csv.DictReader(f))
    v = np.array([float(r[column]) if r[column].strip() else np.nan for r in rows])
    gaps = np.isnan(v)  # linear interpolation, the ends held (as data/series.cpp)
    if gaps.any():
        idx = np.arange(len(v))
        v[gaps] = np.interp(idx[gaps], idx[~gaps], v[~gaps])
    return v


def main():
    name, context, horizon, season = sys.argv[1], *map(int, sys.argv[2:5])
    v = load(name)
    T = len(v)
    train = int(round(0.7 * T))
    test = int(round(0.2 * T))
    mean, std = v[:train].mean(), v[:train].std()
    z = (v - mean) / std
    first = T - test - context
    windows = test - horizon + 1
    err = {"persistence": [], "seasonal naive": [], "mean": []}
    for i in range(windows):
        ctx = z[first + i:first + i + context]
        fut = z[first + i + context:first + i + context + horizon]
        err["persistence"].append(fut - ctx[-1])
        seasonal = np.array([ctx[context - season + (h % season)] for h in range(horizon)])
        err["seasonal naive"].append(fut - seasonal)
        err["mean"].append(fut)
    print(f"{name}: {windows} test windows of {context} -> {horizon} steps")
    for k, e in err.items():
        e = np.array(e)
        print(f"  {k:15s} MSE {np.mean(e ** 2):.4f}  MAE {np.mean(np.abs(e)):.4f}")


if __name__ == "__main__":
    main()
