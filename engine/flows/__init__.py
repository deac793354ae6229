"""The flows: collections at work against the hub and Klaviyo.

- :mod:`engine.flows.summary`  the run summary every flow returns and the CLI prints
"""

from engine.flows.summary import RunSummary

__all__ = ["RunSummary"]
