# Set-up on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install dgmkit with its development extras into it. torch is
# installed first only where the venv has none: `make VENV_FLAGS=--system-site-packages ...`
# reuses a torch installed outside it (a CUDA build, say), untouched.
VENV ?= .venv
VENV_FLAGS ?=
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-all coverage lint typecheck check examples docs package-check bench bench-flows clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV_FLAGS) $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "keeping the torch already there: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
	  echo "installing $(TORCH) (pip picks the build for this machine: CPU-only here, a CUDA build on most Linux PCs)"; \
	  $(PY) -m pip install -q "$(TORCH)"; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/dgm demo

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(VENV)/.installed
	$(PY) -m pytest -q --run-slow $(PYTEST_ARGS)

# The suite under coverage.py ([tool.coverage] in pyproject.toml), with the processes it starts; the
# statements no test runs, by module, into build/coverage/report.txt (docs/development.md)
coverage: $(VENV)/.installed
	rm -rf build/coverage && mkdir -p build/coverage
	COVERAGE_FILE=$(CURDIR)/build/coverage/.coverage COVERAGE_RCFILE=$(CURDIR)/pyproject.toml \
	  $(VENV)/bin/coverage run -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	cd build/coverage && COVERAGE_RCFILE=$(CURDIR)/pyproject.toml $(CURDIR)/$(VENV)/bin/coverage combine -q
	cd build/coverage && COVERAGE_RCFILE=$(CURDIR)/pyproject.toml $(CURDIR)/$(VENV)/bin/coverage report > report.txt; \
	  grep -E "^TOTAL" report.txt

lint: $(VENV)/.installed  # style, imports, bugbear and type annotations of the library
	$(VENV)/bin/ruff check src tests benchmarks examples docs/transcripts.py docs/hooks.py
	$(VENV)/bin/ruff format --check src tests benchmarks examples docs/transcripts.py docs/hooks.py

typecheck: $(VENV)/.installed  # mypy over src/dgmkit ([tool.mypy] in pyproject.toml)
	$(VENV)/bin/mypy

examples: $(VENV)/.installed  # the README's Python examples run as printed, then one script per model family
	rm -rf runs/quickstart && $(PY) examples/quickstart.py
	$(PY) examples/python_api.py
	$(PY) examples/flows_and_arms.py
	$(PY) examples/imputation.py
	$(PY) examples/custom_parts.py
	rm -rf runs/families
	@for f in examples/families/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

check: lint typecheck examples

docs: $(VENV)/.installed  # the docs site from docs/ and the docstrings, warnings as errors, into build/site
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

# The packages: a wheel and an sdist build (python -m build), and the wheel installs with pip into
# a fresh venv that already holds torch, leaves that torch as it is, pulls no optional extra, and
# runs dgm demo there.
package-check: $(VENV)/.installed
	rm -rf build/pkg
	$(PY) -m build -q --sdist --wheel --outdir build/pkg/dist . >/dev/null
	python3 -m venv build/pkg/venv
	build/pkg/venv/bin/python -m pip install -q "$(TORCH)"
	build/pkg/venv/bin/python -c "import torch; open('build/pkg/torch-before', 'w').write(torch.__version__)"
	build/pkg/venv/bin/python -m pip install -q build/pkg/dist/dgmkit-*.whl
	build/pkg/venv/bin/python -c "import torch, importlib.util as u; \
	  assert torch.__version__ == open('build/pkg/torch-before').read(), 'pip replaced torch'; \
	  assert not any(u.find_spec(m) for m in ('constriction', 'tensorboard', 'ruff')), 'an extra was installed'"
	build/pkg/venv/bin/python -c "from dgmkit.config.schema import load_config_file, preset_names; \
	  assert len(preset_names()) >= 30, 'the presets are not in the wheel'; load_config_file('m1-mnist')"
	cd build/pkg && venv/bin/dgm demo --out demo --epochs 2 >/dev/null && echo "package-check: the wheel installs beside torch $$(cat torch-before), holds the presets, and dgm demo runs"

bench: $(VENV)/.installed
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/eval_speed.py
	$(PY) benchmarks/arm_sampling.py

bench-flows: $(VENV)/.installed  # installs zuko into the venv, for the comparison only
	$(PY) -m pip install -q -r benchmarks/requirements.txt
	$(PY) benchmarks/flow_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
