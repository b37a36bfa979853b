"""Throwaway Redis and PostgreSQL servers on free ports, for tests and benchmarks.

Used as a library (fault tests stop and restart them) and as a launcher::

    python -m tests.stack [--redis] [--postgres] -- pytest -q

which starts the servers, exports ``CELERY_BROKER_URL`` / ``DATABASE_URL`` (and
``TEST_REDIS_URL`` / ``TEST_POSTGRES_URL``), runs the command and stops them again.
Never touches the machine's own services.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class RedisServer:
    """A redis-server process with no persistence, on a free port."""

    def __init__(self, port: int | None = None, bind: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.port = port or free_port()
        self.bind = bind  # more addresses: processes in other network namespaces reach it there
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="test-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                *self.bind,
                # As the redis image runs it: other addresses than loopback accepted without a password.
                "--protected-mode",
                "no" if set(self.bind) != {"127.0.0.1"} else "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 15, self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin(name: str) -> str:
    for candidate in [shutil.which(name), *sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)]:
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb in a temp dir, trust auth, fsync off)."""

    def __init__(self, port: int | None = None, listen: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.port = port or free_port()
        self.listen = listen  # with more addresses, clients on their subnets are trusted too
        self.dir = Path(tempfile.mkdtemp(prefix="test-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres"
        self._as_other_user = os.geteuid() == 0  # PostgreSQL refuses to run as root

    @property
    def url(self) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if self._as_other_user:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def initdb(self) -> None:
        if self._as_other_user:
            shutil.chown(self.dir, "postgres")
        self._run(
            [
                _pg_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C",
            ]
        )
        if set(self.listen) != {"127.0.0.1"}:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all samenet trust\n")  # clients on the subnets of those addresses

    def start(self) -> PostgresServer:
        if not self.data.exists():
            self.initdb()
        opts = (
            f"-p {self.port} -c listen_addresses={','.join(self.listen)} -k {self.dir} -F "
            "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200"
        )
        self._run(
            [
                _pg_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.dir / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        _wait_port(self.port, 30)
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
            except subprocess.CalledProcessError:
                pass

    def restart(self) -> None:
        self.stop()
        self.start()

    def query(self, sql: str, params: tuple | dict = (), dbname: str = "postgres") -> list[tuple]:
        """Rows of one statement, on a fresh autocommit connection as the superuser."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}", autocommit=True, connect_timeout=10
        ) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", action="store_true", help="start Redis and use it as the Celery broker")
    parser.add_argument("--postgres", action="store_true", help="start PostgreSQL and use it as the database")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    env = dict(os.environ)
    servers: list = []
    try:
        if args.redis:
            r = RedisServer().start()
            servers.append(r)
            env.update(CELERY_BROKER_URL=r.url, TEST_REDIS_URL=r.url)
        if args.postgres:
            p = PostgresServer().start()
            servers.append(p)
            env.update(DATABASE_URL=p.url, TEST_POSTGRES_URL=p.url)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"tests.stack: could not start a test server: {exc} {detail}".strip(), file=sys.stderr)
        for s in servers:
            s.close()
        return 2
    proc = subprocess.Popen(command, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()
    finally:
        for s in servers:
            s.close()


if __name__ == "__main__":
    sys.exit(main())
