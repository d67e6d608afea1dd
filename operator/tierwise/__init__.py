"""Tierwise: route, cascade and cache LLM calls; prove cheaper setups with evals."""

__version__ = "0.1.0"

GROUP = "tierwise.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
