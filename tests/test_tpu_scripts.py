"""Tests for tpu_scripts/: the exact --dry-run command sequences, the quoting
they rely on, the worker-side job runner (run for real on this machine), and
shellcheck.

The dry-run tests compare whole command sequences as strings, so a changed
flag, order or quote shows up as a diff; the launch tests also parse the
printed line back the way the local and the remote shell would, to prove the
job's argv survives both.
"""

from __future__ import annotations

import functools
import os
import pathlib
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tpu_scripts"
SHELL_SCRIPTS = sorted(SCRIPTS.glob("*.sh"))
FAKE_TMPDIR = "/tmp/cot-distill-test"

NAME = "cot-v4"
VM = "gcloud compute tpus tpu-vm"
QR = "gcloud compute tpus queued-resources"
WHERE = "--zone=us-central2-b --project=my-project"
TARGET = ["--name=cot-v4", "--zone=us-central2-b", "--project=my-project"]
RUNNER = "cot-distill/tpu_scripts/remote_run.sh"

DESCRIBE_VM = f"{VM} describe {NAME} {WHERE} --format='value(state)'"
DESCRIBE_QR = f"{QR} describe {NAME}-qr {WHERE} --format='value(state.state)'"
JOB_STATUS = (f"{VM} ssh {NAME} {WHERE} --worker=0 --command='if test -f {RUNNER}; "
              f"then bash {RUNNER} status --job=train; else echo not-installed; fi'")
SETUP = [
    f"git -C {REPO} archive --format=tar.gz --output={FAKE_TMPDIR}/cot-distill-{NAME}.tar.gz HEAD",
    f"{VM} scp {FAKE_TMPDIR}/cot-distill-{NAME}.tar.gz {NAME}:cot-distill.tar.gz {WHERE} --worker=all",
    (f"{VM} ssh {NAME} {WHERE} --worker=all --command='rm -rf cot-distill && mkdir -p cot-distill"
     " && tar -xzf cot-distill.tar.gz -C cot-distill && bash cot-distill/tpu_scripts/remote_setup.sh"
     " --python=python3.11 --jax-version=0.10.2'"),
]
MODEL_DIR = "gs://my-bucket/runs/gsm8k_cot"
RECIPE = "gin/recipes/gsm8k_t5_1_1_xxl_cot.gin"
LAUNCH_RESTART = (
    f"{VM} ssh {NAME} {WHERE} --worker=all --command=\"bash {RUNNER} start --job=train --restart"
    f" -- python -m cot_distill.train --gin_file={RECIPE} --gin.MODEL_DIR=\\\"'{MODEL_DIR}'\\\"\"")


@functools.cache
def _tripwire_bin() -> str:
  """A directory whose `gcloud` fails loudly: a test that forgets --dry-run
  must not reach Google Cloud with whatever credentials the machine has."""
  directory = pathlib.Path(tempfile.mkdtemp(prefix="cot-distill-tripwire-"))
  for tool in ("gcloud", "gsutil"):
    (directory / tool).write_text("#!/bin/sh\necho \"real $0 called: $*\" >&2\nexit 97\n")
    (directory / tool).chmod(0o755)
  return str(directory)


def _environment(**extra: str) -> dict[str, str]:
  """This process's environment minus the settings the scripts read."""
  environment = {key: value for key, value in os.environ.items()
                 if not key.startswith("TPU_") and key not in ("MODEL_DIR", "COT_DISTILL_WORKER_HOME")}
  environment["TMPDIR"] = FAKE_TMPDIR
  environment["PATH"] = _tripwire_bin() + os.pathsep + environment.get("PATH", "")
  environment.update(extra)
  return environment


def run_script(script: str, *args: str, **environment: str) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True,
                        env=_environment(**environment), cwd=REPO, timeout=60, check=False)


def dry_run(script: str, *args: str) -> list[str]:
  result = run_script(script, "--dry-run", *args)
  assert result.returncode == 0, result.stderr
  return result.stdout.splitlines()


def remote_argv(printed_ssh_line: str) -> list[str]:
  """The argv the worker runs: the line split as the local shell would, then
  its --command value split as the remote shell would."""
  (command,) = [word for word in shlex.split(printed_ssh_line) if word.startswith("--command=")]
  return shlex.split(command.removeprefix("--command="))


# ----------------------------------------------------------------- create ---

def test_create_vm_prints_create_then_the_readiness_poll():
  assert dry_run("create.sh", *TARGET) == [
      f"{VM} create {NAME} {WHERE} --accelerator-type=v4-8 --version=tpu-ubuntu2204-base",
      DESCRIBE_VM,
  ]


def test_create_spot_slice_through_a_queued_resource():
  assert dry_run("create.sh", *TARGET, "--accelerator-type=v5p-128", "--spot", "--queued") == [
      (f"{QR} create {NAME}-qr {WHERE} --node-id={NAME} --accelerator-type=v5p-128"
       " --runtime-version=v2-alpha-tpuv5 --spot"),
      DESCRIBE_QR,
  ]


@pytest.mark.parametrize("accelerator,runtime", [
    ("v4-32", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-128", "v2-alpha-tpuv5"),
    ("v6e-8", "v2-alpha-tpuv6e"),
])
def test_runtime_version_follows_the_accelerator_generation(accelerator, runtime):
  create_line = dry_run("create.sh", *TARGET, f"--accelerator-type={accelerator}", "--preemptible")[0]
  assert create_line.endswith(f"--accelerator-type={accelerator} --version={runtime} --preemptible")


def test_settings_come_from_the_environment_and_flags_win():
  result = run_script("create.sh", "--zone=europe-west4-a", "--dry-run",
                      TPU_NAME="from-env", TPU_ZONE="ignored", TPU_ACCELERATOR_TYPE="v4-16",
                      TPU_RUNTIME_VERSION="tpu-ubuntu2204-custom")
  assert result.stdout.splitlines()[0] == (
      f"{VM} create from-env --zone=europe-west4-a --accelerator-type=v4-16"
      " --version=tpu-ubuntu2204-custom")


@pytest.mark.parametrize("args,message", [
    (["--zone=z"], "--name (or TPU_NAME) is required"),
    (["--name=n"], "--zone (or TPU_ZONE) is required"),
    (["--name=n", "--zone=z", "--queued", "--preemptible"], "queued resources offer --spot"),
    (["--name=n", "--zone=z", "--accelerator-type=tpu7-8"], "pass --runtime-version"),
    (["--name=n", "--zone=z", "--frobnicate"], "unknown flag --frobnicate"),
    (["--name=n", "--zone"], "flag --zone needs a value"),
    (["--name=n", "--zone", "--spot"], "flag --zone needs a value"),
])
def test_bad_or_missing_settings_fail_with_the_flag_named(args, message):
  result = run_script("create.sh", "--dry-run", *args)
  assert result.returncode == 2
  assert message in result.stderr
  assert result.stdout == ""


# ------------------------------------------------------- setup and launch ---

def test_setup_ships_head_and_installs_on_every_worker():
  assert dry_run("setup.sh", *TARGET) == SETUP


def test_launch_trainer_on_all_workers_with_model_dir_on_gcs():
  lines = dry_run("launch.sh", *TARGET, f"--model-dir={MODEL_DIR}", f"--gin-file={RECIPE}",
                  "--gin-file=gin/partitioning/slices/v4_32.gin", "--gin=TRAIN_STEPS=4000",
                  "--gin=MIXTURE_OR_TASK_NAME='cot_distill.gsm8k.gpt3.cot'",
                  "--env=COT_DISTILL_DATA_DIR=gs://my-bucket/data")
  assert lines == [
      f"{VM} ssh {NAME} {WHERE} --worker=all --command=\"bash {RUNNER} start --job=train"
      " --env=COT_DISTILL_DATA_DIR=gs://my-bucket/data -- python -m cot_distill.train"
      f" --gin_file={RECIPE} --gin_file=gin/partitioning/slices/v4_32.gin"
      f" --gin.MODEL_DIR=\\\"'{MODEL_DIR}'\\\" --gin.TRAIN_STEPS=4000"
      " --gin.MIXTURE_OR_TASK_NAME=\\\"'cot_distill.gsm8k.gpt3.cot'\\\"\""
  ]
  assert remote_argv(lines[0]) == [
      "bash", RUNNER, "start", "--job=train", "--env=COT_DISTILL_DATA_DIR=gs://my-bucket/data", "--",
      "python", "-m", "cot_distill.train", f"--gin_file={RECIPE}",
      "--gin_file=gin/partitioning/slices/v4_32.gin", f"--gin.MODEL_DIR='{MODEL_DIR}'",
      "--gin.TRAIN_STEPS=4000", "--gin.MIXTURE_OR_TASK_NAME='cot_distill.gsm8k.gpt3.cot'",
  ]


def test_launch_any_command_after_double_dash():
  lines = dry_run("launch.sh", *TARGET, "--job=eval", "--", "cot-distill", "evaluate",
                  "--checkpoint", f"{MODEL_DIR}/checkpoints", "--note", "it's $HOME")
  assert remote_argv(lines[0]) == [
      "bash", RUNNER, "start", "--job=eval", "--", "cot-distill", "evaluate",
      "--checkpoint", f"{MODEL_DIR}/checkpoints", "--note", "it's $HOME"]


@pytest.mark.parametrize("args,message", [
    ([f"--gin-file={RECIPE}"], "--model-dir (or MODEL_DIR) is required"),
    ([f"--gin-file={RECIPE}", "--model-dir=/tmp/run"], "must be a gs:// path"),
    ([], "nothing to launch"),
    (["--gin=TRAIN_STEPS=1", "--", "true"], "--gin bindings need --gin-file"),
    ([f"--gin-file={RECIPE}", f"--model-dir={MODEL_DIR}", "--env=1BAD=x"], "--env wants NAME=VALUE"),
])
def test_launch_refuses_incomplete_requests(args, message):
  result = run_script("launch.sh", "--dry-run", *TARGET, *args)
  assert result.returncode == 2
  assert message in result.stderr


# ------------------------------------------- logs, status, fetch, delete ---

def test_logs_streams_worker_zero_by_default():
  assert dry_run("logs.sh", *TARGET) == [
      f"{VM} ssh {NAME} {WHERE} --worker=0 --command='bash {RUNNER} tail --job=train'"]
  assert dry_run("logs.sh", *TARGET, "--worker=all", "--job=eval") == [
      f"{VM} ssh {NAME} {WHERE} --worker=all --command='bash {RUNNER} tail --job=eval'"]


def test_status_reads_the_slice_then_every_worker():
  assert dry_run("status.sh", *TARGET) == [
      DESCRIBE_VM, f"{VM} ssh {NAME} {WHERE} --worker=all --command='bash {RUNNER} report --job=train'"]
  assert dry_run("status.sh", *TARGET, "--assume-state=CREATING") == [DESCRIBE_VM]


def test_fetch_copies_results_but_not_checkpoints_and_the_log():
  assert dry_run("fetch.sh", *TARGET, f"--model-dir={MODEL_DIR}", "--destination=results/gsm8k") == [
      "mkdir -p results/gsm8k",
      f"gcloud storage rsync --recursive --exclude='(^|/)(checkpoint_)?[0-9]+/' {MODEL_DIR} results/gsm8k",
      "mkdir -p results/gsm8k/logs",
      f"{VM} scp {NAME}:cot-distill-logs/train.log results/gsm8k/logs/ {WHERE} --worker=0",
  ]
  assert dry_run("fetch.sh", f"--model-dir={MODEL_DIR}", "--destination=out", "--with-checkpoints") == [
      "mkdir -p out", f"gcloud storage rsync --recursive {MODEL_DIR} out"]


def test_delete_vm_or_queued_resource():
  assert dry_run("delete.sh", *TARGET) == [f"{VM} delete {NAME} {WHERE} --quiet"]
  assert dry_run("delete.sh", *TARGET, "--queued") == [f"{QR} delete {NAME}-qr {WHERE} --force --quiet"]


def test_ssh_quotes_arguments_or_passes_one_shell_string():
  assert dry_run("ssh.sh", *TARGET, "--", "df", "-h", "/home") == [
      f"{VM} ssh {NAME} {WHERE} --worker=all --command='df -h /home'"]
  assert dry_run("ssh.sh", *TARGET, "--worker=1", "--", "cd cot-distill && git log -1") == [
      f"{VM} ssh {NAME} {WHERE} --worker=1 --command='cd cot-distill && git log -1'"]


# ------------------------------------------------------------------ watch ---

WATCH = [*TARGET, f"--model-dir={MODEL_DIR}", f"--gin-file={RECIPE}", "--spot"]
CREATE_SPOT_VM = f"{VM} create {NAME} {WHERE} --accelerator-type=v4-8 --version=tpu-ubuntu2204-base --spot"


@pytest.mark.parametrize("state,job_status,expected", [
    ("READY", "running", [DESCRIBE_VM, JOB_STATUS]),
    ("READY", "succeeded", [DESCRIBE_VM, JOB_STATUS]),
    ("READY", "failed:1", [DESCRIBE_VM, JOB_STATUS, LAUNCH_RESTART]),
    ("READY", "stopped", [DESCRIBE_VM, JOB_STATUS, LAUNCH_RESTART]),
    ("READY", "not-installed", [DESCRIBE_VM, JOB_STATUS, *SETUP, LAUNCH_RESTART]),
    ("CREATING", "running", [DESCRIBE_VM]),
    ("PREEMPTED", "running",
     [DESCRIBE_VM, f"{VM} delete {NAME} {WHERE} --quiet", CREATE_SPOT_VM, DESCRIBE_VM, *SETUP, LAUNCH_RESTART]),
    ("MISSING", "running", [DESCRIBE_VM, CREATE_SPOT_VM, DESCRIBE_VM, *SETUP, LAUNCH_RESTART]),
])
def test_watch_round_for_each_state(state, job_status, expected):
  assert dry_run("watch.sh", *WATCH, f"--assume-state={state}", f"--assume-job-status={job_status}") == expected


def test_watch_recreates_a_suspended_queued_resource():
  create = (f"{QR} create {NAME}-qr {WHERE} --node-id={NAME} --accelerator-type=v4-8"
            " --runtime-version=tpu-ubuntu2204-base --spot")
  assert dry_run("watch.sh", *WATCH, "--queued", "--assume-state=SUSPENDED") == [
      DESCRIBE_QR, f"{QR} delete {NAME}-qr {WHERE} --force --quiet", create, DESCRIBE_QR, *SETUP,
      LAUNCH_RESTART]


def test_watch_needs_something_to_launch():
  result = run_script("watch.sh", *TARGET, "--dry-run")
  assert result.returncode == 2 and "nothing to launch" in result.stderr


# ---------------------------------------------------------------- quoting ---

WORDS = ["plain", "two words", "it's", "say \"hi\" it's", "x$y'", "--gin.M='gs://b'",
         "--command=bash x --gin.M=\"'gs://b'\"", "", "--flag=", "back\\slash 'q'", "a\nb", "!bang'"]


def test_quoted_words_read_back_unchanged():
  snippet = (f"source {SCRIPTS / 'common.sh'}; "
             "for word in \"$@\"; do quote_word \"$word\"; printf '\\0'; done")
  result = subprocess.run(["bash", "-c", snippet, "bash", *WORDS], capture_output=True, text=True,
                          check=True, timeout=30)
  quoted = result.stdout.split("\0")[:-1]
  assert [shlex.split(word)[0] for word in quoted] == WORDS
  assert quoted[0] == "plain" and quoted[5] == "--gin.M=\"'gs://b'\""


# ------------------------------------------- worker side, run for real ---

@pytest.fixture
def worker_home(tmp_path):
  (tmp_path / "cot-distill").mkdir()
  return tmp_path


def remote(worker_home, *args: str) -> subprocess.CompletedProcess:
  return run_script("remote_run.sh", *args, COT_DISTILL_WORKER_HOME=str(worker_home),
                    STOP_TIMEOUT_SECONDS="10")


def wait_for_status(worker_home, job: str, wanted: str, timeout: float = 20.0) -> str:
  deadline = time.monotonic() + timeout
  status = ""
  while time.monotonic() < deadline:
    status = remote(worker_home, "status", f"--job={job}").stdout.strip()
    if status == wanted:
      break
    time.sleep(0.1)
  return status


def test_remote_job_runs_detached_in_the_repo_with_env_and_records_exit(worker_home):
  assert remote(worker_home, "status", "--job=probe").stdout.strip() == "absent"
  started = remote(worker_home, "start", "--job=probe", "--env=GREETING=hello there", "--",
                   "bash", "-c", "echo \"$GREETING from $(pwd)\"; exit 3")
  assert started.returncode == 0, started.stderr
  assert wait_for_status(worker_home, "probe", "failed:3") == "failed:3"
  log = (worker_home / "cot-distill-logs" / "probe.log").read_text()
  assert f"hello there from {worker_home / 'cot-distill'}" in log
  assert "ended" in log and "with status 3" in log
  report = remote(worker_home, "report", "--job=probe").stdout.strip()
  assert report.endswith("probe: failed:3")


def test_remote_job_refuses_a_second_start_and_stops_on_request(worker_home):
  started = remote(worker_home, "start", "--job=sleeper", "--", "sleep", "30")
  assert started.returncode == 0, started.stderr
  try:
    assert remote(worker_home, "status", "--job=sleeper").stdout.strip() == "running"
    again = remote(worker_home, "start", "--job=sleeper", "--", "sleep", "30")
    assert again.returncode == 2 and "already running" in again.stderr
  finally:
    stopped = remote(worker_home, "stop", "--job=sleeper")
  assert stopped.returncode == 0, stopped.stderr
  # SIGTERM reached the job, and the supervisor lived to record its status.
  assert wait_for_status(worker_home, "sleeper", "failed:143") == "failed:143"


def test_remote_restart_replaces_a_running_job(worker_home):
  assert remote(worker_home, "start", "--job=twice", "--", "sleep", "30").returncode == 0
  restarted = remote(worker_home, "start", "--job=twice", "--restart", "--", "true")
  assert restarted.returncode == 0, restarted.stderr
  assert wait_for_status(worker_home, "twice", "succeeded") == "succeeded"


def test_remote_start_needs_the_code_installed(tmp_path):
  result = remote(tmp_path, "start", "--job=x", "--", "true")
  assert result.returncode == 2 and "run setup.sh first" in result.stderr


def test_remote_setup_installs_python_only_when_missing(tmp_path):
  venv_python = tmp_path / "cot-distill-venv" / "bin" / "python"
  repo = tmp_path / "cot-distill"
  install = [
      f"{venv_python} -m pip install -q --upgrade pip",
      f"{venv_python} -m pip install -q -c {repo}/.ci/constraints.txt -e {repo}",
      (f"{venv_python} -m pip install -q 'jax[tpu]==0.10.2'"
       " -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"),
      f"{venv_python} -c 'import cot_distill, jax; print(\"cot-distill ready; jax\", jax.__version__)'",
  ]
  present = run_script("remote_setup.sh", "--python=bash", "--dry-run",
                       COT_DISTILL_WORKER_HOME=str(tmp_path))
  assert present.stdout.splitlines() == [f"bash -m venv {tmp_path}/cot-distill-venv", *install]
  missing = run_script("remote_setup.sh", "--python=python3.99", "--dry-run",
                       COT_DISTILL_WORKER_HOME=str(tmp_path))
  assert missing.stdout.splitlines() == [
      "sudo apt-get update -q",
      "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.99 python3.99-venv",
      f"python3.99 -m venv {tmp_path}/cot-distill-venv", *install]


# ------------------------------------------------------- every script ---

@pytest.mark.parametrize("script", [path.name for path in SHELL_SCRIPTS if path.name != "common.sh"])
def test_every_script_parses_and_has_help(script):
  assert subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=False).returncode == 0
  result = run_script(script, "--help")
  assert result.returncode == 0, result.stderr
  assert script in result.stdout


def test_shellcheck_is_clean():
  """Fails on any finding when shellcheck is installed (CI installs it:
  `apt-get install -y shellcheck`); skips, saying so, where it is not."""
  shellcheck = shutil.which("shellcheck")
  if shellcheck is None:
    pytest.skip("shellcheck not installed (apt-get install -y shellcheck)")
  result = subprocess.run([shellcheck, "-x", *map(str, SHELL_SCRIPTS)], capture_output=True, text=True,
                          cwd=REPO, check=False, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
