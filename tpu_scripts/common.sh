# shellcheck shell=bash source-path=SCRIPTDIR
# shellcheck disable=SC2034  # settings here are read by the scripts that source this file
# Shared by every tpu_scripts/*.sh: defaults, flag parsing, the `run` wrapper
# and the gcloud command builders. Sourced, never executed.
#
# Precedence for every setting: command-line flag > environment variable >
# default below. With --dry-run the scripts print, on stdout and one per line,
# the exact commands they would run (quoted so they can be pasted into a
# shell) and run nothing; queries that would need an answer from Google Cloud
# take it from --assume-state / --assume-job-status instead.

TPU_NAME="${TPU_NAME:-}"
TPU_ZONE="${TPU_ZONE:-}"
# Empty: gcloud's configured project (`gcloud config get-value project`).
TPU_PROJECT="${TPU_PROJECT:-}"
TPU_ACCELERATOR_TYPE="${TPU_ACCELERATOR_TYPE:-v4-8}"
# Empty: chosen from the accelerator generation (see default_runtime_version).
TPU_RUNTIME_VERSION="${TPU_RUNTIME_VERSION:-}"
# on-demand | spot | preemptible. Spot and preemptible capacity is cheaper
# and can be reclaimed at any time; watch.sh restarts such runs.
TPU_CAPACITY="${TPU_CAPACITY:-on-demand}"
# 1: request capacity through a queued resource (the way to get large spot
# slices); 0: create the TPU VM directly.
TPU_QUEUED="${TPU_QUEUED:-0}"
MODEL_DIR="${MODEL_DIR:-}"
TPU_JOB="${TPU_JOB:-train}"
TPU_JAX_VERSION="${TPU_JAX_VERSION:-0.10.2}"
# Ubuntu 22.04 (every TPU runtime image) ships Python 3.10; the package needs
# 3.11, which is in the Ubuntu archive as python3.11.
TPU_WORKER_PYTHON="${TPU_WORKER_PYTHON:-python3.11}"
TPU_WATCH_INTERVAL="${TPU_WATCH_INTERVAL:-300}"
TPU_MAX_RESTARTS="${TPU_MAX_RESTARTS:-20}"
# How long to wait for a new slice to become usable; 0 waits for ever (queued
# spot requests can wait hours for capacity).
TPU_WAIT_TIMEOUT="${TPU_WAIT_TIMEOUT:-7200}"
DRY_RUN=0
ASSUME_STATE=""
ASSUME_JOB_STATUS="running"
LOG_WORKER=0
DESTINATION=""
WITH_CHECKPOINTS=0
RESTART_JOB=0
GIN_FILES=()
GIN_BINDINGS=()
JOB_ENV=()
# Arguments after `--`.
PASSTHROUGH_ARGS=()

# Worker-side layout, relative to the worker's home directory (where every
# `tpu-vm ssh --command` starts).
readonly WORKER_REPO="cot-distill"
readonly WORKER_ARCHIVE="cot-distill.tar.gz"
readonly WORKER_RUNNER="cot-distill/tpu_scripts/remote_run.sh"
# Object paths (relative to MODEL_DIR) that fetch.sh skips unless
# --with-checkpoints: checkpoint step directories.
readonly CHECKPOINT_PATH_PATTERN='(^|/)(checkpoint_)?[0-9]+/'
readonly LIBTPU_INDEX="https://storage.googleapis.com/jax-releases/libtpu_releases.html"

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPTS_DIR/.." && pwd)"

log() {
  printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 2
}

usage() {
  # The comment block at the top of the calling script is its help text.
  sed -n '2,/^$/{s/^# \{0,1\}//;p;}' "$0"
}

# Quotes one word for a POSIX shell in the most readable safe form. For a
# --flag=value word only the value is quoted (--command='...'), as people
# write it.
quote_word() {
  local word="$1" prefix=""
  if [[ "$word" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    prefix="${BASH_REMATCH[1]}"
    word="${BASH_REMATCH[2]}"
  fi
  printf '%s' "$prefix"
  if [[ "$word" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$word"
  elif [[ "$word" != *"'"* ]]; then
    printf "'%s'" "$word"
  elif [[ ! "$word" =~ [\$\`\\!] ]]; then
    printf '"%s"' "${word//\"/\\\"}"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

# Prints the arguments as one shell command line.
format_command() {
  local word separator=""
  for word in "$@"; do
    printf '%s' "$separator"
    quote_word "$word"
    separator=" "
  done
}

# Runs a command, or prints it when --dry-run is set.
run() {
  if ((DRY_RUN)); then
    format_command "$@"
    printf '\n'
  else
    log "+ $(format_command "$@")"
    "$@"
  fi
}

# `query VARIABLE STAND_IN COMMAND...` stores COMMAND's output (empty when it
# fails) in VARIABLE. With --dry-run it prints COMMAND like `run` and stores
# STAND_IN instead, so the decisions that follow can be read without Google
# Cloud. (A variable rather than $(...), so the dry-run line reaches stdout.)
query() {
  local -n result_ref="$1"
  local stand_in="$2"
  shift 2
  if ((DRY_RUN)); then
    format_command "$@"
    printf '\n'
    result_ref="$stand_in"
  else
    result_ref="$("$@" 2>/dev/null)" || result_ref=""
  fi
}

# Flags that take a value, and the setting each one sets ("[]": the flag may
# repeat, and each value is appended).
declare -A VALUE_FLAGS=(
  [--name]=TPU_NAME [--zone]=TPU_ZONE [--project]=TPU_PROJECT
  [--accelerator-type]=TPU_ACCELERATOR_TYPE [--runtime-version]=TPU_RUNTIME_VERSION
  [--capacity]=TPU_CAPACITY [--model-dir]=MODEL_DIR [--job]=TPU_JOB
  [--gin-file]="GIN_FILES[]" [--gin]="GIN_BINDINGS[]" [--env]="JOB_ENV[]"
  [--jax-version]=TPU_JAX_VERSION [--python]=TPU_WORKER_PYTHON
  [--interval]=TPU_WATCH_INTERVAL [--max-restarts]=TPU_MAX_RESTARTS
  [--wait-timeout]=TPU_WAIT_TIMEOUT [--assume-state]=ASSUME_STATE
  [--assume-job-status]=ASSUME_JOB_STATUS [--worker]=LOG_WORKER
  [--destination]=DESTINATION
)

# Parses the flags every script shares (--flag=value or --flag value).
# Script-specific knowledge stays in the scripts: each one checks, with
# require, the settings it needs.
parse_flags() {
  while (($#)); do
    local flag="$1" value="" inline_value=0
    if [[ "$flag" == --*=* ]]; then
      value="${flag#*=}"
      flag="${flag%%=*}"
      inline_value=1
      set -- "$flag" "$value" "${@:2}"
    fi
    case "$flag" in
      -h|--help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1; shift; continue ;;
      --spot) TPU_CAPACITY=spot; shift; continue ;;
      --preemptible) TPU_CAPACITY=preemptible; shift; continue ;;
      --queued) TPU_QUEUED=1; shift; continue ;;
      --with-checkpoints) WITH_CHECKPOINTS=1; shift; continue ;;
      --restart) RESTART_JOB=1; shift; continue ;;
      --) shift; PASSTHROUGH_ARGS=("$@"); break ;;
    esac
    local setting="${VALUE_FLAGS[$flag]:-}"
    [[ -n "$setting" ]] || die "unknown flag $flag (see --help)"
    # `--zone --dry-run` must not make "--dry-run" the zone (and run for real).
    if (($# < 2)) || { ((inline_value == 0)) && [[ "$2" == --* ]]; }; then
      die "flag $flag needs a value (see --help)"
    fi
    if [[ "$setting" == *"[]" ]]; then
      local -n values="${setting%[]}"
      values+=("$2")
      unset -n values
    else
      printf -v "$setting" '%s' "$2"
    fi
    shift 2
  done
  validate_settings
}

validate_settings() {
  case "$TPU_CAPACITY" in
    on-demand|spot|preemptible) ;;
    *) die "--capacity must be on-demand, spot or preemptible, not '$TPU_CAPACITY'" ;;
  esac
  if ((TPU_QUEUED)) && [[ "$TPU_CAPACITY" == preemptible ]]; then
    die "queued resources offer --spot, not --preemptible"
  fi
  [[ "$TPU_JOB" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job must be a plain name, not '$TPU_JOB'"
  [[ "$LOG_WORKER" =~ ^([0-9]+|all)$ ]] || die "--worker must be a number or 'all'"
  local number
  for number in "$TPU_WATCH_INTERVAL" "$TPU_MAX_RESTARTS" "$TPU_WAIT_TIMEOUT"; do
    [[ "$number" =~ ^[0-9]+$ ]] || die "expected a whole number of seconds or restarts, got '$number'"
  done
}

# Fails with the flag name when a setting the script needs is empty.
require() {
  local setting
  for setting in "$@"; do
    case "$setting" in
      name) [[ -n "$TPU_NAME" ]] || die "--name (or TPU_NAME) is required" ;;
      zone) [[ -n "$TPU_ZONE" ]] || die "--zone (or TPU_ZONE) is required" ;;
      model-dir)
        [[ -n "$MODEL_DIR" ]] || die "--model-dir (or MODEL_DIR) is required"
        [[ "$MODEL_DIR" == gs://* ]] || die "--model-dir must be a gs:// path that every worker can reach, not '$MODEL_DIR'"
        ;;
      destination) [[ -n "$DESTINATION" ]] || die "--destination is required" ;;
      *) die "internal: unknown setting $setting" ;;
    esac
  done
}

# The TPU software image that matches the accelerator generation
# (https://cloud.google.com/tpu/docs/runtimes).
default_runtime_version() {
  case "$1" in
    v6e-*) printf 'v2-alpha-tpuv6e' ;;
    v5p-*) printf 'v2-alpha-tpuv5' ;;
    v5litepod-*|v5e-*) printf 'v2-alpha-tpuv5-lite' ;;
    v2-*|v3-*|v4-*) printf 'tpu-ubuntu2204-base' ;;
    *) die "no default runtime version for accelerator type '$1'; pass --runtime-version" ;;
  esac
}

runtime_version() {
  if [[ -n "$TPU_RUNTIME_VERSION" ]]; then
    printf '%s' "$TPU_RUNTIME_VERSION"
  else
    default_runtime_version "$TPU_ACCELERATOR_TYPE"
  fi
}

queued_resource_name() {
  printf '%s-qr' "$TPU_NAME"
}

# --zone and --project, in that order, for every gcloud call.
location_flags() {
  LOCATION_FLAGS=("--zone=$TPU_ZONE")
  if [[ -n "$TPU_PROJECT" ]]; then
    LOCATION_FLAGS+=("--project=$TPU_PROJECT")
  fi
}

# Runs COMMAND (one shell string) on the given worker(s) over SSH.
on_workers() {
  local workers="$1" command="$2"
  location_flags
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION_FLAGS[@]}" \
    "--worker=$workers" "--command=$command"
}

create_slice() {
  location_flags
  local runtime
  runtime="$(runtime_version)"
  local capacity_flags=()
  case "$TPU_CAPACITY" in
    spot) capacity_flags=(--spot) ;;
    preemptible) capacity_flags=(--preemptible) ;;
  esac
  if ((TPU_QUEUED)); then
    run gcloud compute tpus queued-resources create "$(queued_resource_name)" \
      "${LOCATION_FLAGS[@]}" "--node-id=$TPU_NAME" \
      "--accelerator-type=$TPU_ACCELERATOR_TYPE" "--runtime-version=$runtime" \
      "${capacity_flags[@]}"
  else
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOCATION_FLAGS[@]}" \
      "--accelerator-type=$TPU_ACCELERATOR_TYPE" "--version=$runtime" \
      "${capacity_flags[@]}"
  fi
}

delete_slice() {
  location_flags
  if ((TPU_QUEUED)); then
    # --force also deletes the TPU VM the queued resource created.
    run gcloud compute tpus queued-resources delete "$(queued_resource_name)" \
      "${LOCATION_FLAGS[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOCATION_FLAGS[@]}" --quiet
  fi
}

# Sets SLICE_STATE to the queued resource's or the VM's state, or MISSING.
# Queued resource: WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, SUSPENDED,
# FAILED, ...; TPU VM: CREATING, READY, PREEMPTED, TERMINATED, ...
read_slice_state() {
  location_flags
  local stand_in="${ASSUME_STATE:-$(ready_state)}"
  if ((TPU_QUEUED)); then
    query SLICE_STATE "$stand_in" gcloud compute tpus queued-resources describe \
      "$(queued_resource_name)" "${LOCATION_FLAGS[@]}" '--format=value(state.state)'
  else
    query SLICE_STATE "$stand_in" gcloud compute tpus tpu-vm describe "$TPU_NAME" \
      "${LOCATION_FLAGS[@]}" '--format=value(state)'
  fi
  SLICE_STATE="${SLICE_STATE:-MISSING}"
}

ready_state() {
  if ((TPU_QUEUED)); then printf 'ACTIVE'; else printf 'READY'; fi
}

# States after which a slice never becomes usable again: it has to be
# deleted and created anew.
is_lost_state() {
  case "$1" in
    MISSING|PREEMPTED|TERMINATED|STOPPED|SUSPENDED|FAILED) return 0 ;;
    *) return 1 ;;
  esac
}

# Polls until the slice is usable; returns 1 (with a message) if it is lost
# or the wait times out. With --dry-run: one describe, then on.
wait_until_ready() {
  local started=$SECONDS
  while true; do
    read_slice_state
    if ((DRY_RUN)) || [[ "$SLICE_STATE" == "$(ready_state)" ]]; then
      return 0
    fi
    if is_lost_state "$SLICE_STATE"; then
      log "$TPU_NAME is $SLICE_STATE while waiting for it to become $(ready_state)"
      return 1
    fi
    if ((TPU_WAIT_TIMEOUT > 0 && SECONDS - started > TPU_WAIT_TIMEOUT)); then
      log "$TPU_NAME still $SLICE_STATE after ${TPU_WAIT_TIMEOUT}s"
      return 1
    fi
    log "$TPU_NAME is $SLICE_STATE; checking again in 30s"
    sleep 30
  done
}

# Ships the committed HEAD of this checkout to every worker and installs it
# with jax[tpu] into ~/cot-distill-venv (remote_setup.sh does the install).
setup_workers() {
  local archive="${TMPDIR:-/tmp}/cot-distill-$TPU_NAME.tar.gz"
  location_flags
  run git -C "$REPO_ROOT" archive --format=tar.gz "--output=$archive" HEAD || return 1
  run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:$WORKER_ARCHIVE" \
    "${LOCATION_FLAGS[@]}" --worker=all || return 1
  on_workers all "$(format_command rm -rf "$WORKER_REPO") && $(format_command mkdir -p "$WORKER_REPO") && $(format_command tar -xzf "$WORKER_ARCHIVE" -C "$WORKER_REPO") && $(format_command bash "$WORKER_REPO/tpu_scripts/remote_setup.sh" "--python=$TPU_WORKER_PYTHON" "--jax-version=$TPU_JAX_VERSION")"
}

# The command a job runs on every worker: our trainer when gin files are
# given, else whatever follows `--`.
job_command() {
  JOB_COMMAND=()
  if ((${#GIN_FILES[@]})); then
    JOB_COMMAND=(python -m cot_distill.train)
    local gin_file binding
    for gin_file in "${GIN_FILES[@]}"; do
      JOB_COMMAND+=("--gin_file=$gin_file")
    done
    JOB_COMMAND+=("--gin.MODEL_DIR='$MODEL_DIR'")
    for binding in "${GIN_BINDINGS[@]}"; do
      JOB_COMMAND+=("--gin.$binding")
    done
    JOB_COMMAND+=("${PASSTHROUGH_ARGS[@]}")
  elif ((${#PASSTHROUGH_ARGS[@]})); then
    ((${#GIN_BINDINGS[@]} == 0)) || die "--gin bindings need --gin-file (our trainer)"
    JOB_COMMAND=("${PASSTHROUGH_ARGS[@]}")
  else
    die "nothing to launch: pass --gin-file FILE (trainer) or -- COMMAND ARGS"
  fi
}

# Starts the job on all workers at once (a multi-host slice runs one JAX
# program per worker), detached, logging to ~/cot-distill-logs/JOB.log.
launch_job() {
  job_command
  local runner_args=(start "--job=$TPU_JOB")
  ((RESTART_JOB)) && runner_args+=(--restart)
  local assignment
  for assignment in "${JOB_ENV[@]}"; do
    [[ "$assignment" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, not '$assignment'"
    runner_args+=("--env=$assignment")
  done
  on_workers all "bash $WORKER_RUNNER $(format_command "${runner_args[@]}" -- "${JOB_COMMAND[@]}")"
}

# Sets JOB_STATUS from worker 0: running, succeeded, failed:CODE, stopped,
# absent, not-installed (setup.sh has not run on this VM), or unreachable
# when SSH fails.
read_job_status() {
  location_flags
  query JOB_STATUS "$ASSUME_JOB_STATUS" gcloud compute tpus tpu-vm ssh "$TPU_NAME" \
    "${LOCATION_FLAGS[@]}" --worker=0 \
    "--command=if test -f $WORKER_RUNNER; then bash $WORKER_RUNNER status --job=$TPU_JOB; else echo not-installed; fi"
  JOB_STATUS="${JOB_STATUS:-unreachable}"
}
