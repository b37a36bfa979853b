"""A progress bar on stderr for long renders, fed by the renderer's fraction callback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(description: str, *, enabled: bool = True) -> Iterator[Callable[[float], None]]:
    """Yield a callback taking a fraction in [0, 1] that moves a tqdm bar on stderr.

    With ``enabled=False`` (or when stderr is not a terminal and tqdm decides so) the
    callback does nothing visible.
    """
    bar = tqdm(
        total=1000,
        desc=description,
        unit="‰",
        file=sys.stderr,
        disable=not enabled or None,
        leave=False,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
    )
    shown = 0

    def update(fraction: float) -> None:
        nonlocal shown
        target = int(round(max(0.0, min(1.0, fraction)) * 1000))
        if target > shown:
            bar.update(target - shown)
            shown = target

    try:
        yield update
    finally:
        bar.close()
