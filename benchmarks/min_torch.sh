#!/usr/bin/env bash
# The oldest torch that pyproject.toml admits, checked: a fresh venv with that torch from PyPI,
# dgmkit and its test extras installed beside it (pip keeps the torch that is there), then the
# test suite. Too heavy for every CI run (PyPI's Linux wheels of torch bring its CUDA libraries,
# about 5 GB), so it runs here by hand when the floor moves; benchmarks/min_torch.out is the
# last run's record.
#
#   bash benchmarks/min_torch.sh [TORCH_VERSION] [pytest args...]     # default: the declared floor
set -euo pipefail
cd "$(dirname "$0")/.."
floor=$(python3 -c "import re,tomllib; d=tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']; \
print(next(re.match(r'torch>=([0-9.]+)', x).group(1) for x in d if x.startswith('torch>=')))")
version=${1:-$floor}
shift || true
venv=build/min-torch-$version
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  # the machine's pip constraint (a torch cap for its local wheels) does not apply to this check
  PIP_CONSTRAINT= "$venv/bin/python" -m pip install -q "torch==$version"
fi
PIP_CONSTRAINT= "$venv/bin/python" -m pip install -q -e '.[test]'
"$venv/bin/python" -c "import torch, dgmkit; print('torch', torch.__version__, 'with dgmkit', dgmkit.__version__)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
