# caliproxy: the two commands of the README, plus development targets (unit, lint, bench).
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: demo test deps unit bench lint

# Install Dovecot and friends, then run a seeded demo upstream with caliproxy in front.
demo: deps
	$(PYTHON) -m caliproxy demo

# Install everything the tests need, then run them all. Exit code 5 (no tests collected) is a failure.
test: deps
	$(PYTHON) -m pytest $(PYTEST_ARGS)

deps:
	bash .ci/install-deps

# Pure unit tests only (no servers, no reactor): seconds.
unit:
	$(PYTHON) -m pytest tests/imap tests/privacy tests/unit $(PYTEST_ARGS)

bench:
	$(PYTHON) bench/bulk_fetch.py

# Needs the lint extra: pip install -e '.[lint]'
lint:
	$(PYTHON) -m ruff check caliproxy tests bench
	$(PYTHON) -m mypy caliproxy/privacy caliproxy/imap caliproxy/config.py
