#!/usr/bin/env bash
# Runs the model / generation tests against several transformers versions, each in a fresh
# virtual environment (system site-packages visible, so torch and the rest are not reinstalled;
# the venv's own transformers shadows the system one). Run it before bumping a pin or a bound.
#
#   scripts/compat_check.sh                     # the oldest supported and the newest on the index
#   scripts/compat_check.sh 4.56.2 5.24.0       # chosen versions ("latest" = newest on the index)
#
# Prints one line per version and exits non-zero if any version fails.
set -uo pipefail
cd "$(dirname "$0")/.."
oldest=$(python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(re.search(r">=\s*([\w.]+)", d).group(1) for d in deps if d.startswith("transformers")))
PY
)
versions=("${@:-$oldest latest}")
[ $# -eq 0 ] && versions=("$oldest" latest)
tests=(tests/test_models.py)
status=0
for v in "${versions[@]}"; do
  venv=$(mktemp -d -t slotmem-compat-XXXX)
  python -m venv --system-site-packages "$venv" || exit 2
  spec="transformers==$v"; [ "$v" = latest ] && spec="transformers"
  if ! "$venv/bin/pip" install -q -c constraints-cpu.txt --upgrade "$spec" > "$venv/pip.log" 2>&1; then
    echo "transformers $v: pip install failed (see $venv/pip.log)"; status=1; continue
  fi
  got=$("$venv/bin/python" -c "import transformers; print(transformers.__version__)")
  if PYTHONPATH=src "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}" > "$venv/pytest.log" 2>&1; then
    echo "transformers $got: PASS ($(tail -n 1 "$venv/pytest.log"))"
    rm -rf "$venv"
  else
    echo "transformers $got: FAIL ($(tail -n 1 "$venv/pytest.log")); log: $venv/pytest.log"; status=1
  fi
done
exit $status
