"""Where a study's trials live, and the lock that lets several processes share one study.

`study.storage` takes:

    sqlite:///PATH                 Optuna's RDB storage in a SQLite file (the default; one machine)
    journal:///PATH                Optuna's journal storage: an append-only log file, for a file
                                   system that several machines share (NFS)
    postgresql://USER@HOST/DB      any SQLAlchemy URL of a database server (also mysql://...)

After the third slash PATH is relative; a fourth makes it absolute (SQLAlchemy's convention).

Processes on a file storage take `study_lock` around the steps that must not interleave:
creating the study, queueing the baselines, claiming a trial within the budget, telling or
failing one, creating the parent run, reconciling MLflow and writing the Pareto report. A lock
held by a killed process is released by the kernel, so a kill never blocks a later run.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

SQLITE, JOURNAL = "sqlite:///", "journal:///"
SQLITE_TIMEOUT_S = 60  # several processes write one SQLite file; wait for each other's writes


def storage_file(uri: str) -> Path | None:
    """The file behind a SQLite or journal URI (None for a database server or an in-memory database)."""
    for prefix in (SQLITE, JOURNAL):
        if uri.startswith(prefix):
            path = uri.removeprefix(prefix).split("?")[0]
            return None if path in ("", ":memory:") else Path(path)
    return None


def open_storage(uri: str) -> BaseStorage:
    """An Optuna storage for a `study.storage` URI (the table above)."""
    if uri.startswith(JOURNAL):
        return JournalStorage(JournalFileBackend(str(storage_file(uri))))
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if uri.startswith(SQLITE) else None
    return RDBStorage(uri, engine_kwargs=engine_kwargs)


@contextmanager
def file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock on `<path>.autoprune-lock` (nothing for None, i.e. a database server,
    which orders its own transactions). Not `<path>.lock`: Optuna's journal storage locks its
    file by creating that name."""
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".autoprune-lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def study_lock(uri: str):
    """The lock of the study storage at `uri` (see `file_lock`)."""
    return file_lock(storage_file(uri))
