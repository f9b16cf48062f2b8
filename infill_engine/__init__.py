"""diffill's infilling engine: code with a hole in, the model's filling out.

The public face.  Requests and results are plain Python (request.py) and import no torch;
`Engine` (engine.py), which does, is imported on first use:

    from infill_engine import Engine, InfillRequest
    engine = Engine.load()                      # the bundled model
    engine.infill(InfillRequest("def add(a, b):\n    return ", "\n")).text

Inside: backends/ (what runs a model), syntax/ (tree-sitter code understanding for
editors), pipeline/ (corpus, training, evaluation; never imported at run time), cli.py.
"""

from .request import (STRATEGIES, Candidate, InfillCancelled, InfillError, InfillOptions, InfillRequest,
                      InfillResult, SamplerSettings, TokenLikelihood)

__all__ = [
    "Engine", "InfillRequest", "InfillResult", "InfillOptions", "SamplerSettings", "Candidate", "TokenLikelihood",
    "InfillError", "InfillCancelled", "STRATEGIES",
]


def __getattr__(name: str):
    if name == "Engine":  # torch is imported here, not by `import infill_engine`
        from .engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
