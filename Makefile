# `make run`: install into .venv, migrate, load the demo, start web + worker (Ctrl-C stops both).
# `make test`: install what the tests need (Debian chromium included) and run them all.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Tests use their own var/ so they never touch the data of `make run`.
TEST_VAR := $(CURDIR)/var/test

.PHONY: run test test-fast test-stack system-deps bench clean-test lint test-browsers-repeat messages

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first and exactly pinned: any other torch spec pulls a CUDA build.
$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt clients/python/pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

# neural-amp-modeler, the independent renderer tests/modelrunner/test_nam_reference.py compares
# the NAM loader against, in a venv of its own so that its dependencies stay out of the app's.
# Built afresh when either requirements file changes; the stamp is written only after the
# package imports.
NAM_VENV := .venv-nam
NAM_PY   := $(NAM_VENV)/bin/python
$(NAM_VENV)/.installed: requirements-nam.txt requirements-nam-nodeps.txt
	rm -rf $(NAM_VENV)
	$(PYTHON) -m venv $(NAM_VENV)
	$(NAM_PY) -m pip install -q -r requirements-nam.txt
	$(NAM_PY) -m pip install -q --no-deps -r requirements-nam-nodeps.txt
	$(NAM_PY) -c "import nam.models"
	touch $@

# The render kernels are compiled here, once, not at the first render; without a compiler
# build-kernels says so (exit 2) and the renders use PyTorch's kernels.
run: $(VENV)/.installed
	-$(PY) -m modelrunner build-kernels
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py load_demo
	$(PY) manage.py serve --demo

# The browser tests' engines: Debian chromium, firefox-esr, and WebKitGTK's MiniBrowser
# (webkit2gtk-driver) on Xvfb with GStreamer's WAV and PulseAudio plugins; pulseaudio gives
# Firefox and WebKit a null sink to play into. redis-server and PostgreSQL for the
# throwaway test servers; gettext for the translations' check (tests/webmushra/test_i18n.py).
# nginx and iproute2 (ip netns) for the production rehearsal (tests/integration/test_rehearsal.py).
# pdflatex with booktabs and graphicx compiles the report's LaTeX (tests/evaluation/test_report_paper.py):
# texlive-latex-base and texlive-latex-recommended without their recommends (17 packages, about
# 145 MB installed, 41 s here) instead of the 82 the recommends pull in.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v firefox-esr >/dev/null || missing="$$missing firefox-esr"; \
	command -v pulseaudio >/dev/null || missing="$$missing pulseaudio"; \
	command -v WebKitWebDriver >/dev/null || missing="$$missing webkit2gtk-driver"; \
	command -v Xvfb >/dev/null || missing="$$missing xvfb"; \
	for p in gstreamer1.0-plugins-good gstreamer1.0-pulseaudio; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v msgfmt >/dev/null || missing="$$missing gettext"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing="$$missing nginx"; \
	[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@if ! command -v pdflatex >/dev/null || ! kpsewhich booktabs.sty >/dev/null; then \
	  echo "installing: texlive-latex-base texlive-latex-recommended"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends texlive-latex-base texlive-latex-recommended >/dev/null; \
	fi

clean-test:
	rm -rf $(TEST_VAR)

# The participant pages' translations (webmushra/locale/<language>/LC_MESSAGES): gathers every
# marked text into the .po files (translate the new entries there), then compiles each .po into
# the .mo Django reads. Both are committed, so `make run` needs no gettext;
# tests/webmushra/test_i18n.py checks that they are complete and that each .mo matches its .po.
MESSAGE_LANGUAGES := de
messages: $(VENV)/.installed
	@command -v msgfmt >/dev/null || { if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gettext >/dev/null; }
	$(PY) manage.py makemessages --add-location file --no-obsolete $(addprefix -l ,$(MESSAGE_LANGUAGES)) \
	  -i "tests/*" -i "bench/*" -i "var/*" -i "docker/*" -i "demo/*" -i "modelrunner/*" -i "evaluation/*" \
	  -i "config/*" -i "docs/*" -i "clients/*"
	for l in $(MESSAGE_LANGUAGES); do \
	  msgfmt --check -o webmushra/locale/$$l/LC_MESSAGES/django.mo webmushra/locale/$$l/LC_MESSAGES/django.po || exit 1; \
	done

# ruff (lint and format check), import-linter's contracts and mypy, all configured in
# pyproject.toml (mypy: strict for modelrunner and evaluation, the Django and DRF plugins for
# webmushra and config).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# lint first; then 1) PostgreSQL + Redis (throwaway servers) for everything that touches Django;
# 2) the whole suite on the embedded default (SQLite + filesystem broker). Its summary comes last.
# Both in TEST_PROCESSES test processes (pytest-xdist; tests/isolation.py gives each its own
# VAR_DIR, Redis database and PostgreSQL test database). The production rehearsal starts its
# own servers whatever the stage's, so it runs once, in stage 2.
TEST_PROCESSES ?= 3
XDIST := -p tests.isolation -n $(TEST_PROCESSES) --dist loadgroup
test: lint $(VENV)/.installed-test $(NAM_VENV)/.installed system-deps clean-test
	VAR_DIR=$(TEST_VAR)/pg $(PY) -m tests.stack --redis --postgres -- \
	  $(PY) -m pytest -q -p no:cacheprovider $(XDIST) tests/integration tests/webmushra \
	  --ignore=tests/integration/test_rehearsal.py
	VAR_DIR=$(TEST_VAR)/sqlite $(PY) -m pytest -q -p no:cacheprovider $(XDIST)

# No browser, server or worker process, and none of the `slow` tests (fresh interpreters, a
# compiler); in two test processes (pytest-xdist), each with its own VAR_DIR (tests/isolation.py).
test-fast: $(VENV)/.installed-test
	VAR_DIR=$(TEST_VAR)/sqlite $(PY) -m pytest -q -p no:cacheprovider -p tests.isolation -n 2 \
	  -m "not integration and not browser and not slow"

# A stress run: every browser test BROWSER_REPEAT times, in TEST_PROCESSES test processes as
# `make test` runs them (each file's runs one after another in one process), e.g.
# `make test-browsers-repeat BROWSER_REPEAT=2 BROWSER_TESTS=tests/browser/test_player.py`.
BROWSER_REPEAT ?= 10
BROWSER_TESTS ?=
test-browsers-repeat: $(VENV)/.installed-test system-deps
	rm -rf $(TEST_VAR)/repeat
	BROWSER_REPEAT=$(BROWSER_REPEAT) VAR_DIR=$(TEST_VAR)/repeat $(PY) -m pytest -q -p no:cacheprovider \
	  $(XDIST) -m browser $(BROWSER_TESTS)

# Stage 1 of `make test` alone: throwaway PostgreSQL + Redis, the tests that touch them.
test-stack: $(VENV)/.installed-test system-deps
	rm -rf $(TEST_VAR)/pg
	VAR_DIR=$(TEST_VAR)/pg $(PY) -m tests.stack --redis --postgres -- \
	  $(PY) -m pytest -q -p no:cacheprovider $(XDIST) tests/integration tests/webmushra

# Every benchmark in bench/ (about 10 minutes); `make bench BENCH_ARGS=--quick` takes under 3.
bench: $(VENV)/.installed-test
	$(PY) -m bench $(BENCH_ARGS)
