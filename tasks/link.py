"""Probabilistic (Fellegi-Sunter) linkage of what deterministic matching left apart.

blocking (polars joins) -> comparison vectors (tasks.comparisons, rapidfuzz) ->
model -> match weights + term-frequency adjustment -> guards -> reviewer
decisions -> edges and review queue.

The model, as Splink estimates it:
- m per field level: recordlinkage's ECMClassifier (EM) on the level codes of a
  sample of candidate pairs, one-hot encoded by its binarizers and started from
  the comparison table's priors;
- u per field level: the level shares among uniformly random record pairs;
- lambda: the probability that two random records match (EM's share of matches
  among candidates x their number / all record pairs), so agreement on a field
  that blocking selected on counts once, not twice.
Each distinct comparison pattern is scored once and joined back.

The engine (`candidate_pairs`, `comparison_vectors`, `fit_model`, `score_pairs`)
is generic over a comparison table and blocking rules, so the FEBRL benchmark
runs it with its own table; `probabilistic_links` is the memberlink stage.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import polars as pl
from recordlinkage import ECMClassifier
from recordlinkage.algorithms.nb_sklearn import ECM

from tasks import comparisons as cmp
from tasks.errors import ConfigError
from tasks.graph import component_labels
from tasks.privacy import mask_email, mask_id_card, mask_phone
from tasks.settings import LinkSettings

log = logging.getLogger("memberlink.link")

PATTERN_BITS = 4  # up to 16 levels per field, 15 fields in an Int64 pattern id


# ------------------------------------------------------------------- blocking


@dataclass(frozen=True)
class BlockingRule:
    """Records sharing every key are candidate pairs; a list-valued key is exploded."""

    name: str
    keys: tuple[pl.Expr, ...]


def phone_one_edit_variants(col: str = "phone") -> pl.Expr:
    """The 11 one-digit-deleted variants of a number.

    Two numbers one substitution (or adjacent transposition) apart share a
    variant, so a join on variants finds typo'd phones without comparing all pairs.
    """
    phone = pl.col(col)
    return pl.concat_list(
        [phone.str.slice(0, i) + phone.str.slice(i + 1) for i in range(11)]
    ).list.unique()


def phone_typo_hash_key() -> pl.Expr:
    """A hash-only record's hash, or the hashes a raw number's one-edit variants hit.

    `phone_typo_sha256` (`cmp.member_keys`) holds only hashes that some hash-only
    record carries, so this block pairs a typo'd number with the Tmall/JD record of
    the intended one (or the other way round) and nothing else of note.
    """
    hash_only = pl.col("phone").is_null() & pl.col("phone_sha256").is_not_null()
    return pl.when(hash_only).then(pl.concat_list("phone_sha256")).otherwise("phone_typo_sha256")


MEMBER_BLOCKING_RULES: tuple[BlockingRule, ...] = (
    BlockingRule("phone_sha256", (pl.col("phone_sha256"),)),
    BlockingRule("phone one edit", (phone_one_edit_variants(),)),
    BlockingRule("phone one edit (hashed)", (phone_typo_hash_key(),)),
    BlockingRule("surname + birth_date", (pl.col("surname_key"), pl.col("birth_ymd"))),
    # Every reading of a hanzi name (韩睿率 is hanruilv or hanruishuai) meets its homophone
    # typo (韩睿帅) and its Latin spelling; the usual reading is among them.
    BlockingRule("name pinyin + city", (pl.col("name_sounds"), pl.col("city"))),
    BlockingRule(
        "name pinyin + birth year", (pl.col("name_sounds"), pl.col("birth_ymd").str.slice(0, 4))
    ),
    # Pinyin written given name first (Xuan Zhang, jiande jiang) meets 张萱, 蒋建德 on the
    # sorted syllables (pinyin words split into syllables).
    BlockingRule("name syllables + birth_date", (pl.col("name_key_sorted"), pl.col("birth_ymd"))),
    # Blocks use the city as written, comparisons its pinyin (city_key): blocking on
    # city_key too scored 30% more pairs and queued 303 namesakes for review at 20k
    # people, none the same person, for no recall (bench/README.md).
    BlockingRule("birth_date + city", (pl.col("birth_ymd"), pl.col("city"))),
    BlockingRule("email local part", (pl.col("email_local"),)),
)


def candidate_pairs(
    records: pl.DataFrame,
    rules: Sequence[BlockingRule],
    max_block_size: int,
    *,
    across: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Union of the rules' pairs (left < right), and per-rule counts.

    Blocks above `max_block_size` records are skipped: a key shared by hundreds
    of records (a default birthday, a store's city) is no evidence and would
    explode the pair count. With `across`, only pairs whose `across` differ
    (two-dataset linkage) are kept.
    """
    frames, stats = [], []
    extra = [pl.col(across).alias("_across")] if across else []
    for rule in rules:
        names = [f"_k{i}" for i in range(len(rule.keys))]
        keyed = records.select(
            pl.col("record_idx"),
            *extra,
            *[k.alias(n) for k, n in zip(rule.keys, names, strict=True)],
        )
        for name in names:
            if isinstance(keyed.schema[name], pl.List):
                keyed = keyed.explode(name)
        keyed = keyed.drop_nulls(names).unique()
        size = pl.len().over(names)
        oversized = keyed.filter(size > max_block_size).select(names).n_unique()
        keyed = keyed.filter((size >= 2) & (size <= max_block_size))
        pairs = keyed.join(keyed, on=names, suffix="_r").filter(
            pl.col("record_idx") < pl.col("record_idx_r")
        )
        if across:
            pairs = pairs.filter(pl.col("_across") != pl.col("_across_r"))
        pairs = pairs.select(
            pl.col("record_idx").alias("left"),
            pl.col("record_idx_r").alias("right"),
        ).unique()
        frames.append(pairs.with_columns(pl.lit(rule.name).alias("blocked_by")))
        stats.append({"rule": rule.name, "pairs": pairs.height, "oversized_blocks": oversized})
    schema = {"left": pl.UInt32, "right": pl.UInt32, "blocked_by": pl.Utf8}
    if not frames:
        return pl.DataFrame(schema=schema), pl.DataFrame(stats)
    union = (
        pl.concat(frames)
        .unique(["left", "right"], keep="first", maintain_order=True)
        .cast(schema)
        .sort("left", "right")
    )
    return union, pl.DataFrame(
        stats, schema={"rule": pl.Utf8, "pairs": pl.Int64, "oversized_blocks": pl.Int64}
    )


# ------------------------------------------------------------ comparisons


def pair_frame(records: pl.DataFrame, pairs: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """`columns` of both records of each pair, suffixed _l and _r (a gather, no join)."""
    side = records.select(columns)
    left = side[pairs["left"].to_numpy()].rename({c: f"{c}_l" for c in columns})
    right = side[pairs["right"].to_numpy()].rename({c: f"{c}_r" for c in columns})
    return pl.concat([left, right], how="horizontal")


def comparison_vectors(
    records: pl.DataFrame, pairs: pl.DataFrame, comparisons: Sequence[cmp.Comparison]
) -> pl.DataFrame:
    """left, right and one Int8 level code per comparison field."""
    both = pair_frame(records, pairs, cmp.comparison_columns(comparisons))
    return pairs.select("left", "right").with_columns(
        pl.Series(c.field, c.level_codes(both), dtype=pl.Int8) for c in comparisons
    )


def pattern_id(comparisons: Sequence[cmp.Comparison]) -> pl.Expr:
    """One integer per comparison vector, so each distinct pattern is scored once."""
    return pl.sum_horizontal(
        pl.col(c.field).cast(pl.Int64) * (1 << (PATTERN_BITS * i))
        for i, c in enumerate(comparisons)
    ).alias("pattern")


# ------------------------------------------------------------------ the model


class LevelPriorECM(ECM):
    """recordlinkage's ECM, started from the comparison table's m/u priors.

    The stock 'jaro' start only accepts two-level columns; multi-level fields
    (exact / similar / else) are one-hot encoded by ECM's binarizers and need a
    start per level. Starting from the priors also keeps the match class the
    match class (EM is symmetric in its two classes).
    """

    def __init__(self, comparisons: Sequence[cmp.Comparison], lambda_prior: float, **kwargs):
        super().__init__(init="jaro", binarize=None, **kwargs)
        self.comparisons = tuple(comparisons)
        self.lambda_prior = lambda_prior

    def _init_parameters_jaro(self, X_bin):
        rows: list[list[float]] = [[], []]
        for comparison, binarizer in zip(self.comparisons, self._binarizers, strict=True):
            present = [comparison.levels[int(code)] for code in binarizer.classes_]
            for klass, attr in ((0, "u"), (1, "m")):
                values = np.array([getattr(level, attr) for level in present], dtype=float)
                rows[klass].extend(values / values.sum())
        prior = np.array([1 - self.lambda_prior, self.lambda_prior])
        return np.log(prior), np.log(np.array(rows))


@dataclass
class LinkModel:
    """Fellegi-Sunter parameters, how they were obtained, and the run's pair counts."""

    levels: pl.DataFrame  # field, level, label, m, u, weight (log2 m/u; null = 0), source
    lambda_: float  # prior match probability among scored candidate pairs
    status: str  # "em", "em (priors for: ...)", or "priors: <why>"
    pairs_scored: int = 0
    pairs_trained: int = 0
    blocking: pl.DataFrame = field(default_factory=pl.DataFrame)

    def weight_table(self, comparisons: Sequence[cmp.Comparison]) -> dict[str, np.ndarray]:
        """field -> weight per level code, for gathering by code."""
        return {
            c.field: self.levels.filter(pl.col("field") == c.field)
            .sort("level")["weight"]
            .to_numpy()
            for c in comparisons
        }


MODEL_COLUMNS = ("field", "level", "label", "m", "u", "weight", "source")


def model_frame(model: LinkModel) -> pl.DataFrame:
    """The fitted parameters as a table: published as `linkage_model` for the next run.

    Re-fitting EM every night would move borderline scores of unchanged records
    whenever anything else changed; reusing the parameters keeps their ids still.
    """
    return model.levels.select(MODEL_COLUMNS).with_columns(
        pl.lit(model.lambda_).alias("lambda"), pl.lit(model.status).alias("status")
    )


def model_from_frame(
    frame: pl.DataFrame | None, comparisons: Sequence[cmp.Comparison]
) -> LinkModel | None:
    """A previous run's model, when it was fitted for these very comparison levels."""
    if frame is None or frame.is_empty() or not set(MODEL_COLUMNS) <= set(frame.columns):
        return None
    shape = {"field": pl.Utf8, "level": pl.Int64, "label": pl.Utf8}
    described = cmp.describe(comparisons)
    expected = described.select(list(shape)).cast(shape).sort("field", "level")
    if not frame.select(list(shape)).cast(shape).sort("field", "level").equals(expected):
        return None
    levels = frame.select(MODEL_COLUMNS).cast({"level": described["level"].dtype})
    status = frame["status"][0]
    reused = status if status.startswith("reused") else f"reused ({status})"
    return LinkModel(levels.sort("field", "level"), float(frame["lambda"][0]), reused)


def _priors_frame(comparisons: Sequence[cmp.Comparison]) -> pl.DataFrame:
    return cmp.describe(comparisons).select(
        "field",
        "level",
        "label",
        pl.col("m_prior").alias("m"),
        pl.col("u_prior").alias("u"),
        pl.lit("prior").alias("source"),
    )


def _with_weights(levels: pl.DataFrame) -> pl.DataFrame:
    """log2(m/u) per level; the null level is no evidence either way (Splink's convention)."""
    return levels.with_columns(
        pl.when(pl.col("label") == "null")
        .then(0.0)
        .otherwise((pl.col("m") / pl.col("u")).log(2))
        .alias("weight")
    )


def _sane(levels: pl.DataFrame, settled: Sequence[str] = ()) -> pl.DataFrame:
    """Per field: does the strongest agreement favour a match and 'else' not?

    (For a settled field the strongest level left is the one after "exact".)
    """
    strongest = pl.when(pl.col("field").is_in(list(settled))).then(2).otherwise(1)
    agree = levels.filter(pl.col("level") == strongest).select(
        "field", (pl.col("m") > pl.col("u")).alias("a")
    )
    last = levels.filter(pl.col("level") == pl.col("level").max().over("field")).select(
        "field", (pl.col("m") < pl.col("u")).alias("b")
    )
    finite = levels.group_by("field").agg(
        (pl.col("m").is_finite() & pl.col("u").is_finite() & (pl.col("u") > 0)).all().alias("c")
    )
    return (
        agree.join(last, on="field")
        .join(finite, on="field")
        .select("field", (pl.col("a") & pl.col("b") & pl.col("c")).alias("sane"))
    )


def random_pairs(
    n_records: int, size: int, seed: int = 0, across: np.ndarray | None = None
) -> pl.DataFrame:
    """Uniformly random record pairs: almost all non-matches, so they estimate u.

    Estimating u on blocked candidates would not work: blocking makes the blocked
    fields agree by construction (Splink estimates u by random sampling too).
    """
    rng = np.random.default_rng(seed)
    left = rng.integers(0, n_records, size)
    right = rng.integers(0, n_records, size)
    keep = left != right if across is None else across[left] != across[right]
    left, right = np.minimum(left, right)[keep], np.maximum(left, right)[keep]
    return pl.DataFrame(
        {"left": left, "right": right}, schema={"left": pl.UInt32, "right": pl.UInt32}
    )


def _ecm(
    sample: pl.DataFrame, comparisons: Sequence[cmp.Comparison], lambda_prior: float, max_iter: int
) -> tuple[float, pl.DataFrame]:
    """recordlinkage's ECMClassifier on the level codes: lambda and m/u per field level."""
    fields = [c.field for c in comparisons]
    classifier = ECMClassifier()
    classifier.classifier = LevelPriorECM(comparisons, lambda_prior, max_iter=max_iter, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        classifier.fit(
            pd.DataFrame(sample.select(fields).to_numpy().astype(np.int64), columns=fields)
        )
    log_m, log_u = classifier.log_m_probs, classifier.log_u_probs
    fitted = pl.DataFrame(
        [
            {
                "field": f,
                "level": int(code),
                "m_em": float(np.exp(log_m[f][code])),
                "u_em": float(np.exp(log_u[f][code])),
            }
            for f in fields
            for code in log_m[f]
        ],
        schema={"field": pl.Utf8, "level": pl.Int8, "m_em": pl.Float64, "u_em": pl.Float64},
    )
    return float(np.exp(classifier.log_p)), fitted


def _u_from_random_pairs(
    u_vectors: pl.DataFrame, priors: pl.DataFrame, comparisons: Sequence[cmp.Comparison]
) -> pl.DataFrame:
    """Share of random pairs at each level, smoothed toward the prior by 100 pseudo-pairs
    and never below one pair in the sample: a level never seen among random pairs
    (phone one digit off) gets a small u the sample can vouch for, not an absurd one."""
    counts = pl.concat(
        [
            u_vectors.group_by(c.field)
            .len()
            .select(
                pl.lit(c.field).alias("field"), pl.col(c.field).cast(pl.Int8).alias("level"), "len"
            )
            for c in comparisons
        ]
    )
    pseudo = 100.0
    return (
        priors.select("field", "level", "u")
        .join(counts, on=["field", "level"], how="left")
        .select(
            "field",
            "level",
            (
                pl.max_horizontal(pl.col("len").fill_null(0) + pseudo * pl.col("u"), 1.0)
                / (u_vectors.height + pseudo)
            ).alias("u_random"),
        )
    )


def _condition_on_not_exact(levels: pl.DataFrame, fields: Sequence[str]) -> pl.DataFrame:
    """m and u of `fields`' inexact levels given the level is not "exact" (renormalized)."""
    settled = pl.col("field").is_in(list(fields))
    inexact = pl.col("label") != "exact"
    return levels.with_columns(
        # Exact agreement keeps its own m/u: among scored pairs it only happens on a
        # value whose guards kept its holders apart (a family phone), which the TF term
        # then weighs by frequency; refused values (hubs) are blanked before comparing.
        pl.when(settled & inexact)
        .then(pl.col(p) / pl.col(p).filter(inexact).sum().over("field"))
        .otherwise(pl.col(p))
        .alias(p)
        for p in ("m", "u")
    )


def fit_model(
    vectors: pl.DataFrame,
    comparisons: Sequence[cmp.Comparison],
    *,
    u_vectors: pl.DataFrame | None = None,
    total_pairs: int | None = None,
    settled: Sequence[str] = (),
    sample_size: int = 200_000,
    max_iter: int = 100,
    lambda_prior: float = 0.05,
    m_floor: float = 0.1,
    seed: int = 0,
) -> LinkModel:
    """Fellegi-Sunter parameters, unsupervised.

    m: recordlinkage's ECMClassifier (EM) on a sample of the candidate pairs `vectors`.
    u: from `u_vectors` (random pairs) when given, else EM's.
    lambda: with `total_pairs` (all record pairs, blocked or not), the probability that
    two *random* records match: EM's share of matches among candidates times their
    number, over all pairs (Splink's convention). A candidate's agreement on the
    blocked fields then counts as evidence once, not twice.
    `settled` fields are those deterministic rules already settle: the scored pairs
    never agree exactly on them, so their m and u are conditioned on "not exact".
    No level's m falls below `m_floor` times its prior: EM trained where most
    matches share a phone would otherwise call every changed phone impossible.
    A field whose m/u come out backwards (agreement less likely among matches than
    among non-matches) keeps its priors; if EM fails outright the whole model does.
    """
    priors = _priors_frame(comparisons)
    fields = [c.field for c in comparisons]
    if vectors.height < 10:
        return LinkModel(
            _with_weights(priors),
            lambda_prior,
            "priors: too few candidate pairs",
            vectors.height,
            0,
        )
    sample = vectors.sample(sample_size, seed=seed) if vectors.height > sample_size else vectors
    lambda_, fitted = _ecm(sample, comparisons, lambda_prior, max_iter)
    if not (0 < lambda_ < 0.999) or fitted.select(pl.col("m_em").is_nan().any()).item():
        return LinkModel(
            _with_weights(priors),
            lambda_prior,
            f"priors: EM degenerated (lambda={lambda_:.3g})",
            vectors.height,
            sample.height,
        )
    # Levels absent from the sample keep their prior m/u (scaled: tiny but not zero).
    levels = (
        priors.join(fitted, on=["field", "level"], how="left")
        .with_columns(
            pl.coalesce("m_em", pl.col("m") * 1e-3).alias("m"),
            pl.coalesce("u_em", pl.col("u") * 1e-3).alias("u"),
            pl.lit("em").alias("source"),
        )
        .drop("m_em", "u_em")
    )
    if u_vectors is not None and u_vectors.height:
        levels = (
            levels.join(_u_from_random_pairs(u_vectors, priors, comparisons), on=["field", "level"])
            .with_columns(
                pl.col("u_random").alias("u"),
                pl.lit("em m, random-pair u").alias("source"),
            )
            .drop("u_random")
        )
    levels = (
        levels.join(
            priors.select("field", "level", pl.col("m").alias("m_prior")), on=["field", "level"]
        )
        .with_columns(pl.max_horizontal("m", pl.col("m_prior") * m_floor).alias("m"))
        .drop("m_prior")
    )
    levels = levels.with_columns((pl.col("m") / pl.col("m").sum().over("field")).alias("m"))
    levels = _condition_on_not_exact(levels, settled).with_columns(pl.col("u").clip(1e-12))
    bad = _sane(levels, settled).filter(~pl.col("sane"))["field"].to_list()
    if bad:
        levels = pl.concat(
            [
                levels.filter(~pl.col("field").is_in(bad)),
                priors.filter(pl.col("field").is_in(bad)),
            ]
        ).sort(pl.col("field").replace_strict({f: i for i, f in enumerate(fields)}), "level")
    levels = _with_weights(levels)
    if total_pairs:
        lambda_ = min(lambda_ * vectors.height / total_pairs, 0.5)
    status = f"em (priors for: {', '.join(bad)})" if bad else "em"
    return LinkModel(levels, lambda_, status, vectors.height, sample.height)


# ---------------------------------------------------------------- scoring


def term_frequencies(records: pl.DataFrame, comparisons: Sequence[cmp.Comparison]) -> pl.DataFrame:
    """Per record, the relative frequency of its value in every TF column."""
    columns = sorted({lvl.tf for c in comparisons for lvl in c.levels if lvl.tf})
    return (
        records.select(
            (pl.len().over(col) / pl.col(col).count())
            .alias(f"_tf_{col}")
            .fill_null(strategy="zero")
            .cast(pl.Float64)
            for col in columns
        )
        if columns
        else pl.DataFrame()
    )


def _tf_u_level(comparison: cmp.Comparison, code: int) -> int:
    """The level whose u a TF term replaces: the exact level on the same TF column.

    A fuzzy level ("same pinyin") is rarer than exact agreement among strangers
    but says the same about how common the value is (Splink uses exact's u too).
    """
    exact = [
        i
        for i, lvl in enumerate(comparison.levels)
        if lvl.label == "exact" and lvl.tf == comparison.levels[code].tf
    ]
    return exact[0] if exact else code


def tf_adjustments(
    vectors: pl.DataFrame,
    frequencies: pl.DataFrame,
    model: LinkModel,
    comparisons: Sequence[cmp.Comparison],
    tf_floor: float,
) -> pl.DataFrame:
    """Per pair and field, log2(u / tf) on levels that agree on a TF column's value.

    As Splink: the (exact level's) average u is replaced by the agreed value's own
    frequency, so 王伟 agreeing adds less weight than a rare name agreeing.
    """
    left, right = vectors["left"].to_numpy(), vectors["right"].to_numpy()
    columns = {}
    for comparison in comparisons:
        adjust = np.zeros(vectors.height)
        codes = vectors[comparison.field].to_numpy()
        for code, level in enumerate(comparison.levels):
            if not level.tf or not frequencies.width:
                continue
            freq = frequencies[f"_tf_{level.tf}"].to_numpy()
            hit = codes == code
            tf = np.maximum(np.maximum(freq[left[hit]], freq[right[hit]]), tf_floor)
            u = model.levels.filter(
                (pl.col("field") == comparison.field)
                & (pl.col("level") == _tf_u_level(comparison, code))
            )["u"].item()
            adjust[hit] = np.log2(u / tf)
        columns[f"{comparison.field}_tf"] = adjust
    return pl.DataFrame(columns)


def score_pairs(
    records: pl.DataFrame,
    vectors: pl.DataFrame,
    model: LinkModel,
    comparisons: Sequence[cmp.Comparison],
    *,
    tf_adjust: bool = True,
    tf_floor: float = 1e-4,
) -> pl.DataFrame:
    """Add match_weight and match_probability (and per-field TF terms) to `vectors`.

    Each distinct comparison pattern is weighted once and joined back; only the
    term-frequency term is per pair.
    """
    table = model.weight_table(comparisons)
    with_pattern = vectors.with_columns(pattern_id(comparisons))
    patterns = with_pattern.select("pattern").unique()
    ids = patterns["pattern"].to_numpy()
    weight = np.full(len(ids), np.log2(model.lambda_ / (1 - model.lambda_)))
    for i, comparison in enumerate(comparisons):
        codes = (ids >> (PATTERN_BITS * i)) & ((1 << PATTERN_BITS) - 1)
        weight += table[comparison.field][codes]
    patterns = patterns.with_columns(pl.Series("pattern_weight", weight))
    scored = with_pattern.join(patterns, on="pattern", how="left", maintain_order="left")
    if tf_adjust:
        frequencies = term_frequencies(records, comparisons)
        adjust = tf_adjustments(vectors, frequencies, model, comparisons, tf_floor)
        scored = pl.concat([scored, adjust], how="horizontal")
        total = pl.col("pattern_weight") + pl.sum_horizontal(adjust.columns)
    else:
        total = pl.col("pattern_weight")
    return scored.with_columns(total.alias("match_weight")).with_columns(
        (1 / (1 + (2.0 ** -pl.col("match_weight")))).alias("match_probability")
    )


def field_weights(
    scored: pl.DataFrame, model: LinkModel, comparisons: Sequence[cmp.Comparison]
) -> pl.DataFrame:
    """Per-field match weight (level weight + its TF term) of each scored pair."""
    table = model.weight_table(comparisons)
    return pl.DataFrame(
        {
            c.field: table[c.field][scored[c.field].to_numpy()]
            + (scored[f"{c.field}_tf"].to_numpy() if f"{c.field}_tf" in scored.columns else 0.0)
            for c in comparisons
        }
    )


# --------------------------------------------------------- the memberlink stage

# The record columns that carry each deterministic rule's identifier, or are derived
# from it (`cmp.member_keys`): what a refused value blanks out.
REFUSED_COLUMNS: dict[str, tuple[str, ...]] = {
    "phone": ("phone", "phone_sha256", "phone_typo_sha256"),
    "unionid": ("unionid",),
    "email": ("email", "email_local"),
    "id_card": ("id_card",),
}


def without_refused_keys(records: pl.DataFrame, refused_keys: pl.DataFrame | None) -> pl.DataFrame:
    """Blank the identifiers deterministic matching refused (hubs, blocked values).

    A store's phone, a test number or an e-mail typed for every walk-in customer
    says nothing about the person holding it. Left in, it reads as a phone that
    differs from the person's own number elsewhere, and that disagreement keeps a
    name + birth date match below the threshold; blanked, the comparison lands on
    its null level (no evidence either way), and the value no longer counts toward
    its own term frequency. `refused_keys`: record_idx, key_type
    (`DeterministicLinks.refused_keys`).
    """
    if refused_keys is None or refused_keys.is_empty():
        return records
    blanked = []
    for key_type, columns in REFUSED_COLUMNS.items():  # one pass per rule, not per record
        holders = refused_keys.filter(pl.col("key_type") == key_type)["record_idx"]
        if holders.is_empty():
            continue
        refused = pl.col("record_idx").is_in(holders.cast(pl.UInt32).implode())
        blanked += [
            pl.when(refused).then(None).otherwise(pl.col(c)).alias(c)
            for c in columns
            if c in records.columns
        ]
    return records.with_columns(blanked) if blanked else records


def refused_key_types(records: pl.DataFrame, refused_keys: pl.DataFrame | None) -> pl.Series:
    """Per record, the refused identifiers' rules (`phone, email`), null when none: a
    reviewer sees why a phone shown on the record counts as missing."""
    if refused_keys is None or refused_keys.is_empty():
        return pl.Series("refused", [None] * records.height, dtype=pl.Utf8)
    per_record = (
        refused_keys.cast({"record_idx": pl.UInt32})
        .group_by("record_idx")
        .agg(pl.col("key_type").unique().sort().str.join(", ").alias("refused"))
    )
    return records.select("record_idx").join(
        per_record, on="record_idx", how="left", maintain_order="left"
    )["refused"]


@dataclass(frozen=True)
class Guard:
    """Pairs matching `blocks` are never linked, whatever their score."""

    name: str
    blocks: pl.Expr


MEMBER_GUARDS: tuple[Guard, ...] = (
    Guard("different id cards", pl.col("id_card") == cmp.ID_CARD.code("conflict")),
    Guard(
        "conflicting gender and different birth date",
        (pl.col("gender") == cmp.GENDER.code("conflict"))
        & (pl.col("birth_date") != cmp.BIRTH_DATE.code("exact")),
    ),
    Guard(
        "deterministic clusters hold different id cards",
        pl.col("cluster_id_card_l") != pl.col("cluster_id_card_r"),
    ),
)

EDGE_SCHEMA = {
    "left": pl.UInt32,
    "right": pl.UInt32,
    "rule": pl.Utf8,
    "score": pl.Float64,
    "weights": pl.Utf8,
}
DECISION_COLUMNS = (
    "left_channel",
    "left_member_id",
    "right_channel",
    "right_member_id",
    "decision",
)


@dataclass
class ProbabilisticLinks:
    edges: pl.DataFrame  # EDGE_SCHEMA; rule probabilistic | review_accepted
    review_queue: pl.DataFrame  # pairs a person should look at; PII masked
    model: LinkModel


def _cluster_id_card() -> pl.Expr:
    """The id card of a record's deterministic cluster, when the cluster has exactly one
    (a refused id card, blanked already, is nobody's)."""
    one = pl.col("id_card").drop_nulls().n_unique().over("cluster") == 1
    return pl.when(one).then(pl.col("id_card").drop_nulls().first().over("cluster"))


def _ordered_pair(a: str, b: str, prefix: str = "") -> list[pl.Expr]:
    return [
        pl.min_horizontal(a, b).alias(f"{prefix}left"),
        pl.max_horizontal(a, b).alias(f"{prefix}right"),
    ]


def _decision_pairs(members: pl.DataFrame, decisions: pl.DataFrame | None) -> pl.DataFrame:
    """Reviewer decisions as record_idx pairs (left < right); unknown members are dropped."""
    schema = {"left": pl.UInt32, "right": pl.UInt32, "decision": pl.Utf8}
    if decisions is None or decisions.height == 0:
        return pl.DataFrame(schema=schema)
    missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise ConfigError(
            f"review decisions lack column(s) {', '.join(missing)}; expected "
            f"{', '.join(DECISION_COLUMNS)} (decision accept|reject)"
        )
    decided = decisions.select(pl.col(list(DECISION_COLUMNS)).cast(pl.Utf8)).with_columns(
        pl.col("decision").str.strip_chars().str.to_lowercase()
    )
    bad = decided.filter(~pl.col("decision").is_in(["accept", "reject"]))
    if bad.height:
        raise ConfigError(
            f"review decision {bad['decision'][0]!r} for {bad['left_channel'][0]}:"
            f"{bad['left_member_id'][0]} is neither accept nor reject; fix the decisions file"
        )
    index = members.select("channel", "member_id", "record_idx")
    for side in ("left", "right"):
        decided = decided.join(
            index.rename(
                {
                    "channel": f"{side}_channel",
                    "member_id": f"{side}_member_id",
                    "record_idx": f"{side}_idx",
                }
            ),
            on=[f"{side}_channel", f"{side}_member_id"],
            how="inner",
        )
    # The latest decision on a pair wins (files are appended to).
    return (
        decided.select(*_ordered_pair("left_idx", "right_idx"), "decision")
        .filter(pl.col("left") != pl.col("right"))
        .unique(["left", "right"], keep="last", maintain_order=True)
        .cast(schema)
    )


def _review_frame(
    scored: pl.DataFrame,
    records: pl.DataFrame,
    model: LinkModel,
    comparisons: Sequence[cmp.Comparison],
) -> pl.DataFrame:
    """What a reviewer sees: both members, masked, and why the model hesitates.

    `records` still hold the refused identifiers (masked here), with `refused`
    naming them: the model read them as missing.
    """
    display = records.select(
        "channel",
        "member_id",
        "name",
        "gender",
        pl.col("birth_date"),
        "city",
        pl.when(pl.col("phone").is_not_null())
        .then(mask_phone("phone"))
        .when(pl.col("phone_sha256").is_not_null())
        .then(pl.lit("(hashed)"))
        .alias("phone"),
        mask_email("email").alias("email"),
        mask_id_card("id_card").alias("id_card"),
        "refused",
    )
    left = display[scored["left"].to_numpy()]
    right = display[scored["right"].to_numpy()]
    weights = field_weights(scored, model, comparisons)
    labels = {
        f"{c.field}_level": pl.Series(
            np.array(c.labels, dtype=object)[scored[c.field].to_numpy()], dtype=pl.Utf8
        )
        for c in comparisons
    }
    return (
        pl.concat(
            [
                left.select(pl.all().name.prefix("left_")),
                right.select(pl.all().name.prefix("right_")),
                scored.select("match_probability", "match_weight"),
                pl.DataFrame(labels),
                weights.select(pl.all().name.suffix("_weight")),
            ],
            how="horizontal",
        )
        .select(
            "left_channel",
            "left_member_id",
            "right_channel",
            "right_member_id",
            "match_probability",
            "match_weight",
            pl.exclude(
                "left_channel",
                "left_member_id",
                "right_channel",
                "right_member_id",
                "match_probability",
                "match_weight",
            ),
        )
        .sort("match_probability", descending=True)
    )


def _weights_json(scored: pl.DataFrame, model: LinkModel, comparisons) -> pl.Series:
    weights = field_weights(scored, model, comparisons).select(pl.all().round(3))
    return weights.select(pl.struct(pl.all()).struct.json_encode().alias("weights")).to_series()


def _best_per_cluster_pair(scored: pl.DataFrame) -> pl.DataFrame:
    """One pair per two deterministic clusters: the others add no new link."""
    return scored.sort("match_probability", descending=True).unique(
        ["cluster_l", "cluster_r"], keep="first", maintain_order=True
    )


def probabilistic_links(
    members: pl.DataFrame,
    deterministic_edges: pl.DataFrame,
    settings: LinkSettings,
    decisions: pl.DataFrame | None = None,
    previous_model: LinkModel | None = None,
    refused_keys: pl.DataFrame | None = None,
) -> ProbabilisticLinks:
    """Link records the deterministic rules left in different clusters, by match probability.

    With `previous_model` (a model_from_frame of the last run) EM is not fitted
    again, so a record's score moves only when its own data or neighbours do.
    `refused_keys` (`DeterministicLinks.refused_keys`) are compared as missing.
    """
    comparisons = cmp.MEMBER_COMPARISONS
    members = members.sort("record_idx")
    n = members.height
    as_given = cmp.member_keys(members).with_columns(refused_key_types(members, refused_keys))
    records = (
        without_refused_keys(as_given, refused_keys)
        .with_columns(pl.Series("cluster", component_labels(n, deterministic_edges)))
        .with_columns(_cluster_id_card().alias("cluster_id_card"))
    )
    decided = _decision_pairs(members, decisions)

    if settings.enabled and n > 1:
        # Blocking sees identifiers as given: a refused value only picks pairs to compare
        # (blocks above max_block_size are skipped anyway), and the pairs it brings are
        # much of what EM learns non-matches from. Measured: blocking on
        # the blanked records instead lost 0.5 recall points at 5k people (bench/README.md).
        pairs, blocking = candidate_pairs(as_given, MEMBER_BLOCKING_RULES, settings.max_block_size)
    else:
        pairs, blocking = (
            pl.DataFrame(schema={"left": pl.UInt32, "right": pl.UInt32}),
            pl.DataFrame(),
        )
    # EM learns m on every candidate pair, including those deterministic rules already
    # joined (they are most of the matches it can learn from); only pairs across
    # deterministic clusters are scored.
    training = comparison_vectors(records, pairs, comparisons)
    cluster = records["cluster"].to_numpy()
    across = cluster[training["left"].to_numpy()] != cluster[training["right"].to_numpy()]
    vectors = training.filter(pl.Series(across))
    model = previous_model or _fit_member_model(records, pairs, training, settings)
    model.pairs_scored = vectors.height
    model.blocking = blocking
    scored = _score_member_pairs(records, vectors, model, settings)
    scored = pl.concat(
        [scored, pair_frame(records, scored, ["cluster", "cluster_id_card"])], how="horizontal"
    )
    guarded = pl.any_horizontal(g.blocks for g in MEMBER_GUARDS).fill_null(False)
    scored = scored.filter(~guarded)
    log.info(
        "link: %d candidate pairs scored, model %s, lambda %.4g",
        model.pairs_scored,
        model.status,
        model.lambda_,
    )

    # Reviewer decisions: a rejection keeps the two clusters apart for good.
    rejected = decided.filter(pl.col("decision") == "reject")
    cluster_of = records["cluster"]
    rejected_clusters = (
        pl.DataFrame(
            {
                "_cl": cluster_of.gather(rejected["left"]),
                "_cr": cluster_of.gather(rejected["right"]),
            }
        )
        .select(*_ordered_pair("_cl", "_cr", "c_"))
        .unique()
    )
    scored = (
        scored.with_columns(*_ordered_pair("cluster_l", "cluster_r", "c_"))
        .join(rejected_clusters, on=["c_left", "c_right"], how="anti")
        .drop("c_left", "c_right")
    )
    accepted = decided.filter(pl.col("decision") == "accept").select("left", "right")
    scored = scored.join(accepted, on=["left", "right"], how="anti")

    best = _best_per_cluster_pair(scored)
    linked = best.filter(pl.col("match_probability") >= settings.match_threshold)
    review = best.filter(
        (pl.col("match_probability") >= settings.review_threshold)
        & (pl.col("match_probability") < settings.match_threshold)
    )
    probabilistic = linked.select(
        "left",
        "right",
        pl.lit("probabilistic").alias("rule"),
        pl.col("match_probability").alias("score"),
    ).with_columns(_weights_json(linked, model, comparisons))
    accepted_edges = _accepted_edges(accepted, records, comparisons, model, settings)
    edges = pl.concat([probabilistic.cast(EDGE_SCHEMA), accepted_edges.cast(EDGE_SCHEMA)])
    return ProbabilisticLinks(
        edges=edges.sort("left", "right"),
        review_queue=_review_frame(review, as_given, model, comparisons),
        model=model,
    )


def _score_member_pairs(
    records: pl.DataFrame, vectors: pl.DataFrame, model: LinkModel, settings: LinkSettings
) -> pl.DataFrame:
    return score_pairs(
        records,
        vectors,
        model,
        cmp.MEMBER_COMPARISONS,
        tf_adjust=settings.tf_adjustment,
        tf_floor=settings.tf_min_frequency,
    )


def _fit_member_model(
    records: pl.DataFrame, pairs: pl.DataFrame, training: pl.DataFrame, settings: LinkSettings
) -> LinkModel:
    n = records.height
    u_pairs = random_pairs(n, settings.u_sample_pairs) if n > 1 else pairs.clear()
    return fit_model(
        training,
        cmp.MEMBER_COMPARISONS,
        u_vectors=comparison_vectors(records, u_pairs, cmp.MEMBER_COMPARISONS),
        total_pairs=n * (n - 1) // 2,
        settled=("phone", "email", "id_card"),
        sample_size=settings.em_sample_size,
        max_iter=settings.em_max_iter,
        lambda_prior=settings.lambda_prior,
    )


def _accepted_edges(
    accepted: pl.DataFrame,
    records: pl.DataFrame,
    comparisons,
    model: LinkModel,
    settings: LinkSettings,
) -> pl.DataFrame:
    """Edges a reviewer accepted, scored afresh so the xref still explains them."""
    cluster = records["cluster"]
    accepted = (
        accepted.filter(
            cluster.gather(accepted["left"]).to_numpy()
            != cluster.gather(accepted["right"]).to_numpy()
        )
        if accepted.height
        else accepted
    )
    vectors = comparison_vectors(records, accepted, comparisons)
    scored = _score_member_pairs(records, vectors, model, settings)
    return scored.select(
        "left",
        "right",
        pl.lit("review_accepted").alias("rule"),
        pl.col("match_probability").alias("score"),
    ).with_columns(_weights_json(scored, model, comparisons))
