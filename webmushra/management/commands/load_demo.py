"""Create the demo researcher and the demo experiment from material the project makes itself.

Idempotent: a second run finds both and changes nothing. Prints the credentials.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from webmushra.models import Experiment
from webmushra.services import experiments, uploads

DEMO_USER = "demo"
DEMO_TITLE = "Demo: neural models of an overdrive pedal"


class Command(BaseCommand):
    help = "Create the demo researcher account and the demo experiment (not rendered)."

    def handle(self, *args, **options):
        user, password = ensure_demo_user()
        experiment = ensure_demo_experiment(user, log=self.stdout.write)
        self.stdout.write(f"Demo researcher: user '{DEMO_USER}', password '{password}'")
        self.stdout.write(f"Demo experiment #{experiment.pk}: {experiment.get_status_display()}")


def ensure_demo_user():
    """The demo account; its password is generated once and kept in var/demo-password."""
    path = Path(settings.VAR_DIR) / "demo-password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(9))
        path.chmod(0o600)
    password = path.read_text().strip()
    User = get_user_model()
    user, created = User.objects.get_or_create(username=DEMO_USER, defaults={"email": "demo@localhost"})
    if created or not user.check_password(password):
        user.set_password(password)
        user.save()
    return user, password


def ensure_demo_experiment(user, log=print) -> Experiment:
    existing = Experiment.objects.filter(owner=user, title=DEMO_TITLE).first()
    if existing is not None and existing.conditions.filter(kind="model").exists() and existing.excerpts.exists():
        return existing
    from demo.material import demo_checkpoints, make_demo_excerpts

    if existing is not None:  # a half-built one from an interrupted run
        existing.delete()
    material = Path(settings.VAR_DIR) / "demo-material"
    log("Synthesising demo excerpts (guitar phrases through the demo pedal)...")
    # Four test excerpts and a fifth phrase for training only (training never reuses a test excerpt).
    excerpts = make_demo_excerpts(material, sample_rate=48000, n_excerpts=5)
    excerpts[-1]["name"] = "Practice riff"
    with transaction.atomic():
        exp = experiments.create_experiment(
            owner=user,
            title=DEMO_TITLE,
            sample_rate=48000,
            description=(
                "You will hear short guitar phrases played through an overdrive pedal, and several "
                "versions of each. Rate how similar each version sounds to the reference."
            ),
            instructions=(
                "Listen to the reference, then rate each signal from 0 (bad) to 100 (excellent) for how "
                "close it sounds to the reference. One of the signals is the reference itself: rate it "
                "100. Loop a short part if it helps."
            ),
            estimated_minutes=10,
            config={
                "questionnaire": [
                    {"name": "age", "label": "Age", "type": "number", "required": False},
                    {
                        "name": "experience",
                        "label": "Listening experience",
                        "type": "select",
                        "options": ["None", "Musician", "Audio engineer", "Researcher"],
                        "required": False,
                    },
                    {"name": "headphones", "label": "Headphone model", "type": "text", "required": False},
                    {"name": "comment", "label": "Any comments?", "type": "textarea", "required": False},
                ]
            },
        )
        for i, x in enumerate(excerpts):
            uploads.add_excerpt(
                experiment=exp,
                name=x["name"],
                dry=x["dry"],
                reference=x["reference"],
                is_training=i == len(excerpts) - 1,
            )
        for c in demo_checkpoints():
            ckpt = uploads.add_checkpoint(
                experiment=exp, name=c["label"], file=c["path"], sample_rate=c.get("sample_rate", 48000)
            )
            experiments.add_model_condition(
                experiment=exp, checkpoint=ckpt, label=c["label"], knobs=c.get("knobs") or {}
            )
    return exp
