"""Trapping questions of ACR / DCR blocks (ITU-T P.808 §6.3.8): a test stimulus whose end is
replaced by a spoken message asking the listener to choose one category.

The researcher uploads the message (a WAV or FLAC recording, for example "This is an
interruption: please select Poor to show that you are listening") with the category it asks
for (:func:`add_trapping`). When the experiment opens, each question gets one trial per test
excerpt (:func:`ensure_trapping_trials`) whose audio is the beginning of one of that excerpt's
stimuli followed by the message, as long as the stimulus itself and in its format
(:func:`trapping_clip`, as the P.808 reference implementation keeps the original duration), so
neither its length nor its size sets it apart. Each participant is asked each question once, on
an excerpt drawn at random (``plans``); its token serves the trapping file (``StimulusToken.file``).
"""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
import soundfile as sf
from django.db.models import Q

from modelrunner.audio import as_2d, read_audio
from modelrunner.errors import AudioError
from modelrunner.loudness import integrated_loudness

from .. import paradigms
from ..errors import ConflictError, FieldError
from ..models import Excerpt, Experiment, Stimulus, Trial
from . import files

#: A message this long at most (seconds), and at least this long (loudness needs 400 ms).
MESSAGE_SECONDS = (0.5, 15.0)
#: The stimulus heard before the message: at least this long (seconds).
MIN_LEAD_SECONDS = 1.0
#: Fade of the stimulus into the message (seconds).
FADE_SECONDS = 0.005
#: The highest sample value the clip may reach (the message is turned down to stay under it).
PEAK = 0.99


def message_name(experiment: Experiment) -> str:
    """A new storage name for one of the experiment's messages (``paradigms.TRAPPING_MESSAGE``)."""
    return f"trapping/e{experiment.pk}/{uuid.uuid4().hex}.wav"


def clip_name(trial: Trial) -> str:
    """The storage name of a trapping trial's audio (beside the experiment's stimuli)."""
    return clip_name_of(trial.experiment_id, trial.pk)


def clip_name_of(experiment_id: int, trial_id: int) -> str:
    return f"stimuli/e{experiment_id}/trap-{trial_id}.wav"


def check_messages(experiment: Experiment, blocks: list[dict[str, Any]], skip: Iterable[str] = ()) -> None:
    """Refuse (FieldError, naming the block and question) a trapping question whose message is
    not one uploaded to this experiment; names in ``skip`` are not checked."""
    skipped = set(skip)
    for n, block in enumerate(blocks, start=1):
        for k, question in enumerate(block.get("trapping") or (), start=1):
            if question["message"] in skipped:
                continue
            match = paradigms.TRAPPING_MESSAGE.fullmatch(question["message"])
            if not match or int(match.group(1)) != experiment.pk or not files.exists(question["message"]):
                raise FieldError(
                    f"blocks[{n}].trapping[{k}].message",
                    "no such message uploaded to this experiment; upload it on the Blocks section",
                )


def read_message(upload: Any) -> tuple[np.ndarray, int]:
    """The uploaded message's samples, checked: audio, 0.5 to 15 s, mono or stereo, not silent."""
    path, filename = files.save_upload(upload)
    try:
        files.check_size(path, filename)
        try:
            audio, rate = read_audio(path, max_channels=2)
        except AudioError as exc:
            raise FieldError("message", str(exc)) from None
    finally:
        path.unlink(missing_ok=True)
    seconds = audio.shape[0] / rate
    low, high = MESSAGE_SECONDS
    if not (low <= seconds <= high):
        raise FieldError("message", f"{filename}: {seconds:.1f} s; a message lasts {low:g} to {high:g} s")
    if not np.isfinite(integrated_loudness(audio, rate)):
        raise FieldError("message", f"{filename}: silent (no loudness to match to the stimuli)")
    return audio, rate


def trapping_clip(source: np.ndarray, message: np.ndarray, rate: int) -> np.ndarray:
    """The trapping audio (ITU-T P.808 §6.3.8): ``source``'s beginning, faded out over 5 ms, then
    ``message`` at the source's loudness (BS.1770), as long as ``source`` and with its channels.
    ``message`` is at ``rate`` already. AudioError when the message leaves less than 1 s of the source."""
    src = as_2d(source).astype(np.float64)
    msg = as_2d(message).astype(np.float64)
    frames, channels = src.shape
    if msg.shape[1] != channels:
        msg = np.repeat(msg.mean(axis=1, keepdims=True), channels, axis=1)
    lead = frames - msg.shape[0]
    if lead < MIN_LEAD_SECONDS * rate:
        raise AudioError(
            f"the message ({msg.shape[0] / rate:.1f} s) leaves {max(lead, 0) / rate:.1f} s of a {frames / rate:.1f} s "
            f"stimulus; at least {MIN_LEAD_SECONDS:g} s of it must come first"
        )
    target = integrated_loudness(src, rate)
    level = integrated_loudness(msg, rate)
    gain = 10 ** ((target - level) / 20) if np.isfinite(target) and np.isfinite(level) else 1.0
    msg = msg * gain
    peak = float(np.max(np.abs(msg))) if msg.size else 0.0
    if peak > PEAK:
        msg *= PEAK / peak
    out = src.copy()
    fade = min(lead, max(1, round(FADE_SECONDS * rate)))
    out[lead - fade : lead] *= np.linspace(1.0, 0.0, fade, endpoint=False)[:, None]
    out[lead:] = msg
    return out.astype(np.float32)


def question_trial(
    experiment: Experiment, excerpt: Excerpt, number: int, block: dict[str, Any], key: str, design: list[int]
) -> tuple[Trial, bool]:
    """The trial of a gold or trapping question (``key``) on one test excerpt, made once: a
    catch trial of the block (``is_catch``), so it is never part of the analysis; and whether
    this call made it."""
    return Trial.objects.get_or_create(
        experiment=experiment,
        excerpt=excerpt,
        is_training=False,
        is_catch=True,
        repeat_of=None,
        block=number,
        design_key=key,
        defaults={"position": excerpt.position, "paradigm": block["paradigm"], "design": design},
    )


def ensure_trapping_trials(
    experiment: Experiment,
    number: int,
    block: dict[str, Any],
    kinds: list[tuple[int, str]],
    tests: list[Excerpt],
    written: list[str],
) -> None:
    """A block's trapping questions: one trial per question and test excerpt, each with its audio
    built from one of the excerpt's stimuli (drawn at random; DCR: a model's, heard against the
    open reference). A trial made now always gets its audio built anew (an id a rolled-back open
    handed out before may come again); one made by an earlier open keeps its audio, so reopening
    needs neither the messages nor the build. ConflictError naming the excerpt when a message is
    too long for it. The names of the audio written are appended to ``written``: the caller
    deletes them if the open is refused after all (its trials are rolled back)."""
    if not block.get("trapping"):
        return
    reference = next((pk for pk, kind in kinds if kind == "hidden_reference"), None)
    models = [pk for pk, kind in kinds if kind in ("model", "prerendered")]
    sources = [pk for pk, _kind in kinds] if block["paradigm"] == "acr" else models
    if not sources or (block["paradigm"] == "dcr" and reference is None):
        raise ConflictError(f"cannot open: block {number + 1}: no stimulus to build the trapping questions from")
    for k, question in enumerate(block["trapping"]):
        message: tuple[np.ndarray, int] | None = None
        for excerpt in tests:
            rng = random.Random(f"{experiment.pk}:{number}:{k}:{excerpt.pk}")
            source = rng.choice(sources)
            design = [source] if block["paradigm"] == "acr" or reference is None else [reference, source]
            trial, made = question_trial(experiment, excerpt, number, block, paradigms.trapping_key(k), design)
            if not made and files.exists(clip_name(trial)):
                continue
            if message is None:
                message = _stored_message(experiment, number, question)
            clip = _build(trial, excerpt, message, f"block {number + 1}, trapping question {k + 1}")
            written.append(clip_name(trial))
            files.store(clip_name(trial), clip)


def _stored_message(experiment: Experiment, number: int, question: dict[str, Any]) -> tuple[np.ndarray, int]:
    """A trapping question's message (samples, rate); ConflictError when it is gone."""
    try:
        check_messages(experiment, [{"trapping": [question]}])
    except FieldError:
        raise ConflictError(
            f"cannot open: block {number + 1}: a trapping question's message is missing; remove the question "
            "and upload its message again"
        ) from None
    with files.local_copy(question["message"]) as path:
        return read_audio(path, max_channels=2)


def _build(trial: Trial, excerpt: Excerpt, message: tuple[np.ndarray, int], where: str) -> bytes:
    """The trapping audio of ``trial`` (its source stimulus, then the message) as a file in the
    stimulus's own format."""
    from modelrunner.render import resample  # imports torch: only when a block has trapping questions

    stimulus = Stimulus.objects.get(excerpt=excerpt, condition_id=trial.design[-1])
    with files.local_copy(stimulus.file) as path:
        info = sf.info(str(path))
        audio, rate = read_audio(path)
    samples, message_rate = message
    try:
        clip = trapping_clip(audio, resample(samples, message_rate, rate), rate)
    except AudioError as exc:
        raise ConflictError(f"cannot open: {where}, excerpt {excerpt.name!r}: {exc}") from None
    buf = io.BytesIO()
    sf.write(buf, clip, rate, subtype=info.subtype, format=info.format)
    return buf.getvalue()


def own_messages(experiment: Experiment, blocks: list[dict[str, Any]]) -> set[str]:
    """The message names of ``blocks`` that are this experiment's (the only ones it may delete)."""
    prefix = f"trapping/e{experiment.pk}/"
    return {q["message"] for b in blocks for q in b.get("trapping") or () if q["message"].startswith(prefix)}


def trapping_files(experiment: Experiment) -> list[str]:
    """The storage names of the experiment's trapping audio (messages and built clips)."""
    trials = Trial.objects.filter(experiment=experiment, is_catch=True).filter(Q(design_key__startswith="trap:"))
    built = [clip_name(t) for t in trials]
    return built + sorted(own_messages(experiment, paradigms.blocks(experiment.config)))
