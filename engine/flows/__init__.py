"""The flows: collections at work against the hub and Klaviyo.

- :mod:`engine.flows.inbound`   ``poll`` and ``sync profile``: Klaviyo profiles into hub Customers
- :mod:`engine.flows.outbound`  ``dispatch`` and ``push``: hub Customers and Transactions to Klaviyo
- :mod:`engine.flows.summary`   the run summary every flow returns and the CLI prints
"""

from engine.flows.inbound import InboundFlow
from engine.flows.outbound import OutboundReport, dispatch, push
from engine.flows.summary import RunSummary

__all__ = ["InboundFlow", "OutboundReport", "RunSummary", "dispatch", "push"]
