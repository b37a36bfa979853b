"""The demo's listening-test material: excerpts (dry input + the pedal's recording) and checkpoints.

The excerpts are synthesised guitar phrases (``demo.guitar``) played through the demo
pedal (``demo.device``); the pedal's output is the reference. Their seeds (1..99) are
disjoint from those ``demo.train`` trains (1000..) and validates (900..) on, so the
models are heard on phrases they never saw.
"""

from __future__ import annotations

from pathlib import Path

from modelrunner.audio import write_wav

from .device import DemoDevice
from .guitar import compose_phrase, render_phrase

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
#: Seeds of the demo excerpts; the first six riffs are in six different keys.
EXCERPT_SEEDS = (8, 1, 2, 4, 11, 7, 12, 5, 9, 10)
CHECKPOINT_SAMPLE_RATE = 48_000


def make_demo_excerpts(
    out_dir: Path,
    *,
    sample_rate: int = 48000,
    n_excerpts: int = 4,
    seconds: float = 8.0,
    gain: float = 0.5,
) -> list[dict]:
    """Write ``excerpt_XX_dry.wav`` / ``excerpt_XX_device.wav`` pairs (float32 WAV) into ``out_dir``.

    Returns ``[{"name": "Riff 1 (E minor)", "dry": Path, "reference": Path}, ...]``.
    Deterministic: a rerun writes the same samples.
    """
    if not (1 <= n_excerpts <= len(EXCERPT_SEEDS)):
        raise ValueError(f"n_excerpts must be 1..{len(EXCERPT_SEEDS)}, got {n_excerpts}")
    if not (1.0 <= seconds <= 60.0):
        raise ValueError(f"seconds must be 1..60, got {seconds}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = DemoDevice()
    excerpts = []
    for i, seed in enumerate(EXCERPT_SEEDS[:n_excerpts], start=1):
        phrase = compose_phrase(seed, seconds)
        dry = render_phrase(phrase, sample_rate)
        wet = device.process(dry, sample_rate, gain)
        dry_path = write_wav(out / f"excerpt_{i:02d}_dry.wav", dry, sample_rate)
        ref_path = write_wav(out / f"excerpt_{i:02d}_device.wav", wet, sample_rate)
        excerpts.append({"name": f"Riff {i} ({phrase.key})", "dry": dry_path, "reference": ref_path})
    return excerpts


def demo_checkpoints() -> list[dict]:
    """The committed demo models, best first, with their knob settings for the demo (gain 0.5)."""
    return [
        {
            "path": CHECKPOINT_DIR / "demo_lstm16_gain.json",
            "label": "LSTM-16 (gain 0.5)",
            "knobs": {"p1": 0.5},
            "sample_rate": CHECKPOINT_SAMPLE_RATE,
        },
        {
            "path": CHECKPOINT_DIR / "demo_gru8.json",
            "label": "GRU-8",
            "knobs": {},
            "sample_rate": CHECKPOINT_SAMPLE_RATE,
        },
        {
            "path": CHECKPOINT_DIR / "demo_lstm4_undertrained.json",
            "label": "LSTM-4 (under-trained)",
            "knobs": {},
            "sample_rate": CHECKPOINT_SAMPLE_RATE,
        },
    ]
