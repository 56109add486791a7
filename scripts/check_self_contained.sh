#!/usr/bin/env bash
# Checks that no tracked file refers outside the repository: to documents that a clone does not
# have (a spec folder beside the repo, MODEL.md / CONFIG.md) or to absolute paths of a
# development machine (/work/..., /home/..., /root/... and the like). Prints each offending
# file:line and exits 1; exits 0 when there is none. System paths (/usr/..., /dev/null,
# /proc/self, /tmp/...) are fine: only the roots below are development paths.
#
#   scripts/check_self_contained.sh [ROOT]     # ROOT: the repository (default: this script's)
#   scripts/check_self_contained.sh --self-test
#
# ctest runs both (tests/CMakeLists.txt). Outside a git checkout there is no list of tracked
# files: the check is skipped (exit 77, which ctest reports as skipped).
set -euo pipefail

self="scripts/check_self_contained.sh"  # holds the patterns themselves, so it is not scanned

# Extended regular expressions, one per kind of reference.
patterns=(
  'shared/spec'                                      # the spec folder beside the repository
  '\.\./shared(/|$|[^A-Za-z0-9_-])'                  # any path up into a sibling shared/
  '(^|[^A-Za-z0-9_-])(MODEL|CONFIG)\.md'             # the spec's files: docs/model.md, docs/config.md
  '(^|[^A-Za-z0-9_.~$}){/-])/(work|workspace|home|root|Users|mnt|scratch|nfs|gpfs|lustre)/'
)
# Lines that match a pattern but are fine: "file:regex" (ERE on the line's text). Keep it narrow.
allow=(
)

check() {
  local root=$1
  # safe.directory: a checkout owned by another user (a container's mounted clone) still counts.
  local git=(git -c safe.directory='*' -C "$root")
  if ! "${git[@]}" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "$root: not a git checkout, no list of tracked files: skipped" >&2
    return 77
  fi
  local pattern joined=""
  for pattern in "${patterns[@]}"; do joined+="${joined:+|}(${pattern})"; done
  local hits found=0 line file text entry ok
  # Tracked files (the index, so files added but not committed count), text and binary alike.
  hits=$("${git[@]}" grep -n -I -E "$joined" -- . ":(exclude)$self" || true)
  local binaries
  binaries=$("${git[@]}" grep -l -E "$joined" -- . ":(exclude)$self" || true)
  while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    file=${line%%:*}
    text=${line#*:}
    text=${text#*:}
    ok=0
    for entry in "${allow[@]+"${allow[@]}"}"; do
      if [[ "$file" == "${entry%%:*}" ]] && grep -q -E -e "${entry#*:}" <<<"$text"; then ok=1; fi
    done
    if [[ $ok == 0 ]]; then
      echo "$line"
      found=1
    fi
  done <<<"$hits"
  # Binary files (grep -I skipped them above): the file name only.
  while IFS= read -r file; do
    [[ -z "$file" ]] && continue
    if ! grep -q -F -x -e "$file" <<<"$(cut -d: -f1 <<<"$hits")"; then
      echo "$file: (binary file) refers outside the repository"
      found=1
    fi
  done <<<"$binaries"
  if [[ $found == 1 ]]; then
    echo "check_self_contained: the lines above refer outside the repository; point them at docs/" \
         "or at repository-relative paths" >&2
    return 1
  fi
  return 0
}

self_test() {
  local dir rc=0 out
  dir=$(mktemp -d "${TMPDIR:-/tmp}/dsmoe_self_contained.XXXXXX")
  self_test_dir=$dir
  trap 'rm -rf "$self_test_dir"' EXIT
  git -C "$dir" init -q
  mkdir -p "$dir/docs" "$dir/src" "$dir/scripts"
  # Fine: system paths, relative paths, the repository's own docs.
  cat >"$dir/docs/fine.md" <<'EOF'
Debian's /usr/share/dictd/gcide.dict.dz; CUDA under /usr/local/cuda; > /dev/null; /proc/self/exe.
Scratch files in /tmp/dsmoe_test_XXXXXX; runs/work/a-s1 and data/home/x are relative.
The math is in docs/model.md, the keys in docs/config.md; see ../docs/metrics.md.
Paths under a variable: ${OUT}/home/y and $DIR/work/z are relative to it.
EOF
  # Bad: one per pattern.
  printf '%s\n' 'see shared/spec/MODEL.md' >"$dir/docs/bad1.md"
  printf '%s\n' 'base: ../shared/x.yaml' >"$dir/docs/bad2.md"
  printf '%s\n' '// as in CONFIG.md' >"$dir/src/bad3.cpp"
  printf '%s\n' 'python3 /home/someone/dsmoe/bench/x.py' >"$dir/docs/bad4.md"
  printf '%s\n' 'data: /work/data/gcide.bin' >"$dir/src/bad5.yaml"
  printf '\x00\x01/root/data\x00' >"$dir/src/bad6.bin"
  cp "$0" "$dir/$self"
  git -C "$dir" add -A
  out=$(check "$dir" 2>&1) || rc=$?
  local want
  for want in docs/bad1.md:1 docs/bad2.md:1 src/bad3.cpp:1 docs/bad4.md:1 src/bad5.yaml:1 src/bad6.bin; do
    if ! grep -q -F "$want" <<<"$out"; then
      echo "self-test: $want not reported; output was:" >&2
      echo "$out" >&2
      return 1
    fi
  done
  if grep -q -e "fine.md" -e "$self" <<<"$out"; then
    echo "self-test: a legitimate line was reported; output was:" >&2
    echo "$out" >&2
    return 1
  fi
  if [[ $rc != 1 ]]; then
    echo "self-test: exit status $rc with bad references, expected 1" >&2
    return 1
  fi
  # Without the bad files it passes.
  git -C "$dir" rm -q --cached docs/bad1.md docs/bad2.md src/bad3.cpp docs/bad4.md src/bad5.yaml src/bad6.bin
  if ! out=$(check "$dir" 2>&1); then
    echo "self-test: a clean tree failed:" >&2
    echo "$out" >&2
    return 1
  fi
  echo "self-test passed"
}

if [[ "${1:-}" == "--self-test" ]]; then
  self_test
else
  root=${1:-"$(cd "$(dirname "$0")/.." && pwd)"}
  rc=0
  check "$root" || rc=$?
  [[ $rc == 0 ]] && echo "check_self_contained: no tracked file refers outside the repository"
  exit "$rc"
fi
