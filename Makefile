# One-command entry points; each sets itself up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU machines take the local torch wheel when pinned; GPU images bring their own torch (TORCH_SPEC=).
TORCH_SPEC ?= torch==2.13.0

.PHONY: test demo demo-model venv clean system-deps bench

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

# The demo plays one camera over RTSP when gst-rtsp-server is (or can be) installed; else it goes on without.
demo: $(STAMP)
	-@bash scripts/system-deps.sh
	$(PY) -m xclip_stream.demo

# Retrains the bundled demo checkpoint from scratch in two stages (about 85 minutes on 2 CPU cores)
# and publishes it with its evaluation into xclip_stream/assets/demo-xclip.
TRAIN        := $(PY) -m xclip_stream.cli train
DEMO_STAGE1  := $(TRAIN) .cache/demo-stage1 --steps 5000 --batch-size 24 --eval-every 250 --held-out 2 --threads 2 --text-frozen-steps 1250
DEMO_STAGE2  := $(TRAIN) .cache/demo-run --init .cache/demo-stage1 --steps 1000 --batch-size 24 --eval-every 250 --held-out 2 --threads 2 --text-lr-scale 0.1 --text-frozen-steps 0 --easy-until 0 --warmup 50
demo-model: $(STAMP)
	$(DEMO_STAGE1)
	$(DEMO_STAGE2)
	$(PY) -m xclip_stream.training.report .cache/demo-run --publish xclip_stream/assets/demo-xclip \
		--command "$(subst $(PY),python,$(DEMO_STAGE1)) && $(subst $(PY),python,$(DEMO_STAGE2))"

clean:
	rm -rf $(VENV) .pytest_cache .cache
