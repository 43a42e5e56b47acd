"""Named steps of a study, where a test can stop the process to kill it at that exact point.

With AUTOPRUNE_PAUSE_AT=<step>[@<n>] in the environment, the n-th arrival (the first by default)
at <step> creates the file named by AUTOPRUNE_PAUSE_FILE and then sleeps until the process is
killed. Nothing else reads these variables; a study without them passes straight through.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

STEPS = (
    "study.opened",  # parent run open, stale trials recovered, no trial claimed yet
    "trial.claimed",  # Optuna trial RUNNING and owned; no MLflow child run yet
    "trial.run_created",  # child run exists; Optuna does not know its id
    "trial.run_linked",  # Optuna knows the run id; nothing compressed yet
    "trial.scored",  # compressed, scored and restored; Optuna not told
    "trial.told",  # Optuna says COMPLETE; the child run is still RUNNING
    "trial.closed",  # child run FINISHED
    "study.reporting",  # the Pareto table written, the plots not yet
)
_arrivals: Counter[str] = Counter()


def reached(step: str) -> None:
    """Mark arrival at `step`; pauses here only when a test asked for it."""
    wanted = os.environ.get("AUTOPRUNE_PAUSE_AT")
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    _arrivals[step] += 1
    if step == name and _arrivals[step] == int(nth or 1):
        Path(os.environ["AUTOPRUNE_PAUSE_FILE"]).write_text(f"{os.getpid()} {step}\n")
        while True:
            time.sleep(3600)
