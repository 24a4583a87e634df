# One-command entry points; each sets itself up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU machines take the local torch wheel when pinned; GPU images bring their own torch (TORCH_SPEC=).
TORCH_SPEC ?= torch==2.13.0

.PHONY: test demo venv clean system-deps bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# The RTSP camera of the tests and the demo is Debian's gst-rtsp-server (apt, when missing).
system-deps:
	bash scripts/system-deps.sh

test: $(STAMP) system-deps
	$(PY) -m pytest -q

bench: $(STAMP) system-deps
	$(PY) bench/pipeline.py

demo: $(STAMP)
	$(PY) -m xclip_stream.demo

clean:
	rm -rf $(VENV) .pytest_cache .cache
