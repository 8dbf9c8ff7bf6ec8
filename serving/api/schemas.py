"""HTTP request and response bodies of the online service, validated once at the edge.

Limits live here: 1..10,000 customers per request, unknown fields rejected, feature values are a
number, a string, a boolean or null. What a value must be for a given model (a number for a numeric
feature, any string for a category) is checked by the model's FeatureEncoder, which names the field.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

MAX_CUSTOMERS = 10_000
FEATURE_VALUE_SCHEMA = {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "null"}]}


def feature_value(value: Any) -> Any:
    """A feature value as sent: a number, a string, a boolean or null, kept as it is (no coercion, so
    "40" stays a string and the model's encoder says "expected a number"). NaN and infinities are
    refused (a missing value is null), and so are objects and lists, each with one error for the field."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise PydanticCustomError("feature_value", "expected a finite number or null (missing), got {value}",
                                  {"value": str(value)})
    kind = {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)
    raise PydanticCustomError("feature_value", "expected a number, a string, a boolean or null, got {kind}",
                              {"kind": kind})


FeatureValue = Annotated[Any, PlainValidator(feature_value), WithJsonSchema(FEATURE_VALUE_SCHEMA)]
CustomerId = Annotated[str, Field(min_length=1, max_length=256, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Customer(_Strict):
    """One customer: its features, or only its id to look it up in the service's feature snapshot."""

    customer_id: CustomerId
    features: Optional[dict[StrictStr, FeatureValue]] = Field(
        default=None, description="feature name → value; omit to use the feature snapshot loaded at start")


Customers = Annotated[list[Customer], Field(min_length=1, max_length=MAX_CUSTOMERS)]


class ScoreRequest(_Strict):
    customers: Customers


class RecommendRequest(_Strict):
    customers: Customers
    max_sends: Optional[Annotated[int, Field(ge=0)]] = Field(
        default=None, description="send at most this many incentives in this request (highest net value first)")
    budget: Optional[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default=None, description="total send cost of this request at most this much (best net value per unit "
                                  "of cost first); with max_sends, both hold")


MAX_EVENTS = 50_000
EventRecord = dict[StrictStr, FeatureValue]


class EventsRequest(_Strict):
    """A batch for the online store: purchases (the transactions contract: event_id, customer_id, timestamp,
    amount, optional quantity, category, channel) and engagement events (event_id, customer_id, timestamp,
    event_type, optional channel). Applied whole or not at all; an event id applied before is skipped."""

    transactions: Optional[Annotated[list[EventRecord], Field(max_length=MAX_EVENTS)]] = None
    events: Optional[Annotated[list[EventRecord], Field(max_length=MAX_EVENTS)]] = None


class EventsResponse(BaseModel):
    received: int = Field(description="rows in the request (repeats of an event id within it counted once)")
    duplicates: int = Field(description="rows whose event id the store had already applied (skipped)")
    applied: int
    customers: int = Field(description="customers whose state changed")
    triggers: int = Field(description="triggers written to the outbox by this batch")


class Reason(BaseModel):
    feature: str
    contribution: float = Field(description="TreeSHAP contribution to the churn log-odds")


class Score(BaseModel):
    customer_id: str
    churn_probability: float
    risk_tier: str
    lifecycle_stage: Optional[str] = Field(description="null for models trained without transaction features")
    value_tier: Optional[str]
    expected_spend: Optional[float] = Field(
        default=None, description="expected spend over the model's horizon (null without a value model)")
    value_if_retained: Optional[float] = Field(
        default=None, description="expected spend over the horizon if the customer buys in it")
    value_at_risk: Optional[float] = Field(default=None, description="churn_probability × value_if_retained")
    clv_12m: Optional[float] = Field(default=None, description="expected spend over the next 12 months")
    reasons: list[Reason]


class ScoreResponse(BaseModel):
    scores: list[Score]


class Recommendation(BaseModel):
    customer_id: str
    incentive: str
    expected_net_value: float
    uplift: dict[str, float]
    churn_probability: float
    featured_category: Optional[str] = Field(default=None, description="with a personalised incentive in the "
                                             "catalogue: the category it features for this customer")
    category_affinity: Optional[float] = Field(default=None, description="the customer's affinity for it")


class RecommendResponse(BaseModel):
    recommendations: list[Recommendation]


class ModelDescription(BaseModel):
    name: str
    bento_tag: str
    registry_version: Optional[str]
    mlflow_run_id: Optional[str]
    model_uri: Optional[str]


class ModelInfo(BaseModel):
    models: list[ModelDescription]
    churn_features: list[str]
    uplift_features: list[str]
    arms: list[str]
    control: str
    feature_snapshot: Optional[str] = Field(description="path of WINBACK_FEATURES, if a snapshot is loaded")
    snapshot_customers: int


class ErrorBody(BaseModel):
    """Every 4xx answer: what is wrong, naming the request field (e.g. customers[0].features.recency_days)."""

    error: str
    field: Optional[str] = Field(default=None, description="the request field at fault, when there is one")
