"""HTTP request and response bodies of the online service, validated once at the edge.

Limits live here: 1..10,000 customers per request, unknown fields rejected, feature values are a
number, a string, a boolean or null. What a value must be for a given model (a number for a numeric
feature, any string for a category) is checked by the model's FeatureEncoder, which names the field.
"""

from __future__ import annotations

from typing import Annotated, Optional, Union

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt, StrictStr

MAX_CUSTOMERS = 10_000

# Strict members so that a JSON boolean stays a boolean and "40" stays a string (the encoder then
# says "expected a number") instead of being coerced silently. NaN and infinities are refused: a
# missing value is null.
FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]
FeatureValue = Optional[Union[StrictBool, StrictInt, FiniteFloat, StrictStr]]
CustomerId = Annotated[str, Field(min_length=1, max_length=256)]


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
        default=None, description="send at most this many incentives in this request (best net value per cost first)")


class Reason(BaseModel):
    feature: str
    contribution: float = Field(description="TreeSHAP contribution to the churn log-odds")


class Score(BaseModel):
    customer_id: str
    churn_probability: float
    risk_tier: str
    lifecycle_stage: Optional[str] = Field(description="null for models trained without transaction features")
    value_tier: Optional[str]
    reasons: list[Reason]


class ScoreResponse(BaseModel):
    scores: list[Score]


class Recommendation(BaseModel):
    customer_id: str
    incentive: str
    expected_net_value: float
    uplift: dict[str, float]
    churn_probability: float


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
    error: str
