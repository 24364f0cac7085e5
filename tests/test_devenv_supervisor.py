"""`make dev`'s supervisor (scripts/devenv.py), run as `make dev` runs it, on a Procfile of real processes:
one that keeps exiting is started again, and stopping the supervisor stops every process, their own
children included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT, wait_until

PYTHON = sys.executable


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie has exited; it only waits for its parent to notice
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_process_that_exits_is_restarted_and_stopping_the_supervisor_stops_every_process(tmp_path):
    starts = tmp_path / "crasher.pids"
    server_pids = tmp_path / "server.pids"
    # `crasher` records its pid and exits at once, as a worker does when Redis restarts under it;
    # `server` is a long-running process with a child of its own (as gunicorn and Celery have).
    crasher = f"import os; open({str(starts)!r}, 'a').write(f'{{os.getpid()}}\\n'); print('crashing', flush=True)"
    server = (
        "import os, subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(server_pids)!r}, 'w').write(f'{{os.getpid()}}\\n{{child.pid}}\\n'); "
        "print('serving', flush=True); time.sleep(600)"
    )
    procfile = tmp_path / "Procfile"
    procfile.write_text(f'crasher: {PYTHON} -c "{crasher}"\nserver: {PYTHON} -c "{server}"\n')
    run = (
        "import sys; from pathlib import Path; sys.path.insert(0, 'scripts'); import os, devenv; "
        f"sys.exit(devenv.Supervisor(devenv.read_procfile(Path({str(procfile)!r})), env=dict(os.environ), "
        f"cwd=Path({str(tmp_path)!r})).run())"
    )
    log_path = tmp_path / "supervisor.log"
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen([PYTHON, "-c", run], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(pids(starts)) >= 3, timeout=30, what="the exiting process to be started again")
        wait_until(lambda: len(pids(server_pids)) == 2, timeout=10, what="the server and its child")
        assert supervisor.poll() is None, "the supervisor must keep running when one process exits"
        server_pid, grandchild_pid = pids(server_pids)
        assert alive(server_pid) and alive(grandchild_pid), "the other processes must keep running"
        assert len(set(pids(starts))) == len(pids(starts)), "each start is a new process"

        supervisor.send_signal(signal.SIGTERM)  # as Ctrl-C (SIGINT) or a closed terminal does
        assert supervisor.wait(timeout=30) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    for pid in (server_pid, grandchild_pid):
        wait_until(lambda pid=pid: not alive(pid), timeout=5, what=f"process {pid} to stop")
    output = log_path.read_text()
    assert "crasher exited with code 0" in output and "restarting in" in output
    assert "| crashing" in output and "| serving" in output  # each process's output, under its name
    assert "every process stopped" in output
