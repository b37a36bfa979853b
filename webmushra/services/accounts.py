"""Researcher accounts: invitations, sharing an experiment with a collaborator, API tokens.

There is no open sign-up: an operator invites a researcher (``manage.py create_researcher``),
who sets a password through a one-time link (Django's password-reset token: it expires after
``PASSWORD_RESET_TIMEOUT`` and stops working once the password is set). An experiment's owner
may share it with another researcher, who then has the owner's access to it; staff see only
their own and shared experiments in the researcher pages (everything else only in the admin).
"""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.db import transaction
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from ..errors import ServiceError
from ..models import Experiment

log = logging.getLogger(__name__)


def api_token_for(*, user, reset: bool = False) -> str:
    """The user's API token (created on first use; ``reset`` replaces it)."""
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        if reset:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
    return token.key


def invitation_path(user) -> str:
    """The path of a one-time link on which ``user`` sets their password."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return reverse("password_reset_confirm", kwargs={"uidb64": uid, "token": default_token_generator.make_token(user)})


@transaction.atomic
def invite_researcher(*, username: str, email: str = ""):
    """A new researcher account with no usable password yet; returns ``(user, invitation path)``."""
    User = get_user_model()
    username = (username or "").strip()
    if not username or len(username) > 150:
        raise ServiceError("username: 1 to 150 characters")
    if User.objects.filter(**{f"{User.USERNAME_FIELD}__iexact": username}).exists():
        raise ServiceError(f"username: {username!r} is taken")
    user = User.objects.create_user(username, email=(email or "").strip())
    user.set_unusable_password()
    user.save(update_fields=["password"])
    log.info("researcher invited: user %s", user.pk)
    return user, invitation_path(user)


def _researcher(name: str):
    User = get_user_model()
    name = (name or "").strip()
    user = User.objects.filter(is_active=True).filter(**{f"{User.USERNAME_FIELD}__iexact": name}).first() or (
        User.objects.filter(is_active=True, email__iexact=name).first() if "@" in name else None
    )
    if user is None:
        raise ServiceError(f"share: no researcher called {name!r} (a username or an e-mail address)")
    return user


@transaction.atomic
def share_experiment(*, experiment: Experiment, by, with_user: str) -> None:
    """Give another researcher the owner's access to this experiment (only its owner may)."""
    if experiment.owner_id != by.pk:
        raise ServiceError("share: only the experiment's owner can share it")
    user = _researcher(with_user)
    if user.pk == experiment.owner_id:
        raise ServiceError("share: this is your own account")
    experiment.shared_with.add(user)


@transaction.atomic
def unshare_experiment(*, experiment: Experiment, by, user_id: int) -> None:
    """Take a collaborator's access away (the owner, or the collaborator leaving)."""
    if by.pk not in (experiment.owner_id, user_id):
        raise ServiceError("share: only the owner can remove a collaborator")
    experiment.shared_with.remove(user_id)
