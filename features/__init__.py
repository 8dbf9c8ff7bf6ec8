"""Customer data in, point-in-time features and segments out (no training or serving code here)."""

from features.build import FEATURE_DESCRIPTIONS, WINDOWS_DAYS, build_features
from features.contracts import normalize_profiles, normalize_transactions
from features.errors import DataError
from features.loaders import read_cdnow, read_hillstrom
from features.segment import (
    STAGES,
    TIERS,
    SegmentConfig,
    assign_stage,
    assign_value_tier,
    segment,
    segment_summary,
    value_tier_thresholds,
)

__all__ = [
    "FEATURE_DESCRIPTIONS", "WINDOWS_DAYS", "build_features", "normalize_profiles", "normalize_transactions",
    "DataError", "read_cdnow", "read_hillstrom", "STAGES", "TIERS", "SegmentConfig", "assign_stage",
    "assign_value_tier", "segment", "segment_summary", "value_tier_thresholds",
]
