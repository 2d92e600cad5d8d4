"""Several workers on one study in PostgreSQL, for real: a private cluster in a temporary folder
on a free port, run as an unprivileged user (the server refuses root); two `qmtik tune`
processes share a study, none of its trials is lost or counted twice, and a worker killed in
the middle of a trial leaves the study consistent (its trial failed by the heartbeat's grace and
run again by another worker). CI installs PostgreSQL (.ci/run); elsewhere it is skipped, saying why."""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="the search needs the [tune] extra (optuna)")
pytest.importorskip("psycopg2", reason="PostgreSQL storage needs psycopg2-binary (the [tune] extra)")

from qmtik.tune import counted, driver_url  # noqa: E402
from qmtik.tune_front import front, record  # noqa: E402

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
pytestmark = pytest.mark.skipif(
    not BINARIES, reason="PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"
)
SRC = str(Path(__file__).resolve().parents[1] / "src")
CONFIG = """\
[data]
dataset = "digits"

[tune]
widths = [4, 8, 16]
depth = [1, 1]
trial_epochs = [{epochs}]
trial_samples = 1400
pruner = "none"
heartbeat = 1
grace = 4
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """postgresql://postgres@127.0.0.1:PORT/postgres of a cluster of our own, stopped after."""
    bin_dir = Path(BINARIES[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="qmtik-pg-"))
    prefix = []
    if os.geteuid() == 0:  # the server refuses to run as root: as nobody, who owns the folder
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        prefix = ["runuser", "-u", "nobody", "--"]
    data, port = folder / "data", free_port()
    run = dict(check=True, capture_output=True, cwd=folder)
    subprocess.run(prefix + [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-N"], **run)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = folder / "server.log"
    subprocess.run(
        prefix + [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", options, "start"], **run
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(url: str, name: str) -> str:
    """A new, empty database on the server: the workers race to create Optuna's tables in it."""
    import psycopg2

    connection = psycopg2.connect(url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return url.rsplit("/", 1)[0] + "/" + name


def worker(config, url, study, trials, *extra):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "qmtik", "tune", str(config), "--trials", str(trials)]
    command += ["--storage", url, "--study", study, "-q", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trials_of(url, study):
    storage = optuna.storages.RDBStorage(driver_url(url))
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def trained_by(output: str) -> int:
    line = next(line for line in output.splitlines() if line.startswith("this worker:"))
    return int(line.split()[2])


def test_two_workers_share_a_study_and_no_trial_is_lost_or_counted_twice(server, tmp_path):
    config = tmp_path / "net.toml"
    config.write_text(CONFIG.format(epochs=12))  # trials long enough that both workers get some
    server = fresh_database(server, "shared")  # both workers create the tables at once
    procs = [worker(config, server, "shared", 12) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = trials_of(server, "shared")
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)  # nothing left running or waiting
    done = [t for t in trials if counted(t)]
    by_worker = [trained_by(out) for out, _ in outputs]
    assert sum(by_worker) == len(done) and 12 <= len(done) <= 13  # each counted once; one extra at most
    assert min(by_worker) >= 1, by_worker  # both did some of the work

    # a last worker finds the study done, and its front is what the trials' records say
    last = worker(config, server, "shared", 12)
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert trained_by(out) == 0
    table = out.split("Pareto front (int8 validation accuracy, flash, RAM):\n")[1].splitlines()[1:]
    shown = [int(line.split()[0]) for line in table if line[:5].strip().isdigit()]
    assert shown == [r["number"] for r in front([record(t) for t in trials])]


def test_a_worker_killed_mid_trial_leaves_the_study_consistent(server, tmp_path):
    # The victim is asked for far more trials than it can train, so it is always in one when
    # killed; a trial is about a second long, the poll a fraction of that.
    config = tmp_path / "net.toml"
    config.write_text(CONFIG.format(epochs=60))
    victim = worker(config, server, "killed", 500)
    deadline = time.monotonic() + 120
    running = []
    while not running and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.2)
        try:
            running = [
                t for t in trials_of(server, "killed") if t.state.name == "RUNNING" and "network" in t.user_attrs
            ]
        except KeyError:  # the study is not created yet
            continue
    if victim.poll() is not None:
        pytest.fail(f"the first worker exited ({victim.returncode}) before it was killed: {victim.communicate()}")
    assert running, "the first worker never started training a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    before = trials_of(server, "killed")
    [killed] = [t for t in before if t.state.name == "RUNNING"]  # one worker: one trial in flight
    done_before = sum(counted(t) for t in before)
    time.sleep(5)  # longer than tune.grace (4 s): its heartbeat is stale
    rescuer = worker(config, server, "killed", done_before + 1)  # room for the retried trial alone
    out, err = rescuer.communicate(timeout=600)
    assert rescuer.returncode == 0, err
    trials = {t.number: t for t in trials_of(server, "killed")}
    assert trials[killed.number].state.name == "FAIL"
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == killed.params == trials[killed.number].params
    assert sum(counted(t) for t in trials.values()) == done_before + 1
    assert trained_by(out) == 1
    assert not [t for t in trials.values() if t.state.name in ("RUNNING", "WAITING")]
