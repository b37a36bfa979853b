"""Every hostile upload of the corpus is refused with its specific message, leaves no row and
no file behind, and never runs its payload; a representative subset also goes through the
API and the researcher pages."""

from __future__ import annotations

import re
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from tests.hostile import corpus
from tests.hostile.corpus import CASES, Case
from webmushra import errors, interop
from webmushra.models import Checkpoint, Condition, Excerpt, Experiment, PrerenderedAudio, RenderJob
from webmushra.services import accounts, experiments, uploads

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]

BY_NAME = {c.name: c for c in CASES}
ROWS = (Excerpt, Checkpoint, Condition, PrerenderedAudio, RenderJob, Experiment)
#: Head-room a refusal may use; a loader that allocates what a hostile header declares hits it.
MEMORY_HEADROOM = 1 << 30
#: Prefix of the service's private copies of uploads; a message must name the uploaded file instead.
TEMP_PREFIX = "upload-"


def row_counts() -> dict[str, int]:
    return {m.__name__: m.objects.count() for m in ROWS}


def media_files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file()}


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextmanager
def bounded_memory(headroom: int = MEMORY_HEADROOM) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``headroom`` while a
    hostile file is handled, so a loader that believes a forged size fails here (as
    MemoryError or an allocator error) instead of exhausting the machine."""
    import torch

    # One intra-op thread: a pool started under the cap would spend it on thread stacks.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """The researcher fixture hashes a password per test; a fast hasher keeps 100 tests quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def experiment(researcher):
    return experiments.create_experiment(owner=researcher, title="Hostile uploads", sample_rate=48000)


def _prerendered_target(experiment, folder: Path):
    good = folder / "good"
    good.mkdir()
    excerpt = uploads.add_excerpt(
        experiment=experiment, name="x", dry=corpus.good_dry(good), reference=corpus.good_reference(good)
    )
    condition = experiments.add_prerendered_condition(experiment=experiment, label="C1")
    return excerpt, condition


def make_files(case: Case, folder: Path) -> tuple[Path, Path | None]:
    """The hostile file and its companion (a good file where the case names none)."""
    hostile = case.make(folder)
    if case.pair is not None:
        return hostile, case.pair(folder)
    if case.kind == "excerpt_dry":
        return hostile, corpus.good_reference(folder)
    if case.kind == "excerpt_reference":
        return hostile, corpus.good_dry(folder)
    return hostile, None


def send(case: Case, hostile: Path, other: Path | None, experiment, owner, target=None) -> None:
    """Hand the case's files to its service, under a memory cap."""
    with bounded_memory():
        if case.kind == "excerpt_dry":
            uploads.add_excerpt(experiment=experiment, name="x", dry=hostile, reference=other)
        elif case.kind == "excerpt_reference":
            uploads.add_excerpt(experiment=experiment, name="x", dry=other, reference=hostile)
        elif case.kind == "checkpoint":
            uploads.add_checkpoint(experiment=experiment, name="m", file=hostile)
        elif case.kind == "checkpoint_config":
            uploads.add_checkpoint(experiment=experiment, name="m", file=other, config=hostile)
        elif case.kind == "prerendered":
            excerpt, condition = target
            uploads.add_prerendered_audio(condition=condition, excerpt=excerpt, audio=hostile)
        elif case.kind == "webmushra_yaml":
            interop.import_directory(owner=owner, config_path=hostile)
        else:
            raise AssertionError(f"unknown kind {case.kind}")


def check_message(case: Case, message: str, hostile: Path) -> None:
    assert re.search(case.expect, message), f"{case.name}: message {message!r} does not match {case.expect!r}"
    if case.names_file:
        assert hostile.name in message, f"{case.name}: message {message!r} does not name {hostile.name}"
    assert TEMP_PREFIX not in message, f"{case.name}: message {message!r} names a server-side temp file"


def test_the_corpus_is_large_and_its_names_unique() -> None:
    names = [c.name for c in CASES]
    assert len(CASES) >= 40
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
    assert {c.kind for c in CASES} == set(corpus.KINDS)
    assert sum(c.payload for c in CASES) >= 5


def test_the_good_material_the_corpus_mutates_is_accepted(experiment, researcher, tmp_path) -> None:
    """Each refusal below is caused by the hostile change, not by a broken base file."""
    import json

    excerpt = uploads.add_excerpt(
        experiment=experiment, name="x", dry=corpus.good_dry(tmp_path), reference=corpus.good_reference(tmp_path)
    )
    assert (excerpt.sample_rate, excerpt.frames) == (corpus.GOOD_RATE, int(corpus.GOOD_SECONDS * corpus.GOOD_RATE))
    cam = tmp_path / "cam.json"
    cam.write_text(json.dumps(corpus.coreaudioml()))
    nam = tmp_path / "lin.nam"
    nam.write_text(json.dumps(corpus.nam_linear()))
    native = corpus._safetensors("native.safetensors", corpus.recurrent_state_dict)(tmp_path)
    lightning = corpus._lightning(
        "good.ckpt", lambda: {f"model.{k}": v for k, v in corpus.recurrent_state_dict().items()}, corpus.LIGHTNING_HP
    )(tmp_path)
    bare = corpus._safetensors("bare.safetensors", corpus.recurrent_state_dict, None)(tmp_path)
    config = tmp_path / "model_config.json"
    config.write_text(json.dumps(corpus.NATIVE_CONFIG))
    formats = [
        uploads.add_checkpoint(experiment=experiment, name=p.stem, file=p).format for p in (cam, nam, native, lightning)
    ]
    assert formats == ["coreaudioml", "nam", "native", "lightning"]
    for fmt, make in (
        ("rtneural", corpus.rtneural_tiny),
        ("guitarml_wavenet", corpus.wavenet_tiny),
        ("smartamppro", corpus.smartamppro_tiny),
    ):
        path = corpus._json(f"{fmt}.json", make)(tmp_path)
        assert uploads.add_checkpoint(experiment=experiment, name=fmt, file=path).format == fmt
    assert uploads.add_checkpoint(experiment=experiment, name="bare", file=bare, config=config).format == "native"
    site = tmp_path / "yaml"
    site.mkdir()
    good_yaml = corpus._yaml(corpus.MUSHRA_PAGE.format(stimulus="configs/resources/audio/c1.wav"))(site)
    result = interop.import_directory(owner=researcher, config_path=good_yaml)
    assert [e.excerpts.count() for e in result.experiments] == [1]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=pytest.mark.timeout(c.time_limit_s)) for c in CASES])
def test_a_hostile_upload_is_refused_and_leaves_nothing(case: Case, experiment, researcher, tmp_path, settings):
    if case.max_upload_mb is not None:
        settings.MAX_UPLOAD_MB = case.max_upload_mb
    target = _prerendered_target(experiment, tmp_path) if case.kind == "prerendered" else None
    rows, files = row_counts(), media_files(settings.MEDIA_ROOT)
    marker = corpus.marker_path(tmp_path)
    hostile, other = make_files(case, tmp_path)
    try:
        send(case, hostile, other, experiment, researcher, target)
    except errors.ServiceError as exc:
        check_message(case, str(exc), hostile)
    except BaseException as exc:  # an unclear crash is a failure of the case, reported as such
        if isinstance(exc, (KeyboardInterrupt, pytest.fail.Exception)):
            raise
        pytest.fail(
            f"{case.name}: expected a ServiceError matching {case.expect!r}, got {type(exc).__name__}: {str(exc)[:300]}"
        )
    else:
        pytest.fail(f"{case.name}: {hostile.name} was accepted")
    finally:
        if case.payload:
            assert not marker.exists(), f"{case.name}: the payload ran"
    assert row_counts() == rows, f"{case.name}: rows were left behind"
    assert media_files(settings.MEDIA_ROOT) == files, f"{case.name}: files were left behind"


PAYLOADS = [c for c in CASES if c.payload]


@pytest.mark.parametrize("case", PAYLOADS, ids=[c.name for c in PAYLOADS])
def test_each_payload_is_live_when_loaded_unsafely(case: Case, tmp_path) -> None:
    """The marker checks above can fail: an unrestricted loader does run every payload."""
    import pickle

    import torch
    import yaml

    hostile, _ = make_files(case, tmp_path)
    marker = corpus.marker_path(tmp_path)
    if case.kind == "webmushra_yaml":
        yaml.unsafe_load(hostile.read_text())
    elif zipfile_like(hostile):
        torch.load(hostile, weights_only=False)
    else:
        pickle.loads(hostile.read_bytes())
    assert marker.exists(), f"{case.name}: the payload does not do what it claims"


def zipfile_like(path: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


# ----------------------------------------------------------------------------- over HTTP

API_CASES = [
    "wav-nan-samples",
    "text-renamed-wav",
    "wav-truncated-data",
    "wav-over-size-limit",
    "rate-mismatch",
    "pickle-p2-os-system",
    "torch-zip-exec-payload",
    "torchscript",
    "zip-bomb-ratio",
    "nam-wrong-weight-count",
    "cam-wrong-shape",
    "ckpt-over-size-limit",
    "config-unknown-architecture",
]
FORM_CASES = [
    "wav-nan-samples",
    "mp3-renamed-wav",
    "pickle-p4-open",
    "torchscript",
    "cam-missing-weight",
    "yaml-paired-comparison",
    "yaml-python-object",
]


def _upload_fields(case: Case, folder: Path) -> tuple[Path, dict[str, Path]]:
    hostile, other = make_files(case, folder)
    if case.kind == "excerpt_dry":
        return hostile, {"dry": hostile, "reference": other}
    if case.kind == "excerpt_reference":
        return hostile, {"dry": other, "reference": hostile}
    if case.kind == "checkpoint":
        return hostile, {"file": hostile}
    if case.kind == "checkpoint_config":
        return hostile, {"file": other, "config": hostile}
    raise AssertionError(f"{case.kind} has no upload form here")


def _post_files(client, url: str, fields: dict[str, Path], extra: dict | None = None, **headers):
    handles = {k: open(v, "rb") for k, v in fields.items()}
    try:
        return client.post(url, {**(extra or {}), **handles}, **headers)
    finally:
        for h in handles.values():
            h.close()


@pytest.mark.parametrize("name", API_CASES)
def test_the_api_answers_400_with_the_message(name: str, client, experiment, researcher, tmp_path, settings):
    case = BY_NAME[name]
    if case.max_upload_mb is not None:
        settings.MAX_UPLOAD_MB = case.max_upload_mb
    token = accounts.api_token_for(user=researcher)
    hostile, fields = _upload_fields(case, tmp_path)
    kind = "excerpts" if case.kind.startswith("excerpt") else "checkpoints"
    rows, files = row_counts(), media_files(settings.MEDIA_ROOT)
    with bounded_memory():
        response = _post_files(
            client, reverse(f"api:{kind}", args=[experiment.pk]), fields, HTTP_AUTHORIZATION=f"Token {token}"
        )
    assert response.status_code == case.http_status, response.content[:500]
    check_message(case, response.json()["error"], hostile)
    assert not corpus.marker_path(tmp_path).exists(), f"{name}: the payload ran"
    assert row_counts() == rows and media_files(settings.MEDIA_ROOT) == files


@pytest.mark.parametrize("name", FORM_CASES)
def test_the_researcher_pages_show_the_message(name: str, client, experiment, researcher, tmp_path, settings):
    case = BY_NAME[name]
    client.force_login(researcher)
    rows, files = row_counts(), media_files(settings.MEDIA_ROOT)
    if case.kind == "webmushra_yaml":
        hostile = case.make(tmp_path)
        audio = sorted(hostile.parent.rglob("*.wav"))
        handles = [open(p, "rb") for p in audio]
        try:
            with open(hostile, "rb") as config:
                response = client.post(reverse("researcher:import"), {"config": config, "audio": handles})
        finally:
            for h in handles:
                h.close()
        assert response.status_code == 200
    else:
        hostile, fields = _upload_fields(case, tmp_path)
        kind = "excerpts" if case.kind.startswith("excerpt") else "checkpoints"
        with bounded_memory():
            response = _post_files(client, reverse(f"researcher:{kind}", args=[experiment.pk]), fields)
        assert response.status_code == 302
    errors = [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "error"]
    assert len(errors) == 1, errors
    check_message(case, errors[0], hostile)
    assert not corpus.marker_path(tmp_path).exists(), f"{name}: the payload ran"
    assert row_counts() == rows and media_files(settings.MEDIA_ROOT) == files


# ----------------------------------------------------------------------------- message form


def test_a_checkpoint_message_names_the_file_once(experiment, researcher, tmp_path):
    """``model.pt: unrecognised ...``, not ``model.pt: model.pt: unrecognised ...``."""
    repeated = []
    for name in ("ckpt-text", "torchscript", "nam-wrong-weight-count", "cam-unknown-unit"):
        folder = tmp_path / name
        folder.mkdir()
        hostile, other = make_files(BY_NAME[name], folder)
        with pytest.raises(errors.ServiceError) as err:
            send(BY_NAME[name], hostile, other, experiment, researcher)
        if str(err.value).startswith(f"{hostile.name}: {hostile.name}:"):
            repeated.append(str(err.value)[:120])
    assert not repeated, repeated


def test_the_documentation_lists_every_case() -> None:
    from tests.paths import REPO

    text = (Path(REPO) / "docs" / "hostile-inputs.md").read_text(encoding="utf-8")
    missing = [c.name for c in CASES if f"`{c.name}`" not in text]
    assert not missing, f"docs/hostile-inputs.md lacks {missing}"
