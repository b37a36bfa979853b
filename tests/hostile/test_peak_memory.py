"""Each file of the corpus that declares more than the caps allow is refused from its
declared sizes: a fresh process loads it and its peak memory stays within 200 MB of what
it held after its imports, with the specific message naming the field.

The process resets its peak-RSS mark after importing everything a load uses
(``/proc/self/clear_refs``), takes that mark (``VmHWM``, the peak RSS of its own memory
map; ``ru_maxrss`` would also count the RSS of the forking test process, which an exec
carries over) as the baseline, and caps its address space 1 GiB above its size, so a loader
that reserves a declared size without touching it (which RSS would not see) fails here too.

The large excerpts of the corpus, within every cap, are accepted and stored the same way
within 60 MB: the excerpt check holds a block of the files, never the files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from tests.hostile.corpus import CASES, LARGE_CHANNELS, LARGE_EXCERPTS, LARGE_RATE, SIZE_CASES, Case, LargeExcerpt
from tests.paths import REPO

pytestmark = pytest.mark.slow

#: The most a refusal may add to the process's peak resident memory.
PEAK_HEADROOM_KB = 200 * 1024
#: The corpus's malformed files of the JSON formats read since NAM 0.6 (truncated, misshapen,
#: absurd sizes declared), measured the same way.
JSON_FORMAT_CASES = [
    "nam-wavenet-huge",
    "nam-condition-dsp-huge",
    "nam-container-many-submodels",
    "nam-slimmable-bad-channels",
    "rtneural-truncated-weights",
    "rtneural-wrong-shape",
    "rtneural-absurd-width",
    "guitarml-wavenet-truncated-weights",
    "guitarml-wavenet-absurd-channels",
    "guitarml-wavenet-absurd-dilation",
    "smartamppro-truncated-weights",
    "smartamppro-wrong-shape",
    "smartamppro-absurd-window",
]
MEASURED = SIZE_CASES + [c for c in CASES if c.name in JSON_FORMAT_CASES]

_CHILD = r"""
import json, resource, sys
from pathlib import Path

import numpy, soundfile, torch
import safetensors.torch
from modelrunner import audio, declared, limits
from modelrunner.formats import coreaudioml, guitarml_wavenet, lightning, nam, native, rtneural, smartamppro
from modelrunner.formats import load

torch.set_num_threads(1)
torch.zeros(8) + 1  # first-use allocations belong to the baseline


def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


kind, path = sys.argv[1], Path(sys.argv[2])
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the peak-RSS mark restarts from the present size
except OSError:
    pass
base_rss, base_vm, base_vm_peak = status("VmHWM"), status("VmSize"), status("VmPeak")
resource.setrlimit(resource.RLIMIT_AS, (base_vm * 1024 + (1 << 30), resource.RLIM_INFINITY))
try:
    if kind == "checkpoint":
        load(path)
    elif kind == "decode":
        audio.read_audio(path)
    else:
        audio.check_audio(path)
    outcome = {"error": None, "message": "accepted"}
except Exception as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc)}
outcome["peak_rss_kb"] = status("VmHWM") - base_rss
outcome["peak_vm_kb"] = max(0, status("VmPeak") - base_vm_peak)
print(json.dumps(outcome))
"""


def refuse_in_fresh_process(case: Case, folder: Path, **env: str) -> dict:
    path = case.make(folder)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, case.kind, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", MEASURED, ids=[c.name for c in MEASURED])
def test_a_declared_size_over_the_caps_is_refused_within_200_mb(case: Case, tmp_path: Path) -> None:
    assert len(MEASURED) == len(SIZE_CASES) + len(JSON_FORMAT_CASES)
    outcome = refuse_in_fresh_process(case, tmp_path)
    print(f"{case.name}: peak RSS +{outcome['peak_rss_kb']} kB, peak VM +{outcome['peak_vm_kb']} kB")
    expected = "CheckpointError" if case.kind == "checkpoint" else "AudioError"
    assert outcome["error"] == expected, outcome
    assert re.search(case.expect, outcome["message"]), (case.expect, outcome["message"])
    assert outcome["peak_rss_kb"] < PEAK_HEADROOM_KB, outcome


def test_the_measurement_sees_an_allocation(tmp_path: Path) -> None:
    """The measurement can fail: decoding 500 s of 96 kHz stereo (a small FLAC of silence)
    whole, 384 MB of float32, shows as more than the headroom."""
    import numpy as np
    import soundfile as sf

    path = tmp_path / "long.flac"
    with sf.SoundFile(path, "w", samplerate=96_000, channels=2, subtype="PCM_16", format="FLAC") as fh:
        block = np.zeros((96_000, 2), dtype=np.int16)
        for _ in range(500):
            fh.write(block)
    outcome = refuse_in_fresh_process(Case("long", "decode", lambda folder: path, "", ""), tmp_path)
    assert outcome["error"] is None, outcome
    assert outcome["peak_rss_kb"] > PEAK_HEADROOM_KB, outcome


#: The most checking and storing a large excerpt may add to the peak resident memory. The
#: check holds one block of ``CHECK_BLOCK`` (65 536) frames at a time: 0.5 MB of float32
#: stereo, with its magnitude, its float64 squares and the encoder's copy a few MB in all;
#: 60 MB leaves room for the allocator and libsndfile and is under a third of what decoding
#: the smallest large excerpt's file whole takes (200 MB of float32).
EXCERPT_HEADROOM_KB = 60 * 1024

_EXCERPT_CHILD = r"""
import json, os, resource, sys
from pathlib import Path

import django

django.setup()
import numpy, soundfile
from modelrunner import audio
from webmushra.services import uploads


def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


dry, ref = Path(sys.argv[1]), Path(sys.argv[2])
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
base_rss, base_vm = status("VmHWM"), status("VmSize")
resource.setrlimit(resource.RLIMIT_AS, (base_vm * 1024 + (1 << 30), resource.RLIM_INFINITY))
check = uploads.check_excerpt_audio(dry, dry.name, ref, ref.name)
checked_kb = status("VmHWM") - base_rss
uploads.store_checked_excerpt(check, dry, ref)
outcome = {"frames": check.frames, "rate": check.sample_rate, "warnings": check.warnings}
outcome["checked_peak_rss_kb"] = checked_kb
outcome["peak_rss_kb"] = status("VmHWM") - base_rss
print(json.dumps(outcome))
"""


@pytest.mark.parametrize("case", LARGE_EXCERPTS, ids=[c.name for c in LARGE_EXCERPTS])
def test_a_large_excerpt_is_checked_and_stored_within_60_mb(case: LargeExcerpt, tmp_path: Path) -> None:
    """An excerpt within every cap but large on disk is checked and stored (as float32 WAV)
    in blocks: a fresh process's peak RSS grows by less than ``EXCERPT_HEADROOM_KB``."""
    dry, ref = case.make(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _EXCERPT_CHILD, str(dry), str(ref)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "DJANGO_SETTINGS_MODULE": "config.settings"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{case.name}: checked +{outcome['checked_peak_rss_kb']} kB, checked and stored +{outcome['peak_rss_kb']} kB")
    frames = int(case.seconds * LARGE_RATE)
    assert (outcome["frames"], outcome["rate"]) == (frames, LARGE_RATE)
    assert outcome["warnings"] == [f"{case.seconds:.1f} s long; BS.1534-3 recommends excerpts of about 10 s"]
    for path in (dry, ref):  # stored as checked: float32 WAV, every frame
        info = soundfile.info(str(path))
        assert (info.subtype, info.frames, info.channels) == ("FLOAT", frames, LARGE_CHANNELS)
    assert outcome["peak_rss_kb"] < EXCERPT_HEADROOM_KB, outcome


def test_decoding_a_large_excerpt_whole_exceeds_the_excerpt_bound(tmp_path: Path) -> None:
    """The bound can fail: decoding one file of the smallest large excerpt whole, as the
    excerpt check once did for each file (``read_audio``), exceeds it."""
    dry = tmp_path / "excerpt-8bit-50mb-dry.wav"
    small = LARGE_EXCERPTS[0]
    small.make(tmp_path)
    outcome = refuse_in_fresh_process(Case("whole", "decode", lambda folder: dry, "", ""), tmp_path)
    print(f"{small.name}, dry input decoded whole: peak RSS +{outcome['peak_rss_kb']} kB")
    assert outcome["error"] is None, outcome
    assert outcome["peak_rss_kb"] > EXCERPT_HEADROOM_KB, outcome
