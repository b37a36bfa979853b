"""Whole participant sessions under load: gunicorn + PostgreSQL, locust headless.

``--users`` simulated participants (``bench/locustfile_session.py``) each go through whole
sessions (landing, consent, level, every trial with its stimuli, questionnaire, completion
page) against gunicorn on 127.0.0.1 backed by a throwaway PostgreSQL cluster, for a fixed
time. Afterwards the database is counted: every participant has exactly the trial
responses the server acknowledged, each with one rating per signal; every finished
participant has all of them; no (participant, trial) or (participant, trial, condition)
appears twice.

Prints p50/p95/p99 of every request type and the save p95 as a ratio against a baseline
measured in the same run under the same load: the p95 of ``GET /healthz`` (one trivial
database query), which every simulated participant makes at every step. Target: zero
errors, every rating stored exactly once, save p95 under 100 ms.

Everything lives in a throwaway ``VAR_DIR`` and PostgreSQL data folder, removed at the end.
Run: ``python -m bench.bench_load [--users 200] [--spawn-rate 20] [--seconds 120]
[--think 3 8] [--workers 2] [--threads 4] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.bench_participant import Site, make_open_experiment

REPO = Path(__file__).resolve().parents[1]
N_MODELS = 3  # with the hidden reference and the two anchors: 6 signals a trial
SAVE_P95_TARGET_MS = 100.0


# --------------------------------------------------------------------------- inside Django


def _prepare(excerpts: int, seconds: float) -> dict[str, Any]:
    """An open experiment without training or headphone check; stimuli written directly."""
    import django

    django.setup()
    exp, _ = make_open_experiment(excerpts, seconds, N_MODELS, "Load")
    return {"public_token": exp.public_token, "signals": exp.conditions.count(), "trials": excerpts}


def _count(sessions_path: str) -> dict[str, Any]:
    """Count what the run stored against what the server acknowledged to each participant."""
    import django

    django.setup()
    from django.db.models import Count

    from webmushra.models import Participant, Rating, TrialResponse

    sessions = json.loads(Path(sessions_path).read_text())
    exp_trials = {p.pk: len(p.plan) for p in Participant.objects.all()}
    signals = {p.pk: len(p.plan[0]["conditions"]) for p in Participant.objects.all() if p.plan}
    responses = dict(TrialResponse.objects.values_list("participant__token").annotate(n=Count("id")))
    ratings = dict(Rating.objects.values_list("participant__token").annotate(n=Count("id")))
    by_token = {p.token: p for p in Participant.objects.all()}
    mismatched, unfinished_in_db = [], []
    for token, seen in sessions.items():
        p = by_token.get(token)
        if p is None:
            mismatched.append(f"{token}: no such participant")
            continue
        want_ratings = seen["saved"] * signals[p.pk]
        if responses.get(token, 0) != seen["saved"] or ratings.get(token, 0) != want_ratings:
            mismatched.append(
                f"{token}: {responses.get(token, 0)} responses / {ratings.get(token, 0)} ratings stored, "
                f"{seen['saved']} saves acknowledged"
            )
        if seen["finished"] and (p.stage != Participant.Stage.COMPLETED or seen["saved"] != exp_trials[p.pk]):
            unfinished_in_db.append(token)
    duplicate_responses = (
        TrialResponse.objects.values("participant", "trial").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    duplicate_ratings = (
        Rating.objects.values("participant", "trial", "condition").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    per_response = sorted(set(Rating.objects.values("response").annotate(n=Count("id")).values_list("n", flat=True)))
    completed = Participant.objects.filter(stage=Participant.Stage.COMPLETED)
    complete_ok = sum(
        1
        for p in completed
        if responses.get(p.token, 0) == exp_trials[p.pk] and ratings.get(p.token, 0) == exp_trials[p.pk] * signals[p.pk]
    )
    return {
        "participants": len(by_token),
        "sessions_seen": len(sessions),
        "completed": completed.count(),
        "completed_with_every_rating": complete_ok,
        "finished_by_locust": sum(1 for s in sessions.values() if s["finished"]),
        "responses": TrialResponse.objects.count(),
        "ratings": Rating.objects.count(),
        "saves_acknowledged": sum(s["saved"] for s in sessions.values()),
        "ratings_per_response": per_response,
        "duplicate_responses": duplicate_responses,
        "duplicate_ratings": duplicate_ratings,
        "mismatched": mismatched[:10],
        "mismatched_count": len(mismatched),
        "finished_but_incomplete": unfinished_in_db[:10],
        "participants_not_seen": len(set(by_token) - set(sessions)),
    }


# --------------------------------------------------------------------------- the run


class LoadSite(Site):
    """The participant benchmark's site, with this module's preparation and no rate limits."""

    def __init__(self, workers: int, threads: int) -> None:
        super().__init__(postgres=True, workers=workers, threads=threads, conn_max_age=60)
        # Every simulated participant comes from 127.0.0.1: per-address limits would throttle
        # the load generator itself, which a real audience spread over addresses never does.
        self.env["RATELIMIT_ENABLED"] = "0"

    def django(self, what: str, *args: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "bench.bench_load", what, *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes and their children so far (from /proc)."""
    total = 0.0
    tick = 100.0
    for pid in pids:
        for p in [pid, *_children(pid)]:
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
    return total


def _children(pid: int) -> list[int]:
    try:
        kids = [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / 100.0, sum(fields) / 100.0


def bench_load(
    users: int, spawn_rate: int, seconds: int, think: tuple[float, float], workers: int, threads: int, trials: int
) -> dict[str, Any]:
    with LoadSite(workers, threads) as site:
        info = site.django("_prepare", "--trials", str(trials))
        site.serve()
        out = site.var / "locust.json"
        sessions_path = site.var / "sessions.json"
        env = {
            **site.env,
            "BENCH_PUBLIC_TOKEN": info["public_token"],
            "BENCH_THINK_MIN": str(think[0]),
            "BENCH_THINK_MAX": str(think[1]),
            "BENCH_STATS_OUT": str(out),
        }
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(REPO / "bench" / "locustfile_session.py"),
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
        pg_pid = int((site.pg.data / "postmaster.pid").read_text().split()[0])
        server_cpu0, pg_cpu0, busy0 = cpu_seconds([site.proc.pid]), cpu_seconds([pg_pid]), machine_busy()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=seconds + 300)
        wall = time.monotonic() - t0
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu, pg_cpu = cpu_seconds([site.proc.pid]) - server_cpu0, cpu_seconds([pg_pid]) - pg_cpu0
        busy1 = machine_busy()
        locust_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
        if not out.exists():
            raise RuntimeError(f"locust wrote no statistics (exit {run.returncode}):\n{run.stderr[-3000:]}")
        result = json.loads(out.read_text())
        sessions_path.write_text(json.dumps(result.pop("sessions")))
        counts = site.django("_count", "--sessions", str(sessions_path))
    stats = result["stats"]
    total = stats["Aggregated"]
    r = {
        "users": users,
        "seconds": seconds,
        "think_s": list(think),
        "workers": workers,
        "threads": threads,
        "signals": info["signals"],
        "trials_per_session": info["trials"],
        "stats": stats,
        "errors": result["errors"],
        "requests": total["count"],
        "failures": total["failures"],
        "rps": total["count"] / wall,
        "wall_s": wall,
        "gunicorn_cpu_s": server_cpu,
        "postgres_cpu_s": pg_cpu,
        "locust_cpu_s": locust_cpu,
        "machine_busy_cores": (busy1[0] - busy0[0]) / max(1e-9, wall),
        "machine_cores": os.cpu_count(),
        "counts": counts,
    }
    r["save_p95_ms"] = stats["POST save"]["p95_ms"]
    r["baseline_p95_ms"] = stats["GET healthz"]["p95_ms"]
    r["ratio_p95"] = r["save_p95_ms"] / max(r["baseline_p95_ms"], 1e-9)
    c = counts
    r["stored_exactly_once"] = (
        not c["mismatched_count"]
        and not c["duplicate_responses"]
        and not c["duplicate_ratings"]
        and c["ratings_per_response"] in ([], [info["signals"]])
        and c["completed"] == c["completed_with_every_rating"]
        and not c["finished_but_incomplete"]
        and not c["participants_not_seen"]
    )
    return r


def print_load(r: dict[str, Any]) -> None:
    c = r["counts"]
    print(
        f"Whole sessions: {r['users']} participants for {r['seconds']} s (think {r['think_s'][0]:g}-"
        f"{r['think_s'][1]:g} s a step), {r['trials_per_session']} trials of {r['signals']} signals a session, "
        f"gunicorn {r['workers']}x{r['threads']} threads + PostgreSQL (DB_CONN_MAX_AGE=60), 127.0.0.1"
    )
    print(f"  {'request':<28}{'count':>8}{'fail':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, s in sorted(r["stats"].items(), key=lambda kv: (kv[0] == "Aggregated", kv[0])):
        print(
            f"  {name:<28}{s['count']:>8}{s['failures']:>6}{s['p50_ms']:>9.0f}{s['p95_ms']:>9.0f}"
            f"{s['p99_ms']:>9.0f}{s['max_ms']:>9.0f}"
        )
    w = r["wall_s"]
    print(
        f"  throughput: {r['rps']:.1f} requests/s over {w:.0f} s; CPU in cores (of {r['machine_cores']}): "
        f"gunicorn {r['gunicorn_cpu_s'] / w:.2f}, PostgreSQL {r['postgres_cpu_s'] / w:.2f}, locust "
        f"{r['locust_cpu_s'] / w:.2f}, whole machine {r['machine_busy_cores']:.2f} busy"
    )
    for kind, n in sorted(r["errors"].items(), key=lambda kv: -kv[1])[:5]:
        print(f"    {n} x {kind}")
    print(
        f"  database: {c['participants']} participants ({c['completed']} completed, {c['finished_by_locust']} "
        f"finished as seen by locust), {c['responses']} trial responses for {c['saves_acknowledged']} saves "
        f"acknowledged, {c['ratings']} ratings; ratings per response {c['ratings_per_response']}; duplicates: "
        f"{c['duplicate_responses']} responses, {c['duplicate_ratings']} ratings; mismatched participants "
        f"{c['mismatched_count']}"
    )
    for line in c["mismatched"] + [f"finished but incomplete: {t}" for t in c["finished_but_incomplete"]]:
        print(f"    {line}")
    ok = r["failures"] == 0 and r["stored_exactly_once"] and r["save_p95_ms"] < SAVE_P95_TARGET_MS
    print(
        f"save p95: {r['save_p95_ms']:.0f} ms (ratio vs /healthz p95 {r['baseline_p95_ms']:.0f} ms: "
        f"{r['ratio_p95']:.2f}); errors {r['failures']}; every rating stored exactly once: "
        f"{'yes' if r['stored_exactly_once'] else 'NO'} -> "
        f"{'PASS' if ok else 'FAIL'} (target: 0 errors, stored once, save p95 < {SAVE_P95_TARGET_MS:.0f} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="run", choices=["run", "_prepare", "_count"])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--spawn-rate", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=120, help="locust run time (a step in flight then has 30 s)")
    parser.add_argument(
        "--think",
        type=float,
        nargs=2,
        default=(3.0, 8.0),
        metavar=("MIN", "MAX"),
        help="seconds a simulated participant spends on each step (listening and rating)",
    )
    parser.add_argument("--trials", type=int, default=6, help="trials a session")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--sessions", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "_prepare":
        print(json.dumps(_prepare(args.trials, seconds=2.0)))
        return 0
    if args.what == "_count":
        print(json.dumps(_count(args.sessions)))
        return 0
    result = bench_load(
        args.users, args.spawn_rate, args.seconds, tuple(args.think), args.workers, args.threads, args.trials
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_load(result)
    return 0 if result["failures"] == 0 and result["stored_exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
