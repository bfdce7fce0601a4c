# The two commands of the README, and what they need.
#
#   make run    install what is missing, build, start the stack in the
#               foreground (Ctrl-C stops it)
#   make test   install what is missing, build, run `make check`, then
#               every other test
#   make check  on a built checkout, in under a minute: ruff, mypy and the
#               import contracts on the egg, and its unit tests (no
#               PostgreSQL, nginx or Chromium)
#
# Debian packages come from apt-get (as root, or through sudo); Python
# distributions from the buildout, bootstrapped in .venv with the pins of
# versions.cfg; Node.js packages (the clients the tests drive) from npm, with
# the versions of package-lock.json, and sao (the Tryton web client) with
# those of sao/package-lock.json. The buildout and npm run again only when
# their inputs change, so running `make run` on a built checkout is quick.

SHELL := /bin/bash
PYTHON ?= python3

DEBIAN_PACKAGES := python3 python3-venv postgresql postgresql-client libpq5 redis-server \
	nginx-light util-linux ca-certificates \
	chromium fonts-dejavu-core
# Node.js and npm come from Debian (nodejs, npm) only when the command is
# not on PATH: a node installed otherwise (NodeSource, nvm, a tarball) is
# used as it is, and apt-get must not install a second one beside it.
on_path = $(shell command -v $(1) 2>/dev/null)
NODE_PACKAGES := $(strip $(if $(call on_path,node),,nodejs) $(if $(call on_path,npm),,npm))
DEBIAN_PACKAGES += $(NODE_PACKAGES)

BOOTSTRAP := zc.buildout pip setuptools wheel packaging platformdirs
pin = $(shell sed -n 's/^$(1) *= *//p' versions.cfg)

BUILD_INPUTS := buildout.cfg appliance.cfg versions.cfg $(wildcard local.cfg) \
	$(wildcard templates/*.in) \
	src/oe.web.socketio/pyproject.toml src/oe.web.socketio/setup.py \
	addons/web_socketio/setup.py addons/web_socketio/tryton.cfg \
	examples/chat/pyproject.toml examples/longpolling/pyproject.toml \
	addons/web_socketio_demo/setup.py addons/web_socketio_demo/tryton.cfg \
	examples/demo/pyproject.toml \
	examples/wsgi_chat/pyproject.toml examples/webpy_chat/pyproject.toml \
	examples/flask_chat/pyproject.toml

.PHONY: run test check build deps stop not-running

run: not-running build
	bin/start

# A second `make run` while the stack runs says so before building anything
# (bin/start refuses it too, in one line).
not-running:
	@if [ -x bin/supervisorctl ] && bin/supervisorctl pid >/dev/null 2>&1; then \
		echo "make: the appliance is already running: 'make stop' stops it, 'bin/start --daemon' checks it" >&2; \
		exit 1; fi

test: build check
	bin/test -m "not unit"

# mypy.ini and .importlinter say what they check (the egg; mypy support/
# too, the code of the buildout's generated scripts); the unit tests are
# the egg's tests that run in pytest's process without the appliance (the
# root conftest.py marks them `unit`).
check: .installed.cfg .venv/bin/ruff
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	bin/mypy
	bin/lint-imports --no-cache
	bin/test -m unit -p no:cacheprovider src/oe.web.socketio/tests

build: deps .installed.cfg node_modules/.package-lock.json

# Returns once supervisord, hence every program, is gone (its shutdown
# returns before), so that a `make run` right after it starts afresh.
stop:
	@if [ -x bin/supervisorctl ] && pid=$$(bin/supervisorctl pid 2>/dev/null); then \
		bin/supervisorctl shutdown; \
		for i in $$(seq 1500); do kill -0 $$pid 2>/dev/null || exit 0; sleep 0.1; done; \
		echo "make: supervisord (pid $$pid) did not stop within 150 s" >&2; exit 1; \
	else echo "The appliance is not running."; fi

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
	.venv/bin/buildout bootstrap
	touch $@

.venv/bin/ruff: versions.cfg .venv/bin/buildout
	.venv/bin/pip install -q --disable-pip-version-check ruff==$(call pin,ruff)
	touch $@

# buildout.cfg reads local.cfg itself (optional-extends); a local.cfg of
# before, which extended buildout.cfg, would be an include loop.
.installed.cfg: .venv/bin/buildout $(BUILD_INPUTS)
	@! grep -qsE '^extends *= *buildout\.cfg' local.cfg || { echo "make: local.cfg extends buildout.cfg, which reads local.cfg itself now: delete that line" >&2; exit 1; }
	bin/buildout
	touch $@

# npm ci writes node_modules/.package-lock.json, which stands for the whole
# tree: it is installed again, exactly as locked, when the lock changes.
node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || { echo "make: npm is not on PATH: run 'make build', which installs Debian's nodejs and npm" >&2; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

# sao, the Tryton web client, is an npm project of its own (sao/): its
# index.html loads its front-end dependencies from the node_modules/ beside
# it, which sao/.npmrc's nested install gives. No install script runs (sao
# ships built). trytond serves $(SAO) at / ([web] root in
# templates/trytond.conf.in), with the site's custom.js and custom.css
# that sao's index.html loads.
SAO := sao/node_modules/tryton-sao
build: $(SAO)/custom.js $(SAO)/custom.css

sao/node_modules/.package-lock.json: sao/package.json sao/package-lock.json sao/.npmrc
	@command -v npm >/dev/null || { echo "make: npm is not on PATH: run 'make build', which installs Debian's nodejs and npm" >&2; exit 1; }
	cd sao && npm ci --ignore-scripts --omit=dev --no-audit --no-fund
	touch $@

$(SAO)/custom.%: sao/custom.% sao/node_modules/.package-lock.json
	cp $< $@

# The browser client (js/, with socket.io-client from node_modules) bundled
# by esbuild (pinned in package.json) into one script, with its source map,
# that oe_web_socketio serves at /oe_web_socketio/oe_web_socketio.js.
BUNDLE := src/oe.web.socketio/src/oe_web_socketio/static/oe_web_socketio.js
build: $(BUNDLE)

$(BUNDLE): $(wildcard js/*.js) package-lock.json node_modules/.package-lock.json
	node_modules/.bin/esbuild js/index.js --bundle --format=iife \
		--global-name=oe_web_socketio --target=es2020 --minify --sourcemap \
		--log-level=warning --outfile=$@
