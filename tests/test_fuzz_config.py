"""Fuzzing every user-facing key: no input may end in a traceback, start compute with a bad value,
or write a file before it is refused.

For each key of the composed configs (every leaf and every mapping, the search space's
`low`/`high`/`choices` entries included, schema keys that need Hydra's `+`, and unknown `+`
keys), Hypothesis generates values as a user would type them: wrong types, huge, negative and
non-finite numbers, empty, long and non-ASCII strings, path-like strings, nested lists and
mappings, deletions. Each run is `autoprune.cli.main` in process in a fresh directory (also HOME
and XDG_CACHE_HOME); it must either stop with exit code 2, exactly one stderr line
`autoprune: error: ...` and nothing created, or pass every check (the value happened to be
valid) and reach compute, where the harness stops it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from cli_harness import run_cli
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from autoprune.config import CONFIG_DIR, AutopruneConfig
from autoprune.registry import build_registry

EXAMPLES_PER_KEY = 4
BASES = ([], ["space=prune"], ["space=layers"], ["space=meta"], ["space=optishear"], ["+search=nsga3"])
UNKNOWN = ["+nope", "+model.nope", "+data.calibration.nope", "+space.prune.nope", "+space.nope.count", "+search.nope"]
tried = {"inputs": 0, "refused": 0, "valid": 0}


def _keys(node, prefix: str = "") -> list[str]:
    """Every key of a composed config: leaves and mappings and lists (replacing a whole entry)."""
    keys = [prefix] if prefix else []
    if isinstance(node, DictConfig):
        for name in node:
            keys += _keys(node[name], f"{prefix}.{name}" if prefix else str(name))
    return keys


def _composed(base: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="config", overrides=base)


def _targets() -> list[tuple[tuple[str, ...], str]]:
    """(base overrides, override prefix): plain keys of each base config, `+` for the schema's keys
    it lacks and for every key the prune and kv_cache sections take, the config groups, and unknown keys."""
    schema = OmegaConf.structured(AutopruneConfig)
    seen: set[str] = set()
    targets = []
    for base in BASES:
        composed = _composed(base)
        present = set(_keys(composed))
        for key in _keys(OmegaConf.merge(schema, composed)):
            if key not in seen:
                seen.add(key)
                targets.append((tuple(base), key if key in present else f"+{key}"))
    registry = build_registry()
    for base, compressor in (((), "prune"), (("space=joint",), "kv_cache")):
        keys = sorted(registry.compressor(compressor).section_keys(registry))
        targets += [(base, f"+space.{compressor}.{key}") for key in keys if f"space.{compressor}.{key}" not in seen]
    targets.append(((), "+search"))  # the optional config group; model=, data=, space= are keys above
    targets += [((), key) for key in UNKNOWN]
    return targets


TARGETS = _targets()

# --- values, as typed on the command line ---

SPECIAL = [
    "",
    "''",
    "null",
    "true",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "-1",
    "0",
    "4294967296",
    "99999999999999999999",
    "0.5",
    "abc",
    "'" + "x" * 5000 + "'",
    "/nonexistent/x",
    "'../..'",
    "'~'",
    ".",
    "[1,[2]]",
    "{a: {b: 1}}",
    "[]",
    "{}",
    "'spärsity'",
    "'😀'",
    "${nope}",
    "${oc.env:HOME}",
    "'http://127.0.0.1:9'",
    "'sqlite:////nonexistent/x.db'",
    "'journal:///nonexistent/x.log'",
    "2:4",
]


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


scalars = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20).map(_quoted),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Zs", "Cc")), max_size=12),  # unquoted
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda items: f"[{','.join(items)}]"),
        st.dictionaries(st.from_regex(r"[a-z_]{1,6}", fullmatch=True), children, max_size=2).map(
            lambda entries: "{" + ", ".join(f"{key}: {value}" for key, value in entries.items()) + "}"
        ),
    ),
    max_leaves=6,
)
overrides = st.one_of(values.map(lambda value: f"={value}"), st.just(None))  # None: delete the key with ~


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """Print how many inputs were tried (past pytest's output capture, so it shows in every run)."""
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(
            f"\nfuzz: {tried['inputs']} inputs over {len(TARGETS)} keys: {tried['refused']} refused with one line, "
            f"{tried['valid']} valid (passed every check)"
        )


@pytest.mark.parametrize("base, key", TARGETS, ids=[" ".join([*base, key]) for base, key in TARGETS])
@settings(
    max_examples=EXAMPLES_PER_KEY,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(value=overrides)
def test_every_input_is_refused_in_one_line_or_reaches_compute(base, key, value):
    if value is None:
        override = f"~{key.lstrip('+')}"
    else:
        override = f"{key}{value}"
    args = [*base, override]
    with tempfile.TemporaryDirectory() as directory:
        outcome = run_cli(args, Path(directory), stop_after_checks=True)
    tried["inputs"] += 1
    if outcome.code is None:  # the value happened to be valid: every check passed
        tried["valid"] += 1
        return
    lines = outcome.stderr.splitlines()
    assert outcome.code == 2, (args, outcome)
    assert len(lines) == 1 and lines[0].startswith("autoprune: error: "), (args, outcome.stderr)
    assert outcome.created == [], (args, outcome.created)
    tried["refused"] += 1
