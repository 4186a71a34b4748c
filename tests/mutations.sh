#!/usr/bin/env bash
# Hand mutations: applies each patch in tests/mutations/, checks that the
# tests named for it in tests/MUTATIONS.md fail, and reverts the patch
# whatever happens. A mutation the tests do not catch is a hole in them.
#
#   tests/mutations.sh            # all of them
#   tests/mutations.sh M1 M4      # some
#
# Exit status: 0 if every mutation was caught, 1 if one survived or could
# not be applied / compiled (then its patch needs updating to the code).
set -uo pipefail
cd "$(dirname "$0")/.."
# A mutant's failing cases are not regressions to replay.
export PROPTEST_DISABLE_FAILURE_PERSISTENCE=1

# The test target that must fail for each mutation (cargo test arguments).
declare -A CATCHER=(
  [M1]="--lib lifecycle::tests::table"
  [M2]="--lib lifecycle::tests::model"
  [M3]="--test fault_matrix"
  [M4]="--test fault_matrix"
  [M5]="--lib lifecycle::tests::behaviour"
  [M6]="--lib lifecycle::tests::table"
  [M7]="--test console_lifecycle"
  [M8]="--test cron a_run_missed_while_down"
  [M9]="--test cron a_restart_right_at_the_time"
  [M10]="--test cron cron_runs_wait_for_a_free_slot"
  [M11]="--test routes failures_deadlines"
  [M12]="--test cron a_route_call_abandoned"
  [M13]="--test api_rich downloaded_media_is_served"
  [M14]="--test whatsapp_rich a_scripts_rich_sends"
  [M15]="--lib store::delivery_props"
)

applied=""
revert() {
  if [ -n "$applied" ]; then
    git apply -R "$applied" && applied=""
  fi
}
trap revert EXIT INT TERM

mutations=("$@")
if [ ${#mutations[@]} -eq 0 ]; then
  mutations=($(printf '%s\n' "${!CATCHER[@]}" | sort))
fi

status=0
for m in "${mutations[@]}"; do
  patch="tests/mutations/$m.patch"
  args="${CATCHER[$m]:-}"
  if [ -z "$args" ] || [ ! -f "$patch" ]; then
    echo "$m: unknown mutation"
    status=1
    continue
  fi
  if ! git apply --check "$patch" 2>/dev/null; then
    echo "$m: the patch no longer applies; update $patch to the code"
    status=1
    continue
  fi
  git apply "$patch" && applied="$patch"
  start=$(date +%s)
  # shellcheck disable=SC2086
  if ! cargo test -q $args --no-run >/dev/null 2>&1; then
    echo "$m: the mutant does not compile; update $patch"
    status=1
  elif cargo test -q $args >"target/mutation-$m.log" 2>&1; then
    echo "$m: SURVIVED cargo test $args (log: target/mutation-$m.log)"
    status=1
  else
    echo "$m: caught by cargo test $args ($(( $(date +%s) - start )) s)"
  fi
  revert
done
exit $status
