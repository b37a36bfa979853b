"""Researcher accounts: API tokens."""

from __future__ import annotations

import logging

from django.db import transaction

log = logging.getLogger(__name__)


def api_token_for(*, user, reset: bool = False) -> str:
    """The user's API token (created on first use; ``reset`` replaces it)."""
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        if reset:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
    return token.key
