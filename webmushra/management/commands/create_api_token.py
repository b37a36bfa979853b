"""Print a user's API token (creating it on first use): ``manage.py create_api_token USER``."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webmushra.services import accounts


class Command(BaseCommand):
    help = "Print the API token of a user, creating it if needed (--reset replaces it)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--reset", action="store_true", help="Replace the existing token.")

    def handle(self, *args, username: str, reset: bool, **options) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"no user called {username!r}") from None
        self.stdout.write(accounts.api_token_for(user=user, reset=reset))
