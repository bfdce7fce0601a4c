# The two commands of the README, and what they need.
#
#   make run    install what is missing, build, start the stack in the
#               foreground (Ctrl-C stops it)
#   make test   install what is missing, build, run every test
#
# Debian packages come from apt-get (as root, or through sudo); Python
# distributions from the buildout, bootstrapped in .venv with the pins of
# versions.cfg. The buildout runs again only when its inputs change, so
# running `make run` on a built checkout is quick.

SHELL := /bin/bash
PYTHON ?= python3
# Site overrides: local.cfg extends buildout.cfg.
CFG := $(if $(wildcard local.cfg),local.cfg,buildout.cfg)

DEBIAN_PACKAGES := python3 python3-venv postgresql postgresql-client libpq5 \
	nginx-light util-linux ca-certificates
BOOTSTRAP := zc.buildout pip setuptools wheel packaging platformdirs
pin = $(shell sed -n 's/^$(1) *= *//p' versions.cfg)

BUILD_INPUTS := buildout.cfg appliance.cfg versions.cfg $(wildcard local.cfg) \
	supervisord.conf.in $(wildcard templates/*.in) \
	src/oe.web.socketio/pyproject.toml src/oe.web.socketio/setup.py \
	addons/web_socketio/setup.py addons/web_socketio/tryton.cfg

.PHONY: run test build deps stop

run: build
	bin/start

test: build .venv/bin/ruff
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	bin/test

build: deps .installed.cfg

stop:
	@if [ -x bin/supervisorctl ] && bin/supervisorctl pid >/dev/null 2>&1; then \
		bin/supervisorctl shutdown; else echo "The appliance is not running."; fi

# Install the Debian packages that are missing, and only those.
deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then sudo=; \
		elif command -v sudo >/dev/null; then sudo=sudo; \
		else echo "make: missing Debian packages: $$missing; run 'make' as root or install them with apt-get" >&2; exit 1; fi; \
		echo "Installing Debian packages: $$missing"; \
		$$sudo apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing \
			|| { echo "make: apt-get could not install: $$missing" >&2; exit 1; }; \
	fi

.venv/bin/buildout: versions.cfg
	@test -n "$(call pin,zc.buildout)" || { echo "make: versions.cfg pins no zc.buildout" >&2; exit 1; }
	$(PYTHON) -m venv .venv || { echo "make: cannot create .venv with $(PYTHON): install python3-venv" >&2; exit 1; }
	.venv/bin/pip install -q --disable-pip-version-check \
		$(foreach d,$(BOOTSTRAP),$(d)==$(call pin,$(d)))
	.venv/bin/buildout -c $(CFG) bootstrap
	touch $@

.venv/bin/ruff: versions.cfg .venv/bin/buildout
	.venv/bin/pip install -q --disable-pip-version-check ruff==$(call pin,ruff)
	touch $@

.installed.cfg: .venv/bin/buildout $(BUILD_INPUTS)
	bin/buildout -c $(CFG)
	touch $@
