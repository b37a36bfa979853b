"""Uploads are validated at once; bad input is refused with a reason and leaves nothing behind."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import soundfile as sf

from tests.paths import fixture_path
from webmushra import errors
from webmushra.models import Checkpoint, Excerpt, RenderJob
from webmushra.services import experiments, uploads

pytestmark = pytest.mark.django_db


def files_under(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def exp(researcher):
    return experiments.create_experiment(owner=researcher, title="Uploads")


def test_a_good_excerpt_is_stored_with_its_facts(exp, excerpt_files):
    dry, ref = excerpt_files(seconds=1.5)
    x = uploads.add_excerpt(experiment=exp, name="Riff", dry=dry, reference=ref)
    assert (x.sample_rate, x.frames, x.channels) == (44100, int(1.5 * 44100), 1)
    data, sr = sf.read(x.reference_file.path, dtype="float32")
    assert sr == 44100 and data.shape == (x.frames,)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is plain text, not audio", "not a readable audio file"),
        (b"", "empty"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a readable audio file"),
    ],
)
def test_an_upload_that_is_not_audio_is_refused_and_leaves_nothing(
    exp, excerpt_files, tmp_path, settings, content, message
):
    _, ref = excerpt_files(seconds=1.0)
    bad = tmp_path / "take1.wav"
    bad.write_bytes(content)
    with pytest.raises(errors.ServiceError) as err:
        uploads.add_excerpt(experiment=exp, name="bad", dry=bad, reference=ref)
    assert "take1.wav" in str(err.value) and message in str(err.value)
    assert Excerpt.objects.count() == 0 and RenderJob.objects.count() == 0
    assert files_under(settings.MEDIA_ROOT) == []


def test_nan_samples_and_mismatched_rates_are_refused(exp, tmp_path, excerpt_files, settings):
    dry, ref = excerpt_files(seconds=1.0)
    nan = tmp_path / "nan.wav"
    data = np.zeros(44100, dtype=np.float32)
    data[100] = np.nan
    sf.write(nan, data, 44100, subtype="FLOAT")
    with pytest.raises(errors.ServiceError, match="nan.wav: contains NaN"):
        uploads.add_excerpt(experiment=exp, name="x", dry=dry, reference=nan)
    other = tmp_path / "other_rate.wav"
    sf.write(other, np.full(48000, 0.1, dtype=np.float32), 48000)
    with pytest.raises(errors.ServiceError, match="44100 Hz but other_rate.wav is at 48000 Hz"):
        uploads.add_excerpt(experiment=exp, name="x", dry=dry, reference=other)
    assert Excerpt.objects.count() == 0 and files_under(settings.MEDIA_ROOT) == []


def test_long_excerpts_and_small_length_differences_give_warnings(exp, tmp_path):
    sr = 44100
    t = np.arange(13 * sr) / sr
    dry = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(tmp_path / "d.wav", dry, sr)
    sf.write(tmp_path / "r.wav", np.tanh(2 * dry[:-100]), sr)
    x = uploads.add_excerpt(experiment=exp, name="long", dry=tmp_path / "d.wav", reference=tmp_path / "r.wav")
    text = " ".join(x.warnings)
    assert "recommends excerpts of about 10 s" in text and "trimmed" in text
    assert x.frames == 13 * sr - 100


def test_a_good_checkpoint_is_recognised(exp):
    ckpt = uploads.add_checkpoint(
        experiment=exp, name="TS9", file=fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json")
    )
    assert ckpt.format == "coreaudioml" and "LSTM" in ckpt.architecture
    assert ckpt.knob_names == ["p1"] and ckpt.sample_rate == 44100 and len(ckpt.sha256) == 64


def test_provenance_names_the_uploaded_file_and_the_page_says_the_rates_in_words(client, researcher, excerpt_files):
    """A CoreAudioML file states no rate (44.1 kHz assumed) in a 48 kHz experiment with 44.1 kHz excerpts."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    exp = experiments.create_experiment(owner=researcher, title="Rates", sample_rate=48000)
    dry, ref = excerpt_files(seconds=1.0)
    uploads.add_excerpt(experiment=exp, name="Riff", dry=dry, reference=ref)
    data = fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json").read_bytes()
    ckpt = uploads.add_checkpoint(experiment=exp, name="TS9", file=SimpleUploadedFile("My TS9 model.json", data))
    provenance = ckpt.summary["provenance"]
    assert provenance["file_name"] == "My TS9 model.json"
    assert provenance["warnings"] == ["no sample rate stored; assumed 44100 Hz"]
    client.force_login(researcher)
    page = client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    notes = page[page.index('id="rate-notes"') :]
    notes = notes[: notes.index("</ul>")]
    assert "“TS9” runs at 44.1 kHz (the file states no rate: this is assumed" in notes
    assert "Excerpts at 44.1 kHz become stimuli at the experiment&#x27;s 48 kHz" in notes
    # A 48 kHz excerpt in the same experiment is resampled for the 44.1 kHz model.
    audio, sr = sf.read(dry, dtype="float32", always_2d=True)
    from scipy.signal import resample_poly

    hi = resample_poly(audio, 160, 147, axis=0).astype("float32")
    sf.write(dry.with_name("hi_dry.wav"), hi, 48000, subtype="FLOAT")
    sf.write(dry.with_name("hi_ref.wav"), hi * 0.5, 48000, subtype="FLOAT")
    uploads.add_excerpt(
        experiment=exp, name="Hi", dry=dry.with_name("hi_dry.wav"), reference=dry.with_name("hi_ref.wav")
    )
    page = client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    assert "Excerpts at 48 kHz are resampled to 44.1 kHz for it, and its output back" in page


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/payload-ran",))


@pytest.mark.parametrize("kind", ["text", "pickle", "json"])
def test_a_checkpoint_that_is_not_a_checkpoint_is_refused_and_leaves_nothing(exp, tmp_path, settings, kind):
    import os

    marker = "/tmp/payload-ran"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / {"text": "model.pt", "pickle": "model.pth", "json": "model.json"}[kind]
    if kind == "text":
        path.write_text("definitely not a checkpoint")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(Payload()))
    else:
        path.write_text('{"hello": "world"}')
    with pytest.raises(errors.ServiceError) as err:
        uploads.add_checkpoint(experiment=exp, name="bad", file=path)
    assert str(err.value).startswith(path.name + ":"), err.value
    assert not os.path.exists(marker), "the pickle payload ran"
    assert Checkpoint.objects.count() == 0 and RenderJob.objects.count() == 0
    assert files_under(settings.MEDIA_ROOT) == []


def test_the_twelve_signal_limit_is_enforced(exp):
    ckpt = uploads.add_checkpoint(
        experiment=exp, name="m", file=fixture_path("models", "coreaudioml", "ht1_lstm32.json")
    )
    for i in range(9):  # 3 fixed conditions + 9 models = 12 signals
        experiments.add_model_condition(experiment=exp, checkpoint=ckpt, label=f"M{i}")
    with pytest.raises(errors.ServiceError, match="at most 12 signals"):
        experiments.add_model_condition(experiment=exp, checkpoint=ckpt, label="M10")


def test_an_excerpt_longer_than_the_limit_is_refused_from_its_header(build_experiment, tmp_path, settings):
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    settings.MAX_EXCERPT_SECONDS = 2.0
    audio = np.zeros((int(2.5 * 8000), 1), dtype=np.float32)
    audio[::100] = 0.1
    dry, ref = tmp_path / "long_dry.wav", tmp_path / "long_device.wav"
    sf.write(dry, audio, 8000)
    sf.write(ref, audio, 8000)
    before = exp.excerpts.count()
    with pytest.raises(errors.ServiceError, match=r"long_dry.wav: \d s is longer than the 2 s"):
        uploads.add_excerpt(experiment=exp, name="long", dry=dry, reference=ref)
    assert exp.excerpts.count() == before
    settings.MAX_EXCERPT_SECONDS = 3.0
    uploads.add_excerpt(experiment=exp, name="long", dry=dry, reference=ref)
    assert exp.excerpts.count() == before + 1


def test_a_slimmable_nam_size_is_chosen_at_upload_and_kept_for_the_render(client, researcher):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    from webmushra.services import rendering

    exp = experiments.create_experiment(owner=researcher, title="Slim", sample_rate=48000)
    client.force_login(researcher)
    url = reverse("researcher:checkpoints", args=[exp.pk])
    data = fixture_path("models", "nam", "slimmable_wavenet.nam").read_bytes()
    r = client.post(url, {"file": SimpleUploadedFile("slim.nam", data), "slimmable_size": "0.4"}, follow=True)
    assert r.status_code == 200
    ckpt = Checkpoint.objects.get(experiment=exp)
    assert ckpt.summary["metadata"]["nam_slimmable"]["slimmable_size"] == 0.4
    # The render loads it at the same size.
    model = rendering.load_checkpoint_model(ckpt)
    assert model.metadata["nam_slimmable"]["slimmable_size"] == 0.4
    # Out of range, on a format without sizes, or beside a config file: refused, nothing stored.
    r = client.post(url, {"file": SimpleUploadedFile("slim.nam", data), "slimmable_size": "1.5"}, follow=True)
    assert "slimmable_size" in r.content.decode().replace("Slimmable size", "slimmable_size")
    json_model = fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json").read_bytes()
    with pytest.raises(errors.ServiceError, match="only NAM files have sizes"):
        uploads.add_checkpoint(
            experiment=exp, name="TS9", file=SimpleUploadedFile("ts9.json", json_model), slimmable_size=0.5
        )
    with pytest.raises(errors.ServiceError, match="either a config file or a slimmable size"):
        uploads.add_checkpoint(
            experiment=exp,
            name="S",
            file=SimpleUploadedFile("slim.nam", data),
            config=SimpleUploadedFile("c.json", b"{}"),
            slimmable_size=0.5,
        )
    assert Checkpoint.objects.filter(experiment=exp).count() == 1
