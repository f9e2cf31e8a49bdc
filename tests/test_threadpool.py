"""The kernels' thread pool: every index of every job visited exactly once, also when workers are late.

A late worker (descheduled mid-chunk by another process) narrows the pool for a while; chunking never
depends on that, so results cannot either (the kernel tests check thread-count invariance bit for bit).
"""
import subprocess
import sys
import time

import pytest

from lmrt import _core

K = _core.kernels


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_every_index_once(threads):
    r = K.check_pool(threads, 3000)
    assert r["num_jobs"] == 3000
    assert r["bad_indices"] == 0, r


def test_late_worker_narrows_the_pool_and_loses_nothing():
    # Every 4th job's last chunk sleeps 2 ms: when a worker holds it, the caller waits far longer
    # than its own chunks take (> 200 us), which is the pool's sign of a descheduled worker.
    r = K.check_pool(2, 400, slow_every=4, slow_us=2000)
    assert r["bad_indices"] == 0, r
    assert r["late_workers"] > 0, f"a worker held a 2 ms chunk in none of 100 jobs: {r}"
    assert r["narrow_jobs"] > 0, r


def test_every_index_once_beside_a_busy_process():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        for threads in (2, 4):
            r = K.check_pool(threads, 2000, slow_every=50, slow_us=500)
            assert r["bad_indices"] == 0, (threads, r)
    finally:
        hog.kill()
        hog.wait()
