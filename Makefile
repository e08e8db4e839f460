# facerep: `make test` and `make demo` each set up .venv from requirements*.txt on their own.
PY      := .venv/bin/python
STAMP   := .venv/.installed

.PHONY: test demo venv clean

venv: $(STAMP)

# Rebuilt whenever a requirements file is newer than the last install.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile tests

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf .venv .pytest_cache runs
