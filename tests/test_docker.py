"""Checks on the production deployment description in docker/, without a Docker engine.

compose.yml is read with PyYAML (merge keys resolved), the Dockerfile and nginx.conf as text.
When the `docker compose` CLI is installed, `docker compose config -q` validates the file
against the Compose specification as well.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
NGINX = DOCKER / "nginx.conf"
ENV_EXAMPLE = DOCKER / "env.example"

SERVICES = ("db", "redis", "cache", "migrate", "web", "worker", "render-worker", "beat", "nginx")
APP_SERVICES = ("migrate", "web", "worker", "render-worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def option(command: list[str], name: str) -> str | None:
    """The value after `name` in an argv list, or None."""
    return command[command.index(name) + 1] if name in command else None


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source for the short `source:target[:mode]` volume syntax."""
    targets = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        targets[target] = source
    return targets


def nginx_blocks(text: str, header: str) -> list[str]:
    """Bodies of the nginx blocks whose header matches `header` exactly (comments removed)."""
    text = re.sub(r"#[^\n]*", "", text)
    bodies = []
    for match in re.finditer(re.escape(header) + r"\s*\{", text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                bodies.append(text[start:i])
                break
    return bodies


def directives(body: str) -> set[str]:
    """The `;`-terminated directives of a block, whitespace normalised."""
    return {" ".join(part.split()) for part in body.split(";") if part.strip()}


# --- compose.yml ---------------------------------------------------------------------------


def test_compose_uses_the_spec_without_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


@pytest.mark.parametrize("name", SERVICES)
def test_every_promised_service_exists(services: dict[str, Any], name: str) -> None:
    assert name in services


@pytest.mark.parametrize("name", ("db", "redis", "web"))
def test_core_services_have_healthchecks(services: dict[str, Any], name: str) -> None:
    check = services[name].get("healthcheck", {})
    assert not check.get("disable", False)
    assert check.get("test"), f"{name} has no healthcheck test"


def test_healthchecks_probe_the_right_thing(services: dict[str, Any]) -> None:
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])


def test_web_waits_for_migrations_and_redis(services: dict[str, Any]) -> None:
    depends = services["web"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"


def test_migrate_is_a_one_off_after_the_database(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert str(migrate["restart"]) == "no"
    assert "manage.py migrate --noinput" in " ".join(command_of(migrate))
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ("worker", "render-worker", "beat"))
def test_celery_processes_wait_for_migrations(services: dict[str, Any], name: str) -> None:
    assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_app_services_share_one_image_and_environment(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://"), name
        assert env["CELERY_BROKER_URL"].startswith("redis://"), name
        assert env["SERVE_MEDIA_WITH"] == "nginx", name


def test_beat_is_never_replicated(services: dict[str, Any]) -> None:
    beat = services["beat"]
    assert int(beat.get("deploy", {}).get("replicas", 1)) <= 1
    assert int(beat.get("scale", 1)) <= 1
    assert command_of(beat)[:4] == ["celery", "-A", "config", "beat"]


def test_redis_keeps_queued_jobs(services: dict[str, Any]) -> None:
    command = command_of(services["redis"])
    assert option(command, "--maxmemory-policy") == "noeviction"
    assert option(command, "--appendonly") == "yes"
    assert volume_targets(services["redis"])["/data"] == "redisdata"


def test_rate_limits_share_one_evicting_cache(services: dict[str, Any]) -> None:
    command = command_of(services["cache"])
    assert option(command, "--maxmemory-policy") == "allkeys-lru" and option(command, "--maxmemory")
    for name in APP_SERVICES:
        assert services[name]["environment"]["CACHE_URL"] == "redis://${CACHE_HOST:-cache}:6379/0", name
    assert services["web"]["depends_on"]["cache"]["condition"] == "service_healthy"


def test_workers_consume_their_queues(services: dict[str, Any]) -> None:
    worker = command_of(services["worker"])
    render = command_of(services["render-worker"])
    assert option(worker, "-Q") == "default"
    assert option(render, "-Q") == "render"
    assert option(render, "--concurrency") == "1"
    assert option(render, "--prefetch-multiplier") == "1"


def test_named_volumes_and_mounts(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert {"pgdata", "redisdata", "media", "static"} <= set(compose["volumes"])
    assert volume_targets(services["db"])["/var/lib/postgresql/data"] == "pgdata"
    for name in ("web", "worker", "render-worker"):
        assert volume_targets(services[name])["/var/lib/app/media"] == "media", name
    assert volume_targets(services["migrate"])["/var/lib/app/static"] == "static"
    nginx = volume_targets(services["nginx"])
    assert nginx["/srv/media"] == "media"
    assert nginx["/srv/static"] == "static"


def test_nginx_config_is_mounted_as_template(services: dict[str, Any]) -> None:
    nginx = services["nginx"]
    assert nginx["image"].startswith("nginx:1.27")
    assert volume_targets(nginx)["/etc/nginx/templates/default.conf.template"] == "./nginx.conf"
    assert "NGINX_MAX_BODY_SIZE" in nginx["environment"]


def test_required_settings_are_listed_in_env_example() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "ALLOWED_HOSTS"} <= required
    keys = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert required <= keys, f"missing from env.example: {sorted(required - keys)}"


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    """`docker compose config -q` on a copy with env.example as .env (needs only the CLI)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    project = tmp_path / "docker"
    project.mkdir()
    for path in (COMPOSE, DOCKERFILE, NGINX):
        shutil.copy(path, project / path.name)
    shutil.copy(ENV_EXAMPLE, project / ".env")
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(tmp_path),
        "SECRET_KEY": "k" * 50,
        "POSTGRES_PASSWORD": "p",
        "ALLOWED_HOSTS": "example.org",
    }
    result = subprocess.run(
        [docker, "compose", "-f", str(project / "compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and re.search(
        r"unknown (command|shorthand flag)|is not a docker command|"
        r"Cannot connect to the Docker daemon",
        output,
    ):
        pytest.skip("docker compose plugin not available")
    assert result.returncode == 0, output
    # The required values must really be required.
    del env["SECRET_KEY"]
    (project / ".env").write_text(ENV_EXAMPLE.read_text())
    result = subprocess.run(
        [docker, "compose", "-f", str(project / "compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0 and "SECRET_KEY" in result.stdout + result.stderr


# --- Dockerfile ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """Instructions with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def instructions(lines: list[str], keyword: str) -> list[str]:
    return [line[len(keyword) :].strip() for line in lines if line.split()[0].upper() == keyword]


def test_dockerfile_base_image(dockerfile: list[str]) -> None:
    args = dict(arg.split("=", 1) for arg in instructions(dockerfile, "ARG") if "=" in arg)
    stages = {base.split()[-1] for base in instructions(dockerfile, "FROM") if " AS " in base.upper()}
    bases = [
        base.split()[0].replace("${PYTHON_VERSION}", args.get("PYTHON_VERSION", ""))
        for base in instructions(dockerfile, "FROM")
    ]
    # Every stage starts from the slim Python image or from an earlier stage.
    assert bases and all(base == "python:3.11-slim" or base in stages for base in bases)


def test_dockerfile_runs_as_non_root(dockerfile: list[str]) -> None:
    users = instructions(dockerfile, "USER")
    assert users, "no USER instruction: the container would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any("--uid 10001" in run and " app" in run for run in instructions(dockerfile, "RUN"))


def test_dockerfile_collects_static_with_a_build_only_key(dockerfile: list[str]) -> None:
    runs = [run for run in instructions(dockerfile, "RUN") if "collectstatic" in run]
    assert len(runs) == 1 and "--noinput" in runs[0] and "SECRET_KEY=" in runs[0]
    # The dummy key must not persist into the image's environment.
    assert not any("SECRET_KEY" in env for env in instructions(dockerfile, "ENV"))
    # collectstatic runs as the app user, after the USER switch.
    assert dockerfile.index(next(line for line in dockerfile if "collectstatic" in line)) > dockerfile.index(
        next(line for line in dockerfile if line.startswith("USER"))
    )


def test_dockerfile_environment_and_ports(dockerfile: list[str]) -> None:
    env = " ".join(instructions(dockerfile, "ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "VAR_DIR=/var/lib/app"):
        assert setting in env
    assert instructions(dockerfile, "EXPOSE") == ["8000"]
    assert any("/var/lib/app/media" in volume for volume in instructions(dockerfile, "VOLUME"))
    assert any(arg.startswith("PIP_EXTRA_INDEX_URL=") for arg in instructions(dockerfile, "ARG"))


def test_dockerfile_installs_dependencies_before_copying_code(dockerfile: list[str]) -> None:
    install = next(i for i, line in enumerate(dockerfile) if "pip install" in line)
    copy_all = next(i for i, line in enumerate(dockerfile) if re.match(r"COPY \. ", line))
    assert install < copy_all


def test_dockerfile_command_is_gunicorn(dockerfile: list[str]) -> None:
    cmd = instructions(dockerfile, "CMD")[-1]
    assert "gunicorn" in cmd and "config.wsgi:application" in cmd
    assert "--max-requests" in cmd and "0.0.0.0:8000" in cmd


def test_kernels_are_built_in_a_stage_and_the_runtime_carries_no_compiler(dockerfile: list[str]) -> None:
    stages: dict[str, list[str]] = {}
    name = ""
    for line in dockerfile:
        if line.upper().startswith("FROM "):
            name = line.split()[-1]
            stages[name] = []
        else:
            stages.setdefault(name, []).append(line)
    assert list(stages)[-1] == "runtime"
    build = [line for line in stages["kernels"] if "build-kernels" in line]
    assert len(build) == 1 and "python -m modelrunner build-kernels --portable --into " in build[0]
    into = build[0].split("--into ")[1].split()[0]
    runtime = stages["runtime"]
    assert f"COPY --from=kernels {into} {into}" in runtime
    assert f"MODELRUNNER_KERNELS_DIR={into}" in " ".join(instructions(runtime, "ENV"))
    installs = " ".join(run for run in instructions(runtime, "RUN") if "apt-get install" in run)
    assert not re.search(r"\b(gcc|g\+\+|clang|cc|libc6-dev|build-essential)\b", installs), installs
    assert "build-kernels" in (REPO / "Makefile").read_text().split("\nrun:")[1].split("\n\n")[0]


def test_dockerignore_keeps_secrets_and_state_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", ".env"} <= ignored
    assert "docker" in ignored or "docker/.env" in ignored


# --- nginx.conf ----------------------------------------------------------------------------


def test_protected_media_is_internal_without_validators_and_cached_as_the_application_says() -> None:
    text = NGINX.read_text()
    (body,) = nginx_blocks(text, "location /protected-media/")
    found = directives(body)
    assert "internal" in found
    assert "etag off" in found
    assert "if_modified_since off" in found
    assert 'add_header Last-Modified ""' in found
    assert "alias /srv/media/" in found
    # Several ranges get the whole file (200), as the application answers them; never 416.
    assert "max_ranges 1" in found
    # A success keeps the application's "private, max-age=N" (X-Accel-Redirect passes it on):
    # nginx adds a Cache-Control of its own, no-store, to its error answers only.
    (added,) = [d for d in found if d.startswith("add_header Cache-Control")]
    _, value, *flags = added.split()[1:]
    assert value.startswith("$") and flags == ["always"], added
    (mapping,) = nginx_blocks(text, f"map $status {value}")
    assert directives(mapping) == {"volatile", '~^[23] ""', 'default "no-store"'}
    assert not any(d.startswith("expires") for d in found)


def test_protected_media_prefix_matches_settings() -> None:
    path = REPO / "config" / "settings.py"
    if not path.exists():
        pytest.skip("config/settings.py not present")
    match = re.search(r"""PROTECTED_MEDIA_PREFIX\s*=\s*["']([^"']+)["']""", path.read_text())
    if match is None:
        pytest.skip("settings define no PROTECTED_MEDIA_PREFIX")
    assert nginx_blocks(NGINX.read_text(), f"location {match.group(1)}")


def test_static_files_are_served_with_a_long_lifetime() -> None:
    (body,) = nginx_blocks(NGINX.read_text(), "location /static/")
    found = directives(body)
    assert "alias /srv/static/" in found
    assert any(d.startswith("expires") and d != "expires off" for d in found)


def test_server_limits_uploads_and_proxies_to_web() -> None:
    (server,) = nginx_blocks(NGINX.read_text(), "server")
    found = directives(server)
    assert any(d.startswith("client_max_body_size ") for d in found)
    assert "gzip on" in found
    (proxy,) = nginx_blocks(server, "location /")
    proxied = directives(proxy)
    assert "set $upstream http://web:8000" in proxied
    assert "proxy_set_header X-Forwarded-Proto $forwarded_proto" in proxied
    # With the port the client used: links the application builds work on any published port.
    assert "proxy_set_header Host $http_host" in proxied


def test_only_nginx_variables_are_templated() -> None:
    """The image's envsubst must leave nginx's own $variables alone."""
    templated = set(re.findall(r"\$\{(\w+)\}", NGINX.read_text()))
    assert templated and all(name.startswith("NGINX_") for name in templated)


def test_deployment_guide_exists() -> None:
    guide = (REPO / "docs" / "deployment.md").read_text()
    for needle in ("docker compose -f docker/compose.yml", "reap_stale_jobs", "pg_dump", "/healthz"):
        assert needle in guide
