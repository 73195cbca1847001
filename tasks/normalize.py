"""Normalization: a channel's raw text columns become typed, comparable values.

Matching only works on values that mean the same thing everywhere, so every
channel's phone, id card, email, name, dates and points pass through the same
rules here. A value that cannot be made valid becomes null and its flag names
why (in the `flags` list column); the row itself always stays, so that
validation can decide what to quarantine and nothing disappears silently.

Every rule is a small function returning a `pl.Expr`, tried on a three-row
frame in the tests. Rules take text that `clean_text` has already cleaned
(`mobile_cn(clean_text("phone"))` on raw input): NFKC is the costliest step, and
the normalizers run it once per column. A rule that reads one derived text many
times (the 17 digits of an id card, a date rewritten to ISO) is split into a
`*_text` step and a step on that text, so the normalizers can materialize the
text once between them; polars' common-subexpression elimination does not reach
that deep into nested expressions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import polars as pl

from tasks.errors import ConfigError
from tasks.privacy import sha256_hex
from tasks.schema import (
    BALANCE_SCHEMA,
    FLAGS,
    MEMBER_SCHEMA,
    POINTS_SCHEMA,
    SOURCE_COLUMNS,
    SOURCE_FILE,
    SOURCE_ROW,
)

ColumnLike = str | pl.Expr

# Timestamps without an offset are taken as local time of the brand's market;
# timestamps with an offset (and epoch numbers) are converted to it, so that
# all datetimes in the warehouse are naive local times that compare directly.
LOCAL_TIME_ZONE = "Asia/Shanghai"

# Text that stands for "no value" in exports from POS systems, Excel and pandas
# (compared case-insensitively).
NULL_TOKENS: tuple[str, ...] = ("", "null", "none", "n/a", "-", "未知")

# Characters that render as nothing and survive NFKC; copy-paste brings them in.
_INVISIBLE = "[\u200b\u200c\u200d\u2060\ufeff]"

_MOBILE_DECORATION = r"[\s\-.()\[\]]"
# `86` counts as a prefix only when 11 digits follow it: 13 digits in all.
_MOBILE_WITH_PREFIX = r"^(?:\+86|0086|86)?(1[3-9]\d{9})$"
_EMAIL = (
    r"^([a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,})$"
)
_SHA256 = r"^([0-9a-f]{64})$"

# GB 11643 resident id: region, birth date, sequence, ISO 7064 MOD 11-2 check.
ID_CARD_PATTERN = r"^\d{6}(?:19|20)\d{2}(?:0[1-9]|1[0-2])\d{2}\d{3}[0-9X]$"
ID_CARD_WEIGHTS: tuple[int, ...] = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CARD_CHECK_CHARS = "10X98765432"

GENDER_WORDS: Mapping[str, str] = {
    "m": "M", "male": "M", "man": "M", "1": "M", "男": "M", "男性": "M", "先生": "M",
    "f": "F", "female": "F", "woman": "F", "2": "F", "女": "F", "女性": "F", "女士": "F",
    "小姐": "F",
}

EARLIEST_BIRTH_DATE = dt.date(1900, 1, 1)

# Names that say nothing about the person: platform defaults, test accounts,
# bare titles, and strings without a single letter (digits, punctuation, ***).
_PLACEHOLDER_NAME = (
    r"(?i)^(?:[^\p{L}]+"
    r"|(?:微信用户|微信昵称|wechat ?user|用户|会员|匿名(?:用户)?|test(?:user)?|测试(?:用户)?"
    r"|顾客|客户|游客|访客|guest|user|unknown|昵称|默认昵称|先生|女士|小姐)[ _-]?\d*)$"
)
# A surname with the given name hidden: 张**, 张*三, 王×× or 王先生 / 李女士.
_MASKED_NAME = r"[*×]|^\p{Han}{1,2}(?:先生|女士|小姐)$"
_HANZI_NAME = r"^(?:\p{Han}{2,4}|\p{Han}+(?:·\p{Han}+)+)$"
_PINYIN_NAME = r"^[a-z]+(?:[ '-][a-z]+)*$"
COMPOUND_SURNAMES: tuple[str, ...] = (
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙",
    "宇文", "司徒", "夏侯", "轩辕", "令狐",
)

TXN_TYPE_WORDS: Mapping[str, str] = {
    "earn": "earn", "earned": "earn", "credit": "earn", "accrual": "earn", "accrue": "earn",
    "addition": "earn", "获得": "earn", "积分获取": "earn",
    "redeem": "redeem", "redeemed": "redeem", "redemption": "redeem", "debit": "redeem",
    "subtraction": "redeem", "兑换": "redeem", "消费": "redeem",
    "expire": "expire", "expiry": "expire", "expired": "expire", "expiration": "expire",
    "过期": "expire",
    "adjust": "adjust", "adjustment": "adjust", "调整": "adjust",
    "task": "task", "任务": "task",
}

PHONE_HASH_CASES: tuple[str, ...] = ("lower", "upper")


def _expr(col: ColumnLike) -> pl.Expr:
    return pl.col(col) if isinstance(col, str) else col


# --- text -------------------------------------------------------------------------


def blank_to_null(col: ColumnLike) -> pl.Expr:
    """Trimmed text, or null when it is empty or one of the spellings of "no value"."""
    text = _expr(col).cast(pl.Utf8).str.strip_chars()
    return pl.when(text.str.to_lowercase().is_in(NULL_TOKENS)).then(None).otherwise(text)


def clean_text(col: ColumnLike, *, unicode: bool = True) -> pl.Expr:
    """NFKC (full-width digits, letters and punctuation to half-width), no invisible
    characters, trimmed, blanks null: the first step of every rule.

    `unicode=False` skips NFKC, for a column known to be pure ASCII (NFKC leaves
    ASCII as it is, but still costs as much as the rest of the cleaning).
    """
    text = _expr(col).cast(pl.Utf8)
    if unicode:
        text = text.str.normalize("NFKC").str.replace_all(_INVISIBLE, "")
    return blank_to_null(text)


def _whole_match(text: pl.Expr, pattern: str) -> pl.Expr:
    """The pattern's first group where the text matches it, null elsewhere."""
    return text.str.extract(pattern, 1)


# --- identifiers ----------------------------------------------------------------------


def mobile_cn(col: ColumnLike) -> pl.Expr:
    """The 11-digit mainland mobile, whatever the separators and country prefix."""
    digits = _expr(col).str.replace_all(_MOBILE_DECORATION, "")
    return _whole_match(digits, _MOBILE_WITH_PREFIX)


def sha256_given(col: ColumnLike) -> pl.Expr:
    """A hash delivered by the channel: 64 hex characters, lower-case, else null."""
    return _whole_match(_expr(col).str.to_lowercase(), _SHA256)


def sha256_case_matches(col: ColumnLike, case: str) -> pl.Expr:
    """Whether a delivered hash's letters are in the case the channel declared.

    Hex case does not change the digest, so either case is accepted; a mismatch
    only tells that the source's `phone_hash_case` setting is wrong or that the
    channel's export is inconsistent.
    """
    text = _expr(col)
    return text == (text.str.to_lowercase() if case == "lower" else text.str.to_uppercase())


def email(col: ColumnLike) -> pl.Expr:
    """Lower-case address with a local part, an `@` and a dotted domain, else null."""
    return _whole_match(_expr(col).str.to_lowercase(), _EMAIL)


def id_card_text(col: ColumnLike) -> pl.Expr:
    """An id card as written, without separators and with an upper-case X."""
    return _expr(col).str.replace_all(r"[\s-]", "").str.to_uppercase()


def id_card_check_char(col: ColumnLike) -> pl.Expr:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits (null if not digits)."""
    text = _expr(col)
    weighted = [
        text.str.slice(position, 1).str.to_integer(strict=False) * weight
        for position, weight in enumerate(ID_CARD_WEIGHTS)
    ]
    remainder = pl.sum_horizontal(weighted, ignore_nulls=False) % 11
    return remainder.replace_strict(
        dict(enumerate(ID_CARD_CHECK_CHARS)), default=None, return_dtype=pl.Utf8
    )


def id_card_valid(col: ColumnLike) -> pl.Expr:
    """The `id_card_text` where it is a resident id with a real, past birth date and
    the right check character, else null."""
    text = _expr(col)
    birth = id_card_birth_date(text)
    valid = (
        text.str.contains(ID_CARD_PATTERN)
        & (birth <= pl.lit(dt.date.today()))
        & (text.str.slice(17, 1) == id_card_check_char(text))
    )
    return pl.when(valid).then(text)


def id_card(col: ColumnLike) -> pl.Expr:
    """A valid 18-character resident id (upper-case X), else null."""
    return id_card_valid(id_card_text(col))


def id_card_birth_date(col: ColumnLike) -> pl.Expr:
    """Birth date encoded in an id card (characters 7-14); expects a valid id card."""
    return _expr(col).str.slice(6, 8).str.to_date("%Y%m%d", strict=False)


def id_card_gender(col: ColumnLike) -> pl.Expr:
    """M when the sequence number (17th digit) is odd, F when even; expects a valid id card."""
    odd = _expr(col).str.slice(16, 1).str.to_integer(strict=False) % 2 == 1
    return pl.when(odd).then(pl.lit("M")).when(~odd).then(pl.lit("F"))


def gender(col: ColumnLike) -> pl.Expr:
    """M or F from the words and codes channels use, null when it says neither."""
    return (
        _expr(col)
        .str.to_lowercase()
        .replace_strict(GENDER_WORDS, default=None, return_dtype=pl.Utf8)
    )


# --- dates and times ------------------------------------------------------------------


def _iso_date_prefix(col: ColumnLike) -> pl.Expr:
    """`2020/3/5`, `2020.3.5` and `2020年3月5日` written `2020-03-05`, the rest kept.

    Zero padding matters: polars' fast fixed-width parser misreads `2023-1-2 03:04`
    instead of rejecting it, so every date reaches the parser in one width.
    """
    return (
        _expr(col)
        .str.replace(
            r"^(\d{4})\s*(?:年|[-/.])\s*(\d{1,2})\s*(?:月|[-/.])\s*(\d{1,2})(?:\s*日)?",
            "${1}-${2}-${3}",
        )
        .str.replace(r"^(\d{4})-(\d)-", "${1}-0${2}-")
        .str.replace(r"^(\d{4}-\d{2})-(\d)(\D|$)", "${1}-0${2}${3}")
    )


def date_text(col: ColumnLike) -> pl.Expr:
    """A date written as `YYYY-MM-DD` (or left as it is), any time of day dropped."""
    return _iso_date_prefix(col).str.replace(r"^(\d{4}-\d{2}-\d{2})[T\s].*$", "${1}")


def date_from_text(col: ColumnLike) -> pl.Expr:
    """The calendar date of a `date_text`: ISO or 8 compact digits, else null."""
    text = _expr(col)
    return pl.coalesce(
        text.str.to_date("%Y-%m-%d", strict=False),
        pl.when(text.str.contains(r"^\d{8}$")).then(text.str.to_date("%Y%m%d", strict=False)),
    )


def parse_date(col: ColumnLike) -> pl.Expr:
    """A date from ISO, compact, slashed, dotted or 年月日 writing, single-digit month
    and day allowed; null when it is no real date."""
    return date_from_text(date_text(col))


def plausible_birth_date(col: ColumnLike) -> pl.Expr:
    """The date when a living member can have been born on it: 1900 up to today."""
    date = _expr(col)
    return pl.when(date.is_between(pl.lit(EARLIEST_BIRTH_DATE), pl.lit(dt.date.today()))).then(
        date
    )


def datetime_text(col: ColumnLike) -> pl.Expr:
    """A timestamp written `YYYY-MM-DD HH:MM[:SS[.f]][+HH:MM]` (or left as it is)."""
    return (
        _iso_date_prefix(col)
        .str.replace(r"^(\d{4}-\d{2}-\d{2})[T\s]+(\d):", "${1} 0${2}:")
        .str.replace(r"^(\d{4}-\d{2}-\d{2})[T\s]+", "${1} ")
        .str.replace(r"\s*(?:Z|UTC)$", "+00:00")
    )


def _utc_to_local(instant: pl.Expr) -> pl.Expr:
    return instant.dt.convert_time_zone(LOCAL_TIME_ZONE).dt.replace_time_zone(None)


def datetime_from_text(col: ColumnLike) -> pl.Expr:
    """The naive local datetime (µs) of a `datetime_text`, trying each layout in turn."""
    text = _expr(col)
    as_naive = [
        text.str.to_datetime(fmt, strict=False, time_unit="us")
        for fmt in ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M")
    ]
    as_offset = [
        _utc_to_local(text.str.to_datetime(fmt, strict=False, time_unit="us"))
        for fmt in ("%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z")
    ]
    as_date = date_from_text(text).cast(pl.Datetime("us"))
    number = text.str.to_integer(strict=False)
    as_epoch = _utc_to_local(
        pl.when(text.str.contains(r"^\d{10}$"))
        .then(pl.from_epoch(number, time_unit="s"))
        .when(text.str.contains(r"^\d{13}$"))
        .then(pl.from_epoch(number, time_unit="ms"))
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
    )
    return pl.coalesce(*as_naive, *as_offset, as_date, as_epoch)


def parse_datetime(col: ColumnLike) -> pl.Expr:
    """A naive local datetime from ISO 8601 with or without `T`, seconds, fraction or
    offset; `YYYY/MM/DD HH:MM[:SS]`; a date alone (midnight); or epoch seconds
    (10 digits) / milliseconds (13 digits). Null when none of them fits."""
    return datetime_from_text(datetime_text(col))


# --- names and places -----------------------------------------------------------------


def name_clean(col: ColumnLike) -> pl.Expr:
    """One spelling per name: single spaces, no spaces inside a hanzi name
    (张 三 → 张三), and the middle dot of transliterated names as `·`."""
    text = _expr(col).str.replace_all(r"\s+", " ")
    text = (
        pl.when(text.str.contains(r"^[\p{Han} ]+$"))
        .then(text.str.replace_all(" ", ""))
        .otherwise(text)
    )
    return text.str.replace_all(r"(\p{Han})\s*[.•‧・]\s*(\p{Han})", "${1}·${2}")


def name_kind(col: ColumnLike) -> pl.Expr:
    """placeholder | masked | hanzi | pinyin | other for a `name_clean`ed name: how far
    it can be trusted for matching. Null when there is no name at all."""
    name = _expr(col)
    return (
        pl.when(name.is_null())
        .then(None)
        .when(name.str.contains(_PLACEHOLDER_NAME))
        .then(pl.lit("placeholder"))
        .when(name.str.contains(_MASKED_NAME))
        .then(pl.lit("masked"))
        .when(name.str.contains(_HANZI_NAME))
        .then(pl.lit("hanzi"))
        .when(name.str.to_lowercase().str.contains(_PINYIN_NAME))
        .then(pl.lit("pinyin"))
        .otherwise(pl.lit("other"))
    )


def member_name(col: ColumnLike, kind: ColumnLike | None = None) -> pl.Expr:
    """The usable name of a `name_clean`ed name: null for placeholders, lower-case
    pinyin, else as it is. `kind` is its `name_kind`, computed when not given."""
    name = _expr(col)
    kind = name_kind(col) if kind is None else _expr(kind)
    return (
        pl.when(kind == "placeholder")
        .then(None)
        .when(kind == "pinyin")
        .then(name.str.to_lowercase())
        .otherwise(name)
    )


def surname(col: ColumnLike, kind: ColumnLike | None = None) -> pl.Expr:
    """Family name of a hanzi or masked name: a compound surname (欧阳) when the name
    starts with one, else its first character if that is a hanzi. Null for names
    with a middle dot, whose first part is a given name."""
    name = _expr(col)
    kind = name_kind(col) if kind is None else _expr(kind)
    first_two = name.str.slice(0, 2)
    first = name.str.slice(0, 1)
    return (
        pl.when(~kind.is_in(["hanzi", "masked"]) | name.str.contains("·"))
        .then(None)
        .when(first_two.is_in(COMPOUND_SURNAMES))
        .then(first_two)
        .when(first.str.contains(r"^\p{Han}$"))
        .then(first)
    )


def city(col: ColumnLike) -> pl.Expr:
    """City without the administrative suffix 市 (上海市 → 上海), so spellings agree."""
    return _expr(col).str.replace(r"^(.{2,})市$", "${1}")


# --- numbers and codes ----------------------------------------------------------------


def integer(col: ColumnLike) -> pl.Expr:
    """A whole number from `+50`, `-20`, `1,000` or `100.0`; null for fractions and text."""
    digits = _whole_match(
        _expr(col).str.replace_all(r"[,\s_]", ""), r"^([+-]?\d+)(?:\.0*)?$"
    )
    return digits.str.to_integer(strict=False).cast(pl.Int64)


def txn_type(col: ColumnLike) -> pl.Expr:
    """One of `schema.TXN_TYPES` from the words ledgers use, null when unknown."""
    return (
        _expr(col)
        .str.to_lowercase()
        .replace_strict(TXN_TYPE_WORDS, default=None, return_dtype=pl.Utf8)
    )


# --- flags ----------------------------------------------------------------------------


def flag_if(condition: pl.Expr, flag: str) -> pl.Expr:
    """The flag's name where the condition holds, null elsewhere (a flags list item)."""
    return pl.when(condition).then(pl.lit(flag))


def lost(given: str, value: str, flag: str) -> pl.Expr:
    """Flag a row whose source gave a value that normalization had to drop."""
    return flag_if(pl.col(given).is_not_null() & pl.col(value).is_null(), flag)


def flag_list(flags: list[pl.Expr]) -> pl.Expr:
    """The row's flags as a list (empty when none), in the order the rules run.

    Joined as text and split again: in polars 2.1 `concat_list` of a dozen
    mostly-null columns is ten times slower than this.
    """
    joined = pl.concat_str(flags, separator=",", ignore_nulls=True)
    return joined.str.split(",").list.filter(pl.element() != "").alias(FLAGS)


# --- normalizers ----------------------------------------------------------------------


def _given(name: str) -> str:
    return f"given_{name}"


def _has_non_ascii(values: pl.Series) -> bool:
    """Whether any value has a character outside ASCII (more bytes than characters)."""
    text = values.cast(pl.Utf8)
    return bool((text.str.len_bytes() != text.str.len_chars()).any())


def _cleaned_source(raw: pl.DataFrame, dataset: str) -> pl.LazyFrame:
    """Every source column of the dataset, cleaned once, as `given_<name>` (null
    when the source lacks it), with the row's origin: the rules never meet a
    missing column, and the flags compare what was given with what was kept."""
    present = set(raw.columns)
    given = [
        clean_text(name, unicode=_has_non_ascii(raw[name])).alias(_given(name))
        if name in present
        else pl.lit(None, pl.Utf8).alias(_given(name))
        for name in SOURCE_COLUMNS[dataset]
    ]
    origin = [
        pl.col(SOURCE_ROW).cast(pl.Int64) if SOURCE_ROW in present
        else pl.lit(None, pl.Int64).alias(SOURCE_ROW),
        pl.col(SOURCE_FILE).cast(pl.Utf8) if SOURCE_FILE in present
        else pl.lit(None, pl.Utf8).alias(SOURCE_FILE),
    ]
    return raw.lazy().select(*given, *origin)


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def _check_hash_case(channel: str, phone_hash_case: str) -> None:
    if phone_hash_case not in PHONE_HASH_CASES:
        raise ConfigError(
            f"channel {channel!r}: phone_hash_case is {phone_hash_case!r}; "
            f"set it to one of {', '.join(PHONE_HASH_CASES)} for this source"
        )


def normalize_members(
    raw: pl.DataFrame, channel: str, trust: int = 1, phone_hash_case: str = "lower"
) -> pl.DataFrame:
    """A channel's raw member rows as `MEMBER_SCHEMA`, one output row per input row.

    A stated gender or birth date wins over the one an id card encodes (the card
    fills the gaps); a hash computed from a valid phone wins over a delivered one.
    `phone_hash_case` is the hex letter case the channel delivers `phone_sha256`
    in; hashes are stored lower-case either way, and a hash in the other case is
    flagged `phone_sha256_case_unexpected` so that a wrong setting shows up.
    """
    _check_hash_case(channel, phone_hash_case)
    members = (
        _cleaned_source(raw, "members")
        .with_columns(
            member_id=pl.col("given_member_id"),
            phone=mobile_cn("given_phone"),
            given_hash_valid=sha256_given("given_phone_sha256"),
            hash_case_ok=sha256_case_matches("given_phone_sha256", phone_hash_case),
            email=email("given_email"),
            id_text=id_card_text("given_id_card"),
            name_text=name_clean("given_name"),
            stated_gender=gender("given_gender"),
            birth_text=date_text("given_birth_date"),
            city=city("given_city"),
            address=pl.col("given_address"),
            unionid=pl.col("given_unionid"),
            registered_text=datetime_text("given_registered_at"),
        )
        .with_columns(
            id_card=id_card_valid("id_text"),
            name_kind=name_kind("name_text"),
            parsed_birth_date=date_from_text("birth_text"),
            registered_at=datetime_from_text("registered_text"),
        )
        .with_columns(
            name=member_name("name_text", "name_kind"),
            surname=surname("name_text", "name_kind"),
            stated_birth_date=plausible_birth_date("parsed_birth_date"),
            id_birth_date=id_card_birth_date("id_card"),
            id_gender=id_card_gender("id_card"),
        )
        .collect()
    )
    # One DuckDB pass over the whole column: polars has no SHA-256.
    members = members.with_columns(phone_hash=sha256_hex(members["phone"]))
    members = members.with_columns(
        flag_list([
            lost("given_phone", "phone", "phone_invalid"),
            lost("given_phone_sha256", "given_hash_valid", "phone_sha256_invalid"),
            flag_if(pl.col("given_hash_valid").is_not_null() & ~pl.col("hash_case_ok"),
                    "phone_sha256_case_unexpected"),
            flag_if(pl.col("phone_hash") != pl.col("given_hash_valid"), "phone_sha256_conflict"),
            lost("given_email", "email", "email_invalid"),
            lost("given_id_card", "id_card", "id_card_invalid"),
            lost("given_gender", "stated_gender", "gender_unknown"),
            flag_if(pl.col("stated_gender") != pl.col("id_gender"), "gender_conflicts_id_card"),
            lost("given_birth_date", "parsed_birth_date", "birth_date_unparseable"),
            lost("parsed_birth_date", "stated_birth_date", "birth_date_implausible"),
            flag_if(pl.col("stated_birth_date") != pl.col("id_birth_date"),
                    "birth_date_conflicts_id_card"),
            lost("given_registered_at", "registered_at", "registered_at_unparseable"),
        ]),
        channel=pl.lit(channel),
        trust=pl.lit(trust, pl.Int32),
        phone_sha256=pl.coalesce("phone_hash", "given_hash_valid"),
        gender=pl.coalesce("stated_gender", "id_gender"),
        birth_date=pl.coalesce("stated_birth_date", "id_birth_date"),
    )
    return _conform(members, MEMBER_SCHEMA)


def normalize_points(raw: pl.DataFrame, channel: str) -> pl.DataFrame:
    """A channel's raw ledger rows as `POINTS_SCHEMA`, one output row per input row."""
    points = (
        _cleaned_source(raw, "points")
        .with_columns(
            txn_id=pl.col("given_txn_id"),
            member_id=pl.col("given_member_id"),
            txn_text=datetime_text("given_txn_time"),
            points=integer("given_points"),
            txn_type=txn_type("given_txn_type"),
            order_id=pl.col("given_order_id"),
            expires_text=datetime_text("given_expires_at"),
        )
        .with_columns(
            txn_time=datetime_from_text("txn_text"),
            expires_at=datetime_from_text("expires_text"),
        )
        .with_columns(
            flag_list([
                lost("given_txn_time", "txn_time", "txn_time_unparseable"),
                lost("given_points", "points", "points_not_integer"),
                lost("given_txn_type", "txn_type", "txn_type_unknown"),
                lost("given_expires_at", "expires_at", "expires_at_unparseable"),
            ]),
            channel=pl.lit(channel),
        )
        .collect()
    )
    return _conform(points, POINTS_SCHEMA)


def normalize_balances(raw: pl.DataFrame, channel: str) -> pl.DataFrame:
    """A channel's reported balances as `BALANCE_SCHEMA`, one output row per input row."""
    balances = (
        _cleaned_source(raw, "balances")
        .with_columns(
            member_id=pl.col("given_member_id"),
            balance=integer("given_balance"),
            as_of_text=date_text("given_as_of"),
        )
        .with_columns(as_of=date_from_text("as_of_text"))
        .with_columns(
            flag_list([
                lost("given_balance", "balance", "balance_not_integer"),
                lost("given_as_of", "as_of", "as_of_unparseable"),
            ]),
            channel=pl.lit(channel),
        )
        .collect()
    )
    return _conform(balances, BALANCE_SCHEMA)
