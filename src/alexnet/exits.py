"""The exit statuses of every entry point, in one table (README, "Exit statuses"):

    0    completed
    1    failed: a crash, or a disk that cannot be written
    2    a user error: a bad value, a missing or damaged file (one ``error:`` line says which)
    3    diverged: a non-finite training loss
    128 + N  interrupted by signal N, resumable: 130 SIGINT (Ctrl-C), 138 SIGUSR1, 140 SIGUSR2,
             143 SIGTERM
"""

import signal

COMPLETED = 0
FAILED = 1
USER_ERROR = 2
DIVERGED = 3


def interrupted(signum: int) -> int:
    """The status of a run stopped by signal ``signum``: 128 + its number, as shells report."""
    return 128 + int(signum)


CTRL_C = interrupted(signal.SIGINT)  # 130

__all__ = ["COMPLETED", "CTRL_C", "DIVERGED", "FAILED", "USER_ERROR", "interrupted"]
