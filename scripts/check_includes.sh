#!/usr/bin/env bash
# Checks that includes run one way: every `#include "folder/..."` in src/ and kernels/ names a
# folder its own folder may include, by the table below (the layering the CMake link lines state,
# for header-only includes too, which linking does not check). Prints each offending
# file:line and exits 1; exits 0 when there is none.
#
#   scripts/check_includes.sh [ROOT]     # ROOT: the repository (default: this script's)
#
# ctest runs it (tests/CMakeLists.txt). A folder may always include itself.
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}

# folder: the folders it may include. routing/ is the routing math both backends compile.
declare -A allowed=(
  [util]=""
  [config]="util"
  [data]="config util"
  [params]="util"
  [comm]="util"
  [routing]="util"
  [backend]="comm routing util"
  [kernels]="backend comm routing util"
  [moe]="backend comm config routing util"
  [model]="backend comm config moe params routing util"
  [io]="config params util"
  [train]="backend comm config data io model moe params routing util"
  [sweep]="config data io model train util"
  [sim]="config io model moe params routing util"
  [cli]="backend comm config data io model sim sweep train util"
)

bad=0
while IFS= read -r hit; do
  file=${hit%%:*}
  rest=${hit#*:}
  line=${rest%%:*}
  text=${rest#*:}
  rel=${file#"$root"/}
  from=${rel#src/}
  from=${from%%/*}
  [ "${rel%%/*}" = kernels ] && from=kernels
  to=$(sed -E 's/^[[:space:]]*#include "([a-z_]+)\/.*/\1/' <<<"$text")
  if [ -z "${allowed[$from]+set}" ]; then
    echo "$rel:$line: folder $from is not in the table of scripts/check_includes.sh"
    bad=1
  elif [ "$to" != "$from" ] && ! grep -qw -- "$to" <<<"${allowed[$from]}"; then
    echo "$rel:$line: $from may not include $to/ ($text)"
    bad=1
  fi
done < <(grep -rnE '^[[:space:]]*#include "[a-z_]+/' "$root/src" "$root/kernels")
[ "$bad" = 0 ] && echo "check_includes: every include runs one way"
exit "$bad"
