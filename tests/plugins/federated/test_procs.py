import subprocess
import sys
import time

import pytest

from prunekit_federated.procs import ChildWatch, alive, descendants

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc bookkeeping is Linux-only")

# a child that starts a grandchild in its own session and exits: the grandchild is
# re-parented away from us, like a Ray worker after ray.shutdown()
ORPHAN = ("import subprocess, sys, time; "
          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
          "time.sleep(1.5)")


def test_watch_records_and_reaps_orphaned_grandchildren():
    with ChildWatch(interval=0.1) as watch:
        subprocess.run([sys.executable, "-c", ORPHAN], check=True)
    left = watch.left()
    assert len(left) == 1  # the sleeping grandchild outlived its parent
    signalled = watch.reap(grace=0.5, wait=5.0)
    assert signalled == left
    assert not alive(left[0]) and watch.left() == []


def test_alive_checks_the_start_time():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = descendants(__import__("os").getpid())[p.pid]
        assert alive(p.pid, start)
        assert not alive(p.pid, start + 1)  # same pid, other process
    finally:
        p.kill()
        p.wait()
    time.sleep(0.1)
    assert not alive(p.pid, start)
