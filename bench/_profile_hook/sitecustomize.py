"""Imported at start-up by a server that ``bench.profile_server`` starts (this folder on its ``PYTHONPATH``):
SIGUSR1 starts a cProfile of the main (event-loop) thread timed in that thread's CPU time, SIGUSR2 stops it and
writes it to ``$CLOUDEASYML_PROFILE_OUT``.
"""

from __future__ import annotations

import cProfile
import os
import signal
import time

_profile: cProfile.Profile | None = None


def _start(_signum: int, _frame: object) -> None:
    global _profile  # noqa: PLW0603 - one profile per process, switched by signals
    _profile = cProfile.Profile(time.thread_time)
    _profile.enable()


def _stop(_signum: int, _frame: object) -> None:
    if _profile is not None:
        _profile.disable()
        _profile.dump_stats(os.environ["CLOUDEASYML_PROFILE_OUT"])


if os.environ.get("CLOUDEASYML_PROFILE_OUT"):
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
