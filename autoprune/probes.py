"""Rules that look at the machine before a study starts, and never change it.

Devices, readable files, writable places, the Optuna storage and the MLflow tracking store are
checked here so that a study that cannot record its results stops before the model loads, in
seconds, having created nothing: a store's directory must exist and be writable (the store file
itself may be absent), a directory that will be created needs a writable nearest parent, and a
server must answer a TCP connect (and, for MLflow, `GET /health`) within `TIMEOUT` seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

from autoprune.storage import storage_file
from autoprune.validation import Rule, show

TIMEOUT = 3.0  # seconds a server has to answer
SQLITE_HEADER = b"SQLite format 3\x00"
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}
STORAGE_FORMS = "sqlite:///PATH or journal:///PATH in an existing writable directory, or a database URL such as postgresql://user@host/db"
TRACKING_FORMS = "sqlite:///PATH in an existing writable directory, a writable directory, file:///DIR or http(s)://HOST:PORT of a running MLflow server"


def _stat_error(path: Path) -> Exception | None:
    """What `stat` raises for the path (None if it exists): names can be too long or hold a NUL byte."""
    try:
        os.stat(path)
    except (OSError, ValueError) as error:
        return error
    return None


def _exists(path: Path) -> bool | None:
    """Whether the path exists; None when the name itself cannot be looked up."""
    error = _stat_error(path)
    if error is None:
        return True
    return False if isinstance(error, (FileNotFoundError, NotADirectoryError)) else None


def _why_unusable(path: Path) -> str:
    error = _stat_error(path)
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


def writable_dir(path: Path) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def directory_problem(path: Path, creatable: bool) -> str | None:
    """Why files cannot be written in `path` (None when they can). With `creatable`, a missing
    directory is fine when its nearest existing parent is a writable directory."""
    state = _exists(path)
    if state is None:
        return f"it cannot be used as a path ({_why_unusable(path)})"
    if state:
        return None if writable_dir(path) else f"{path} is not a writable directory"
    if not creatable:
        return f"the directory {path} does not exist"
    parent = path.absolute().parent
    while _exists(parent) is False and parent != parent.parent:
        parent = parent.parent
    if writable_dir(parent):
        return None
    return f"it would be created under {parent}, which is not a writable directory"


def store_file_problem(path: Path, header: bytes | None = None) -> str | None:
    """Why a store file cannot be opened: its directory must be writable; the file may be absent,
    but if present it must be a readable, writable regular file (starting with `header`)."""
    state = _exists(path)
    if state is None:
        return f"{str(path)[:60]!r} cannot be used as a path ({_why_unusable(path)})"
    directory = path.parent
    if not state:
        if _exists(directory) is not True:
            return f"the directory {directory} does not exist"
        return None if writable_dir(directory) else f"the directory {directory} is not writable"
    if not path.is_file() or not os.access(path, os.R_OK | os.W_OK):
        return f"{path} is not a readable and writable file"
    if header is not None and path.stat().st_size > 0:
        with open(path, "rb") as stream:
            if stream.read(len(header)) != header:
                return f"{path} is not an SQLite database"
    return None


def journal_problem(path: Path) -> str | None:
    """`store_file_problem`, and an existing file must be an Optuna journal: JSON lines, not a
    SQLite database or any other file a typo could point at."""
    problem = store_file_problem(path)
    if problem or not path.is_file() or path.stat().st_size == 0:
        return problem
    with open(path, "rb") as stream:
        first = stream.readline(1 << 16)
    if first.startswith(SQLITE_HEADER):
        return f"{path} is an SQLite database, not a journal (use sqlite:///{path})"
    try:
        json.loads(first)
    except ValueError:
        return f"{path} is not an Optuna journal (its first line is not JSON)"
    return None


def answers(host: str, port: int, timeout: float = TIMEOUT) -> bool:
    """Whether something accepts a TCP connection at host:port within `timeout` (name lookup included)."""
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(True)
        except Exception:  # noqa: BLE001 (a refused, unresolvable or malformed address: no answer)
            outcome.append(False)

    thread = threading.Thread(target=attempt, daemon=True)  # a hanging name lookup is left behind
    thread.start()
    thread.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def database_problem(url: str) -> str | None:
    """Why a SQLAlchemy database URL cannot be used: unparsable, unknown database, driver not
    installed, or no answer from its host within `TIMEOUT`. SQLite files get `store_file_problem`."""
    if url.startswith("sqlite:///"):
        path = storage_file(url)
        return store_file_problem(path, SQLITE_HEADER) if path else None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, ValueError):
        return "it is not a URL this accepts"
    try:
        dialect.import_dbapi()
    except ImportError as error:
        backend = parsed.get_backend_name()
        return (
            f"the {backend} driver ({error.name or parsed.drivername}) is not installed; install it, "
            f"or name an installed one as {backend}+DRIVER://..."
        )
    port = parsed.port or DEFAULT_PORTS.get(parsed.get_backend_name())
    if parsed.host and port and not answers(parsed.host, port):
        return f"nothing answers at {parsed.host}:{port} within {TIMEOUT:g} s (is the database server running?)"
    return None


def mlflow_server_problem(url: str) -> str | None:
    """Why an MLflow tracking server cannot be used: no TCP answer, or no healthy `GET /health`."""
    try:
        parsed = urlparse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError as error:
        return f"it is not a valid URL ({error})"
    if not parsed.hostname:
        return "it names no host"
    if not answers(parsed.hostname, port):
        return (
            f"nothing answers at {parsed.hostname}:{port} within {TIMEOUT:g} s "
            f"(start it with: mlflow server --host {parsed.hostname} --port {port})"
        )
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=TIMEOUT) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, ValueError) as error:
        return f"{parsed.hostname}:{port} accepts connections but GET /health failed ({error}); is it an MLflow server?"
    if status != 200:
        return f"{parsed.hostname}:{port} answered GET /health with {status}; is it an MLflow tracking server?"
    return None


class Device(Rule):
    """A torch device this machine has: cpu, cuda / cuda:N with N below the device count, mps."""

    probe: ClassVar[bool] = True

    def problem(self, key: str, value: Any) -> str | None:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = ["cpu", *(["cuda", *(f"cuda:{index}" for index in range(count))] if count else [])]
        if torch.backends.mps.is_available():
            devices.append("mps")
        if value in devices:
            return None
        return f"{key} is {show(value)}, which this machine does not have; use one of {', '.join(devices)}"


class ReadableFile(Rule):
    """An existing file this process may read."""

    probe: ClassVar[bool] = True

    def problem(self, key: str, value: Any) -> str | None:
        path = Path(value)
        if _exists(path) and path.is_file() and os.access(path, os.R_OK):
            return None
        return f"{key}: {show(value)} is not a file (or not readable); list existing text files"


@dataclasses.dataclass(frozen=True)
class WritableDir(Rule):
    """A directory to write into: existing and writable, or creatable under a writable parent."""

    probe: ClassVar[bool] = True
    creatable: bool = True

    def problem(self, key: str, value: Any) -> str | None:
        reason = directory_problem(Path(value), self.creatable)
        return f"{key} is {show(value)}, but {reason}; choose a directory you can write to" if reason else None


class StorageURL(Rule):
    """An Optuna storage: `sqlite:///PATH`, `journal:///PATH` (a journal file, for shared file
    systems) or another SQLAlchemy URL whose driver is installed and whose host answers."""

    probe: ClassVar[bool] = True

    def problem(self, key: str, value: Any) -> str | None:
        if value.startswith("journal:///"):
            path = value.removeprefix("journal:///")
            reason = journal_problem(Path(path)) if path and not path.endswith("/") else "it names no file"
        elif "://" in value:
            reason = database_problem(value)
        else:
            reason = "it is not a URL"
        return f"{key} is {show(value)}, but {reason}; use {STORAGE_FORMS}" if reason else None


class TrackingURI(Rule):
    """An MLflow tracking store: `sqlite:///PATH`, a local directory or `file:` URI (created when
    missing), an `http(s)://` server that answers, or another database URL."""

    probe: ClassVar[bool] = True

    def problem(self, key: str, value: Any) -> str | None:
        try:
            parsed = urlparse(value)
        except ValueError as error:
            return f"{key} is {show(value)}, but it is not a valid URL ({error}); use {TRACKING_FORMS}"
        scheme = parsed.scheme if "://" in value or value.startswith("file:") else ""
        if scheme in ("http", "https"):
            reason = mlflow_server_problem(value)
        elif scheme == "file":
            reason = directory_problem(Path(parsed.path), creatable=True)
        elif scheme == "databricks":
            reason = None  # reached through the Databricks CLI's own profile; nothing to probe here
        elif scheme:
            reason = database_problem(value)
        else:
            reason = directory_problem(Path(value), creatable=True) if value else "it is empty"
        return f"{key} is {show(value)}, but {reason}; use {TRACKING_FORMS}" if reason else None


def running_ray_address() -> str | None:
    """The cluster `ray.init(address="auto")` connects to, found as Ray finds it: RAY_ADDRESS, else
    the address `ray start` last wrote to `ray_current_cluster` in Ray's temp dir."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    try:
        return (Path(temp) / "ray" / "ray_current_cluster").read_text().strip() or None
    except OSError:
        return None


class RayAddress(Rule):
    """A Ray cluster that answers a TCP connect at its head's HOST:PORT (`auto`: the one running here)."""

    probe: ClassVar[bool] = True

    def problem(self, key: str, value: Any) -> str | None:
        address = running_ray_address() if value == "auto" else value
        if address is None:
            return (
                f"{key} is 'auto', but no Ray cluster runs on this machine (RAY_ADDRESS is unset and `ray start` "
                "left no address); start one with `ray start --head`, give its head's HOST:PORT, or leave "
                f"{key} unset to start Ray for this study"
            )
        host, _, port = address.rpartition(":")
        if host and port.isdigit() and answers(host, int(port)):
            return None
        found = f" ({address})" if value == "auto" else ""
        return (
            f"{key} is {show(value)}{found}, but no Ray cluster answers there within {TIMEOUT:g} s; "
            "start it (`ray start --head`) or fix the address"
        )
