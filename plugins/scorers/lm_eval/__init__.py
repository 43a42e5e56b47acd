"""Zero-shot accuracy through lm-evaluation-harness (the optional `autoprune[eval]` extra): the
`lm_eval` scorer, its own multiple-choice task built from the study's held-out text, and the
in-process bridge to the harness."""

from autoprune.plugin import Scorer, hookimpl
from autoprune_plugins.scorers.lm_eval.scorer import LmEval


@hookimpl
def register_scorers() -> list[Scorer]:
    return [LmEval()]
