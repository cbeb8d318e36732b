# The two commands of README.md. Both set everything up on a fresh machine.
.PHONY: run test demo bootstrap

bootstrap:
	bash scripts/bootstrap.sh

# Build the demo workspace if there is none and launch the dashboard: it starts as soon as the
# demo's first version is ready, while the other versions build.
run: bootstrap
	.venv/bin/adlens demo --if-missing --serve

# Run every test (slow and browser tests included; PostgreSQL tests need ADLENS_TEST_PG_URL).
# XDIST: the tests run on pytest-xdist workers, one more than the cores (tests/conftest.py;
# `make test XDIST=` runs them in one process).
XDIST ?= -n auto --dist loadgroup

test: bootstrap
	.venv/bin/python -m pytest $(XDIST) $(PYTEST_ARGS)

demo: bootstrap
	.venv/bin/adlens demo
