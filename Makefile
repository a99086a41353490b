# Gatehouse: the two commands a newcomer needs are `make demo` (run everything) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint migrate clean

# The virtualenv is rebuilt only when a requirements file changes. The files pin every package,
# transitive ones included, so pip need not resolve anything (--no-deps); pip check proves the
# pins are complete and consistent.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-dev.txt
	$(PY) -m pip check
	touch $(STAMP)

venv: $(STAMP)

## Run the whole local stack (Redis, moto, Cognito stand-in, web, worker, beat). Ctrl-C stops it.
demo: $(STAMP)
	$(PY) -m devstack.run

## Run the test suite (embedded defaults, or DATABASE_URL / REDIS_URL when set).
test: $(STAMP)
	scripts/test $(ARGS)

## Apply the database migrations (the SQLite file under var/, or DATABASE_URL); `make demo` does it too.
migrate: $(STAMP)
	$(PY) manage.py migrate --no-input

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) var/*.sqlite3 var/devstack.json var/devstack.env
