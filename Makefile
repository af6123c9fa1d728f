# DCGAN Studio: `make run` launches the app, `make test` runs every test. Both set up .venv first (with the
# package installed editable, so the `dcgan` command works from anywhere).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench soak clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	# the package itself, editable: `dcgan` and `python -m dcgan` work from any folder (offline: no build isolation)
	$(BIN)/pip install --disable-pip-version-check -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python app.py

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=30 tests; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

soak: $(STAMP)
	DCGAN_KILLS=300 $(BIN)/python -m pytest -q -s tests/test_faults.py -k sigkill

bench: $(STAMP)
	$(BIN)/python -m dcgan bench --out bench.json

clean:
	rm -rf $(VENV) .pytest_cache
