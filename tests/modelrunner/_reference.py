"""Shared pieces of the reference-forward tests for the JSON formats read from plugin code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.modelrunner._helpers import guitar


def ten_seconds() -> torch.Tensor:
    """``(1, frames)``: the 5 s guitar fixture twice, 10 s at 44.1 kHz."""
    x = guitar(5.0, 0.0)
    return torch.cat([x, x], dim=1)


def assert_matches(y: torch.Tensor, ref: np.ndarray) -> tuple[float, float]:
    """Max abs error <= 1e-4 and ESR <= 1e-6 against a float64 reference; returns both."""
    out = y.detach().double().numpy()[0]
    assert out.shape == ref.shape
    err = float(np.max(np.abs(out - ref)))
    esr = float(np.sum((out - ref) ** 2) / np.sum(ref**2))
    assert err <= 1e-4, f"max abs error {err}"
    assert esr <= 1e-6, f"ESR {esr}"
    assert float(np.std(ref)) > 1e-3  # the model does something
    return err, esr


def mutated(src: Path, folder: Path, change: Callable[[dict[str, Any]], None], name: str = "model.json") -> Path:
    """A copy of ``src`` with ``change`` applied to its parsed JSON."""
    data = json.loads(src.read_text())
    change(data)
    out = folder / name
    out.write_text(json.dumps(data))
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
