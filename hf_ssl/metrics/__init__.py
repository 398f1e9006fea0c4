"""`evaluate` metric modules shipped inside hf_ssl, loaded by path: evaluation never needs the Hub.
`clustering_agreement`: NMI, AMI, ARI of cluster assignments vs labels."""

import functools
import pathlib

import evaluate

METRICS_DIR = pathlib.Path(__file__).parent


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """`evaluate.load` of the module `hf_ssl/metrics/<name>/<name>.py`."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        known = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"no metric module {name!r} in hf_ssl; shipped: {known}")
    return evaluate.load(str(path))
