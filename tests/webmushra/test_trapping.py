"""Trapping questions of ACR / DCR blocks (ITU-T P.808 §6.3.8): the researcher uploads a spoken
message with the category it asks for; opening builds, per test excerpt, a stimulus whose end
is that message; each participant hears one, like any trial of the block; another answer fails.

The built audio is checked sample by sample against the stimulus it came from and the message,
its loudness against pyloudnorm's own measure, and its length and size against the stimulus.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from modelrunner.errors import AudioError
from tests.trials import answer_body
from tests.webmushra.test_paradigm_trials import _answer_for, _post, _trial_json
from webmushra import paradigm_data, paradigms
from webmushra.models import Experiment, Participant, Stimulus, StimulusToken, Trial, TrialResponse
from webmushra.services import accounts, experiments, files, quality, sessions, trapping

pytestmark = pytest.mark.django_db

CHECKPOINTS = ("ht1_lstm32.json",)


def tone(seconds: float, rate: int = 44100, channels: int = 1, hz: float = 330.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def wav_upload(audio: np.ndarray, rate: int = 44100, name: str = "please-select-poor.wav") -> SimpleUploadedFile:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, subtype="PCM_16", format="WAV")
    return SimpleUploadedFile(name, buf.getvalue(), content_type="audio/wav")


def loudness(audio: np.ndarray, rate: int) -> float:
    return float(pyloudnorm.Meter(rate).integrated_loudness(np.asarray(audio, dtype=np.float64)))


def test_the_clip_is_the_stimulus_then_the_message_at_its_loudness():
    rate = 48000
    rng = np.random.default_rng(7)
    source = (0.2 * rng.standard_normal((3 * rate, 2))).astype(np.float32)
    message = tone(1.0, rate)
    clip = trapping.trapping_clip(source, message, rate)
    assert clip.shape == source.shape and clip.dtype == np.float32
    lead = source.shape[0] - message.shape[0]
    fade = round(trapping.FADE_SECONDS * rate)
    # Before the fade: the stimulus itself; then a linear fade; then the message on both channels.
    assert np.array_equal(clip[: lead - fade], source[: lead - fade])
    np.testing.assert_allclose(
        clip[lead - fade : lead, 0] / source[lead - fade : lead, 0], np.arange(fade, 0, -1) / fade, rtol=1e-5
    )
    tail = clip[lead:]
    assert np.array_equal(tail[:, 0], tail[:, 1])
    gain = float(np.dot(tail[:, 0], message[:, 0]) / np.dot(message[:, 0], message[:, 0]))
    np.testing.assert_allclose(tail[:, 0], gain * message[:, 0], rtol=1e-5, atol=1e-7)
    # BS.1770 (pyloudnorm's meter, measured here): the message as loud as the stimulus.
    assert abs(loudness(tail, rate) - loudness(source, rate)) < 0.05
    # A message that leaves less than a second of the stimulus is refused with the numbers.
    with pytest.raises(AudioError) as err:
        trapping.trapping_clip(source, tone(2.5, rate), rate)
    assert "the message (2.5 s) leaves 0.5 s of a 3.0 s stimulus; at least 1 s of it must come first" in str(err.value)


@pytest.fixture
def api(researcher):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=researcher)}")
    return client


def _config(*blocks: dict) -> dict:
    return {"training": False, "questionnaire": [], "blocks": list(blocks), "rules": {"min_trial_seconds": 0}}


def _trapping_url(exp, block: int = 1) -> str:
    return reverse("api:block_trapping", args=[exp.pk, block])


def _stored_messages(exp) -> list[str]:
    root = files.default_storage.path(f"trapping/e{exp.pk}") if files.is_local() else None
    import os

    return sorted(os.listdir(root)) if root and os.path.isdir(root) else []


def test_a_trapping_question_is_uploaded_built_asked_and_scored(api, client, rendered_experiment):
    exp = rendered_experiment(n_excerpts=2, seconds=3.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "acr"}))
    # Refused, nothing stored: not audio, an answer off the scale, too long a message.
    bad = api.post(_trapping_url(exp), {"message": SimpleUploadedFile("x.wav", b"not audio"), "answer": 2})
    assert bad.status_code == 400 and bad.json()["field"] == "message"
    off = api.post(_trapping_url(exp), {"message": wav_upload(tone(1.0)), "answer": 6})
    assert off.status_code == 400 and off.json()["field"] == "blocks[1].trapping[1].answer"
    long = api.post(_trapping_url(exp), {"message": wav_upload(tone(16.0)), "answer": 2})
    assert long.status_code == 400 and "a message lasts 0.5 to 15 s" in long.json()["error"]
    exp.refresh_from_db()
    assert paradigms.blocks(exp.config)[0]["trapping"] == [] and _stored_messages(exp) == []

    made = api.post(_trapping_url(exp), {"message": wav_upload(tone(1.0)), "answer": 2})
    assert made.status_code == 201, made.content
    (question,) = made.json()["blocks"][0]["trapping"]
    assert question["answer"] == 2 and re.fullmatch(rf"trapping/e{exp.pk}/[0-9a-f]{{32}}\.wav", question["message"])
    assert made.json()["plan"][0]["trapping_trials"] == 1
    assert _stored_messages(exp) == [question["message"].rsplit("/", 1)[1]]
    # A message of another experiment cannot be named in the blocks.
    forged = dict(
        paradigms.blocks(exp.config)[0], trapping=[{"message": "trapping/e999/" + "0" * 32 + ".wav", "answer": 1}]
    )
    r = api.put(reverse("api:blocks", args=[exp.pk]), {"blocks": [forged]}, format="json")
    assert r.status_code == 400 and r.json()["field"] == "blocks[1].trapping[1].message"

    exp = experiments.open_experiment(experiment=Experiment.objects.get(pk=exp.pk))
    built = Trial.objects.filter(experiment=exp, is_catch=True, design_key="trap:0")
    tests = exp.excerpts.filter(is_training=False)
    assert built.count() == tests.count() == 2
    stored_message, message_rate = sf.read(io.BytesIO(files.read_stored(question["message"])), dtype="float32")
    for trial in built:
        source = Stimulus.objects.get(excerpt=trial.excerpt, condition_id=trial.design[-1])
        src, rate = sf.read(io.BytesIO(files.read_stored(source.file)), dtype="float32", always_2d=True)
        clip_bytes = files.read_stored(trapping.clip_name(trial))
        clip, clip_rate = sf.read(io.BytesIO(clip_bytes), dtype="float32", always_2d=True)
        # As long as the stimulus, in its format: the same size, so no size tells it apart.
        assert clip_rate == rate and clip.shape == src.shape and len(clip_bytes) == len(files.read_stored(source.file))
        assert sf.info(io.BytesIO(clip_bytes)).subtype == sf.info(io.BytesIO(files.read_stored(source.file))).subtype
        lead = src.shape[0] - round(1.0 * rate)
        np.testing.assert_allclose(clip[: lead - 300], src[: lead - 300], atol=2e-7)
        assert abs(loudness(clip[lead:], rate) - loudness(src, rate)) < 0.1

    # Two participants: one answers the message's category, one does not.
    outcomes = {}
    for answer in (2, 4):
        p = sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True)
        p = sessions.set_level(participant=p, gain_db=0.0)
        plan = Participant.objects.get(pk=p.pk).plan
        traps = [e for e in plan if e.get("trap")]
        assert len(traps) == 1 and not plan[0].get("trap")
        for index, entry in enumerate(plan):
            data, html = _trial_json(client, p, index)
            assert data["paradigm"] == "acr" and len(data["signals"]) == 1
            if entry.get("trap"):
                (token,) = StimulusToken.objects.filter(participant=p, trial_id=entry["trial"])
                assert token.file == trapping.clip_name(Trial.objects.get(pk=entry["trial"]))
                served = client.get(data["signals"][0]["url"])
                body = b"".join(served.streaming_content)
                assert served.status_code == 200 and body == files.read_stored(token.file)
                sent = {"score": answer}
            else:
                sent = _answer_for(exp, entry)
            r = _post(client, p, index, answer_body(p, index, sent, client=client))
            assert r.status_code == 200, r.content
        response = TrialResponse.objects.get(participant=p, trial_id=traps[0]["trial"])
        outcomes[answer] = (p.pk, response.catch, [f["code"] for f in response.flags])
    assert outcomes[2][1:] == ({"check": "trapping", "expected": 2, "tolerance": 0, "score": 2, "passed": True}, [])
    assert outcomes[4][1:] == (
        {"check": "trapping", "expected": 2, "tolerance": 0, "score": 4, "passed": False},
        ["trap_failed"],
    )
    table = paradigm_data.paradigm_frames(exp)["acr"]
    assert dict(table.groupby("participant")["passed_checks"].all()) == {
        f"P{outcomes[2][0]}": True,
        f"P{outcomes[4][0]}": False,
    }
    assert quality.quality_summary(exp)["trapping_questions"] == {
        "per_participant": 1,
        "answered": 2,
        "failed": 1,
        "failed_participants": 1,
    }
    # Open: the questions cannot change any more.
    late = api.delete(reverse("api:block_trapping_item", args=[exp.pk, 1, 1]))
    assert late.status_code == 409
    del stored_message, message_rate


def test_a_message_too_long_for_an_excerpt_refuses_opening(api, rendered_experiment):
    exp = rendered_experiment(n_excerpts=1, seconds=2.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "dcr"}))
    assert api.post(_trapping_url(exp), {"message": wav_upload(tone(1.5)), "answer": 5}).status_code == 201
    with pytest.raises(experiments.ConflictError) as err:
        experiments.open_experiment(experiment=Experiment.objects.get(pk=exp.pk))
    assert "cannot open: block 1, trapping question 1, excerpt" in str(err.value)
    assert "at least 1 s of it must come first" in str(err.value)
    exp.refresh_from_db()
    assert exp.status != Experiment.Status.OPEN and not exp.trials.exists()


def test_trapping_questions_only_on_acr_and_dcr_blocks_and_removed_with_their_message(
    api, rendered_experiment, django_capture_on_commit_callbacks
):
    exp = rendered_experiment(
        n_excerpts=1,
        seconds=3.0,
        checkpoints=CHECKPOINTS,
        config=_config({"paradigm": "mushra"}, {"paradigm": "acr"}),
    )
    wrong = api.post(_trapping_url(exp, 1), {"message": wav_upload(tone(1.0)), "answer": 1})
    assert wrong.status_code == 400 and "block 1 is not an ACR or DCR block" in wrong.json()["error"]
    none = api.post(_trapping_url(exp, 3), {"message": wav_upload(tone(1.0)), "answer": 1})
    assert none.status_code == 400 and "from 1 to 2" in none.json()["error"]
    assert api.post(_trapping_url(exp, 2), {"message": wav_upload(tone(1.0)), "answer": 1}).status_code == 201
    assert len(_stored_messages(exp)) == 1
    with django_capture_on_commit_callbacks(execute=True):  # the message goes once the change is committed
        gone = api.delete(reverse("api:block_trapping_item", args=[exp.pk, 2, 1]))
    assert gone.status_code == 200 and gone.json()["blocks"][1]["trapping"] == []
    assert _stored_messages(exp) == []
    assert api.delete(reverse("api:block_trapping_item", args=[exp.pk, 2, 1])).status_code == 400


def test_the_settings_page_adds_and_removes_trapping_questions(client, researcher, rendered_experiment):
    client.force_login(researcher)
    exp = rendered_experiment(n_excerpts=1, seconds=3.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "acr"}))
    url = reverse("researcher:block_trapping", args=[exp.pk])
    page = client.get(reverse("researcher:settings", args=[exp.pk])).content.decode()
    assert 'id="trapping-form"' in page and 'enctype="multipart/form-data"' in page
    bad = client.post(url, {"block": "1", "answer": "2", "message": SimpleUploadedFile("x.wav", b"nope")})
    assert bad.status_code == 400 and 'id="trapping-errors"' in bad.content.decode()
    ok = client.post(url, {"block": "1", "answer": "2", "message": wav_upload(tone(1.0))})
    assert ok.status_code == 302 and ok["Location"].endswith("#trapping")
    page = client.get(reverse("researcher:settings", args=[exp.pk])).content.decode()
    assert 'data-block="1" data-answer="2"' in page
    # Saving the rows keeps the question (carried in the row), and the page shows it still.
    from tests.webmushra.test_blocks_settings import blocks_url, rows_post, shown_rows

    rows = shown_rows(client.get(reverse("researcher:settings", args=[exp.pk])))
    assert json.loads(rows[0]["trapping"])[0]["answer"] == 2
    saved = client.post(blocks_url(exp), rows_post(rows, 1))
    assert saved.status_code == 302
    exp.refresh_from_db()
    assert paradigms.blocks(exp.config)[0]["trapping"][0]["answer"] == 2
    removed = client.post(url, {"remove": "1:1"})
    assert removed.status_code == 302
    exp.refresh_from_db()
    assert paradigms.blocks(exp.config)[0]["trapping"] == []


def _trap_clips(exp) -> list[str]:
    import os

    folder = files.default_storage.path(f"stimuli/e{exp.pk}")
    return sorted(n for n in os.listdir(folder) if n.startswith("trap-")) if os.path.isdir(folder) else []


def test_a_refused_open_leaves_no_trapping_audio_and_the_next_open_builds_it_anew(api, rendered_experiment):
    exp = rendered_experiment(n_excerpts=1, seconds=2.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "acr"}))
    assert api.post(_trapping_url(exp), {"message": wav_upload(tone(0.6, hz=200.0)), "answer": 1}).status_code == 201
    assert api.post(_trapping_url(exp), {"message": wav_upload(tone(1.5)), "answer": 5}).status_code == 201
    with pytest.raises(experiments.ConflictError) as err:
        experiments.open_experiment(experiment=Experiment.objects.get(pk=exp.pk))
    assert "trapping question 2" in str(err.value)
    # The first question's clip was written before the second failed: it is gone with the trials.
    assert _trap_clips(exp) == [] and not Trial.objects.filter(experiment=exp).exists()
    assert api.delete(reverse("api:block_trapping_item", args=[exp.pk, 1, 2])).status_code == 200
    exp = experiments.open_experiment(experiment=Experiment.objects.get(pk=exp.pk))
    (trial,) = Trial.objects.filter(experiment=exp, design_key="trap:0")
    assert _trap_clips(exp) == [trapping.clip_name(trial).rsplit("/", 1)[1]]
    clip, rate = sf.read(io.BytesIO(files.read_stored(trapping.clip_name(trial))), dtype="float32", always_2d=True)
    tail = clip[-round(0.6 * rate) :, 0]
    want = tone(0.6, rate, hz=200.0)[:, 0]
    assert np.corrcoef(tail[100:-100], want[100:-100])[0, 1] > 0.99  # the first question's message, 200 Hz


def test_messages_of_other_experiments_cannot_be_named_and_a_lost_message_is_no_dead_end(
    api, rendered_experiment, django_capture_on_commit_callbacks
):
    exp = rendered_experiment(n_excerpts=1, seconds=3.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "acr"}))
    other = rendered_experiment(n_excerpts=1, seconds=3.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "acr"}))
    made = api.post(_trapping_url(other), {"message": wav_upload(tone(1.0)), "answer": 2}).json()
    theirs = made["blocks"][0]["trapping"][0]
    # Not at creation (a new experiment has no messages), not through PATCH.
    created = api.post(
        reverse("api:experiments"),
        {"title": "Copy", "config": {"blocks": [{"paradigm": "acr", "trapping": [theirs]}]}},
        format="json",
    )
    assert created.status_code == 400 and "trapping questions are added after" in created.json()["error"]
    patched = api.patch(
        reverse("api:experiment", args=[exp.pk]),
        {"config": {"blocks": [{"paradigm": "acr", "trapping": [theirs]}]}},
        format="json",
    )
    assert patched.status_code == 400 and patched.json()["field"] == "blocks[1].trapping[1].message"
    assert files.exists(theirs["message"])
    # Two questions, one message lost from storage: the page says so, and either can be removed.
    for hz in (200.0, 300.0):
        assert api.post(_trapping_url(exp), {"message": wav_upload(tone(1.0, hz=hz)), "answer": 1}).status_code == 201
    lost, kept = paradigms.blocks(Experiment.objects.get(pk=exp.pk).config)[0]["trapping"]
    files.delete_stored(lost["message"])
    plan = api.get(reverse("api:blocks", args=[exp.pk])).json()["plan"][0]
    assert plan["problem"] == "block 1: a trapping question's message is missing"
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(reverse("api:block_trapping_item", args=[exp.pk, 1, 2])).status_code == 200
    assert not files.exists(kept["message"])  # the removed question's message goes with it
    assert api.delete(reverse("api:block_trapping_item", args=[exp.pk, 1, 1])).status_code == 200
    assert api.get(reverse("api:blocks", args=[exp.pk])).json()["plan"][0]["problem"] == ""


def test_a_closed_experiment_reopens_without_its_messages(api, rendered_experiment):
    exp = rendered_experiment(n_excerpts=1, seconds=3.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "acr"}))
    assert api.post(_trapping_url(exp), {"message": wav_upload(tone(1.0)), "answer": 2}).status_code == 201
    exp = experiments.open_experiment(experiment=Experiment.objects.get(pk=exp.pk))
    clips = _trap_clips(exp)
    exp = experiments.close_experiment(experiment=exp)
    files.delete_stored(paradigms.blocks(exp.config)[0]["trapping"][0]["message"])
    exp = experiments.open_experiment(experiment=Experiment.objects.get(pk=exp.pk))
    assert exp.status == Experiment.Status.OPEN and _trap_clips(exp) == clips


def test_splitting_an_experiment_with_trapping_questions_leaves_them_with_it(client, researcher, rendered_experiment):
    client.force_login(researcher)
    exp = rendered_experiment(n_excerpts=1, seconds=3.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "acr"}))
    from webmushra.services import block_settings

    block_settings.add_trapping(experiment=exp, block=1, upload=wav_upload(tone(1.0)), answer=2)
    r = client.post(reverse("researcher:blocks", args=[exp.pk]))
    assert r.status_code == 302
    new = Experiment.objects.exclude(pk=exp.pk).get()
    # The new experiment has the block, not the other experiment's message (it uploads its own).
    assert [b["paradigm"] for b in paradigms.blocks(new.config)] == ["acr"]
    assert paradigms.blocks(new.config)[0]["trapping"] == []
    assert len(paradigms.blocks(Experiment.objects.get(pk=exp.pk).config)[0]["trapping"]) == 1


def test_odd_numbers_and_foreign_messages_are_named_not_crashed_on(api, client, researcher, rendered_experiment):
    exp = rendered_experiment(n_excerpts=1, seconds=3.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "acr"}))
    for answer in ("²", "٣", "2.0", ""):
        r = api.post(_trapping_url(exp), {"message": wav_upload(tone(1.0)), "answer": answer})
        assert r.status_code == 400 and r.json()["field"] == "blocks[1].trapping[1].answer", (answer, r.content)
    client.force_login(researcher)
    url = reverse("researcher:block_trapping", args=[exp.pk])
    assert client.post(url, {"remove": "²:1"}).status_code == 400
    assert client.post(url, {"block": "¹", "answer": "2", "message": wav_upload(tone(1.0))}).status_code == 400
    assert _stored_messages(exp) == []
    # The foreign message is named by its own place in the block (question 2 here).
    mine = api.post(_trapping_url(exp), {"message": wav_upload(tone(1.0)), "answer": 2}).json()["blocks"][0]
    foreign = {"message": f"trapping/e{exp.pk + 1000}/" + "1" * 32 + ".wav", "answer": 1}
    r = api.patch(
        reverse("api:experiment", args=[exp.pk]),
        {"config": {"blocks": [mine | {"trapping": [*mine["trapping"], foreign]}]}},
        format="json",
    )
    assert r.status_code == 400 and r.json()["field"] == "blocks[1].trapping[2].message"


def test_an_open_refused_by_a_later_block_leaves_no_trapping_audio(api, rendered_experiment):
    blocks = ({"paradigm": "acr"}, {"paradigm": "acr", "gold": [{"condition": "Nobody", "expected": 1}]})
    exp = rendered_experiment(n_excerpts=1, seconds=3.0, checkpoints=CHECKPOINTS, config=_config(*blocks))
    assert api.post(_trapping_url(exp, 1), {"message": wav_upload(tone(1.0)), "answer": 2}).status_code == 201
    with pytest.raises(experiments.ConflictError) as err:
        experiments.open_experiment(experiment=Experiment.objects.get(pk=exp.pk))
    assert "block 2: gold question: 'Nobody' is not a condition" in str(err.value)
    assert _trap_clips(exp) == [] and not Trial.objects.filter(experiment=exp).exists()


def test_rows_saved_from_a_page_older_than_a_trapping_change_are_refused(api, client, researcher, rendered_experiment):
    from tests.webmushra.test_blocks_settings import blocks_url, rows_post, shown_rows

    client.force_login(researcher)
    exp = rendered_experiment(n_excerpts=1, seconds=3.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "acr"}))
    rows = shown_rows(client.get(reverse("researcher:settings", args=[exp.pk])))  # tab A
    assert api.post(_trapping_url(exp), {"message": wav_upload(tone(1.0)), "answer": 2}).status_code == 201  # tab B
    r = client.post(blocks_url(exp), rows_post([rows[0] | {"instructions": "Listen."}], 1))
    assert r.status_code == 409 and "trapping questions changed since this page was loaded" in r.content.decode()
    block = paradigms.blocks(Experiment.objects.get(pk=exp.pk).config)[0]
    assert block["instructions"] == "" and len(block["trapping"]) == 1 and len(_stored_messages(exp)) == 1
