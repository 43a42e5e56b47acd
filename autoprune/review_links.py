"""Where a person reviews a study: the MLflow UI's addresses a study's end prints, opening the runs
view as a reviewer needs it, and the command that opens the Optuna study in optuna-dashboard.

MLflow's UI (3.x) opens on its GenAI pages unless the address asks for `workflowType=machine_learning`,
and the runs table shows no metric columns until someone picks them. A saved view fixes both: the
UI reads an experiment tag `mlflow.sharedViewState.<key>` (its filter, sort and columns, as JSON)
when the address carries `viewStateShareKey=<key>`, the view its "Share" button creates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from urllib.parse import quote

from autoprune.components import Direction
from autoprune.storage import JOURNAL, SQLITE, storage_file

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
MACHINE_LEARNING = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default


def view_key(study_name: str) -> str:
    """A short key for the study's saved view, safe in an address whatever the study's name."""
    return "autoprune-" + hashlib.sha1(study_name.encode()).hexdigest()[:12]


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"


def runs_view_state(
    search_filter: str, objectives: Sequence[str], directions: Sequence[Direction], tags: Sequence[str]
) -> str:
    """A saved view of the runs `search_filter` finds, best first by the first objective, with the
    objectives and the `tags` as its first columns."""
    columns = [*(_column("metrics", objective) for objective in objectives), *(_column("tags", tag) for tag in tags)]
    state = {
        "searchFilter": search_filter,
        "orderByKey": columns[0],
        "orderByAsc": directions[0] == "minimize",
        "selectedColumns": columns,
        "columnOrder": columns,  # the objectives in the study's order, not alphabetical
        "runsHiddenMode": "SHOW_ALL",  # every trial in the charts, not the first ten
    }
    return json.dumps(state)


def absolute(uri: str) -> str:
    """A file store's URI (`sqlite:///`, `journal:///`) with an absolute path, so a command naming it
    works from any directory; any other URI as it is."""
    path = storage_file(uri)
    if path is None:
        return uri
    query = uri.partition("?")[2]
    return (SQLITE if uri.startswith(SQLITE) else JOURNAL) + str(path.resolve()) + (f"?{query}" if query else "")


def ui_address(tracking_uri: str) -> tuple[str, str | None]:
    """The UI's address for a tracking store, and the command that serves it (None: a server already does)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/"), None
    return LOCAL_UI, f"mlflow ui --backend-store-uri {absolute(tracking_uri)}"


def dashboard_command(storage: str) -> str:
    """The command that shows a study's Optuna storage in optuna-dashboard, which takes a database
    URL, or a journal file by its path."""
    if storage.startswith(JOURNAL):
        return f"optuna-dashboard {storage_file(storage).resolve()}"
    return f"optuna-dashboard {absolute(storage)}"


def runs_view_url(base: str, experiment_id: str, study_name: str) -> str:
    """The runs view showing the study's saved view."""
    return (
        f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={quote(view_key(study_name))}&{MACHINE_LEARNING}"
    )


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page: its description, params, metrics and artifacts."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{MACHINE_LEARNING}"
