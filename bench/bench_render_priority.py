"""Participants while a render runs: trial-save latency with the render worker niced and not.

One gunicorn (SQLite, 127.0.0.1, as ``bench_participant saves``) serves locust participants
(``bench/locustfile_participant.py``) that start sessions and save trials, three times in one
run, each for ``--seconds``:

1. **idle**: no render (the baseline);
2. **render, nice 0**: a real render worker (``celery worker -Q render,default -c 2``: both
   cores rendering) with ``RENDER_WORKER_NICE=0``, kept busy by re-queueing a render of real
   excerpts through two demo checkpoints whenever the last one finishes;
3. **render, nice N**: the same worker with ``RENDER_WORKER_NICE=N`` (default 10).

It prints the save p50/p95/p99 of each phase, the CPU the render used meanwhile (cores), the
pool children's niceness read from ``/proc``, and the ratios: each render phase's save p95
against the idle one, and niced against not niced. Target: save p95 under 100 ms while a
render runs niced. Everything lives in a throwaway ``VAR_DIR`` removed at the end; nothing
listens beyond 127.0.0.1.

Run: ``python -m bench.bench_render_priority [--seconds 30] [--users 20] [--nice 10] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAVE_P95_TARGET_MS = 100.0
#: The render: experiments of excerpts of this many seconds, each through both demo checkpoints.
RENDER_COPIES = 2
RENDER_EXCERPTS = 4
RENDER_SECONDS = 60.0


# --------------------------------------------------------------------------- inside Django


def _render_setup() -> dict[str, Any]:
    """Draft experiments to render (``RENDER_COPIES``): synthetic excerpts, two demo checkpoints."""
    import django

    django.setup()
    import numpy as np
    import soundfile as sf
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from webmushra.services import experiments, uploads

    owner = get_user_model().objects.create_user("bench-render", "render@example.org", "a-long-bench-password")
    rng = np.random.default_rng(1)
    n = int(RENDER_SECONDS * 48000)
    t = np.arange(n) / 48000
    work = Path(tempfile.mkdtemp(dir=settings.VAR_DIR))
    pks = []
    for copy in range(RENDER_COPIES):
        exp = experiments.create_experiment(
            owner=owner, title=f"Render load {copy + 1}", sample_rate=48000, anchors=True, config={}
        )
        for i in range(RENDER_EXCERPTS):
            dry = 0.3 * np.sin(2 * np.pi * (98 + 17 * i) * t) * np.exp(-t % 1.5) + 0.01 * rng.standard_normal(n)
            sf.write(work / f"dry{i}.wav", dry.astype("float32"), 48000, subtype="FLOAT")
            sf.write(work / f"ref{i}.wav", (np.tanh(3 * dry) / 3).astype("float32"), 48000, subtype="FLOAT")
            uploads.add_excerpt(
                experiment=exp, name=f"Load {i + 1}", dry=work / f"dry{i}.wav", reference=work / f"ref{i}.wav"
            )
        for name in ("demo_lstm16_gain.json", "demo_gru8.json"):
            ckpt = uploads.add_checkpoint(
                experiment=exp, name=name, file=REPO / "demo" / "checkpoints" / name, sample_rate=48000
            )
            experiments.add_model_condition(
                experiment=exp, checkpoint=ckpt, label=name, knobs={k: 0.5 for k in ckpt.knob_names}
            )
        pks.append(exp.pk)
    return {"experiments": pks}


def _feed(pks: list[int]) -> None:
    """Keep the render queue busy until terminated: queue every cell of an experiment again
    whenever its last render finished; with two experiments one is always queued while the
    other finishes (a failed job stops the benchmark: the load would not be a render)."""
    import django

    django.setup()
    from webmushra.models import Experiment, RenderJob
    from webmushra.services import rendering

    # A render the previous phase's worker left unfinished (it was killed) is called off first.
    for exp in Experiment.objects.filter(pk__in=pks, status=Experiment.Status.RENDERING):
        rendering.cancel_render(experiment=exp)
    rounds = 0
    while True:
        for exp in Experiment.objects.filter(pk__in=pks):
            failed = RenderJob.objects.filter(experiment=exp, status=RenderJob.Status.FAILED).first()
            if failed is not None:
                raise SystemExit(f"a render job failed: {failed.error}")
            if exp.status != Experiment.Status.RENDERING:
                rendering.start_render(experiment=exp, force=True)
                rounds += 1
                print(f"render round {rounds} queued", flush=True)
        time.sleep(0.5)


# --------------------------------------------------------------------------- processes


class RenderWorker:
    """A render worker (both queues, two pool children) and the feeder keeping it busy."""

    def __init__(self, env: dict[str, str], nice: int, experiments: list[int], processes: int) -> None:
        self.processes = processes
        self.env = {**env, "RENDER_WORKER_NICE": str(nice), "RENDER_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.experiments = experiments
        self.log = Path(env["VAR_DIR"]) / f"worker-nice{nice}.log"
        self.worker: subprocess.Popen | None = None
        self.feeder: subprocess.Popen | None = None

    def __enter__(self) -> RenderWorker:
        with self.log.open("ab") as log:
            self.worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    "render,default",
                    "-c",
                    str(self.processes),
                ]
                + ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # The pool children have started (their last start-up hook imports torch) ...
        self._wait(
            lambda: len(self.children()) == self.processes and all(_torch_loaded(c.pid) for c in self.children())
        )
        with self.log.open("ab") as log:
            self.feeder = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.bench_render_priority",
                    "_feed",
                    "--experiments",
                    *map(str, self.experiments),
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # ... and render: the first round is queued and both children are busy.
        self._wait(lambda: "render round 1 queued" in self.log.read_text())
        time.sleep(3)
        return self

    def _wait(self, ready, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if any(p is not None and p.poll() is not None for p in (self.worker, self.feeder)):
                break
            time.sleep(0.5)
        raise RuntimeError("the render worker did not start rendering:\n" + self.log.read_text()[-3000:])

    def children(self) -> list:
        import psutil

        assert self.worker is not None
        try:
            return psutil.Process(self.worker.pid).children()
        except psutil.NoSuchProcess:
            return []

    def render_cpu_seconds(self) -> float:
        total = 0.0
        for child in self.children():
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except Exception:  # a child replaced meanwhile
                pass
        return total

    def niceness(self) -> list[int]:
        return sorted(
            int(Path(f"/proc/{c.pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) for c in self.children()
        )

    def __exit__(self, *exc: object) -> None:
        for proc in (self.feeder, self.worker):
            if proc is not None and proc.poll() is None:
                if proc is self.worker:
                    os.killpg(proc.pid, signal.SIGKILL)  # a render need not finish: the run is over
                else:
                    proc.terminate()
                proc.wait(30)


def _torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def locust(site: Any, token: str, users: int, seconds: int, name: str) -> dict[str, Any]:
    stats_path = site.var / f"locust-{name}.json"
    env = {**site.env, "BENCH_PUBLIC_TOKEN": token, "BENCH_STATS_OUT": str(stats_path)}
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "bench" / "locustfile_participant.py"), "--headless"]
    cmd += ["-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "30", "--host", site.url]
    cmd += ["--only-summary", "--loglevel", "WARNING"]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=seconds + 300)
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    if not stats.get("save", {}).get("count"):
        raise RuntimeError(f"locust made no saves (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return {"save": stats["save"], "healthz": stats["healthz"], "errors": stats["Aggregated"]["failures"]}


def bench(seconds: int, users: int, nice: int, processes: int, postgres: bool) -> dict[str, Any]:
    from bench.bench_participant import Site

    with Site(postgres=postgres) as site:
        info = site.django("_prepare", "--excerpts", "8", "--excerpt-seconds", "1")
        render = json.loads(
            subprocess.run(
                [sys.executable, "-m", "bench.bench_render_priority", "_render_setup"],
                cwd=REPO,
                env=site.env,
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        site.serve()
        locust(site, info["public_token"], users, 5, "warm-up")
        phases: dict[str, Any] = {"idle": locust(site, info["public_token"], users, seconds, "idle")}
        phases["idle"]["render_cores"] = 0.0
        for level in (0, nice):
            with RenderWorker(site.env, level, render["experiments"], processes) as worker:
                cpu0, t0 = worker.render_cpu_seconds(), time.monotonic()
                result = locust(site, info["public_token"], users, seconds, f"nice{level}")
                result["render_cores"] = (worker.render_cpu_seconds() - cpu0) / (time.monotonic() - t0)
                result["worker_niceness"] = worker.niceness()
            phases[f"nice{level}"] = result
    idle, plain, niced = phases["idle"], phases["nice0"], phases[f"nice{nice}"]
    return {
        "database": "PostgreSQL" if postgres else "SQLite",
        "processes": processes,
        "users": users,
        "seconds": seconds,
        "nice": nice,
        "phases": phases,
        "ratio_plain_vs_idle": plain["save"]["p95_ms"] / max(idle["save"]["p95_ms"], 1e-9),
        "ratio_niced_vs_idle": niced["save"]["p95_ms"] / max(idle["save"]["p95_ms"], 1e-9),
        "ratio_niced_vs_plain": niced["save"]["p95_ms"] / max(plain["save"]["p95_ms"], 1e-9),
    }


def report(r: dict[str, Any]) -> None:
    print(
        f"Trial saves while a render runs: {r['users']} participants for {r['seconds']} s per phase, gunicorn "
        f"(2 workers x 4 threads) + {r['database']}; render worker with {r['processes']} pool children on "
        f"{os.cpu_count()} cores"
    )
    for name, p in r["phases"].items():
        s = p["save"]
        nices = f", pool children at nice {p['worker_niceness']}" if "worker_niceness" in p else ""
        print(
            f"  {name:<6} save p50 {s['p50_ms']:.0f} / p95 {s['p95_ms']:.0f} / p99 {s['p99_ms']:.0f} ms "
            f"({s['count']} saves, {p['errors']} errors); render used {p['render_cores']:.2f} cores{nices}"
        )
    nice = r["nice"]
    niced = r["phases"][f"nice{nice}"]["save"]["p95_ms"]
    flag = "" if niced < SAVE_P95_TARGET_MS else f"  ABOVE TARGET ({SAVE_P95_TARGET_MS:.0f} ms)"
    print(
        f"save p95 ratios: render at nice 0 vs idle {r['ratio_plain_vs_idle']:.2f}, at nice {nice} vs idle "
        f"{r['ratio_niced_vs_idle']:.2f}; nice {nice} vs nice 0: {r['ratio_niced_vs_plain']:.2f}{flag}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="bench", choices=["bench", "_render_setup", "_feed"])
    parser.add_argument("--seconds", type=int, default=30, help="locust time per phase")
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument(
        "--render-processes",
        type=int,
        default=2 * (os.cpu_count() or 1),
        help="the render worker's pool children (default: twice the cores, so the render wants every core)",
    )
    parser.add_argument("--nice", type=int, default=10, help="RENDER_WORKER_NICE of the niced phase")
    parser.add_argument("--experiments", type=int, nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL instead of SQLite")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "_render_setup":
        print(json.dumps(_render_setup()))
        return 0
    if args.what == "_feed":
        _feed(args.experiments)
        return 0
    result = bench(args.seconds, args.users, args.nice, args.render_processes, args.postgres)
    print(json.dumps(result, indent=2)) if args.json else report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
