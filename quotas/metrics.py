"""The quota layer's Prometheus metrics (this layer may not import the gateway; gateway.metrics
serves them with the others). Counted as the ledger is written, labelled by cluster only: a
transaction rolled back afterwards is still counted, which a rate over minutes does not mind."""

from __future__ import annotations

from prometheus_client import Counter

QUOTA_HOLDS = Counter("hpcgw_quota_holds", "Quotes held on an allocation for a new job.",
                      ["cluster"])
QUOTA_REFUSALS = Counter("hpcgw_quota_refusals",
                         "Jobs refused because no allocation could hold their quote.", ["cluster"])
QUOTA_SETTLEMENTS = Counter("hpcgw_quota_settlements",
                            "Jobs settled: their use charged and their hold released.", ["cluster"])
