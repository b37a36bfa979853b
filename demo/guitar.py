"""Plucked-string guitar phrases by extended Karplus-Strong synthesis.

Karplus & Strong, "Digital synthesis of plucked-string and drum timbres", Computer Music
Journal 7(2), 1983; Jaffe & Smith, "Extensions of the Karplus-Strong plucked-string
algorithm", Computer Music Journal 7(2), 1983. A noise burst one period long, softened by
a dynamic-level low-pass and notched by a pick-position comb, circulates in a delay loop
whose loss filter is the two-point average with a decay-stretching weight ``S``, a loss
factor ``rho`` sets the decay time, and a third-order Lagrange interpolator tunes the
fractional part of the period. A pickup-position comb and a resonant low-pass (the
pickup's inductance against the cable's capacitance) make the result sound like a
directly recorded (DI) electric guitar rather than a harpsichord.

Everything is deterministic given the seed. Audio is float32 mono ``(frames,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal

#: Lowest and highest notes the phrases use: E2 (open low string) to E5 (12th fret, high string).
LOWEST_MIDI = 40
HIGHEST_MIDI = 76
#: Phrase peak level, dBFS.
PEAK_DBFS = -6.0

NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
#: Keys the riffs are written in: name and the MIDI note of the riff's root (low register).
KEYS = [("E minor", 40), ("A minor", 45), ("D minor", 50), ("G minor", 43), ("B minor", 47), ("C minor", 48)]
MINOR_PENTATONIC = [0, 3, 5, 7, 10]
NATURAL_MINOR = [0, 2, 3, 5, 7, 8, 10]


def midi_to_hz(midi: float) -> float:
    """Equal-tempered frequency of a MIDI note number, A4 = 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((float(midi) - 69.0) / 12.0)


def note_name(midi: int) -> str:
    """Scientific pitch name of a MIDI note, e.g. 40 -> 'E2'."""
    return f"{NOTE_NAMES[int(midi) % 12]}{int(midi) // 12 - 1}"


@dataclass(frozen=True)
class Note:
    """One plucked note: onset and release in seconds, MIDI pitch, velocity in (0, 1]."""

    onset: float
    midi: int
    velocity: float
    release: float
    pick_position: float = 0.13
    pickup_position: float = 0.12
    muted: bool = False


@dataclass
class Phrase:
    """A composed phrase: its key, tempo and notes (not yet rendered)."""

    seed: int
    key: str
    bpm: float
    seconds: float
    notes: list[Note] = field(default_factory=list)


def _lagrange(delay: float, order: int = 3) -> np.ndarray:
    """Lagrange fractional-delay FIR taps (Laakso et al., "Splitting the unit delay", IEEE SPM 1996)."""
    n = np.arange(order + 1)
    h = np.ones(order + 1)
    for k in range(order + 1):
        others = n[n != k]
        h[k] = np.prod((delay - others) / (k - others))
    return h


def _loop_filter(period: float, sample_rate: int, stretch: float) -> tuple[int, np.ndarray]:
    """Integer delay and FIR taps whose combined phase delay at f0 is exactly ``period`` samples.

    The loop filter is the decay-stretching average ``(1 - S) + S z^-1`` (Jaffe & Smith 1983,
    sec. "Decay stretching") cascaded with a Lagrange interpolator for the fractional delay.
    """
    avg = np.array([1.0 - stretch, stretch])
    integer = int(np.floor(period - stretch - 1.0))
    frac = period - stretch - integer  # in [1, 2): where third-order Lagrange behaves best
    w0 = 2.0 * np.pi / period
    for _ in range(3):  # the phase delay of the cascade is only approximately S + d; correct it
        taps = np.convolve(avg, _lagrange(frac))
        _, resp = signal.freqz(taps, worN=[w0])
        frac += period - integer - (-np.angle(resp[0]) / w0)
    return integer, np.convolve(avg, _lagrange(frac))


def pluck(
    frequency: float,
    seconds: float,
    sample_rate: int,
    *,
    velocity: float = 0.8,
    release: float | None = None,
    pick_position: float = 0.13,
    pickup_position: float = 0.12,
    muted: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """One plucked string, ``(round(seconds * sample_rate),)`` float32 (Jaffe & Smith 1983).

    ``release`` (seconds) damps the string like a lifted fretting finger; ``muted`` is a
    palm mute (short, dark). The level is not normalised.
    """
    if not (20.0 <= frequency <= sample_rate / 8):
        raise ValueError(f"frequency {frequency} Hz is outside 20 Hz .. sample_rate/8")
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if not (0.0 < velocity <= 1.0):
        raise ValueError(f"velocity must be in (0, 1], got {velocity}")
    rng = np.random.default_rng(seed)
    n_total = int(round(seconds * sample_rate))
    period = sample_rate / frequency
    # Decay stretching: below 0.5 the loss filter is brighter, so high strings ring longer.
    stretch = 0.5 if muted else 0.35
    delay, taps = _loop_filter(period, sample_rate, stretch)
    # Sustain: low strings ring for several seconds, high ones for less (T60 at f0).
    t60 = 0.25 if muted else float(np.interp(np.log2(frequency), np.log2([82.4, 660.0]), [5.0, 2.2]))
    gain_f0 = abs(np.polyval(taps[::-1], np.exp(-2j * np.pi / period)))
    per_period = 10.0 ** (-3.0 / (t60 * frequency))
    rho = min(per_period / gain_f0, 0.99999)
    rho_damped = min(10.0 ** (-3.0 / (0.06 * frequency)) / gain_f0, rho)

    # Excitation: one period of noise, darker when played softly (dynamic-level low-pass).
    n_exc = int(round(period))
    burst = rng.uniform(-1.0, 1.0, n_exc)
    burst -= burst.mean()
    cutoff = (0.08 + 0.35 * velocity) * (0.4 if muted else 1.0)
    pole = np.exp(-2.0 * np.pi * cutoff * 0.5)
    burst = signal.lfilter([1.0 - pole], [1.0, -pole], burst)
    lag = max(1, int(round(pick_position * period)))
    burst = burst - np.concatenate([np.zeros(lag), burst[:-lag]])  # pick-position comb
    burst *= velocity / (np.max(np.abs(burst)) + 1e-12)

    pad = delay + len(taps)
    y = np.zeros(pad + n_total)
    y[pad : pad + min(n_exc, n_total)] += burst[:n_total]
    release_at = n_total if release is None else int(round(release * sample_rate))
    # The loop only looks back >= `delay` samples, so a whole block can be computed at once.
    for start in range(pad, pad + n_total, delay):
        stop = min(start + delay, pad + n_total)
        g = rho if start - pad < release_at else rho_damped
        acc = np.zeros(stop - start)
        for k, c in enumerate(taps):
            acc += c * y[start - delay - k : stop - delay - k]
        y[start:stop] += g * acc
    y = y[pad:]
    lag = max(1, int(round(pickup_position * period)))
    y = y - np.concatenate([np.zeros(lag), y[:-lag]])  # the pickup senses a point on the string
    return y.astype(np.float32)


def _pickup_filter(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Pickup + cable resonance as a resonant low-pass (RBJ Audio EQ Cookbook LPF, 4.2 kHz, Q 1.6)."""
    f0, q = 4200.0, 1.6
    w0 = 2.0 * np.pi * f0 / sample_rate
    alpha = np.sin(w0) / (2.0 * q)
    cw = np.cos(w0)
    b = np.array([(1 - cw) / 2, 1 - cw, (1 - cw) / 2])
    a = np.array([1 + alpha, -2 * cw, 1 - alpha])
    y = signal.lfilter(b / a[0], a / a[0], x)
    # DC blocker (one pole at 10 Hz): the pickup cannot pass DC.
    p = np.exp(-2.0 * np.pi * 10.0 / sample_rate)
    return signal.lfilter([1.0, -1.0], [1.0, -p], y)


def compose_phrase(seed: int, seconds: float) -> Phrase:
    """A riff in one of a few minor keys: single-note lines, power chords, a strum, a held note."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    rng = np.random.default_rng([int(seed), 2024])
    key, root = KEYS[int(rng.integers(len(KEYS)))]
    bpm = float(rng.choice([92.0, 100.0, 108.0, 116.0, 126.0, 138.0]))
    eighth = 60.0 / bpm / 2.0
    phrase = Phrase(seed=int(seed), key=key, bpm=bpm, seconds=float(seconds))
    t = 0.05
    # Every kind once in a shuffled order, then at random: any three bars hold a chordal one.
    order = [str(k) for k in rng.permutation(["riff", "power", "strum", "lead"])]
    i = 0
    while t < seconds - 0.5:
        kind = order[i] if i < len(order) else str(rng.choice(["riff", "riff", "power", "strum", "lead"]))
        i += 1
        bar_end = t + 8 * eighth
        if kind == "riff":
            _riff(phrase, rng, root, t, eighth)
        elif kind == "power":
            _power_chords(phrase, rng, root, t, eighth)
        elif kind == "strum":
            _strum(phrase, rng, root, t, 8 * eighth)
        else:
            _lead(phrase, rng, root, t, eighth)
        t = bar_end
    phrase.notes = [n for n in phrase.notes if n.onset < seconds - 0.05]
    phrase.notes.sort(key=lambda n: (n.onset, n.midi))
    return phrase


def _clamp_midi(m: int) -> int:
    while m > HIGHEST_MIDI:
        m -= 12
    while m < LOWEST_MIDI:
        m += 12
    return m


def _accent(rng: np.random.Generator, step: int) -> float:
    base = 0.95 if step % 4 == 0 else 0.8 if step % 2 == 0 else 0.68
    return float(np.clip(base + rng.normal(0.0, 0.06), 0.35, 1.0))


def _riff(phrase: Phrase, rng: np.random.Generator, root: int, t: float, eighth: float) -> None:
    scale = MINOR_PENTATONIC if rng.random() < 0.7 else NATURAL_MINOR
    pool = [_clamp_midi(root + o + 12 * octv) for octv in (0, 1) for o in scale]
    palm = rng.random() < 0.4
    notes = []
    for step in range(8):
        if step > 0 and rng.random() < 0.18:
            continue  # a rest
        if palm and step % 2 == 0:
            midi = root
        else:
            midi = int(rng.choice(pool))
        notes.append((t + step * eighth, midi, step))
    for j, (onset, midi, step) in enumerate(notes):
        nxt = notes[j + 1][0] if j + 1 < len(notes) else t + 8 * eighth
        muted = palm and midi == root
        length = (nxt - onset) * (0.55 if muted else 0.95)
        phrase.notes.append(
            Note(
                onset,
                midi,
                _accent(rng, step) * (0.85 if muted else 1.0),
                onset + length,
                float(rng.uniform(0.1, 0.2)),
                float(rng.uniform(0.08, 0.2)),
                muted,
            )
        )


def _power_chords(phrase: Phrase, rng: np.random.Generator, root: int, t: float, eighth: float) -> None:
    degrees = [0, 8, 10, 5, 3, 7]
    pattern = [(0, 3), (3, 3), (6, 2)] if rng.random() < 0.5 else [(0, 2), (2, 2), (4, 4)]
    for onset_steps, dur_steps in pattern:
        base = _clamp_midi(root + int(rng.choice(degrees)))
        if base > 52:
            base -= 12 if base - 12 >= LOWEST_MIDI else 0
        onset = t + onset_steps * eighth
        vel = _accent(rng, onset_steps)
        pos = float(rng.uniform(0.1, 0.18))
        for s, interval in enumerate((0, 7, 12)):
            start = onset + s * float(rng.uniform(0.004, 0.009))  # a downstroke reaches strings in turn
            phrase.notes.append(
                Note(start, base + interval, vel * (1.0 - 0.06 * s), onset + dur_steps * eighth * 0.93, pos, 0.1)
            )


def _strum(phrase: Phrase, rng: np.random.Generator, root: int, t: float, length: float) -> None:
    chord_root = _clamp_midi(root + int(rng.choice([0, 5, 8, 10])))
    if chord_root > 50:
        chord_root -= 12 if chord_root - 12 >= LOWEST_MIDI else 0
    third = 3 if rng.random() < 0.6 else 4
    voicing = [chord_root, chord_root + 7, chord_root + 12, chord_root + 12 + third, chord_root + 19, chord_root + 24]
    voicing = [m for m in voicing if m <= HIGHEST_MIDI]
    strokes = [(0.0, 1), (length * 0.375, -1), (length * 0.5, 1)] if rng.random() < 0.5 else [(0.0, 1)]
    for k, (offset, direction) in enumerate(strokes):
        release = t + (strokes[k + 1][0] if k + 1 < len(strokes) else length * 0.98)
        order = voicing if direction > 0 else voicing[::-1][:4]
        vel = float(np.clip(0.9 - 0.15 * (direction < 0) + rng.normal(0, 0.05), 0.4, 1.0))
        spacing = float(rng.uniform(0.008, 0.018))
        for s, midi in enumerate(order):
            phrase.notes.append(
                Note(
                    t + offset + s * spacing,
                    midi,
                    vel * (1.0 - 0.04 * s),
                    release,
                    float(rng.uniform(0.12, 0.22)),
                    0.15,
                )
            )


def _lead(phrase: Phrase, rng: np.random.Generator, root: int, t: float, eighth: float) -> None:
    pool = [_clamp_midi(root + 12 + o) for o in MINOR_PENTATONIC] + [_clamp_midi(root + 24 + o) for o in (0, 3)]
    steps = [(0, 2), (2, 2), (4, 4)] if rng.random() < 0.5 else [(0, 3), (3, 5)]
    for onset_steps, dur in steps:
        midi = int(rng.choice(pool))
        onset = t + onset_steps * eighth
        phrase.notes.append(
            Note(
                onset, midi, _accent(rng, onset_steps), onset + dur * eighth * 0.97, float(rng.uniform(0.08, 0.16)), 0.1
            )
        )


def render_phrase(phrase: Phrase, sample_rate: int) -> np.ndarray:
    """Render a composed phrase to float32 mono, peak at ``PEAK_DBFS``."""
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    n_total = int(round(phrase.seconds * sample_rate))
    out = np.zeros(n_total)
    for j, note in enumerate(phrase.notes):
        start = int(round(note.onset * sample_rate))
        if start >= n_total:
            continue
        ring = note.release - note.onset
        length = min(ring + 0.3, phrase.seconds - note.onset)
        tone = pluck(
            midi_to_hz(note.midi),
            length,
            sample_rate,
            velocity=note.velocity,
            release=ring,
            pick_position=note.pick_position,
            pickup_position=note.pickup_position,
            muted=note.muted,
            seed=phrase.seed * 1000 + j,
        )
        stop = min(n_total, start + len(tone))
        out[start:stop] += tone[: stop - start]
    out = _pickup_filter(out, sample_rate)
    peak = np.max(np.abs(out))
    if peak > 0:
        out *= 10.0 ** (PEAK_DBFS / 20.0) / peak
    return out.astype(np.float32)


def guitar_phrase(seed: int, seconds: float, sample_rate: int) -> np.ndarray:
    """A synthesised DI-guitar phrase, float32 mono ``(round(seconds * sample_rate),)``, peak -6 dBFS.

    Deterministic in ``seed``; different seeds give different riffs in a few minor keys.
    """
    return render_phrase(compose_phrase(seed, seconds), sample_rate)
