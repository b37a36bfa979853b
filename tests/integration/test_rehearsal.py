"""A production rehearsal on one machine, without Docker: what docker/ ships, run as separate
Unix users in separate namespaces, end to end, with a web server and a render worker killed
mid-way.

The services of docker/compose.yml, each its own process:

* ``db``, ``redis``, ``cache``: a throwaway PostgreSQL (role and database as env.example
  names them) and two throwaway Redis servers (``tests/stack.py``);
* ``migrate``: compose's command (migrations, then collectstatic) as the app user;
* ``web`` twice: the Dockerfile's CMD (gunicorn) as the app user, on two ports, as two
  replicas behind nginx;
* ``worker`` (default queue) as the app user, ``beat`` as a user of its own: compose's commands;
* ``render-worker``: compose's command as a user of its own, in network, mount, PID and UTS
  namespaces of its own (``ip netns`` and ``unshare``). Its file system holds only what its
  container would: the system's /usr (read-only), a minimal /etc, the code and the Python
  interpreter (read-only), the kernels built ahead as the Dockerfile's ``kernels`` stage
  builds them (read-only, and no compiler: ``CC`` names none) and the media volume. It reaches
  PostgreSQL and Redis over a veth pair, and nothing of the web host;
* ``nginx``: Debian's, its workers running as a user of their own in the app group (compose
  adds the nginx user to group 10001), serving docker/nginx.conf.

docker/nginx.conf is served as shipped except for these substitutions (``nginx_site``; each
must match exactly once, so a changed file fails here instead of being tested half):
``${NGINX_MAX_BODY_SIZE}`` -> compose's default (the image's envsubst does this);
``listen 80`` / ``listen [::]:80`` -> one free port on 127.0.0.1; ``alias /srv/static/`` and
``alias /srv/media/`` -> the rehearsal's folders; ``http://web:8000`` (Docker's DNS) -> an
upstream group of the two web servers. The processes' settings are docker/env.example,
compose's ``x-app`` environment and the Dockerfile's ENV, with the throwaway servers' hosts
and ports, the rehearsal's folders in place of the image's (the render worker keeps the
image's: its namespace has them), ``SECURE=0`` (plain HTTP, as docs/deployment.md says to try
the stack), two gunicorn processes per server (two cores) and a reaper that runs every 2 s
and takes a job as lost after 5 s (so that a killed worker's job comes back in seconds).

The users share the group ``rehearsal-app`` (the image's processes share uid 10001); the media
volume is group-writable for that reason. ``docs/deployment.md`` lists the commands.

The same deployment on object storage (the ``rehearsal`` fixture with the parameter ``"s3"``):
moto's S3 server, a process of its own, listens on 127.0.0.1 and on the host side of each
worker network, as PostgreSQL and Redis do; every process runs with ``MEDIA_STORAGE=s3``, the
bucket and the endpoint it reaches (``SERVE_MEDIA_WITH=django``: the settings refuse ``nginx``
with a bucket, so the app streams stimuli through nginx's proxied location, and nginx.conf
needs no variant: its internal ``/protected-media/`` location goes unused). A render worker's
``/var/lib/app/media`` is then a scratch folder of its own instead of the media volume.
"""

from __future__ import annotations

import grp
import importlib.util
import io
import json
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil  # type: ignore[import-untyped]
import pytest
import yaml

from tests.conftest import require, wait_for
from tests.faults.conftest import Client, Reply, trial_data
from tests.paths import REPO, fixture_path
from tests.stack import PostgresServer, RedisServer, _wait_port, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCKER = REPO / "docker"
GROUP = "rehearsal-app"
#: role -> Unix user; nginx's user is also a member of GROUP.
USERS = {"app": "rehearsal-app", "render": "rehearsal-render", "beat": "rehearsal-beat", "nginx": "rehearsal-nginx"}
CHECKPOINT = ("models", "coreaudioml", "ht1_lstm32.json")
GUITAR = ("audio", "guitar_example_44k.wav")
#: Excerpt lengths (s). The first is long enough that the render worker, on PyTorch's kernels,
#: is still rendering it when it is killed; the others keep the rest of the run short.
EXCERPT_SECONDS = (12.0, 1.0, 1.0)
PASSWORD = "rehearsal-Password-42"
#: The participant's ratings by condition kind (less the trial's index).
SCORES = {"hidden_reference": 100, "model": 70, "anchor70": 45, "anchor35": 20}
#: The experiment's settings: no training, and the player's rules relaxed so that a client
#: without a browser can rate (the saving path is unchanged).
CONFIG = {
    "training": False,
    "level_setting": True,
    "rules": {
        "must_play_all": False,
        "only_playing_slider_moves": False,
        "require_one_100": False,
        "min_trial_seconds": 0,
    },
}
#: The object storage variant: the bucket, moto's keys, and the shortest run (two 1 s excerpts,
#: the smallest model among the fixtures, no kills).
BUCKET = "listening-media"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_S3_REGION_NAME": "us-east-1"}
S3_CHECKPOINT = ("models", "nam", "lstm_h3.nam")
S3_EXCERPT_SECONDS = (1.0, 1.0)

#: Runs as root inside fresh mount, PID and UTS namespaces (within the worker's network
#: namespace): builds a root file system holding only what a render worker's container
#: holds, then runs the command in it as the given user, with no capabilities left.
SANDBOX_SH = (
    r"""#!/bin/sh
set -eu
root=$1 user=$2 host=$3 code=$4 python=$5 media=$6 kernels=$7 etc=$8
shift 8
mount --make-rprivate /
mount -t tmpfs -o mode=0755 rehearsal-root "$root"
for d in bin lib lib32 lib64 libx32 sbin; do
  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$root/$d"; fi
done
ro_bind() { mkdir -p "$2"; mount --rbind "$1" "$2"; mount -o remount,bind,ro "$2"; }
ro_bind /usr "$root/usr"
ro_bind "$etc" "$root/etc"
ro_bind "$code" "$root$code"
if [ -d "$code/var" ]; then mount -t tmpfs -o mode=0755 tmpfs "$root$code/var"; fi
ro_bind "$python" "$root$python"
ro_bind "$kernels" "$root/opt/modelrunner/kernels"
mkdir -p "$root/var/lib/app/media" "$root/proc" "$root/sys" "$root/tmp" "$root/dev/shm"
mount --bind "$media" "$root/var/lib/app/media"
chown "$user" "$root/var/lib/app"
mount -t proc proc "$root/proc"
ro_bind /sys "$root/sys"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
for n in null zero full random urandom; do
  touch "$root/dev/$n"; mount --bind "/dev/$n" "$root/dev/$n"
done
hostname "$host"
exec chroot "$root" /usr/bin/setpriv --reuid="$user" --regid="""
    + GROUP
    + r""" --init-groups \
  --no-new-privs --inh-caps=-all --bounding-set=-all -- /usr/bin/env --chdir="$code" "$@"
"""
)

#: Runs as root in a fresh mount namespace: where the interpreter lies in a folder other
#: users cannot enter (a root-only $HOME), shows them that folder holding only the
#: interpreter; then runs the command as the given user.
HOST_SH = (
    r"""#!/bin/sh
set -eu
user=$1 python=$2 hidden=$3 stage=$4
shift 4
mount --make-rprivate /
if [ -n "$hidden" ]; then
  mount --bind "$python" "$stage"
  mount -t tmpfs -o mode=0755 rehearsal-hidden "$hidden"
  mkdir -p "$python"
  mount --move "$stage" "$python"
fi
exec setpriv --reuid="$user" --regid="""
    + GROUP
    + r""" --init-groups --no-new-privs -- "$@"
"""
)

#: Run inside the render worker's sandbox: what it sees of the machine.
PROBE = r"""
import json, os, socket, sys
def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False
from modelrunner import native
paths = json.loads(sys.argv[1])
print(json.dumps({
    "uid": os.getuid(), "groups": sorted(os.getgroups()), "hostname": socket.gethostname(),
    "exists": {p: os.path.exists(p) for p in paths["absent"] + paths["present"]},
    "hidden": sorted(os.listdir(paths["hidden"])) if paths["hidden"] else [],
    "media_writable": os.access("/var/lib/app/media", os.W_OK),
    "code_writable": os.access(paths["code"], os.W_OK),
    "reach": {f"{h}:{p}": reach(h, p) for h, p in paths["reach"]},
    "kernels": native.reason(),
}))
"""

#: moto's S3 server (``python -m moto.server`` binds one address) on a port and several
#: addresses at once, one store behind them all: argv is the port, then the addresses.
MOTO = r"""
import sys, threading
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
app = DomainDispatcherApplication(create_backend_app)
port, hosts = int(sys.argv[1]), sys.argv[2:]
servers = [make_server(h, port, app, threaded=True, request_handler=MotoRequestHandler) for h in hosts]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
"""


# ----------------------------------------------------------------------------- configuration


def _dockerfile_lines() -> list[str]:
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def dockerfile_env() -> dict[str, str]:
    """The runtime stage's ENV (PATH aside)."""
    lines = _dockerfile_lines()
    runtime = lines[max(i for i, line in enumerate(lines) if line.upper().startswith("FROM ")) :]
    env: dict[str, str] = {}
    for line in runtime:
        if line.upper().startswith("ENV "):
            env.update(tuple(item.split("=", 1)) for item in line.split()[1:] if "=" in item)  # type: ignore[misc]
    env.pop("PATH", None)
    return env


def dockerfile_cmd() -> list[str]:
    """The image's CMD: the web server."""
    (cmd,) = [line[4:] for line in _dockerfile_lines() if line.upper().startswith("CMD ")]
    argv: list[str] = json.loads(cmd)
    return argv


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yml").read_text())
    return loaded


def env_example() -> dict[str, str]:
    """The lines of env.example that have a value."""
    out = {}
    for line in (DOCKER / "env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            if value:
                out[name] = value
    return out


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` and ``$$``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op == ":-":
            return values.get(name) or arg
        if name not in values or (op == ":?" and not values[name]):
            raise KeyError(f"compose needs {name}: {arg}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, text).replace("$$", "$")


def nginx_site(*, port: int, static: Path, media: Path, upstream: str) -> str:
    """docker/nginx.conf with the rehearsal's port, folders and upstream (see the module's doc)."""
    text = (DOCKER / "nginx.conf").read_text()
    nginx_env = compose()["services"]["nginx"]["environment"]
    replacements = [
        ("listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;"),
        ("listen [::]:80 default_server;", ""),
        ("alias /srv/static/;", f"alias {static}/;"),
        ("alias /srv/media/;", f"alias {media}/;"),
        ("set $upstream http://web:8000;", f"set $upstream http://{upstream};"),
    ]
    for old, new in replacements:
        assert text.count(old) == 1, f"docker/nginx.conf changed: {old!r} is expected exactly once"
        text = text.replace(old, new)
    # The image's envsubst: ${NGINX_...} variables of the nginx service's environment.
    values = {name: interpolate(str(value), {}) for name, value in nginx_env.items()}
    return re.sub(r"\$\{(NGINX_\w+)\}", lambda m: values[m.group(1)], text)


def nginx_main(*, folder: Path, site: Path, upstream: str, webs: list[int]) -> str:
    """The server's main file, as the nginx image's own: one worker, the site included."""
    servers = "".join(f"        server 127.0.0.1:{port};\n" for port in webs)
    temp = "".join(
        f"    {kind}_temp_path {folder / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""user {USERS["nginx"]};
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format rehearsal '$request_method $uri $status $upstream_addr $upstream_status';
    access_log {folder / "access.log"} rehearsal;
    sendfile on;
    keepalive_timeout 65;
{temp}    upstream {upstream} {{
{servers}    }}
    include {site};
}}
"""


# ----------------------------------------------------------------------------- processes


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ensure_users() -> None:
    """The rehearsal's users and their group (created once per machine, kept)."""
    if sh("getent", "group", GROUP, check=False).returncode != 0:
        sh("groupadd", "--system", GROUP, check=False)
    for role, name in USERS.items():
        if sh("getent", "passwd", name, check=False).returncode != 0:
            group = ["--user-group", "--groups", GROUP] if role == "nginx" else ["--gid", GROUP]
            sh("useradd", "--system", *group, "--no-create-home", "--home-dir", "/nonexistent",
               "--shell", "/usr/sbin/nologin", name, check=False)  # fmt: skip
    sh("usermod", "--append", "--groups", GROUP, USERS["nginx"])
    for name in USERS.values():
        sh("getent", "passwd", name)


def hidden_ancestor(path: Path) -> Path | None:
    """The outermost folder above ``path`` that other users cannot enter (None: all can)."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


@dataclass
class Process:
    """A service process, its log in a file; stopped with its whole process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 3000) -> str:
        return f"--- {self.name} ---\n{self.text()[-n:]}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def descendants(self) -> list[psutil.Process]:
        try:
            return list(psutil.Process(self.proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []


@dataclass
class Netns:
    """A network namespace joined to this host by a veth pair (host side .1, worker side .2 of a /30)."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str

    def create(self) -> Netns:
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.name)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        sh("ip", "-n", self.name, "link", "set", self.ns_if, "up")
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        return self

    def delete(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)
        sh("ip", "link", "del", self.host_if, check=False)


def free_subnets(count: int) -> list[tuple[str, str]]:
    """``count`` unused /30 pairs (host, worker) in 10.213.0.0/16."""
    used = sh("ip", "-4", "-o", "addr").stdout
    for _ in range(100):
        third = random.randrange(256)
        if f"10.213.{third}." not in used:
            return [(f"10.213.{third}.{4 * i + 1}", f"10.213.{third}.{4 * i + 2}") for i in range(count)]
    raise AssertionError("no free 10.213.x.0/24 for the workers' networks")


@dataclass
class Rehearsal:
    """The running deployment: its folders, servers, processes and settings."""

    var: Path
    pg: PostgresServer
    redis: RedisServer
    cache: RedisServer
    nets: list[Netns]
    base_env: dict[str, str]
    python: Path
    hidden: Path | None
    processes: list[Process] = field(default_factory=list)
    url: str = ""
    webs: list[tuple[Process, int]] = field(default_factory=list)
    #: moto's port with MEDIA_STORAGE=s3 (the object storage variant); None: the media volume.
    s3_port: int | None = None

    @property
    def media(self) -> Path:
        return self.var / "media"

    def scratch(self, name: str) -> Path:
        """A render worker's own /var/lib/app/media with object storage (empty, its user's)."""
        folder = self.var / "scratch" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, USERS["render"], GROUP)
        return folder

    @property
    def kernels(self) -> Path:
        return self.var / "kernels"

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.processes)

    # -- settings per role

    def host_env(self, role: str) -> dict[str, str]:
        """Settings of a process on the web host: the image's, with this host's folders."""
        home = self.var / role
        home.mkdir(exist_ok=True)
        shutil.chown(home, USERS["beat" if role == "beat" else "app"], GROUP)
        return {
            **self.base_env,
            "VAR_DIR": str(home),
            "HOME": str(home),
            "MEDIA_ROOT": str(self.media),
            "STATIC_ROOT": str(self.var / "static"),
            "MODELRUNNER_KERNELS_DIR": str(self.kernels),
            "MODELRUNNER_CACHE_DIR": str(home / "modelrunner"),
        }

    def sandbox_env(self, net: Netns) -> dict[str, str]:
        """Settings of a render worker: the image's unchanged (its namespace has those folders),
        the servers reached over its veth pair, and no compiler (the runtime image has none)."""
        env = {**self.base_env, "HOME": "/var/lib/app", "CC": "/nonexistent/cc"}
        servers = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")
        for key in (*servers, "AWS_S3_ENDPOINT_URL") if self.s3_port else servers:
            env[key] = env[key].replace("@127.0.0.1:", f"@{net.host_ip}:").replace("//127.0.0.1:", f"//{net.host_ip}:")
        return env

    # -- starting processes

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        log = self.var / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = Process(name, proc, log)
        self.processes.append(process)
        return process

    def on_host(self, name: str, role: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        stage = self.var / "stage" / name
        stage.mkdir(parents=True, exist_ok=True)
        script = [str(self.var / "host.sh"), USERS[role], str(self.python), str(self.hidden or ""), str(stage)]
        return self._spawn(name, ["unshare", "--mount", "--", "sh", *script, *argv], env or self.host_env(role))

    def in_sandbox(self, name: str, net: Netns, argv: list[str], **env: str) -> Process:
        root = self.var / "roots" / name
        root.mkdir(parents=True, exist_ok=True)
        etc = self.var / "etc"
        script = [
            str(self.var / "sandbox.sh"),
            str(root),
            USERS["render"],
            name,
            str(REPO),
            str(self.python),
            str(self.media if self.s3_port is None else self.scratch(name)),
            str(self.kernels),
            str(etc),
        ]
        command = ["ip", "netns", "exec", net.name, "unshare", "--mount", "--uts", "--pid", "--fork", "--", "sh"]
        return self._spawn(name, [*command, *script, *argv], {**self.sandbox_env(net), **env})

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``manage.py`` as the app user, as `docker compose exec web python manage.py` runs it."""
        process = self.on_host(f"manage-{uuid.uuid4().hex[:6]}", "app", [sys.executable, "manage.py", *args])
        process.proc.wait(300)
        return subprocess.CompletedProcess(args, process.proc.returncode, process.text(), "")

    def celery(self, name: str, service: str, **env: str) -> Process:
        """A Celery process with compose's command for ``service``."""
        argv = [str(part) for part in compose()["services"][service]["command"]]
        assert argv[0] == "celery", argv
        argv = [sys.executable, "-m", "celery", *argv[1:]]
        if service == "render-worker":
            process = self.in_sandbox(name, self.nets[int(env.pop("NET", "0"))], argv, **env)
        else:
            process = self.on_host(name, "beat" if service == "beat" else "app", argv, {**self.host_env(name), **env})
        if service != "beat":
            deadline = time.monotonic() + 180
            while " ready." not in process.text() and process.proc.poll() is None:
                assert time.monotonic() < deadline, f"{name} not ready after 180 s\n{process.tail()}"
                time.sleep(0.2)
            assert process.proc.poll() is None, process.tail()
        return process

    def web(self, name: str) -> int:
        """A web server: the image's CMD (gunicorn) on a free port of 127.0.0.1."""
        port = free_port()
        argv = dockerfile_cmd()
        assert argv[0] == "gunicorn" and argv[argv.index("--bind") + 1] == "0.0.0.0:8000", argv
        argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
        process = self.on_host(name, "app", [sys.executable, "-m", "gunicorn", *argv[1:]], self.host_env(name))
        _wait_port(port, 120, process.proc)
        self.webs.append((process, port))
        return port

    # -- reading the database

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.pg.query(query, params, dbname=self.base_env["POSTGRES_DB"])

    def jobs(self, experiment: int) -> list[dict[str, Any]]:
        keys = ("id", "kind", "status", "attempts", "error", "excerpt_id", "progress")
        rows = self.sql(
            f"SELECT {', '.join(keys)} FROM webmushra_renderjob WHERE experiment_id = %s ORDER BY id", (experiment,)
        )
        return [dict(zip(keys, row)) for row in rows]


# ----------------------------------------------------------------------------- HTTP


@dataclass
class Answer(Reply):
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Browser(Client):
    """The faults' HTTP client, keeping the answers' headers, with multipart and JSON API calls."""

    def _send(self, request: urllib.request.Request, timeout: float) -> Answer:
        try:
            with self.opener.open(request, timeout=timeout) as reply:
                return Answer(reply.status, reply.read(), reply.url, list(reply.headers.items()))
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read(), exc.url, list(exc.headers.items()))
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            return Answer(None, str(exc).encode(), request.full_url)

    def api(self, method: str, path: str, data: Any = None, files: dict[str, Path] | None = None) -> Answer:
        headers = {"X-CSRFToken": self.cookie("csrftoken"), "Referer": self.base_url + path}
        body = None
        if files is not None:
            boundary = uuid.uuid4().hex
            parts = io.BytesIO()
            for name, value in (data or {}).items():
                parts.write(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                )
            for name, path_ in files.items():
                parts.write(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path_.name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n".encode()
                )
                parts.write(path_.read_bytes() + b"\r\n")
            parts.write(f"--{boundary}--\r\n".encode())
            body, headers["Content-Type"] = parts.getvalue(), f"multipart/form-data; boundary={boundary}"
        elif data is not None:
            body, headers["Content-Type"] = json.dumps(data).encode(), "application/json"
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers)
        return self._send(request, 60)

    def get(self, path: str, timeout: float = 30, headers: dict[str, str] | None = None) -> Answer:
        return self._send(urllib.request.Request(self.base_url + path, headers=headers or {}), timeout)


def excerpt_files(folder: Path, lengths: tuple[float, ...] = EXCERPT_SECONDS) -> list[tuple[Path, Path]]:
    """Slices of the guitar fixture and the stand-in device's recordings of them."""
    import numpy as np
    import soundfile as sf

    from tests.conftest import device

    audio, sr = sf.read(fixture_path(*GUITAR), dtype="float32", always_2d=True)
    out = []
    for i, seconds in enumerate(lengths):
        n = int(seconds * sr)
        dry = np.resize(audio[i * sr :, :1], (n, 1))
        dry_path, ref_path = folder / f"take{i}_dry.wav", folder / f"take{i}_device.wav"
        sf.write(dry_path, dry, sr, subtype="FLOAT")
        sf.write(ref_path, device(dry), sr, subtype="FLOAT")
        out.append((dry_path, ref_path))
    return out


# ----------------------------------------------------------------------------- the deployment


def _requirements() -> str:
    for tool in ("nginx", "unshare", "ip", "setpriv", "chroot", "redis-server"):
        require(shutil.which(tool) is not None, f"{tool} is not installed (make system-deps installs it)")
    require(
        any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb") is not None,
        "PostgreSQL is not installed (make system-deps)",
    )
    require(os.geteuid() == 0, "the rehearsal runs services as other users in namespaces of their own: it needs root")
    require(hidden_ancestor(REPO) is None, f"other users cannot enter {hidden_ancestor(REPO)}, above the code")
    probe = subprocess.run(["unshare", "--mount", "--net", "--pid", "--uts", "--fork", "true"], capture_output=True)
    require(probe.returncode == 0, f"this machine refuses new namespaces: {probe.stderr.decode().strip()}")
    fixture_path(*CHECKPOINT)
    fixture_path(*GUITAR)
    return str(shutil.which("nginx"))


@pytest.fixture(scope="module")
def rehearsal(request: pytest.FixtureRequest) -> Iterator[Rehearsal]:
    """The deployment; parametrised with ``"s3"`` (indirect), its media in moto's S3 server."""
    storage = getattr(request, "param", "filesystem")
    assert storage in ("filesystem", "s3"), storage
    nginx = _requirements()
    if storage == "s3":
        require(importlib.util.find_spec("moto") is not None, "moto[server] is not installed (requirements-test.txt)")
    ensure_users()
    started = time.monotonic()
    var = Path(tempfile.mkdtemp(prefix="rehearsal-"))
    var.chmod(0o755)
    for sub in ("logs", "stage", "roots", "etc", "nginx", "material"):
        (var / sub).mkdir()
    (var / "sandbox.sh").write_text(SANDBOX_SH)
    (var / "host.sh").write_text(HOST_SH)
    # The sandbox's /etc: the users and the dynamic linker's cache, nothing else of this host's.
    for name in ("passwd", "group", "nsswitch.conf", "ld.so.cache"):
        shutil.copy(f"/etc/{name}", var / "etc" / name)
    (var / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    # The media volume: the app user's, writable by the group every service runs in.
    (var / "media").mkdir()
    shutil.chown(var / "media", USERS["app"], GROUP)
    (var / "media").chmod(0o2775)
    (var / "static").mkdir()
    shutil.chown(var / "static", USERS["app"], GROUP)
    tag = f"{os.getpid() % 100000}{storage[0]}"
    nets = [
        Netns(f"rehearsal-{tag}-{i}", f"rh{tag}h{i}", f"rh{tag}w{i}", host_ip, ns_ip)
        for i, (host_ip, ns_ip) in enumerate(free_subnets(2))
    ]
    pg = PostgresServer(listen=("127.0.0.1", *(n.host_ip for n in nets)))
    redis = RedisServer(bind=("127.0.0.1", *(n.host_ip for n in nets)))
    cache = RedisServer(bind=("127.0.0.1", *(n.host_ip for n in nets)))
    python = Path(sys.base_prefix).resolve()
    r = Rehearsal(var, pg, redis, cache, nets, {}, python, hidden_ancestor(python))
    try:
        for net in nets:
            net.create()
        pg.start()
        redis.start()
        cache.start()
        if storage == "s3":
            r.s3_port = free_port()
            moto = r._spawn(
                "s3",
                [sys.executable, "-c", MOTO, str(r.s3_port), "127.0.0.1", *(n.host_ip for n in nets)],
                {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"},
            )
            _wait_port(r.s3_port, 60, moto.proc)
            bucket(r).create_bucket(Bucket=BUCKET)
        example = env_example()
        values = {
            **example,
            "SECRET_KEY": "rehearsal-" + uuid.uuid4().hex * 2,
            "POSTGRES_PASSWORD": "rehearsal",
            "POSTGRES_HOST": "127.0.0.1",
            "REDIS_HOST": "127.0.0.1",
            "CACHE_HOST": "127.0.0.1",
            "ALLOWED_HOSTS": "127.0.0.1",
        }
        x_app = compose()["x-app"]["environment"]
        shipped = {name: interpolate(str(value), values) for name, value in x_app.items()}
        for name, old, new in (
            ("DATABASE_URL", ":5432/", f":{pg.port}/"),
            ("CELERY_BROKER_URL", ":6379/", f":{redis.port}/"),
            ("CACHE_URL", ":6379/", f":{cache.port}/"),
        ):
            assert shipped[name].count(old) == 1, (name, shipped[name])
            shipped[name] = shipped[name].replace(old, new)
        port = free_port()
        r.url = f"http://127.0.0.1:{port}"
        r.base_env = {
            "PATH": f"{REPO / '.venv' / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            **example,
            **dockerfile_env(),
            **shipped,
            "SECURE": "0",
            "SITE_URL": r.url,
            "CSRF_TRUSTED_ORIGINS": r.url,
            "WEB_CONCURRENCY": "2",
            "RENDER_STALE_SECONDS": "5",
            "REAPER_INTERVAL_SECONDS": "2",
            "OMP_NUM_THREADS": "1",
        }
        assert r.base_env["SERVE_MEDIA_WITH"] == "nginx" and r.base_env["BEHIND_PROXY"] == "1"
        if storage == "s3":  # docs/deployment.md, "Object storage"; the settings refuse nginx with it
            r.base_env |= {
                **S3_ENV,
                "MEDIA_STORAGE": "s3",
                "AWS_STORAGE_BUCKET_NAME": BUCKET,
                "AWS_S3_ENDPOINT_URL": f"http://127.0.0.1:{r.s3_port}",
                "AWS_S3_ADDRESSING_STYLE": "path",
                "SERVE_MEDIA_WITH": "django",
            }
        # The database as env.example names it (compose's db service creates it so).
        user, db = r.base_env["POSTGRES_USER"], r.base_env["POSTGRES_DB"]
        pg.query(f'CREATE ROLE "{user}" LOGIN')
        pg.query(f'CREATE DATABASE "{db}" OWNER "{user}"')
        # The kernels stage of the Dockerfile.
        built = subprocess.run(
            [sys.executable, "-m", "modelrunner", "build-kernels", "--portable", "--into", str(r.kernels)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert built.returncode == 0, built.stderr
        # migrate: compose's one-off command.
        migrate = compose()["services"]["migrate"]["command"]
        assert migrate[:2] == ["sh", "-c"], migrate
        step = r.on_host("migrate", "app", ["sh", "-c", migrate[2].replace("python ", f"{sys.executable} ")])
        assert step.proc.wait(600) == 0, step.tail()
        # Two web replicas, the workers, beat, and nginx in front.
        web_ports = [r.web(f"web-{i}") for i in (1, 2)]
        (var / "nginx" / "site.conf").write_text(
            nginx_site(port=port, static=var / "static", media=r.media, upstream="rehearsal_web")
        )
        (var / "nginx" / "nginx.conf").write_text(
            nginx_main(folder=var / "nginx", site=var / "nginx" / "site.conf", upstream="rehearsal_web", webs=web_ports)
        )
        conf = ["-c", str(var / "nginx" / "nginx.conf"), "-p", str(var / "nginx")]
        checked = subprocess.run([nginx, "-t", *conf], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        r._spawn("nginx", [nginx, *conf, "-g", "daemon off;"], {"PATH": "/usr/sbin:/usr/bin"})
        _wait_port(port, 30)
        r.celery("worker", "worker")
        r.celery("beat", "beat")
        print(f"rehearsal: deployment up in {time.monotonic() - started:.1f} s")
        yield r
    finally:
        for process in reversed(r.processes):
            process.stop()
        for net in nets:
            net.delete()
        for server in (cache, redis):
            server.close()
        pg.close()
        shutil.rmtree(var, ignore_errors=True)


# ----------------------------------------------------------------------------- the rehearsal


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def namespace(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def check_isolation(r: Rehearsal, render: Process, nginx_port: int) -> dict[str, Any]:
    """Every service runs as its user; the render worker in namespaces of its own, seeing only
    the code, the interpreter, the kernels and the media volume, reaching only the servers."""
    workers = [p for p in render.descendants() if "celery" in " ".join(p.cmdline())]
    assert workers, render.tail()
    me = os.getpid()
    for p in workers:
        assert p.uids().real == uid(USERS["render"]) and p.uids().effective == uid(USERS["render"])
        for kind in ("mnt", "net", "pid", "uts"):
            assert namespace(p.pid, kind) != namespace(me, kind), kind
    for process, _ in r.webs:
        assert process.proc.pid and psutil.Process(process.proc.pid).uids().real == uid(USERS["app"])
        assert namespace(process.proc.pid, "net") == namespace(me, "net")
    beat = next(p for p in r.processes if p.name == "beat")
    assert psutil.Process(beat.proc.pid).uids().real == uid(USERS["beat"])
    nginx = next(p for p in r.processes if p.name == "nginx")
    nginx_workers = nginx.descendants()
    assert nginx_workers and all(w.uids().real == uid(USERS["nginx"]) for w in nginx_workers)

    net = r.nets[0]
    absent = [
        p
        for p in (str(r.var), str(r.pg.dir), r.redis.dir, "/etc/shadow", "/etc/nginx", str(REPO.parent / "shared"))
        if os.path.exists(p)
    ]
    assert len(absent) >= 4
    if r.s3_port is not None:  # the web host's media folder, even by its own name
        absent.append(str(r.media))
    ports = {"web": r.webs[0][1], "nginx": nginx_port}
    present = [str(REPO / "manage.py"), "/var/lib/app/media", "/opt/modelrunner/kernels", str(r.python)]
    paths: dict[str, Any] = {
        "absent": absent,
        "present": present,
        "code": str(REPO),
        "hidden": str(r.hidden or ""),
        "reach": [
            (net.host_ip, r.pg.port),
            (net.host_ip, r.redis.port),
            (net.host_ip, r.cache.port),
            ("127.0.0.1", ports["web"]),
            ("127.0.0.1", ports["nginx"]),
            (net.host_ip, ports["web"]),
            (net.host_ip, ports["nginx"]),
            *([(net.host_ip, r.s3_port)] if r.s3_port is not None else []),
        ],
    }
    probe = r.in_sandbox("probe", net, [sys.executable, "-c", PROBE, json.dumps(paths)])
    assert probe.proc.wait(180) == 0, probe.tail()
    seen = json.loads(probe.text().strip().splitlines()[-1])
    assert seen["uid"] == uid(USERS["render"]) and grp.getgrnam(GROUP).gr_gid in seen["groups"], seen
    assert seen["hostname"] == "probe"
    expected = {**{p: False for p in absent}, **{p: True for p in present}}
    assert seen["exists"] == expected, seen
    if r.hidden is not None:  # the folder that hid the interpreter shows it alone
        assert seen["hidden"] == [r.python.relative_to(r.hidden).parts[0]], seen
    assert seen["media_writable"] and not seen["code_writable"], seen
    assert seen["reach"] == {
        f"{net.host_ip}:{r.pg.port}": True,
        f"{net.host_ip}:{r.redis.port}": True,
        f"{net.host_ip}:{r.cache.port}": True,
        f"127.0.0.1:{ports['web']}": False,
        f"127.0.0.1:{ports['nginx']}": False,
        f"{net.host_ip}:{ports['web']}": False,
        f"{net.host_ip}:{ports['nginx']}": False,
        **({f"{net.host_ip}:{r.s3_port}": True} if r.s3_port is not None else {}),
    }, seen
    # The image's kernels, loaded without a compiler.
    assert seen["kernels"].startswith("compiled kernels in use (kernels-x86-64-v") or seen["kernels"].startswith(
        "compiled kernels in use (kernels-baseline-"
    ), seen["kernels"]
    return dict(seen)


def bucket(r: Rehearsal) -> Any:
    """A boto3 client of moto's S3 server, from the web host."""
    import boto3  # type: ignore[import-untyped]

    keys = {"aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"]}
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{r.s3_port}", region_name="us-east-1", **keys)


def objects(r: Rehearsal) -> dict[str, bytes]:
    """Every object in the bucket, by key."""
    s3 = bucket(r)
    listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def upstream_connections(port: int) -> int:
    """nginx's open connections to a local web server's port (nginx keeps none between requests)."""
    return sum(
        1
        for c in psutil.net_connections("tcp4")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def save_body(data: dict[str, Any], ratings: dict[str, int]) -> dict[str, Any]:
    return {"idempotency_key": data["idempotency_key"], "ratings": ratings, "telemetry": {"time_on_page_ms": 900}}


def sign_in(r: Rehearsal) -> Browser:
    """A researcher, invited on the command line, sets a password on the link and signs in."""
    invited = r.manage("create_researcher", "ada", "--email", "ada@lab.example")
    assert invited.returncode == 0, invited.stdout
    link = invited.stdout.strip().splitlines()[-1]
    assert link.startswith(f"{r.url}/"), link
    researcher = Browser(r.url)
    form = researcher.get(urlsplit(link).path)
    assert form.status == 200 and "new_password1" in form.body.decode(), (form.status, form.url, r.logs())
    reply = researcher.post_form(urlsplit(form.url).path, {"new_password1": PASSWORD, "new_password2": PASSWORD})
    assert reply.status == 200, (reply.status, reply.url)
    reply = researcher.post_form("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert reply.status == 200 and researcher.cookie("sessionid"), (reply.status, reply.url)
    return researcher


def build_experiment(
    researcher: Browser, folder: Path, lengths: tuple[float, ...], checkpoint: tuple[str, ...], label: str
) -> int:
    """The experiment over the API with the session: excerpts, a checkpoint, a condition, render."""
    created = researcher.api(
        "POST", "/api/experiments/", {"title": "Rehearsal", "sample_rate": 48000, "config": CONFIG}
    )
    assert created.status == 201, created.body[:500]
    pk: int = created.json()["id"]
    for i, (dry, ref) in enumerate(excerpt_files(folder, lengths)):
        up = researcher.api(
            "POST", f"/api/experiments/{pk}/excerpts/", {"name": f"Take {i + 1}"}, {"dry": dry, "reference": ref}
        )
        assert up.status == 201, up.body[:500]
    ckpt = researcher.api(
        "POST",
        f"/api/experiments/{pk}/checkpoints/",
        {"name": label.lower().replace(" ", "")},
        {"file": fixture_path(*checkpoint)},
    )
    assert ckpt.status == 201, ckpt.body[:500]
    cond = researcher.api(
        "POST", f"/api/experiments/{pk}/conditions/", {"checkpoint": ckpt.json()["id"], "label": label}
    )
    assert cond.status == 201, cond.body[:500]
    started = researcher.api("POST", f"/api/experiments/{pk}/render/")
    assert started.status == 202, started.body[:500]
    return pk


def test_the_shipped_configuration_builds_serves_rates_and_reports_through_kills(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    r = rehearsal
    laps: dict[str, float] = {}
    mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        laps[name] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()

    port = int(urlsplit(r.url).port or 80)
    # The first render worker renders through PyTorch's kernels, slow enough to be killed mid-render.
    render1 = r.celery("render-1", "render-worker", NET="0", MODELRUNNER_NATIVE="0")
    seen = check_isolation(r, render1, port)
    lap("render worker up, isolation checked")

    # A researcher, invited on the command line, sets a password on the link and signs in, and
    # builds the experiment over the API with the session: excerpts, a checkpoint, a condition, render.
    researcher = sign_in(r)
    pk = build_experiment(researcher, tmp_path, EXCERPT_SECONDS, CHECKPOINT, "LSTM 32")
    lap("experiment built over HTTP")

    # The render worker is killed while it works on the long excerpt (loading, rendering,
    # measuring or writing it: on a fast CPU the render itself can end before its first progress
    # report); beat's reaper requeues the job and a fresh render worker (in a namespace of its
    # own, on the image's kernels) does it.
    (long_excerpt,) = r.sql("SELECT min(id) FROM webmushra_excerpt WHERE experiment_id = %s", (pk,))[0]
    wait_for(
        lambda: any(
            j["kind"] == "model" and j["excerpt_id"] == long_excerpt and j["status"] == "running" for j in r.jobs(pk)
        ),
        timeout=180,
        interval=0.01,
        what="the render worker to be working on the long excerpt",
    )
    render1.kill()
    killed_at = time.time()
    killed = next(j for j in r.jobs(pk) if j["kind"] == "model" and j["excerpt_id"] == long_excerpt)
    assert killed["status"] == "running" and killed["attempts"] == 1, f"not running when killed: {killed}"
    lap("render worker killed mid-render")
    render2 = r.celery("render-2", "render-worker", NET="1")

    def ready() -> bool:
        status = researcher.api("GET", f"/api/experiments/{pk}/status/").json()
        failed = [j for j in r.jobs(pk) if j["status"] == "failed"]
        assert not failed, f"{failed}\n{r.logs()}"
        return bool(status["status"] == "ready")

    wait_for(ready, timeout=240, interval=0.5, what="the experiment to be rendered")
    jobs = r.jobs(pk)
    attempts = {j["id"]: j["attempts"] for j in jobs}
    assert attempts == {j["id"]: 2 if j["id"] == killed["id"] else 1 for j in jobs}, jobs
    assert "reap_stale_jobs" in next(p for p in r.processes if p.name == "worker").text()
    n_conditions = r.sql("SELECT count(*) FROM webmushra_condition WHERE experiment_id = %s", (pk,))[0][0]
    stimuli = r.sql("SELECT excerpt_id, file, size FROM webmushra_stimulus WHERE experiment_id = %s", (pk,))
    assert len(stimuli) == n_conditions * len(EXCERPT_SECONDS)
    for _, rel, size in stimuli:
        path = r.media / rel
        assert path.stat().st_size == size and path.stat().st_uid == uid(USERS["render"]), rel
    # A worker killed while it writes leaves its temp file, never served (no row names it; the
    # reaper removes such files once they are an hour old). Any other temp file is a leak.
    leftovers = list(r.media.rglob(".tmp-*"))
    assert len(leftovers) <= 1, f"temp files were left in the media volume: {leftovers}"
    assert all(p.stat().st_mtime <= killed_at for p in leftovers), f"written after the kill: {leftovers}"
    lap("rendered, killed job requeued and finished")

    opened = researcher.api("POST", f"/api/experiments/{pk}/open/")
    assert opened.status == 200, opened.body[:500]
    participant_url = opened.json()["participant_url"]
    assert participant_url.startswith(f"{r.url}/t/"), participant_url

    # A participant through nginx: every stimulus and reference 200 (whole) or 206 (one range),
    # never 403, the signals of a trial with equal headers and lengths, bytes as stored.
    on_disk = {(r.media / rel).read_bytes() for _, rel, _ in stimuli}
    participant = Browser(r.url)
    landing = urlsplit(participant_url).path
    assert participant.get(landing).status == 200
    reply = participant.post_form(landing, {})
    assert reply.status == 200 and "/consent/" in reply.url, (reply.status, reply.url)
    token = reply.url.rstrip("/").split("/")[-2]
    plan = r.sql("SELECT plan FROM webmushra_participant WHERE token = %s", (token,))[0][0]
    kind_of = dict(r.sql("SELECT id, kind FROM webmushra_condition WHERE experiment_id = %s", (pk,)))
    reply = participant.post_form(f"/p/{token}/consent/", {"agree": "yes"})
    assert reply.status == 200 and "/level/" in reply.url, (reply.status, reply.url)
    reply = participant.post_form(f"/p/{token}/level/", {"gain_db": "0"})
    assert reply.status == 200 and reply.url.endswith("/trial/1/"), (reply.status, reply.url)

    statuses: list[int | None] = []
    sent: dict[int, dict[str, int]] = {}
    killed_save: dict[str, Any] = {}

    for index in range(len(EXCERPT_SECONDS)):
        data = trial_data(participant.get(f"/p/{token}/trial/{index + 1}/"))
        signal_answers = []
        for signal_ in data["signals"]:
            whole = participant.get(signal_["url"])
            part = participant.get(signal_["url"], headers={"Range": "bytes=0-99"})
            several = participant.get(signal_["url"], headers={"Range": "bytes=0-9,20-29"})
            statuses += [whole.status, part.status, several.status]
            assert (whole.status, part.status, several.status) == (200, 206, 200), (
                whole.status,
                part.status,
                several.status,
                r.logs(),
            )
            assert whole.body in on_disk and part.body == whole.body[:100] and several.body == whole.body
            assert part.header("Content-Range") == [f"bytes 0-99/{len(whole.body)}"]
            assert not whole.header("ETag") and not whole.header("Last-Modified")
            assert whole.header("X-Content-Type-Options") == ["nosniff"]
            assert whole.header("Cache-Control")[0].startswith("private, max-age=")
            assert whole.header("Content-Type") == ["audio/wav"]
            signal_answers.append(whole)
        reference = participant.get(data["reference"]["url"])
        statuses.append(reference.status)
        assert reference.status == 200 and reference.body in on_disk
        bodies = [a.body for a in signal_answers]
        assert len(set(bodies)) == len(bodies) and len({len(b) for b in [*bodies, reference.body]}) == 1
        blind = [sorted((k, v) for k, v in a.headers if k.lower() != "date") for a in signal_answers]
        assert all(h == blind[0] for h in blind), blind

        # A listener who hears the conditions apart: the post-screening of the report keeps them.
        conditions = plan[index]["conditions"]
        sent[index] = {chr(ord("a") + k): SCORES[kind_of[cid]] - index for k, cid in enumerate(conditions)}
        assert set(sent[index]) == {sig["key"] for sig in data["signals"]}
        body = save_body(data, sent[index])
        if killed_save or index == 0:
            reply = participant.post_json(data["save_url"], body)
            assert reply.status == 200 and reply.json()["replayed"] is False, (reply.status, reply.body[:300])
            continue
        # One web server is killed while it holds this save. Both are stopped before it is sent,
        # so it waits wherever nginx passes it (which one is not foreseeable: a failed or slow
        # answer shifts nginx's round robin); the one nginx holds a connection to is killed, the
        # other resumed.
        for web, _ in r.webs:
            os.killpg(web.proc.pid, signal.SIGSTOP)
        before = {port: upstream_connections(port) for _, port in r.webs}
        answer: list[Reply] = []
        saving = threading.Thread(
            target=lambda url=data["save_url"], payload=body, out=answer: out.append(
                participant.post_json(url, payload)
            )
        )
        saving.start()
        held = wait_for(
            lambda before=before: [(w, p) for w, p in r.webs if upstream_connections(p) > before[p]],
            timeout=10,
            interval=0.02,
            what="nginx to pass the save to a web server",
        )
        assert len(held) == 1 and saving.is_alive(), (
            f"the save did not wait on one stopped web server: {held}, {answer}\n"
            + "\n".join((r.var / "nginx" / "access.log").read_text().splitlines()[-8:])
        )
        holder, survivor = held[0][0], next(w for w, _ in r.webs if w is not held[0][0])
        holder.kill()
        os.killpg(survivor.proc.pid, signal.SIGCONT)
        saving.join(30)
        # The save was sent and its server died: nginx does not send a POST twice; it answers 502
        # and the page sends it again.
        assert answer and answer[0].status == 502, answer
        retried = participant.post_json(data["save_url"], body)
        assert retried.status == 200 and retried.json()["replayed"] is False, (retried.status, retried.body[:300])
        again = participant.post_json(data["save_url"], body)
        assert again.status == 200 and again.json()["replayed"] is True
        killed_save = {"trial": index + 1}
    assert killed_save, "no save was held by the killed web server"
    assert set(statuses) <= {200, 206} and 403 not in statuses
    lap("participant rated through nginx, a web server killed mid-save")

    # Exactly the ratings sent, each once.
    expected = {
        (plan[i]["trial"], cid): sent[i][chr(ord("a") + k)] for i in sent for k, cid in enumerate(plan[i]["conditions"])
    }
    stored = r.sql(
        "SELECT r.trial_id, r.condition_id, r.score FROM webmushra_rating r "
        "JOIN webmushra_participant p ON p.id = r.participant_id WHERE p.token = %s",
        (token,),
    )
    assert {(t, c): s for t, c, s in stored} == expected and len(stored) == len(expected)
    per_trial = r.sql(
        "SELECT count(*) FROM webmushra_trialresponse t JOIN webmushra_participant p ON p.id = t.participant_id "
        "WHERE p.token = %s GROUP BY t.trial_id",
        (token,),
    )
    assert sorted(n for (n,) in per_trial) == [1] * len(EXCERPT_SECONDS)

    # Nginx itself: static files, the internal location closed, the upload limit.
    static = next(p for p in (r.var / "static" / "webmushra").rglob("*.js"))
    asset = participant.get("/static/" + str(static.relative_to(r.var / "static")))
    assert asset.status == 200 and asset.body == static.read_bytes()
    assert participant.get("/protected-media/" + stimuli[0][1]).status == 404

    # The report: built by the default worker, downloaded through nginx.
    requested = researcher.api("POST", f"/api/experiments/{pk}/report/")
    assert requested.status == 202, requested.body[:500]

    def report() -> dict[str, Any] | None:
        state = researcher.api("GET", f"/api/experiments/{pk}/report/").json()
        assert state["status"] != "failed", state
        return state if state["status"] == "done" else None

    done = wait_for(report, timeout=180, interval=0.5, what="the report")
    assert done["download_url"].startswith(f"{r.url}/"), done
    bundle = researcher.get(urlsplit(done["download_url"]).path)
    assert bundle.status == 200 and bundle.body[:2] == b"PK", (bundle.status, bundle.body[:200])
    names = zipfile.ZipFile(io.BytesIO(bundle.body)).namelist()
    assert any(name.endswith("descriptives.csv") for name in names), names
    csv = researcher.api("GET", f"/api/experiments/{pk}/ratings.csv")
    assert csv.status == 200 and len(csv.body.decode().strip().splitlines()) == 1 + len(expected)
    lap("report built and downloaded")
    print(f"rehearsal: {json.dumps(laps)}; kernels: {seen['kernels']}; report files: {len(names)}")
    assert render2.proc.poll() is None


@pytest.mark.parametrize("rehearsal", ["s3"], indirect=True)
def test_the_shipped_configuration_on_object_storage_with_workers_that_share_no_disk(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    """docs/deployment.md, "Object storage": media in the bucket alone, stimuli through the app."""
    r = rehearsal
    laps: dict[str, float] = {}
    mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        laps[name] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()

    port = int(urlsplit(r.url).port or 80)
    render = r.celery("render-1", "render-worker", NET="0")
    # The worker host reaches the store, and neither the web host's media folder nor its files.
    seen = check_isolation(r, render, port)
    scratch = r.var / "scratch" / "render-1"
    lap("render worker up, isolation checked")

    researcher = sign_in(r)
    pk = build_experiment(researcher, tmp_path, S3_EXCERPT_SECONDS, S3_CHECKPOINT, "LSTM 3")
    uploads = r.sql("SELECT dry_file, reference_file FROM webmushra_excerpt WHERE experiment_id = %s", (pk,))
    stored = objects(r)
    assert uploads and all(name in stored for row in uploads for name in row), (uploads, sorted(stored))
    lap("experiment built over HTTP, uploads in the bucket")

    def ready() -> bool:
        status = researcher.api("GET", f"/api/experiments/{pk}/status/").json()
        failed = [j for j in r.jobs(pk) if j["status"] == "failed"]
        assert not failed, f"{failed}\n{r.logs()}"
        return bool(status["status"] == "ready")

    wait_for(ready, timeout=240, interval=0.5, what="the experiment to be rendered")
    stimuli = r.sql(
        "SELECT excerpt_id, condition_id, file, size FROM webmushra_stimulus WHERE experiment_id = %s", (pk,)
    )
    conditions = r.sql("SELECT id, kind, label FROM webmushra_condition WHERE experiment_id = %s", (pk,))
    assert len(stimuli) == len(conditions) * len(S3_EXCERPT_SECONDS)
    stored = objects(r)
    for _, _, key, size in stimuli:
        assert key in stored and len(stored[key]) == size, key
    # Each host kept nothing: the web host's MEDIA_ROOT and the worker's scratch folder stay empty.
    assert files_under(r.media) == [] and files_under(scratch) == [], (files_under(r.media), files_under(scratch))
    lap("rendered by the namespaced worker into the bucket")

    opened = researcher.api("POST", f"/api/experiments/{pk}/open/")
    assert opened.status == 200, opened.body[:500]
    participant_url = opened.json()["participant_url"]

    # A participant through nginx: the app streams each stimulus from the store (200 whole, 206
    # one range, 200 several), the signals of a trial with equal headers and lengths, bytes as
    # stored, and nothing of the store or the conditions in any header.
    in_bucket = {stored[key] for _, _, key, _ in stimuli}
    endpoint = r.base_env["AWS_S3_ENDPOINT_URL"]
    secret = [BUCKET, endpoint, "amz", "stimuli/", *(str(v) for _, kind, label in conditions for v in (kind, label))]
    secret += [f"_c{cid}" for cid, _, _ in conditions] + [key for _, _, key, _ in stimuli]
    fetched: set[str] = set()
    participant = Browser(r.url)
    landing = urlsplit(participant_url).path
    assert participant.get(landing).status == 200
    reply = participant.post_form(landing, {})
    assert reply.status == 200 and "/consent/" in reply.url, (reply.status, reply.url)
    token = reply.url.rstrip("/").split("/")[-2]
    plan = r.sql("SELECT plan FROM webmushra_participant WHERE token = %s", (token,))[0][0]
    kind_of = {cid: kind for cid, kind, _ in conditions}
    reply = participant.post_form(f"/p/{token}/consent/", {"agree": "yes"})
    assert reply.status == 200 and "/level/" in reply.url, (reply.status, reply.url)
    reply = participant.post_form(f"/p/{token}/level/", {"gain_db": "0"})
    assert reply.status == 200 and reply.url.endswith("/trial/1/"), (reply.status, reply.url)
    expected: dict[tuple[int, int], int] = {}
    for index in range(len(S3_EXCERPT_SECONDS)):
        data = trial_data(participant.get(f"/p/{token}/trial/{index + 1}/"))
        answers = []
        for signal_ in data["signals"]:
            whole = participant.get(signal_["url"])
            part = participant.get(signal_["url"], headers={"Range": "bytes=0-99"})
            several = participant.get(signal_["url"], headers={"Range": "bytes=0-9,20-29"})
            assert (whole.status, part.status, several.status) == (200, 206, 200), (
                whole.status,
                part.status,
                several.status,
                r.logs(),
            )
            assert whole.body in in_bucket and part.body == whole.body[:100] and several.body == whole.body
            assert part.header("Content-Range") == [f"bytes 0-99/{len(whole.body)}"]
            assert whole.header("Content-Length") == [str(len(whole.body))]
            assert not whole.header("ETag") and not whole.header("Last-Modified")
            assert not whole.header("X-Accel-Redirect") and not whole.header("Content-Disposition")
            assert whole.header("X-Content-Type-Options") == ["nosniff"]
            assert whole.header("Cache-Control")[0].startswith("private, max-age=")
            assert whole.header("Content-Type") == ["audio/wav"]
            for answer in (whole, part):  # the URL is a random token; the headers name nothing
                said = " ".join(f"{k}: {v}" for k, v in answer.headers).lower()
                assert not [s for s in secret if s.lower() in said], answer.headers
            assert BUCKET not in signal_["url"] and "stimuli/" not in signal_["url"] and endpoint not in signal_["url"]
            fetched.add(urlsplit(signal_["url"]).path)
            answers.append(whole)
        reference = participant.get(data["reference"]["url"])
        assert reference.status == 200 and reference.body in in_bucket
        bodies = [a.body for a in answers]
        assert len(set(bodies)) == len(bodies) and len({len(b) for b in [*bodies, reference.body]}) == 1
        blind = [sorted((k, v) for k, v in a.headers if k.lower() != "date") for a in answers]
        assert all(h == blind[0] for h in blind), blind
        ratings = {chr(ord("a") + k): SCORES[kind_of[cid]] - index for k, cid in enumerate(plan[index]["conditions"])}
        assert set(ratings) == {sig["key"] for sig in data["signals"]}
        expected |= {
            (plan[index]["trial"], cid): ratings[chr(ord("a") + k)] for k, cid in enumerate(plan[index]["conditions"])
        }
        saved = participant.post_json(data["save_url"], save_body(data, ratings))
        assert saved.status == 200 and saved.json()["replayed"] is False, (saved.status, saved.body[:300])
    rated = r.sql(
        "SELECT r.trial_id, r.condition_id, r.score FROM webmushra_rating r "
        "JOIN webmushra_participant p ON p.id = r.participant_id WHERE p.token = %s",
        (token,),
    )
    assert {(t, c): s for t, c, s in rated} == expected and len(rated) == len(expected)
    # Every stimulus left through a web server: nginx proxied each request (an upstream in its log).
    logged = [line.split() for line in (r.var / "nginx" / "access.log").read_text().splitlines()]
    served = [parts for parts in logged if parts[1] in fetched]
    assert fetched and {parts[1] for parts in served} == fetched, (fetched, served)
    assert all(parts[3] != "-" and parts[4] in ("200", "206") for parts in served), served
    lap("participant rated through nginx, stimuli from the bucket")

    # The report: built by the default worker on the web host, stored in the bucket, downloaded.
    requested = researcher.api("POST", f"/api/experiments/{pk}/report/")
    assert requested.status == 202, requested.body[:500]

    def report() -> dict[str, Any] | None:
        state = researcher.api("GET", f"/api/experiments/{pk}/report/").json()
        assert state["status"] != "failed", state
        return state if state["status"] == "done" else None

    done = wait_for(report, timeout=180, interval=0.5, what="the report")
    bundle = researcher.get(urlsplit(done["download_url"]).path)
    assert bundle.status == 200 and bundle.body[:2] == b"PK", (bundle.status, bundle.body[:200])
    ((key,),) = r.sql("SELECT file FROM webmushra_report WHERE experiment_id = %s AND status = 'done'", (pk,))
    assert key.startswith("reports/") and objects(r).get(key) == bundle.body, key
    names = zipfile.ZipFile(io.BytesIO(bundle.body)).namelist()
    assert any(name.endswith("descriptives.csv") for name in names), names
    assert files_under(r.media) == [] and files_under(scratch) == [], (files_under(r.media), files_under(scratch))
    lap("report built into the bucket and downloaded")
    print(f"rehearsal on object storage: {json.dumps(laps)}; kernels: {seen['kernels']}; objects: {len(objects(r))}")
    assert render.proc.poll() is None
