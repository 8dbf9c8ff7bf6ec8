"""A hello-world BentoML service: the framework's ceiling on this machine for `serve_bench.py`.

Same request body schema as winback's `/recommend` (a list of customers with optional features), same
worker count (2, one thread each), and it answers a constant per customer: what is left of a request
when the models take no time at all. Started by the benchmark with `bentoml serve hello_service:Hello`.
"""

from __future__ import annotations

from typing import Optional

import bentoml
from pydantic import BaseModel


class Customer(BaseModel):
    customer_id: str
    features: Optional[dict[str, float | str | bool | None]] = None


@bentoml.service(name="hello", workers=2, threads=1)
class Hello:
    @bentoml.api
    def recommend(self, customers: list[Customer], max_sends: Optional[int] = None) -> dict:
        return {"recommendations": [{"customer_id": c.customer_id, "incentive": "none"} for c in customers]}
