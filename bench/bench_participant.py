"""Participant side: time to a playable trial, and trial saves under load.

``ready``: a trial of 12 signals (hidden reference, two anchors, nine models) plus the
open reference, 10 s each at 48 kHz, 24-bit PCM WAV, served by gunicorn on 127.0.0.1.
Headless Chromium opens the trial page; the figure is the time from navigation start to
the player's ``state.ready`` (all 13 files fetched and decoded, the player shown). Baseline,
same run: fetching the same 13 files one after another with a plain HTTP client.

``saves``: locust participants (``bench/locustfile_participant.py``) each start a session
and save every trial, against gunicorn on SQLite (and PostgreSQL with ``--postgres``).
Prints p50/p95/p99 of the save request, the error count, and the ratings stored against
the number expected from the saves acknowledged. Baseline, same run and same load: the
p95 of ``GET /healthz``, which every simulated participant makes at every step.

Everything lives in a throwaway ``VAR_DIR`` (SQLite database, media, broker folder) that is
removed at the end; nothing is written into the repository.

Run: ``python -m bench.bench_participant [ready|saves|all] [--runs 7] [--users 100]
[--spawn-rate 50] [--seconds 30] [--postgres] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: The trial page's player, which sets no global: it fills in {state(), telemetry(), context} when
#: its .wm element gets a "mushra:inspect" event (webmushra/static/webmushra/mushra.js).
PLAYER_JS = (
    "(() => { const d = {state: () => null, telemetry: () => null, context: null};"
    " const root = document.querySelector('.wm');"
    " if (root) root.dispatchEvent(new CustomEvent('mushra:inspect', {detail: d})); return d; })()"
)
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--autoplay-policy=no-user-gesture-required",
]
SAMPLE_RATE = 48000
N_MODELS = 9
#: Targets: a trial playable within 1 s of navigation; a save answered within 50 ms (p95).
READY_TARGET_MS = 1000.0
SAVE_P95_TARGET_MS = 50.0


# --------------------------------------------------------------------------- inside Django


def make_open_experiment(excerpts: int, seconds: float, n_models: int, title: str):
    """An open experiment (no training) whose stimuli are written directly (nothing is rendered).

    Runs inside Django. Returns the experiment and the byte length of one stimulus.
    """
    import numpy as np
    import soundfile as sf
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from webmushra.models import Checkpoint, Condition, ConditionKind, Experiment, Stimulus
    from webmushra.services import experiments, uploads

    call_command("migrate", verbosity=0, interactive=False)
    owner = get_user_model().objects.create_user("bench", "bench@example.org", "a-long-bench-password")
    # The load generators send no interaction log and compress a trial's time about tenfold: the
    # rules they cannot meet are off (every save is still refereed: rules.check_trial runs).
    config = {
        "training": False,
        "rules": {"must_play_all": False, "only_playing_slider_moves": False, "min_trial_seconds": 0},
    }
    exp = experiments.create_experiment(owner=owner, title=title, sample_rate=SAMPLE_RATE, anchors=True, config=config)
    for j in range(n_models):
        ckpt = Checkpoint.objects.create(
            experiment=exp,
            name=f"bench-{j}",
            file=f"checkpoints/bench-{j}.json",
            format="bench",
            architecture="none",
            sample_rate=SAMPLE_RATE,
            sha256="0" * 64,
            size=1,
        )
        Condition.objects.create(
            experiment=exp,
            kind=ConditionKind.MODEL,
            checkpoint=ckpt,
            label=f"Model {j + 1}",
            position=exp.conditions.count(),
        )
    rng = np.random.default_rng(0)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    work = Path(tempfile.mkdtemp(dir=settings.VAR_DIR))
    conditions = list(exp.conditions.all())
    for i in range(excerpts):
        # A plucked-string-like tone with noise: something real to decode, not silence.
        dry = 0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t) * np.exp(-t % 2.0) + 0.01 * rng.standard_normal(n)
        ref = np.tanh(3 * dry) / 3
        dry_path, ref_path = work / f"dry{i}.wav", work / f"ref{i}.wav"
        sf.write(dry_path, dry.astype("float32"), SAMPLE_RATE, subtype="FLOAT")
        sf.write(ref_path, ref.astype("float32"), SAMPLE_RATE, subtype="FLOAT")
        excerpt = uploads.add_excerpt(experiment=exp, name=f"Excerpt {i + 1}", dry=dry_path, reference=ref_path)
        sizes = set()
        for k, condition in enumerate(conditions):
            audio = ref * (1.0 - 0.03 * k) + 0.002 * k * rng.standard_normal(n)
            rel = f"stimuli/e{exp.pk}/x{excerpt.pk}_c{condition.pk}.wav"
            path = Path(settings.MEDIA_ROOT) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio.astype("float32"), SAMPLE_RATE, subtype="PCM_24", format="WAV")
            size = path.stat().st_size
            sizes.add(size)
            Stimulus.objects.create(
                experiment=exp,
                excerpt=excerpt,
                condition=condition,
                file=rel,
                sample_rate=SAMPLE_RATE,
                frames=n,
                channels=1,
                size=size,
            )
        assert len(sizes) == 1, f"stimuli of one trial differ in byte length: {sizes}"
    shutil.rmtree(work)
    Experiment.objects.filter(pk=exp.pk).update(status=Experiment.Status.READY)
    return experiments.open_experiment(experiment=exp), size


def _prepare(excerpts: int, seconds: float) -> dict[str, Any]:
    """Make the open experiment and one participant at its first trial; return the trial's URLs."""
    import django

    django.setup()
    from django.test import RequestFactory

    from webmushra.services import sessions
    from webmushra.views.participant import trial_data

    exp, size = make_open_experiment(excerpts, seconds, N_MODELS, "Bench")
    participant = sessions.start_participant(experiment=exp)
    participant = sessions.give_consent(participant=participant, agreed=True)
    participant = sessions.set_level(participant=participant, gain_db=0.0)
    data = trial_data(RequestFactory().get("/"), participant, 0)
    return {
        "public_token": exp.public_token,
        "trial_url": data["save_url"],
        "stimulus_urls": [data["reference"]["url"]] + [s["url"] for s in data["signals"]],
        "signals": len(data["signals"]),
        "trials": len(participant.plan),
        "stimulus_bytes": size,
    }


def _count() -> dict[str, int]:
    """Rows stored by the load run (the participant made by ``_prepare`` saved nothing)."""
    import django

    django.setup()
    from django.db.models import Count

    from webmushra.models import Participant, Rating, TrialResponse

    per_response = set(Rating.objects.values("response").annotate(n=Count("id")).values_list("n", flat=True))
    return {
        "ratings": Rating.objects.count(),
        "responses": TrialResponse.objects.count(),
        "participants": Participant.objects.count(),
        "ratings_per_response": sorted(per_response),
    }


# --------------------------------------------------------------------------- processes


class Site:
    """A throwaway VAR_DIR, optionally a PostgreSQL server, and gunicorn serving the project."""

    def __init__(self, postgres: bool = False, workers: int = 2, threads: int = 4, conn_max_age: int = 60) -> None:
        self.var = Path(tempfile.mkdtemp(prefix="bench-participant-"))
        self.postgres = postgres
        self.workers = workers
        self.threads = threads
        self.pg = None
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
        self.env.update(
            VAR_DIR=str(self.var),
            DJANGO_SETTINGS_MODULE="config.settings",
            DEBUG="0",
            LOG_LEVEL="WARNING",
            SECRET_KEY="bench-" + "x" * 50,
            PYTHONUNBUFFERED="1",
            # Persistent connections, as docker/compose.yml runs the site.
            DB_CONN_MAX_AGE=str(conn_max_age),
            # Every simulated participant comes from 127.0.0.1: per-address limits off.
            RATELIMIT_ENABLED="0",
        )

    @property
    def log(self) -> Path:
        """gunicorn's log (its stderr)."""
        return self.var / "gunicorn.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def django(self, what: str, *args: str) -> dict[str, Any]:
        """Run ``_prepare`` / ``_count`` in a child process with this site's settings."""
        out = subprocess.run(
            [sys.executable, "-m", "bench.bench_participant", what, *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def __enter__(self) -> Site:
        from tests.stack import PostgresServer, free_port

        if self.postgres:
            self.pg = PostgresServer().start()
            self.env["DATABASE_URL"] = self.pg.url
        self.port = free_port()
        return self

    def serve(self) -> None:
        import requests

        # The log goes to a file: a pipe nobody reads fills up and then blocks the server.
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "config.wsgi",
                    "-b",
                    f"127.0.0.1:{self.port}",
                    "-w",
                    str(self.workers),
                    "-k",
                    "gthread",
                    "--threads",
                    str(self.threads),
                    "--log-level",
                    "warning",
                    "--backlog",
                    "512",
                    # Keep idle connections longer than a participant's pause, as the proxy in front
                    # would; gunicorn's 2 s default races the clients' reuse of a connection.
                    "--keep-alive",
                    "75",
                ],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + self.log.read_text(errors="replace")[-3000:])
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer /healthz within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pg is not None:
            self.pg.close()
        shutil.rmtree(self.var, ignore_errors=True)


# --------------------------------------------------------------------------- ready to play


def bench_ready(runs: int) -> dict[str, Any]:
    import requests
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise SystemExit(f"Chromium is not installed at {CHROMIUM} (set CHROMIUM_PATH)")
    with Site() as site:
        info = site.django("_prepare", "--excerpts", "1", "--excerpt-seconds", "10")
        site.serve()
        urls = [site.url + u for u in info["stimulus_urls"]]
        page_url = site.url + info["trial_url"]

        def fetch_all() -> float:
            with requests.Session() as http:
                t0 = time.perf_counter()
                for u in urls:
                    r = http.get(u, timeout=30)
                    r.raise_for_status()
                    assert len(r.content) == info["stimulus_bytes"]
                return 1000 * (time.perf_counter() - t0)

        fetch_all()  # warm-up: page cache, gunicorn workers
        baseline = [fetch_all() for _ in range(runs)]

        ready, dom, decode, first_byte, fetched = [], [], [], [], []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                for i in range(runs + 1):
                    # The bench times the page, not its Content-Security-Policy (which forbids the
                    # eval that wait_for_function needs); the browser tests check the policy.
                    context = browser.new_context(bypass_csp=True)
                    page = context.new_page()
                    page.goto(page_url, wait_until="commit")
                    # Polled every animation frame; the first frame that sees ready records the time.
                    page.wait_for_function(
                        f"() => {PLAYER_JS}.state()?.ready"
                        " && (window.__readyAt = window.__readyAt || performance.now())",
                        polling="raf",
                        timeout=30_000,
                    )
                    if i > 0:  # the first load warms Chromium up
                        ready.append(page.evaluate("window.__readyAt"))
                        dom.append(
                            page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
                        )
                        decode.append(page.evaluate(f"{PLAYER_JS}.telemetry().decode_ms"))
                        first_byte.append(page.evaluate("performance.getEntriesByType('navigation')[0].responseStart"))
                        fetched.append(
                            page.evaluate(
                                "Math.max(...performance.getEntriesByType('resource')"
                                ".filter(e => e.initiatorType === 'fetch').map(e => e.responseEnd))"
                            )
                        )
                        assert len(page.evaluate(f"{PLAYER_JS}.state().decoded")) == len(urls)
                    context.close()
            finally:
                browser.close()
    result = {
        "signals": info["signals"],
        "files": len(urls),
        "file_bytes": info["stimulus_bytes"],
        "ready_ms": statistics.median(ready),
        "ready_runs_ms": [round(x, 1) for x in ready],
        "dom_content_loaded_ms": statistics.median(dom),
        "decode_ms": statistics.median(decode),
        "first_byte_ms": statistics.median(first_byte),
        "fetched_ms": statistics.median(fetched),
        "baseline_fetch_ms": statistics.median(baseline),
        "baseline_runs_ms": [round(x, 1) for x in baseline],
    }
    result["ratio"] = result["ready_ms"] / result["baseline_fetch_ms"]
    return result


def print_ready(r: dict[str, Any]) -> None:
    mb = r["file_bytes"] / 1e6
    print(
        f"Trial page: {r['signals']} signals + open reference = {r['files']} files of {mb:.2f} MB "
        f"(10 s, 48 kHz, 24-bit PCM WAV), gunicorn on 127.0.0.1, headless Chromium"
    )
    print(
        f"  baseline: the {r['files']} files fetched one after another (requests): "
        f"{r['baseline_fetch_ms']:.0f} ms median of {len(r['baseline_runs_ms'])}"
    )
    print(
        f"  page (medians from navigation start): first byte {r['first_byte_ms']:.0f} ms, DOMContentLoaded "
        f"{r['dom_content_loaded_ms']:.0f} ms, all files fetched {r['fetched_ms']:.0f} ms, "
        f"then decoding {r['decode_ms']:.0f} ms"
    )
    flag = "" if r["ready_ms"] < READY_TARGET_MS else f"  ABOVE TARGET ({READY_TARGET_MS:.0f} ms)"
    print(f"ready-to-play: {r['ready_ms']:.0f} ms (ratio vs baseline: {r['ratio']:.2f}){flag}")


# --------------------------------------------------------------------------- saves under load


def bench_saves(
    users: int,
    spawn_rate: int,
    seconds: int,
    postgres: bool,
    trials: int,
    wait: tuple[float, float],
    workers: int,
    conn_max_age: int,
) -> dict[str, Any]:
    with Site(postgres=postgres, workers=workers, conn_max_age=conn_max_age) as site:
        info = site.django("_prepare", "--excerpts", str(trials), "--excerpt-seconds", "1")
        site.serve()
        stats_path = site.var / "locust-stats.json"
        env = {
            **site.env,
            "BENCH_PUBLIC_TOKEN": info["public_token"],
            "BENCH_WAIT_MIN": str(wait[0]),
            "BENCH_WAIT_MAX": str(wait[1]),
            "BENCH_STATS_OUT": str(stats_path),
        }
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(REPO / "bench" / "locustfile_participant.py"),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(spawn_rate),
            "-t",
            f"{seconds}s",
            "--stop-timeout",
            "30",
            "--host",
            site.url,
            "--only-summary",
            "--loglevel",
            "WARNING",
        ]
        run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=seconds + 300)
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        if not stats.get("save", {}).get("count"):
            raise RuntimeError(f"locust made no saves (exit {run.returncode}):\n{run.stderr[-3000:]}")
        counts = site.django("_count")
    save, health, total = stats["save"], stats["healthz"], stats["Aggregated"]
    saves_ok = save["count"] - save["failures"]
    result = {
        "database": "PostgreSQL" if postgres else "SQLite",
        "users": users,
        "seconds": seconds,
        "conn_max_age": conn_max_age,
        "signals": info["signals"],
        "trials_per_session": info["trials"],
        "save": save,
        "healthz": health,
        "errors": total["failures"],
        "requests": total["count"],
        "ratings_stored": counts["ratings"],
        "ratings_expected": saves_ok * info["signals"],
        "responses_stored": counts["responses"],
        "saves_acknowledged": saves_ok,
        "ratings_per_response": counts["ratings_per_response"],
        "error_kinds": stats.pop("errors", {}),
        "by_name": stats,
    }
    result["ratio_p95"] = result["save"]["p95_ms"] / max(result["healthz"]["p95_ms"], 1e-9)
    return result


def print_saves(r: dict[str, Any]) -> None:
    s, h = r["save"], r["healthz"]
    print(
        f"Trial saves: {r['users']} participants for {r['seconds']} s, {r['trials_per_session']} trials of "
        f"{r['signals']} signals per session, gunicorn + {r['database']} (DB_CONN_MAX_AGE={r['conn_max_age']})"
    )
    print(
        f"  baseline GET /healthz under the same load: p50 {h['p50_ms']:.0f} ms, p95 {h['p95_ms']:.0f} ms, "
        f"p99 {h['p99_ms']:.0f} ms ({h['count']} requests)"
    )
    print(
        f"  save: {s['count']} requests ({s['rps']:.1f}/s): p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, "
        f"p99 {s['p99_ms']:.0f} ms"
    )
    ok = r["ratings_stored"] == r["ratings_expected"] and r["responses_stored"] == r["saves_acknowledged"]
    print(
        f"  errors: {r['errors']} of {r['requests']} requests; ratings stored {r['ratings_stored']}, expected "
        f"{r['ratings_expected']} ({'match' if ok else 'MISMATCH'})"
    )
    for kind, n in sorted(r["error_kinds"].items(), key=lambda kv: -kv[1])[:5]:
        print(f"    {n} x {kind}")
    flags = []
    if s["p95_ms"] >= SAVE_P95_TARGET_MS:
        flags.append(f"ABOVE TARGET ({SAVE_P95_TARGET_MS:.0f} ms)")
    if r["errors"] or not ok:
        flags.append("ERRORS")
    print(
        f"save p95 [{r['database']}]: {s['p95_ms']:.0f} ms (ratio vs /healthz p95: {r['ratio_p95']:.2f})"
        + ("  " + ", ".join(flags) if flags else "")
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "ready", "saves", "_prepare", "_count"])
    parser.add_argument("--runs", type=int, default=7, help="page loads measured (after one warm-up)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spawn-rate", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--trials", type=int, default=8, help="trials per session in the load run")
    parser.add_argument(
        "--wait",
        type=float,
        nargs=2,
        default=(1.0, 2.0),
        metavar=("MIN", "MAX"),
        help="seconds a simulated participant spends between steps",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (4 threads each)")
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=60,
        help="DB_CONN_MAX_AGE of the server (60 as in docker/compose.yml; 0 = a connection per request)",
    )
    parser.add_argument("--postgres", action="store_true", help="also run the load on a throwaway PostgreSQL")
    parser.add_argument("--excerpts", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--excerpt-seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "_prepare":
        print(json.dumps(_prepare(args.excerpts, args.excerpt_seconds)))
        return 0
    if args.what == "_count":
        print(json.dumps(_count()))
        return 0
    results: dict[str, Any] = {}
    if args.what in ("all", "ready"):
        results["ready"] = bench_ready(args.runs)
        if not args.json:
            print_ready(results["ready"])
    if args.what in ("all", "saves"):
        for postgres in [False, True] if args.postgres else [False]:
            key = "saves_postgres" if postgres else "saves_sqlite"
            results[key] = bench_saves(
                args.users,
                args.spawn_rate,
                int(args.seconds),
                postgres,
                args.trials,
                tuple(args.wait),
                args.workers,
                args.conn_max_age,
            )
            if not args.json:
                print_saves(results[key])
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
