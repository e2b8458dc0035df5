"""How much one evaluation varies at a small n: the metrics on repeated random subsets of the samples (seed 000's
Table 1 used n = 100). Used by the baseline table and tested in tests/test_metrics.py."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import Tensor

from harness.evaluation.metrics import as_features, check_same_dim, kid, precision_recall


def small_sample_noise(
    real_feats: Tensor, fake_feats: Tensor, n: int = 100, repeats: int = 20, seed: int = 0
) -> pd.DataFrame:
    """How noisy are the metrics when only n samples per side are evaluated?

    For each repeat, draws n real and n fake samples without replacement (local generator seeded
    with `seed`) and computes precision, recall (k=3) and KID (subset_size=n, subsets=10, seed
    seed+repeat; with subset_size == n every KID subset is a permutation of the same samples, so
    this is the single unbiased MMD^2 estimate on those samples).
    Returns one row per repeat: columns repeat, n, precision, recall, kid."""
    real = as_features(real_feats, "real_feats")
    fake = as_features(fake_feats, "fake_feats")
    check_same_dim(real, fake)
    if n > real.shape[0] or n > fake.shape[0]:
        raise ValueError(f"n={n} exceeds the available samples (real {real.shape[0]}, fake {fake.shape[0]})")
    gen = torch.Generator().manual_seed(int(seed))
    rows = []
    for r in range(int(repeats)):
        ri = torch.randperm(real.shape[0], generator=gen)[:n]
        fi = torch.randperm(fake.shape[0], generator=gen)[:n]
        rs, fs = real[ri], fake[fi]
        pr = precision_recall(rs, fs, k=3)
        kid_mean, _ = kid(rs, fs, subsets=10, subset_size=n, seed=int(seed) + r)
        rows.append({"repeat": r, "n": int(n), "precision": pr["precision"], "recall": pr["recall"], "kid": kid_mean})
    return pd.DataFrame(rows, columns=["repeat", "n", "precision", "recall", "kid"])


def summarise_noise(df: pd.DataFrame) -> dict:
    """{metric: {mean, std, min, max}} over the repeats (std = sample std, ddof=1), plus n and repeats."""
    out: dict[str, Any] = {"repeats": int(len(df))}
    if "n" in df.columns and len(df):
        out["n"] = int(df["n"].iloc[0])
    for col in df.columns:
        if col in ("repeat", "n"):
            continue
        s = df[col].astype(float)
        out[col] = {
            "mean": float(s.mean()),
            "std": float(s.std(ddof=1)) if len(s) > 1 else 0.0,
            "min": float(s.min()),
            "max": float(s.max()),
        }
    return out
