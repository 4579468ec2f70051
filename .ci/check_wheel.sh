#!/usr/bin/env bash
# Check the built wheel the way a user meets it: install it into a fresh virtual
# environment (torch first, pinned to the CPU build, then the wheel, so only its declared
# dependencies come in), import it from outside the source tree, compute a barycenter,
# and make sure the wheel holds the library and nothing else.
#
#   usage: bash .ci/check_wheel.sh DIST_DIR
#   env:   TORCH   the torch requirement to install first (default torch==2.13.0; a plain
#                  "torch" would pull a multi-GB CUDA build)
#          PYTHON  the interpreter that makes the venv (default python3)
set -euo pipefail

dist_dir=${1:?usage: bash .ci/check_wheel.sh DIST_DIR}
torch_req=${TORCH:-torch==2.13.0}
python=${PYTHON:-python3}

shopt -s nullglob
wheels=("$dist_dir"/barycentric-*.whl)
shopt -u nullglob
if [[ ${#wheels[@]} -ne 1 ]]; then
    echo "check_wheel: expected exactly one barycentric wheel in $dist_dir, found ${#wheels[@]}" >&2
    exit 1
fi
wheel=$(cd "$(dirname "${wheels[0]}")" && pwd)/$(basename "${wheels[0]}")
echo "check_wheel: $wheel"

# 1. Contents: the package and its metadata, no examples/, tests/ or benchmarks/.
listing=$(unzip -Z1 "$wheel")
if grep -E '(^|/)(examples|tests|benchmarks|docs)/' <<<"$listing"; then
    echo "check_wheel: the wheel ships files that are not the library (listed above)" >&2
    exit 1
fi
stray=$(grep -vE '^(barycentric/|barycentric-[^/]+\.dist-info/)' <<<"$listing" || true)
if [[ -n $stray ]]; then
    echo "check_wheel: unexpected top-level entries in the wheel:" >&2
    echo "$stray" >&2
    exit 1
fi
grep -qx 'barycentric/py.typed' <<<"$listing" || { echo "check_wheel: py.typed missing" >&2; exit 1; }
echo "check_wheel: contents ok ($(wc -l <<<"$listing") files)"

# 2. A fresh environment with only torch and the wheel's declared dependencies.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "$torch_req"
"${pip[@]}" install "$wheel"

# 3. Import from outside the source tree and compute one barycenter of each kind.
cd "$work"
"$work/venv/bin/python" - <<'PY'
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

import barycentric as bc
from barycentric._version import __version__

assert "site-packages" in bc.__file__, bc.__file__
loc = torch.tensor([[0.0, 0.0], [2.0, 1.0], [1.0, 3.0]])
scale = torch.tensor([[1.0, 0.5], [0.5, 1.0], [0.8, 0.8]])
diag = Independent(Normal(loc, scale), 1)
wb = bc.barycenter(diag, divergence="wasserstein")
assert torch.allclose(wb.mean, loc.mean(0), atol=1e-6)
assert torch.allclose(wb.stddev, scale.mean(0), atol=1e-6)  # closed form: mean of scales

cov = torch.stack([torch.diag(s**2) for s in scale]) + 0.1  # full, non-commuting
full = MultivariateNormal(loc, covariance_matrix=cov)
wb_full = bc.barycenter(full, divergence="wasserstein")
poe = bc.barycenter(full, divergence="reverse_kl")
assert wb_full.covariance_matrix.shape == (2, 2) and poe.mean.shape == (2,)
print(f"barycentric {__version__} from {bc.__file__}: W2 barycenter mean {wb.mean.tolist()}")
PY
echo "check_wheel: ok"
