"""Whole pipelines that chain the packages below them (ingest, data, train, eval, export).

The top library layer: only the CLI and benchmarks import it.
"""

from .quickstart import QuickstartResult, quickstart

__all__ = ["QuickstartResult", "quickstart"]
