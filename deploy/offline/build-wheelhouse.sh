#!/usr/bin/env bash
# Build a wheelhouse for installing vllm-sambay on a machine without network access:
# the project's own wheel plus (unless --no-deps) every dependency, as wheels for the TARGET
# Python and platform (by default this interpreter's). Copy the directory over, then:
#   pip install --no-index --find-links WHEELHOUSE "vllm-sambay[EXTRAS]"
#
# usage: deploy/offline/build-wheelhouse.sh [--python-version 3.12] [--platform TAG[,TAG...]]
#            [--extras vllm,serve] [--no-deps] [--out DIR] [-- extra pip download args...]
#   --platform        wheel platform tag(s), e.g. manylinux_2_28_x86_64 (several: comma-separated)
#   --python-version  target Python, e.g. 3.12; with --platform or --python-version only binary
#                     wheels are taken (pip cannot build sdists for another target)
#   --extras          extras of vllm-sambay to include (default: serve)
#   --no-deps         only the vllm-sambay wheel (for a target that already has vLLM)
#   --out             output directory (default: ./wheelhouse)
# Environment: PYTHON (default python3) is the interpreter whose pip does the work.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
py=${PYTHON:-python3}
out=wheelhouse
extras=serve
pyver=""
platforms=""
deps=1
extra_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) pyver=$2; shift 2 ;;
    --platform) platforms=$2; shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --no-deps) deps=0; shift ;;
    --out) out=$2; shift 2 ;;
    --) shift; extra_args=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# 1. The project's wheel (pure Python: the same file serves every target), built from a clean
#    copy of what the package is made of (the same list the Dockerfiles copy), so no stale
#    build/ directory of the checkout can leak into it.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$repo"/pyproject.toml "$repo"/README.md "$repo"/LICENSE "$repo"/vllm_sambay "$repo"/sambay_client "$repo"/sambay_bench "$repo"/sambay_eval "$repo"/server "$src"/
find "$src" -name __pycache__ -prune -exec rm -rf {} +
"$py" -m pip wheel --quiet --no-deps --wheel-dir "$src/dist" "$src"
built=$(find "$src/dist" -name 'vllm_sambay-*.whl')
cp "$built" "$out"/
wheel="$out/$(basename "$built")"

# 2. Its dependencies for the target.
target=()
if [ -n "$pyver" ] || [ -n "$platforms" ]; then
  target+=(--only-binary=:all:)
  [ -n "$pyver" ] && target+=(--python-version "$pyver")
  IFS=',' read -r -a tags <<< "$platforms"
  for tag in "${tags[@]}"; do target+=(--platform "$tag"); done
fi
spec="$wheel"
[ -n "$extras" ] && spec="${wheel}[${extras}]"
if [ "$deps" = 1 ]; then
  "$py" -m pip download --quiet --dest "$out" "${target[@]}" "${extra_args[@]}" "$spec"
fi

pkg="vllm-sambay"
[ -n "$extras" ] && pkg="vllm-sambay[$extras]"
nodeps=""
[ "$deps" = 0 ] && nodeps=" --no-deps"
cat > "$out/INSTALL.txt" <<TXT
Built $(date -u +%Y-%m-%dT%H:%M:%SZ) for python ${pyver:-$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')} platform ${platforms:-(this machine)}.
Install on the target, without network:
  pip install --no-index --find-links $(basename "$out")$nodeps "$pkg"
TXT
echo "wheelhouse: $out ($(find "$out" -maxdepth 1 -name '*.whl' | wc -l) wheels)"
cat "$out/INSTALL.txt"
