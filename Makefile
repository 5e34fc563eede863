# Every target builds its own .venv from nothing, so a fresh clone needs only python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test browser lint bench bench-quick soak examples clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

# Two test processes (pytest-xdist), a file each at a time: most tests wait on real
# processes rather than compute, and each process starts its own PostgreSQL server.
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

# The dashboard's browser tests need Debian's chromium and chromium-driver: installed
# here when missing and we can (root, apt-get); never a failed build if not. The tests
# then skip saying why, except in CI (CI set), where they fail.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
		|| echo "make: could not install chromium; the browser tests will skip"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check mpjobs tests examples benchmarks
	$(BIN)/mypy

examples: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_examples.py

# The bench extra brings procrastinate and Chancy, measured beside mpjobs on PostgreSQL.
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.run

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

soak: $(STAMP)
	MPJOBS_SOAK=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/chaos

clean:
	rm -rf $(VENV) .mpjobs build *.egg-info
