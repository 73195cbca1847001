"""Tunable settings of the matching, linkage and reconciliation stages.

Each stage owns its settings class; `sources.toml` sets them under
`[matching]`, `[linkage]` and `[reconcile]`, and the defaults are what a brand
should start from. Unknown keys are rejected, like everywhere in the config.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchSettings(_Strict):
    """Deterministic matching and its guards."""

    rules: tuple[str, ...] = Field(
        ("phone", "unionid", "email", "id_card"),
        description="Identifiers that link records deterministically, strongest first.",
    )
    hub_max_people: int = Field(
        4,
        ge=1,
        description="A value shared by more distinct people than this is a hub (store phone, "
        "test number) and links nobody.",
    )
    hub_max_records: int = Field(
        60,
        ge=2,
        description="A value on more records than this is a hub whatever they say: one person "
        "rarely holds that many memberships, and telling them apart is quadratic in records.",
    )
    blocked_values: tuple[str, ...] = Field(
        ("13800138000", "13888888888", "13900139000", "18888888888", "13333333333"),
        description="Normalized values that never link anyone (well-known test numbers).",
    )


class LinkSettings(_Strict):
    """Probabilistic (Fellegi-Sunter) linkage of what deterministic matching left."""

    enabled: bool = True
    retrain: bool = Field(
        False,
        description="Fit the Fellegi-Sunter model again on every run. Off: the model of the "
        "last run is reused (published as linkage_model), so unchanged records keep their "
        "scores; a full_refresh run always refits.",
    )
    match_threshold: float = Field(
        0.95, gt=0, lt=1, description="Match probability at or above which a pair is linked."
    )
    review_threshold: float = Field(
        0.5, gt=0, lt=1, description="Pairs between this and match_threshold go to review_queue."
    )
    decisions: str | None = Field(
        None,
        description="CSV of reviewer decisions (left/right channel and member_id, decision "
        "accept|reject), honoured on the next run; relative to the config file.",
    )
    max_block_size: int = Field(
        100, ge=2, description="Blocks with more records than this are skipped: a key that many "
        "records share (a default birthday) is no evidence and explodes the pair count.",
    )
    em_sample_size: int = Field(
        200_000, ge=100, description="Candidate pairs sampled to fit the EM model; every pair "
        "is scored.",
    )
    em_max_iter: int = Field(100, ge=1, description="EM iterations at most.")
    u_sample_pairs: int = Field(
        300_000, ge=1000, description="Random record pairs compared to estimate u (the chance "
        "that two different people agree at each level).",
    )
    lambda_prior: float = Field(
        0.05, gt=0, lt=1, description="Starting (and fallback) share of matches among candidate "
        "pairs.",
    )
    tf_adjustment: bool = Field(
        True, description="Weigh agreement on a common name, surname or city less than on a "
        "rare one.",
    )
    tf_min_frequency: float = Field(
        1e-4, gt=0, lt=1, description="Floor of a value's frequency in the term-frequency "
        "adjustment, so one-off values do not dominate.",
    )


class ReconcileSettings(_Strict):
    """Points reconciliation."""

    unlinked_recredit_days: int = Field(
        30,
        ge=0,
        description="An order credited again in another channel to an account identity "
        "resolution did not join is a double_credit when the points are the same and the "
        "second credit comes within this many days of the first.",
    )
    balance_tolerance: int = Field(
        0, ge=0, description="Absolute difference below or at which balances agree."
    )
    expiry_grace_days: int = Field(
        0,
        ge=0,
        description="Days a channel may take to book the expire row after points' expires_at "
        "before they count as unexpired_points (expiry jobs often run overnight).",
    )
