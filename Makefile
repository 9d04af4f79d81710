# Two commands set everything up on a machine with only Python 3.11+:
#   make demo   creates .venv, installs provenance, ingests seeds/ and prints the report
#   make test   creates .venv with the test extras and runs the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DB ?= provenance.db

.PHONY: demo test install install-test eval bench migrate revision check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

# The PostgreSQL driver, for the benchmarks' PostgreSQL half.
$(VENV)/.installed-postgres: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[postgres]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/provenance --db $(DEMO_DB) ingest seeds/
	$(BIN)/provenance --db $(DEMO_DB) report

test: install-test
	$(BIN)/python -m pytest -q

eval: install
	$(BIN)/python bench/eval.py

# Speed: ingest against datasketch peers, then 1/2/4 workers on SQLite (and PostgreSQL when
# initdb is installed). Growth with the database: $(BIN)/python bench/scale.py
bench: $(VENV)/.installed-postgres
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/workers.py

migrate: install
	$(BIN)/provenance --db $(DEMO_DB) db upgrade

# make revision m="what changed": autogenerate a migration from the models
revision: install
	PROVENANCE_DB=$$(mktemp -d)/rev.db; $(BIN)/provenance --db $$PROVENANCE_DB db upgrade && \
	PROVENANCE_DB=$$PROVENANCE_DB $(BIN)/alembic revision --autogenerate -m "$(m)"

check: install-test
	$(BIN)/python -m pytest -q tests/test_migrations.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache provenance.db provenance.db-wal provenance.db-shm
