"""score: the chosen pipeline's samples against the reference, nothing else; what
`python -m bench.score GEN REF` runs (bench/score.py). For samples made elsewhere that is the
job of torch-fidelity's `fidelity --input1 GEN --input2 REF --fid --kid`: every file of both
sets, each at its own size (bench.session.Session.reference_side, models/families/external.py)."""
from __future__ import annotations

from dataclasses import dataclass

from suites.common import quality_and_speed
from suites.params import QualityParams


@dataclass
class Params(QualityParams):
    pass


def run(session, params: Params) -> None:
    for name in session.pipeline_names():
        quality_and_speed(session, session.load_pipeline(name), speed_n=params.speed_n)
