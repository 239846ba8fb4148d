# The two commands: `make demo` and `make test`. Both set up .venv first.
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	rm -rf runs/demo-digits
	$(VENV)/bin/gramx train examples/digits.yaml --set output.dir=runs/demo-digits --set eval.every=null
	$(VENV)/bin/gramx eval runs/demo-digits/model examples/data/digits/test.jsonl --classes examples/classes-digits.txt

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/run_all.py
