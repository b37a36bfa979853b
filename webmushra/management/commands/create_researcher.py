"""Invite a researcher: ``manage.py create_researcher USERNAME [--email E]`` prints a one-time link
on which they set their password (valid for ``PASSWORD_RESET_TIMEOUT``, by default 3 days)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webmushra.errors import ServiceError
from webmushra.services import accounts


class Command(BaseCommand):
    help = "Create a researcher account and print the link on which they set their password."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="", help="Their e-mail address (for password resets).")
        parser.add_argument(
            "--base-url", default="", help=f"Where the site is reached (default SITE_URL, {settings.SITE_URL})."
        )

    def handle(self, *args, username: str, email: str, base_url: str, **options) -> None:
        try:
            user, path = accounts.invite_researcher(username=username, email=email)
        except ServiceError as exc:
            raise CommandError(str(exc), returncode=2) from None
        days = settings.PASSWORD_RESET_TIMEOUT / 86400
        self.stdout.write(f"Created researcher {user.get_username()!r}. Send them this link to set a password")
        self.stdout.write(f"(valid for {days:g} days, once):")
        self.stdout.write(f"{(base_url or settings.SITE_URL).rstrip('/')}{path}")
