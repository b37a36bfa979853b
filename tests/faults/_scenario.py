"""Set-up steps run inside the server's environment, as a separate process.

The fault tests own their PostgreSQL and Redis, so they cannot reach the database
through pytest-django; they run this script with the server's environment instead::

    python -m tests.faults._scenario build '{"material": "/tmp/x", "excerpts": 2, ...}'
    python -m tests.faults._scenario --serve     # one JSON command per stdin line

Each command prints one JSON object on one line of stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESEARCHER = "researcher"
RESEARCHER_PASSWORD = "a-long-password-1"


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def researcher() -> dict[str, Any]:
    """The researcher account the tests log in with (created once)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user, created = User.objects.get_or_create(username=RESEARCHER, defaults={"email": "r@example.org"})
    if created:
        user.set_password(RESEARCHER_PASSWORD)
        user.save()
    return {"user_id": user.pk, "username": RESEARCHER, "password": RESEARCHER_PASSWORD}


def _excerpt_files(guitar: str, folder: Path, index: int, seconds: float) -> tuple[Path, Path]:
    """A slice of the guitar fixture and the stand-in device's recording of it."""
    import numpy as np
    import soundfile as sf

    from tests.conftest import device

    audio, sr = sf.read(guitar, dtype="float32", always_2d=True)
    n = int(seconds * sr)
    start = int(index * 1.0 * sr)
    dry = audio[start : start + n, :1]
    if dry.shape[0] < n:
        dry = np.resize(dry, (n, 1))
    folder.mkdir(parents=True, exist_ok=True)
    dry_path, ref_path = folder / f"x{index}_dry.wav", folder / f"x{index}_device.wav"
    sf.write(dry_path, dry, sr, subtype="FLOAT")
    sf.write(ref_path, device(dry), sr, subtype="FLOAT")
    return dry_path, ref_path


def build(
    *,
    guitar: str,
    checkpoint: str,
    material: str,
    excerpts: int = 1,
    seconds: float = 1.0,
    config: dict | None = None,
    title: str = "Fault test",
    render: bool = False,
) -> dict[str, Any]:
    """An experiment with real excerpts and one real checkpoint; rendering queued on request."""
    from django.contrib.auth import get_user_model

    from webmushra.services import experiments, rendering, uploads

    researcher()
    owner = get_user_model().objects.get(username=RESEARCHER)
    exp = experiments.create_experiment(owner=owner, title=title, sample_rate=48000, config=config or {})
    for i in range(excerpts):
        dry, ref = _excerpt_files(guitar, Path(material) / f"e{exp.pk}", i, seconds)
        uploads.add_excerpt(experiment=exp, name=f"Excerpt {i + 1}", dry=dry, reference=ref)
    ckpt = uploads.add_checkpoint(experiment=exp, name=Path(checkpoint).name, file=checkpoint)
    experiments.add_model_condition(
        experiment=exp, checkpoint=ckpt, label="Model 1", knobs={k: 0.5 for k in ckpt.knob_names}
    )
    if render:
        rendering.start_render(experiment=exp)
    return {"experiment": exp.pk, "public_token": exp.public_token}


def render(*, experiment: int) -> dict[str, Any]:
    from webmushra.models import Experiment
    from webmushra.services import rendering

    jobs = rendering.start_render(experiment=Experiment.objects.get(pk=experiment))
    return {"jobs": [j.pk for j in jobs]}


def open_(*, experiment: int) -> dict[str, Any]:
    from webmushra.models import Experiment
    from webmushra.services import experiments

    exp = experiments.open_experiment(experiment=Experiment.objects.get(pk=experiment))
    return {"status": exp.status, "public_token": exp.public_token}


def retry(*, job: int) -> dict[str, Any]:
    from webmushra.models import RenderJob
    from webmushra.services import rendering

    job_row = rendering.retry_job(job=RenderJob.objects.get(pk=job))
    return {"status": job_row.status}


COMMANDS: dict[str, Callable[..., dict[str, Any]]] = {
    "researcher": researcher,
    "build": build,
    "render": render,
    "open": open_,
    "retry": retry,
}


def serve() -> int:
    """Answer one JSON command per line of stdin with one JSON line, until stdin closes.

    One process for a whole test session saves starting Django and torch for every step.
    The database connection is closed after each command, so a restarted server is no
    concern of the next one.
    """
    from django.db import connection

    answers = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the answers only
                answer = {"ok": COMMANDS[request["command"]](**request.get("kwargs", {}))}
        except Exception:  # the test shows the trace of the failed step
            answer = {"error": traceback.format_exc()}
        finally:
            connection.close()
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] != ["--serve"] and (len(argv) < 1 or argv[0] not in COMMANDS):
        print(
            f"usage: python -m tests.faults._scenario {{--serve,{','.join(COMMANDS)}}} [JSON arguments]",
            file=sys.stderr,
        )
        return 2
    _setup()
    if argv[0] == "--serve":
        return serve()
    kwargs = json.loads(argv[1]) if len(argv) > 1 else {}
    print(json.dumps(COMMANDS[argv[0]](**kwargs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
