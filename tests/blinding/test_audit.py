"""Blinding audit: nothing a participant can observe tells the conditions apart.

ITU-R BS.1534-3 asks that the hidden reference, the anchors and the systems under test
be presented blind (§5.3), in an order randomised per listener and trial (§3). This audit takes the
participant's side of whole sessions (``_observe.walk``) and checks everything received:

(a) no condition label, kind, checkpoint name, file name, checkpoint hash or database id in
    any page, JSON document, URL, header or cookie (training trials excepted: they name the
    conditions by design);
(b) signal keys are opaque (``a``, ``b``, ... in display order) and the order of the
    conditions behind them is shuffled per participant;
(c) within a trial every stimulus answers with the same status, headers, byte length and
    WAV header bytes, in full and for Range requests;
(d) the open reference has its own URL, and stimulus URLs are never shared between
    participants;
(e) response times do not separate conditions;
(f) a test trial's JSON has no ``labels`` and the same shape for every participant.

Everything except the audio itself is checked: the hidden reference is by definition the
same audio as the open reference (BS.1534-3 §5), so its samples can always be matched.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import time
from collections import Counter
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from scipy import stats

from tests.blinding._observe import RANGES, Seen, SessionSeen, fetch, walk
from tests.blinding.conftest import forbidden_names
from webmushra import http
from webmushra.models import Condition, ConditionKind, Participant, Stimulus, StimulusToken, Trial
from webmushra.services.sessions import signal_keys
from webmushra.views import participant as participant_views

N_PARTICIPANTS = 20
#: Headers a server may set differently per response without telling files apart.
PER_RESPONSE_HEADERS = {"Date"}
#: Fetches of each signal in the timing check, after one warm-up fetch.
TIMING_REPEATS = 15
#: Timing separates conditions when Kruskal-Wallis rejects at this level ...
TIMING_ALPHA = 1e-3
#: ... and the slowest condition's median is this much above the fastest one's.
TIMING_MAX_RATIO = 1.25


# ----------------------------------------------------------------------------- checks


def names_in(text: str, names: list[str]) -> list[str]:
    return [n for n in names if re.search(rf"(?<![A-Za-z0-9]){re.escape(n)}(?![A-Za-z0-9])", text)]


def check_names(seen: SessionSeen, names: list[str]) -> None:
    """(a) No page, JSON, URL, header or cookie names a condition."""
    for r in seen.responses:
        found = names_in(r.everything(), names)
        assert not found, f"{r.method} {r.url} ({r.status}) names {found}"
    for url in seen.urls():
        assert not names_in(url, names), f"the URL {url} names {names_in(url, names)}"


def shape(value: Any) -> Any:
    """The keys of a JSON document, recursively (list items merged), without the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def check_trial_json(sessions: list[SessionSeen]) -> None:
    """(f) A test trial's JSON has no labels and one shape for every participant and trial."""
    shapes = set()
    for seen in sessions:
        for t in seen.trials:
            assert "labels" not in t.data, f"test trial {t.index + 1} of {seen.token} carries labels"
            assert all(set(s) == {"key", "url"} for s in t.data["signals"]), t.data["signals"]
            shapes.add(json.dumps(shape(t.data), sort_keys=True))
    assert len(shapes) == 1, f"trial JSON differs in shape: {shapes}"


def wav_header(body: bytes) -> bytes:
    """Every byte before the first audio sample (RIFF chunks up to the data chunk's payload)."""
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE", "not a RIFF/WAVE file"
    pos = 12
    while pos + 8 <= len(body):
        chunk, size = body[pos : pos + 4], int.from_bytes(body[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            return body[: pos + 8]
        pos += 8 + size + (size & 1)
    raise AssertionError("WAV file without a data chunk")


def comparable(r: Seen) -> tuple[int, dict[str, str]]:
    return r.status, {k: v for k, v in r.headers.items() if k not in PER_RESPONSE_HEADERS}


def check_stimuli_alike(seen: SessionSeen) -> None:
    """(c) Within a trial, the stimuli (open reference included) answer identically but for the samples."""
    for t in seen.trials:
        assert set(t.full) == {"ref", *t.signal_urls}, "not every stimulus was fetched"
        first = t.full["ref"]
        assert first.status == 200 and first.headers["Content-Type"] == "audio/wav"
        assert int(first.headers["Content-Length"]) == len(first.body)
        for key, r in t.full.items():
            where = f"trial {t.index + 1}, signal {key}"
            assert comparable(r) == comparable(first), (
                f"{where}: headers differ: {comparable(r)} vs {comparable(first)}"
            )
            assert len(r.body) == len(first.body), f"{where}: {len(r.body)} bytes vs {len(first.body)}"
            assert wav_header(r.body) == wav_header(first.body), f"{where}: WAV header differs"
            for forbidden in ("ETag", "Last-Modified", "Content-Disposition"):
                assert forbidden not in r.headers, f"{where}: {forbidden} sent"
            for spec in RANGES:
                part, ref_part = t.ranged[(key, spec)], t.ranged[("ref", spec)]
                assert part.status == 206, f"{where}: {spec} answered {part.status}"
                assert comparable(part) == comparable(ref_part), f"{where}: {spec} headers differ"
                assert len(part.body) == len(ref_part.body) == int(part.headers["Content-Length"])
        assert len(wav_header(first.body)) >= 44


def check_urls(sessions: list[SessionSeen]) -> None:
    """(d) The open reference has its own URL; no stimulus URL is shared between participants."""
    owner: dict[str, str] = {}
    for seen in sessions:
        signal_urls = {u for t in seen.trials for u in t.signal_urls.values()}
        for t in seen.trials:
            ref = t.data["reference"]["url"]
            assert ref not in signal_urls, f"{seen.token}: the open reference of trial {t.index + 1} is a signal URL"
            assert len(set(t.signal_urls.values())) == len(t.signal_urls), "two signals share a URL"
        assert seen.level_audio_url is not None, "the level page plays no example"
        assert seen.level_audio_url not in signal_urls, "the level page plays a signal's URL"
        for url in signal_urls | {t.data["reference"]["url"] for t in seen.trials}:
            assert owner.setdefault(url, seen.token) == seen.token, f"{url} is served to two participants"


def check_training(seen: SessionSeen, names: list[str]) -> None:
    """(g) Training shares no URL and no audio with the test, and names no condition by its label."""
    assert seen.training, "the session had no training trial"
    test_urls = {u for t in seen.trials for u in (t.data["reference"]["url"], *t.signal_urls.values())}
    test_audio = {r.body for t in seen.trials for r in t.full.values()}
    for t in seen.training:
        where = f"training trial {t.index + 1} of {seen.token}"
        urls = {t.data["reference"]["url"], *t.signal_urls.values()}
        assert urls.isdisjoint(test_urls), f"{where} shares URLs with the test: {sorted(urls & test_urls)}"
        for key, r in t.full.items():
            assert r.status == 200, f"{where}, {key}: {r.status}"
            assert r.body not in test_audio, f"{where}: signal {key} is a test trial's audio"
        shown = " ".join([t.page.everything(), json.dumps(t.data)])
        found = names_in(shown, names)
        assert not found, f"{where} names {found}"


def check_order(sessions: list[SessionSeen], exp) -> None:
    """(b) Keys are a, b, c, ... in display order; the hidden reference moves about."""
    plans = {p.token: p.plan for p in Participant.objects.filter(experiment=exp)}
    hidden = exp.conditions.get(kind="hidden_reference").pk
    n = exp.conditions.count()
    expected_keys = [chr(ord("a") + i) for i in range(n)]
    positions: dict[int, list[int]] = {}
    orders: dict[int, set[tuple[int, ...]]] = {}
    for seen in sessions:
        for t in seen.trials:
            keys = [s["key"] for s in t.data["signals"]]
            assert keys == expected_keys, f"signal keys are not opaque positions: {keys}"
            entry = plans[seen.token][t.index]
            by_key = signal_keys(entry)
            order = tuple(by_key[k] for k in keys)
            positions.setdefault(entry["trial"], []).append(order.index(hidden))
            orders.setdefault(entry["trial"], set()).add(order)
    everywhere = [p for ps in positions.values() for p in ps]
    for trial, ps in positions.items():
        assert len(set(ps)) >= 3, f"trial {trial}: the hidden reference only ever sits at {sorted(set(ps))}"
        assert len(orders[trial]) >= len(ps) // 2, f"trial {trial}: only {len(orders[trial])} orders in {len(ps)}"
    # Uniform over the n positions (chi-square goodness of fit, scipy.stats.chisquare).
    counts = [Counter(everywhere)[i] for i in range(n)]
    assert stats.chisquare(counts).pvalue > 1e-3, f"hidden reference positions are not uniform: {counts}"


def timing_separates(samples: dict[Any, list[float]]) -> tuple[bool, float, float]:
    """Whether response times tell groups apart: Kruskal-Wallis p < TIMING_ALPHA and medians > TIMING_MAX_RATIO apart.

    Both are required: on a busy machine a tiny steady difference can be significant without
    being usable, and a large ratio of medians can come from a burst of noise by chance.
    Returns (separates, p value, ratio of the largest to the smallest median).
    """
    medians = [statistics.median(v) for v in samples.values()]
    p = stats.kruskal(*samples.values()).pvalue
    ratio = max(medians) / min(medians)
    return bool(p < TIMING_ALPHA and ratio > TIMING_MAX_RATIO), float(p), float(ratio)


def reopen(seen: SessionSeen) -> dict[int, dict[str, int]]:
    """Put a walked session back in its trials (once it has ended, every stimulus answers 410
    Gone), and return each trial's signal keys mapped to condition ids."""
    Participant.objects.filter(token=seen.token).update(stage=Participant.Stage.TRIALS)
    plan = Participant.objects.get(token=seen.token).plan
    return {t.index: signal_keys(plan[t.index]) for t in seen.trials}


def time_stimuli(
    client: Client, seen: SessionSeen, exp, repeats: int = TIMING_REPEATS, rng: random.Random | None = None
) -> dict[int, dict[int, list[float]]]:
    """Fetch every signal of every trial ``repeats`` times in random interleaved order; seconds by condition."""
    rng = rng or random.Random(1)
    conditions = reopen(seen)
    by_trial: dict[int, dict[int, list[float]]] = {}
    for t in seen.trials:
        jobs = [(conditions[t.index][k], url) for k, url in t.signal_urls.items()]
        for _, url in jobs:  # warm-up: the first read of a file may come from disk
            fetch(client, "GET", url)
        schedule = jobs * repeats
        rng.shuffle(schedule)
        times: dict[int, list[float]] = {cid: [] for cid, _ in jobs}
        for cid, url in schedule:
            r = fetch(client, "GET", url)
            assert r.status == 200
            times[cid].append(r.seconds)
        by_trial[t.index] = times
    return by_trial


def sessions_of(exp, n: int, *, audio: int) -> list[SessionSeen]:
    """Walk ``n`` participants; the first ``audio`` also fetch every stimulus (full and ranged)."""
    return [walk(Client(), exp.public_token, fetch_stimuli=i < audio, seed=i) for i in range(n)]


# ----------------------------------------------------------------------------- tests


def test_nothing_a_participant_receives_names_a_condition(blind_experiment) -> None:
    exp = blind_experiment
    names = forbidden_names(exp)
    # The list holds what it should: labels, kinds, checkpoint names, hashes, file names and ids.
    assert {"hidden_reference", "anchor35", "ht1_lstm32.json", "ht1_lstm32"} <= set(names)
    assert any(len(n) == 64 for n in names) and any(n.endswith(".wav") for n in names)
    sessions = sessions_of(exp, 3, audio=3)
    for seen in sessions:
        assert len(seen.trials) == 3 and Participant.objects.get(token=seen.token).stage == "completed"
        check_names(seen, names)
    check_trial_json(sessions)


def test_training_shares_no_url_audio_or_label_with_the_test(blind_experiment) -> None:
    exp = blind_experiment
    # Labels and checkpoint names (kinds are fair: a researcher may call a signal "Reference").
    kinds = {k.value for k in ConditionKind} | {k.label for k in ConditionKind}
    names = [n for n in forbidden_names(exp) if n not in kinds]
    for seen in sessions_of(exp, 2, audio=2):
        assert [t.data["trial"]["training"] for t in seen.training] == [True]
        check_training(seen, names)


def test_signal_order_is_shuffled_per_participant_behind_opaque_keys(blind_experiment) -> None:
    sessions = sessions_of(blind_experiment, N_PARTICIPANTS, audio=0)
    check_order(sessions, blind_experiment)
    check_trial_json(sessions)
    check_urls(sessions)


def test_stimuli_of_a_trial_answer_alike_in_full_and_by_range(blind_experiment) -> None:
    sessions = sessions_of(blind_experiment, 2, audio=2)
    for seen in sessions:
        check_stimuli_alike(seen)
    check_urls(sessions)


def test_response_times_do_not_separate_conditions(blind_experiment) -> None:
    client = Client()
    seen = walk(client, blind_experiment.public_token, fetch_stimuli=False)
    for index, times in time_stimuli(client, seen, blind_experiment).items():
        separates, p, ratio = timing_separates(times)
        medians = {cid: round(1000 * statistics.median(v), 3) for cid, v in times.items()}
        assert not separates, (
            f"trial {index + 1}: times separate conditions (p={p:.2g}, ratio {ratio:.2f}): {medians} ms"
        )


def test_the_level_page_and_the_reference_never_use_a_signal_url(blind_experiment) -> None:
    # Regression: the level page once played the first trial's hidden reference by its signal URL.
    seen = walk(Client(), blind_experiment.public_token, fetch_stimuli=False)
    p = Participant.objects.get(token=seen.token)
    signal_urls = {reverse("participant:stimulus", args=[t.token]) for t in StimulusToken.objects.filter(participant=p)}
    assert seen.level_audio_url == reverse("participant:reference", args=[p.token, 1])
    assert seen.level_audio_url not in signal_urls
    assert {t.data["reference"]["url"] for t in seen.trials}.isdisjoint(signal_urls)


# ----------------------------------------------------------------------------- the audit can fail


def test_timing_statistic_flags_a_slow_condition_and_passes_equal_ones() -> None:
    rng = random.Random(3)
    equal = {c: [rng.lognormvariate(0, 0.3) for _ in range(TIMING_REPEATS)] for c in range(5)}
    slow = {**equal, 4: [2.0 * rng.lognormvariate(0, 0.3) for _ in range(TIMING_REPEATS)]}
    assert timing_separates(equal)[0] is False
    assert timing_separates(slow)[0] is True


def test_the_audit_catches_planted_leaks(blind_experiment, monkeypatch) -> None:
    exp = blind_experiment
    names = forbidden_names(exp)
    hidden = Stimulus.objects.filter(experiment=exp, condition__kind="hidden_reference")
    hidden_files = set(hidden.values_list("file", flat=True))

    # A test trial's JSON that carries the labels, as a training trial's does.
    real_trial_data = participant_views.trial_data

    def with_labels(request, participant, index):
        data = real_trial_data(request, participant, index)
        keys = signal_keys(participant.plan[index])
        data["labels"] = {k: exp.conditions.get(pk=cid).label for k, cid in keys.items()}
        return data

    monkeypatch.setattr(participant_views, "trial_data", with_labels)
    seen = walk(Client(), exp.public_token, fetch_stimuli=False)
    with pytest.raises(AssertionError, match="names"):
        check_names(seen, names)
    with pytest.raises(AssertionError, match="labels"):
        check_trial_json([seen])
    monkeypatch.setattr(participant_views, "trial_data", real_trial_data)

    # Training that reuses a test excerpt (as it once did), and a display name that is a label.
    kinds = {k.value for k in ConditionKind} | {k.label for k in ConditionKind}
    plain = [n for n in names if n not in kinds]
    test_excerpt = exp.trials.filter(is_training=False).first().excerpt
    training_trial = exp.trials.get(is_training=True)
    Trial.objects.filter(pk=training_trial.pk).update(excerpt=test_excerpt)
    with pytest.raises(AssertionError, match="shares URLs with the test"):
        check_training(walk(Client(), exp.public_token, seed=7), plain)
    Trial.objects.filter(pk=training_trial.pk).update(excerpt=training_trial.excerpt)
    model = exp.conditions.filter(kind="model").first()
    Condition.objects.filter(pk=model.pk).update(display_name=model.label)
    with pytest.raises(AssertionError, match="names"):
        check_training(walk(Client(), exp.public_token, seed=8), plain)
    Condition.objects.filter(pk=model.pk).update(display_name="")

    # An extra header, and a slower path, for the hidden reference's file only.
    real_serve = http.serve_blinded_file
    slower = [0.010]

    def telling(request, rel_path, *args, **kw):
        if rel_path in hidden_files:
            time.sleep(slower[0])  # the slower path itself, which the timing check must notice
            response = real_serve(request, rel_path, *args, **kw)
            response["X-Served-From"] = "cache"
            return response
        return real_serve(request, rel_path, *args, **kw)

    monkeypatch.setattr(participant_views, "serve_blinded_file", telling)
    client = Client()
    seen = walk(client, exp.public_token, fetch_stimuli=True)
    with pytest.raises(AssertionError, match="headers differ"):
        check_stimuli_alike(seen)
    # The check asks for a ratio of medians: the slower path takes as long again as a plain
    # answer here and now (at least 10 ms), since on a loaded machine one alone can take tens of ms.
    first = seen.trials[0]
    conditions = reopen(seen)[first.index]
    hidden_pk = exp.conditions.get(kind="hidden_reference").pk
    plain = next(url for key, url in first.signal_urls.items() if conditions[key] != hidden_pk)
    slower[0] = max(0.010, statistics.median(fetch(client, "GET", plain).seconds for _ in range(10)))
    times = time_stimuli(client, seen, exp, repeats=10)
    found = {index: timing_separates(t) for index, t in times.items()}
    assert all(separates for separates, _p, _ratio in found.values()), (slower[0], found)
