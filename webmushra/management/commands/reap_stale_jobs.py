from django.core.management.base import BaseCommand

from webmushra.services import rendering


class Command(BaseCommand):
    help = "Requeue render jobs whose worker died (stale heartbeat) and re-send long-queued ones."

    def handle(self, *args, **options):
        counts = rendering.reap_stale_jobs()
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in counts.items()))
