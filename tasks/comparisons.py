"""The comparisons of probabilistic linkage, as data.

Each field compares two records at one of a few *levels*, from "null" (no
evidence) through the strongest agreement down to "else" (disagreement),
Splink-style. The Fellegi-Sunter model in `tasks.link` learns an m and u
probability per level and never needs to know what a name or a date is; the
table at the bottom of this module (`MEMBER_COMPARISONS`) is the whole method,
and explaining a match is reading that table back.

A level's condition is a vectorized function of the candidate-pair frame,
whose columns are the record columns suffixed `_l` and `_r`. String similarity
uses `rapidfuzz.process.cpdist`, which scores the two aligned arrays in C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import islice, product

import numpy as np
import polars as pl
from pypinyin import Style, lazy_pinyin, pinyin
from rapidfuzz import process
from rapidfuzz.distance import OSA, Hamming, JaroWinkler

from tasks.privacy import sha256_hex

# A condition says, for every candidate pair, whether the level applies.
Condition = Callable[[pl.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Level:
    """One outcome of a comparison, with the m/u used to start (or replace) EM.

    `tf` names a record column whose value frequency adjusts this level's weight:
    agreeing on 王伟 is weaker evidence than agreeing on a rare name.
    """

    label: str
    when: Condition | None
    m: float
    u: float
    tf: str | None = None


@dataclass(frozen=True)
class Comparison:
    """A field compared at ordered levels: levels[0] is null, the last is else."""

    field: str
    columns: tuple[str, ...]
    levels: tuple[Level, ...]
    description: str = ""
    labels: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(level.label for level in self.levels))

    def level_codes(self, pairs: pl.DataFrame) -> np.ndarray:
        """The first level whose condition holds, per pair (0 = null, last = else)."""
        codes = np.full(pairs.height, len(self.levels) - 1, dtype=np.int8)
        for code in range(len(self.levels) - 2, -1, -1):  # weakest first, strongest wins
            condition = self.levels[code].when
            if condition is not None:
                codes[condition(pairs)] = code
        return codes

    def code(self, label: str) -> int:
        return self.labels.index(label)


# ---------------------------------------------------------------- conditions


def _side(pairs: pl.DataFrame, column: str, side: str) -> pl.Series:
    return pairs[f"{column}_{side}"]


def _mask(expr: pl.Expr, pairs: pl.DataFrame) -> np.ndarray:
    return pairs.select(expr.fill_null(False)).to_series().to_numpy()


def any_null(*columns: str) -> Condition:
    """Null level: a side lacks every one of `columns`, so there is nothing to compare."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        left = pl.any_horizontal(pl.col(f"{c}_l").is_not_null() for c in columns)
        right = pl.any_horizontal(pl.col(f"{c}_r").is_not_null() for c in columns)
        return _mask(~(left & right), pairs)

    return condition


def exact(column: str) -> Condition:
    def condition(pairs: pl.DataFrame) -> np.ndarray:
        return _mask(pl.col(f"{column}_l") == pl.col(f"{column}_r"), pairs)

    return condition


def exact_any(*columns: str) -> Condition:
    """Agreement on any one of several keys (e.g. pinyin in given or swapped order)."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        return _mask(
            pl.any_horizontal(pl.col(f"{c}_l") == pl.col(f"{c}_r") for c in columns), pairs
        )

    return condition


def shares_any(column: str) -> Condition:
    """Two list values with an element in common (a name read any of its ways)."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        common = pl.col(f"{column}_l").list.set_intersection(pl.col(f"{column}_r"))
        return _mask(common.list.len() > 0, pairs)

    return condition


def differ(column: str) -> Condition:
    """Both present and different: a conflict, not merely missing evidence."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        return _mask(pl.col(f"{column}_l") != pl.col(f"{column}_r"), pairs)

    return condition


def _scores(pairs: pl.DataFrame, column: str, scorer: Callable) -> np.ndarray:
    """scorer(left, right) where both sides are present, NaN elsewhere."""
    both = _mask(pl.col(f"{column}_l").is_not_null() & pl.col(f"{column}_r").is_not_null(), pairs)
    scores = np.full(pairs.height, np.nan)
    if both.any():
        present = pairs.filter(pl.Series(both))
        scores[both] = process.cpdist(
            _side(present, column, "l").to_list(),
            _side(present, column, "r").to_list(),
            scorer=scorer,
            workers=1,
        )
    return scores


def jaro_winkler_at_least(column: str, threshold: float) -> Condition:
    def condition(pairs: pl.DataFrame) -> np.ndarray:
        return _scores(pairs, column, JaroWinkler.normalized_similarity) >= threshold

    return condition


def edits_at_most(column: str, edits: int) -> Condition:
    """Optimal string alignment distance: substitutions and adjacent transpositions."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        return _scores(pairs, column, OSA.distance) <= edits

    return condition


def date_swapped(column: str) -> Condition:
    """YYYYMMDD strings whose month and day are swapped (03-12 vs 12-03)."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        left, right = pl.col(f"{column}_l"), pl.col(f"{column}_r")
        return _mask(
            (left.str.slice(0, 4) == right.str.slice(0, 4))
            & (left.str.slice(4, 2) == right.str.slice(6, 2))
            & (left.str.slice(6, 2) == right.str.slice(4, 2)),
            pairs,
        )

    return condition


def digits_off(column: str, digits: int) -> Condition:
    """Equal-length digit strings differing in at most `digits` positions."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        present = _mask(
            pl.col(f"{column}_l").str.len_chars() == pl.col(f"{column}_r").str.len_chars(), pairs
        )
        return present & (_scores(pairs, column, Hamming.distance) <= digits)

    return condition


def hash_in_typos(hash_column: str, typos_column: str) -> Condition:
    """One side's hash is among the hashes of the other side's one-edit variants: a
    typo'd number against a channel that hands over only the hash."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        def hit(typos: str, hashed: str) -> pl.Expr:
            return pl.col(typos).list.contains(pl.col(hashed), nulls_equal=False)

        return _mask(
            hit(f"{typos_column}_l", f"{hash_column}_r")
            | hit(f"{typos_column}_r", f"{hash_column}_l"),
            pairs,
        )

    return condition


def days_apart_at_most(column: str, days: int) -> Condition:
    """YYYYMMDD strings at most `days` apart (a date typed a day late)."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        def as_date(col: str) -> pl.Expr:
            return pl.col(col).str.to_date("%Y%m%d", strict=False)

        gap = (as_date(f"{column}_l") - as_date(f"{column}_r")).dt.total_days().abs()
        return _mask(gap <= days, pairs)

    return condition


def any_of(*conditions: Condition) -> Condition:
    def condition(pairs: pl.DataFrame) -> np.ndarray:
        result = np.zeros(pairs.height, dtype=bool)
        for each in conditions:
            result |= each(pairs)
        return result

    return condition


def all_of(*conditions: Condition) -> Condition:
    def condition(pairs: pl.DataFrame) -> np.ndarray:
        result = np.ones(pairs.height, dtype=bool)
        for each in conditions:
            result &= each(pairs)
        return result

    return condition


def when_expr(expr: pl.Expr) -> Condition:
    """Any polars predicate over the pair frame, for conditions with no helper."""

    def condition(pairs: pl.DataFrame) -> np.ndarray:
        return _mask(expr, pairs)

    return condition


# ------------------------------------------------------ comparison templates


def null_level(*columns: str) -> Level:
    return Level("null", any_null(*columns), m=0.5, u=0.5)


def else_level(m: float = 0.05, u: float = 0.95) -> Level:
    return Level("else", None, m=m, u=u)


def exact_match(column: str, *, tf: bool = False, m: float = 0.95, u: float = 0.01) -> Comparison:
    """[null, exact, else], like Splink's ExactMatch."""
    return Comparison(
        column,
        (column,),
        (
            null_level(column),
            Level("exact", exact(column), m=m, u=u, tf=column if tf else None),
            else_level(1 - m, 1 - u),
        ),
        f"{column}: exact or not",
    )


def jaro_winkler_levels(
    column: str, thresholds: Sequence[float] = (0.92, 0.8), *, tf: bool = False
) -> Comparison:
    """[null, exact, JW >= t1, JW >= t2, ..., else], like Splink's JaroWinklerAtThresholds."""
    levels = [
        null_level(column),
        Level("exact", exact(column), 0.85, 0.005, column if tf else None),
    ]
    m_left = 0.12
    for threshold in thresholds:
        levels.append(
            Level(f"jw>={threshold}", jaro_winkler_at_least(column, threshold), m_left / 2, 0.01)
        )
        m_left /= 2
    levels.append(else_level(0.03, 0.97))
    return Comparison(column, (column,), tuple(levels), f"{column}: Jaro-Winkler at {thresholds}")


def date_levels(column: str, *, near_days: int = 3) -> Comparison:
    """[null, exact, day/month swapped, a few days or one digit off, else] on YYYYMMDD."""
    return Comparison(
        column,
        (column,),
        (
            null_level(column),
            Level("exact", exact(column), 0.9, 0.0005),
            Level("day/month swapped", date_swapped(column), 0.02, 0.00001),
            Level(
                "near",
                any_of(digits_off(column, 1), days_apart_at_most(column, near_days)),
                0.05,
                0.005,
            ),
            else_level(0.03, 0.9945),
        ),
        f"{column}: exact, day/month swapped, within {near_days} days or one digit off",
    )


def digits_levels(column: str, *, tf: bool = False) -> Comparison:
    """[null, exact, one digit or transposition off, else] for identifiers typed by hand."""
    return Comparison(
        column,
        (column,),
        (
            null_level(column),
            Level("exact", exact(column), 0.85, 0.0001, column if tf else None),
            Level("one edit", edits_at_most(column, 1), 0.08, 0.0001),
            else_level(0.07, 0.9998),
        ),
        f"{column}: exact, one substitution/transposition, else",
    )


# ------------------------------------------------------- member record keys

# Surnames whose reading differs from the character's common reading.
_SURNAME_READINGS = {
    "单": "shan",
    "曾": "zeng",
    "解": "xie",
    "查": "zha",
    "仇": "qiu",
    "区": "ou",
    "朴": "piao",
    "盖": "ge",
    "乐": "yue",
    "覃": "qin",
    "缪": "miao",
    "翟": "zhai",
    "长": "chang",
    "种": "chong",
    "秘": "bi",
    "黑": "he",
    "万": "wan",
    "尉": "yu",
}


def pinyin_of(hanzi: pl.Series, *, surname_first: bool = True) -> pl.Series:
    """Toneless pinyin syllables of each hanzi string, space separated.

    pypinyin is per-string Python, so it runs once per *distinct* name and the
    result is joined back: member lists repeat names heavily.
    """
    distinct = hanzi.drop_nulls().unique()
    readings = []
    for name in distinct.to_list():
        syllables = lazy_pinyin(name)
        if surname_first and name[:1] in _SURNAME_READINGS:
            syllables[0] = _SURNAME_READINGS[name[:1]]
        readings.append(" ".join(syllables))
    table = pl.DataFrame(
        {"hanzi": distinct, "pinyin": pl.Series(readings, dtype=pl.Utf8)},
        schema={"hanzi": pl.Utf8, "pinyin": pl.Utf8},
    )
    return (
        pl.DataFrame({"hanzi": hanzi})
        .join(table, on="hanzi", how="left", maintain_order="left")["pinyin"]
        .alias(hanzi.name)
    )


# Most readings of one name kept: four characters of three readings each would be 81.
MAX_NAME_READINGS = 16


@cache
def _char_readings(char: str) -> tuple[str, ...]:
    """Every toneless reading pypinyin knows for one character, most common first."""
    return tuple(pinyin(char, style=Style.NORMAL, heteronym=True)[0])


def readings_of(
    hanzi: pl.Series,
    usual: pl.Series | None = None,
    surname: pl.Series | None = None,
    *,
    limit: int = MAX_NAME_READINGS,
) -> pl.Series:
    """Every reading of each hanzi name, letters only, the usual one first.

    A character with several readings (率 lv / shuai, 乐 le / yue) is read one way by
    pypinyin, but a person typing a homophone (韩睿帅 for 韩睿率), or spelling the name
    in Latin, may mean another. A surname keeps its one reading (王 is wang as a
    surname, never yu: 王娜 is not 于娜). Names repeat heavily, so the readings are
    built once per distinct name (and each character's once) and joined back.

    `usual` is `pinyin_of(hanzi)` when the caller has it already (pypinyin is the slow
    part); `surname` the name's surname (`normalize.surname`), when known.
    """
    usual = pinyin_of(hanzi) if usual is None else usual
    surname = pl.Series([None] * hanzi.len(), dtype=pl.Utf8) if surname is None else surname
    distinct = (
        pl.DataFrame({"hanzi": hanzi, "surname": surname, "usual": usual})
        .drop_nulls("hanzi")
        .unique(["hanzi", "surname"])
    )
    readings = []
    for name, family, first in zip(*distinct.get_columns(), strict=True):  # per distinct name
        fixed = len(family) if family and name.startswith(family) else 0
        syllables = first.split(" ")
        each = [(("".join(syllables[:fixed]),))] + [_char_readings(char) for char in name[fixed:]]
        spelled = ("".join(r) for r in islice(product(*each), limit))
        readings.append(list(dict.fromkeys(_letters(r) for r in [first, *spelled])))
    table = distinct.select(
        "hanzi", "surname", pl.Series("readings", readings, dtype=pl.List(pl.Utf8))
    )
    return (
        pl.DataFrame(
            {"hanzi": hanzi, "surname": surname}, schema={"hanzi": pl.Utf8, "surname": pl.Utf8}
        )
        .join(table, on=["hanzi", "surname"], how="left", maintain_order="left", nulls_equal=True)[
            "readings"
        ]
        .alias(hanzi.name)
    )


def _letters(reading: str) -> str:
    return "".join(c for c in reading if "a" <= c <= "z")


@cache
def pinyin_syllable_set() -> frozenset[str]:
    """The toneless syllables of Mandarin (ü written v), from pypinyin's character data.

    Syllables without a vowel (interjections m, n, ng, hm) are left out: in a name
    they would only split a word wrongly. lue / nue are the written forms of lve / nve.
    """
    from pypinyin.pinyin_dict import pinyin_dict

    # Tone marks off in one pass over all readings (per-reading conversion took 0.4 s).
    toneless = str.maketrans("āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜü", "aaaaeeeeiiiioooouuuuvvvvv")
    spelled = set(",".join(pinyin_dict.values()).translate(toneless).split(","))
    return frozenset(
        s for s in spelled | {"lue", "nue"} if s.isascii() and any(v in s for v in "aeiouv")
    )


def split_syllables(word: str) -> list[str]:
    """A pinyin word as syllables (jiande -> jian de), or the word itself when it is none.

    Fewest syllables first; among equals, a syllable starting with a vowel only where
    the word starts (pinyin writes xi'an, so fangan is fan gan, not fang an).
    """
    syllables = pinyin_syllable_set()
    longest = max(map(len, syllables))
    # best[i]: (syllables, vowel-initial syllables after the first, split) of word[:i]
    best: list[tuple[int, int, list[str]] | None] = [None] * (len(word) + 1)
    best[0] = (0, 0, [])
    for end in range(1, len(word) + 1):
        for start in range(max(0, end - longest), end):
            head, piece = best[start], word[start:end]
            if head is None or piece not in syllables:
                continue
            late_vowel = int(start > 0 and piece[0] in "aoe")
            candidate = (head[0] + 1, head[1] + late_vowel, [*head[2], piece])
            if best[end] is None or candidate[:2] < best[end][:2]:
                best[end] = candidate
    return best[-1][2] if best[-1] is not None else [word]


def pinyin_syllables(names: pl.Series) -> pl.Series:
    """Syllables of each pinyin name, words split (`jiande jiang` -> jian de jiang).

    Splitting runs once per distinct word; the words are mapped back vectorized.
    """
    words = names.str.to_lowercase().str.extract_all(r"[a-z]+")
    distinct = words.explode().drop_nulls().unique()
    split = pl.Series([" ".join(split_syllables(w)) for w in distinct.to_list()], dtype=pl.Utf8)
    return (
        words.list.eval(pl.element().replace(distinct, split))
        .list.join(" ")
        .str.split(" ")
        .alias(names.name)
    )


MAINLAND_MOBILE = r"^1[3-9]\d{9}$"
# Distinct numbers expanded and hashed at a time: ~96 variants each, so ~1M hashes
# (about 100 MB) in memory at once however many records there are.
PHONE_TYPO_CHUNK = 10_000


def phone_one_edit_numbers(phones: pl.Series) -> pl.DataFrame:
    """(phone, variant): every mainland mobile one substitution or one adjacent
    transposition away from each 11-digit number (about 96 per number)."""
    numbers = (
        pl.DataFrame({"phone": phones}, schema={"phone": pl.Utf8})
        .drop_nulls()
        .unique()
        .filter(pl.col("phone").str.contains(MAINLAND_MOBILE))
    )
    phone, pos = pl.col("phone"), pl.col("pos")
    substituted = numbers.join(
        pl.DataFrame(
            {
                "pos": [p for p in range(11) for _ in range(10)],
                "digit": [str(d) for d in range(10)] * 11,
            }
        ),
        how="cross",
    ).select(
        "phone",
        (phone.str.slice(0, pos) + pl.col("digit") + phone.str.slice(pos + 1)).alias("variant"),
    )
    transposed = numbers.join(pl.DataFrame({"pos": list(range(10))}), how="cross").select(
        "phone",
        (
            phone.str.slice(0, pos)
            + phone.str.slice(pos + 1, 1)
            + phone.str.slice(pos, 1)
            + phone.str.slice(pos + 2)
        ).alias("variant"),
    )
    # No duplicates to drop: two substitutions differ somewhere, a transposition changes
    # two digits, and two transpositions change different pairs.
    return pl.concat([substituted, transposed]).filter(
        (pl.col("variant") != phone) & pl.col("variant").str.contains(MAINLAND_MOBILE)
    )


def phone_typo_hashes(
    phones: pl.Series, targets: pl.Series, *, chunk: int = PHONE_TYPO_CHUNK
) -> pl.Series:
    """Per number, the hashes in `targets` of the numbers one edit away from it.

    A Tmall or JD record holds only the SHA-256 of its phone: a one-digit typo on
    either side cannot be seen by comparing digits, only by hashing each raw number's
    one-edit variants and looking them up among the hash-only records' hashes. The
    variants are built and hashed (DuckDB, vectorized) a chunk of distinct numbers
    at a time and only hits are kept, so memory stays flat in the number of records.
    Null where nothing is one edit away (or `targets` is empty).
    """
    wanted = (
        pl.DataFrame({"variant_sha256": targets}, schema={"variant_sha256": pl.Utf8})
        .drop_nulls()
        .unique()
        .sort("variant_sha256")
        .with_row_index("target")
    )
    distinct = phones.drop_nulls().unique().sort()
    hits = [pl.DataFrame(schema={"phone": pl.Utf8, "target": pl.UInt32})]
    if wanted.height:
        for start in range(0, distinct.len(), chunk):  # per chunk of numbers, not per record
            variants = phone_one_edit_numbers(distinct.slice(start, chunk))
            hashed = variants.select(
                "phone", sha256_hex(variants["variant"]).alias("variant_sha256")
            )
            # Keep the target's row number, not the hash: a string kept from `hashed`
            # would hold on to the whole chunk's hash buffer (polars string views).
            hits.append(hashed.join(wanted, on="variant_sha256").select("phone", "target"))
    per_phone = (
        pl.concat(hits)
        .join(wanted, on="target")
        .group_by("phone")
        .agg(pl.col("variant_sha256").unique().sort())
    )
    return (
        pl.DataFrame({"phone": phones}, schema={"phone": pl.Utf8})
        .join(per_phone, on="phone", how="left", maintain_order="left")["variant_sha256"]
        .alias(phones.name)
    )


def _squash(expr: pl.Expr) -> pl.Expr:
    return expr.str.to_lowercase().str.replace_all(r"[^a-z]", "")


def member_keys(members: pl.DataFrame) -> pl.DataFrame:
    """Comparison keys derived once per record, so no pair ever recomputes them.

    name_key:        pinyin of a real name, letters only (hanzi and pinyin records meet here)
    name_sounds:     every reading of a hanzi name (率: lv or shuai), or a pinyin name's key
    nickname:        a nickname (name_kind other), lower case: compared, never blocked on
    name_key_sorted: syllables sorted, pinyin words split first, for `Wei Zhang`,
                     `jiande jiang` vs 张伟, 蒋建德
    surname_key:     pinyin of the surname (or a pinyin name's first word)
    city_key:        the city's pinyin, letters only: 宁波 (a store) meets Ningbo (WeChat)
    birth_ymd:       YYYYMMDD, compared as digits
    email_local:     the part before @
    phone_typo_sha256: hashes of hash-only records' phones one digit or transposition
                     away from this record's raw phone (`phone_typo_hashes`), else null
    """
    kind = pl.col("name_kind")
    hanzi_name = members.select(
        pl.when(kind == "hanzi").then(pl.col("name")).alias("name")
    ).to_series()
    pinyin_name = members.select(
        pl.when(kind == "pinyin").then(pl.col("name")).alias("name")
    ).to_series()
    surname = members["surname"]
    name_pinyin = pinyin_of(hanzi_name)
    frame = members.with_columns(
        name_pinyin.alias("_name_pinyin"),
        readings_of(hanzi_name, name_pinyin, members["surname"]).alias("_name_readings"),
        pinyin_syllables(pinyin_name).alias("_pinyin_syllables"),
        pinyin_of(surname).alias("_surname_pinyin"),
        pinyin_of(members["city"], surname_first=False).alias("_city_pinyin"),
    )
    words = (
        pl.when(kind == "pinyin").then(pl.col("name").str.to_lowercase()).str.extract_all(r"[a-z]+")
    )
    syllables = (
        pl.when(kind == "hanzi")
        .then(pl.col("_name_pinyin").str.extract_all(r"[a-z]+"))
        .when(kind == "pinyin")
        .then(pl.col("_pinyin_syllables"))
    )
    name_key = _squash(syllables.list.join(""))
    return frame.with_columns(
        pl.when(kind.is_in(["hanzi", "pinyin"])).then(name_key).alias("name_key"),
        pl.when(kind == "hanzi")
        .then(pl.col("_name_readings"))
        .when(kind == "pinyin")
        .then(pl.concat_list(name_key))
        .alias("name_sounds"),
        pl.when(kind == "other").then(pl.col("name").str.to_lowercase()).alias("nickname"),
        pl.when(kind.is_in(["hanzi", "pinyin"]))
        .then(syllables.list.sort().list.join(""))
        .alias("name_key_sorted"),
        pl.when(kind.is_in(["hanzi", "masked"]))
        .then(pl.col("_surname_pinyin"))
        .when(kind == "pinyin")
        .then(words.list.first())
        .alias("surname_key"),
        _squash(pl.coalesce("_city_pinyin", "city")).alias("city_key"),
        pl.col("birth_date").dt.strftime("%Y%m%d").alias("birth_ymd"),
        pl.col("email").str.extract(r"^([^@]+)@").alias("email_local"),
        phone_typo_hashes(
            members["phone"],
            members.filter(pl.col("phone").is_null())["phone_sha256"],
        ).alias("phone_typo_sha256"),
    ).drop("_name_pinyin", "_name_readings", "_pinyin_syllables", "_surname_pinyin", "_city_pinyin")


# ------------------------------------------------- the memberlink comparisons


def _one_side_masked() -> pl.Expr:
    return (pl.col("name_kind_l") == "masked") | (pl.col("name_kind_r") == "masked")


def _same_written_name() -> pl.Expr:
    """Both hanzi and identical, or both pinyin and identical once squashed."""
    kind_l, kind_r = pl.col("name_kind_l"), pl.col("name_kind_r")
    return ((kind_l == "hanzi") & (kind_r == "hanzi") & (pl.col("name_l") == pl.col("name_r"))) | (
        (kind_l == "pinyin") & (kind_r == "pinyin") & (pl.col("name_key_l") == pl.col("name_key_r"))
    )


def _same_surname() -> pl.Expr:
    both_hanzi = pl.col("surname_l").is_not_null() & pl.col("surname_r").is_not_null()
    return (
        pl.when(both_hanzi)
        .then(pl.col("surname_l") == pl.col("surname_r"))
        .otherwise(pl.col("surname_key_l") == pl.col("surname_key_r"))
    )


NAME = Comparison(
    "name",
    (
        "name",
        "name_kind",
        "name_key",
        "name_sounds",
        "name_key_sorted",
        "surname",
        "surname_key",
        "nickname",
    ),
    (
        null_level("name_key", "surname_key", "nickname"),
        Level("exact", when_expr(_same_written_name()), 0.6, 0.002, tf="name_key"),
        Level(
            "same pinyin",
            any_of(exact_any("name_key", "name_key_sorted"), shares_any("name_sounds")),
            0.2,
            0.001,
            tf="name_key",
        ),
        Level("similar", jaro_winkler_at_least("name_key", 0.9), 0.06, 0.004),
        Level(
            "surname only (masked)",
            when_expr(_one_side_masked() & _same_surname()),
            0.1,
            0.05,
            tf="surname_key",
        ),
        Level("same nickname", exact("nickname"), 0.02, 0.01, tf="nickname"),
        # A nickname says nothing about a real name: not a disagreement.
        Level(
            "nickname vs name",
            when_expr((pl.col("name_kind_l") == "other") != (pl.col("name_kind_r") == "other")),
            0.2,
            0.2,
        ),
        else_level(0.04, 0.943),
    ),
    "hanzi exact; same pinyin in any order (pinyin words split into syllables) or by any "
    "reading of a multi-reading character (率: lv, shuai); Jaro-Winkler >= 0.9 on pinyin; "
    "张** vs 张伟 agrees on the surname only",
)

BIRTH_DATE = Comparison(
    "birth_date",
    ("birth_ymd",),
    date_levels("birth_ymd").levels,
    "exact; day/month swapped; within 3 days or one digit off; else",
)

PHONE = Comparison(
    "phone",
    ("phone", "phone_sha256", "phone_typo_sha256"),
    (
        null_level("phone", "phone_sha256"),
        Level("exact", exact("phone_sha256"), 0.7, 0.0001, tf="phone_sha256"),
        Level(
            "one digit off",
            any_of(edits_at_most("phone", 1), hash_in_typos("phone_sha256", "phone_typo_sha256")),
            0.1,
            0.00005,
        ),
        else_level(0.2, 0.99985),
    ),
    "exact on the SHA-256 (hashed-only channels compare only this way), weighted by how many "
    "records share the number (a family phone is weaker evidence); one substitution or "
    "transposition on the 11 digits, or against a hash-only record, its hash among the "
    "hashes of the raw number's one-edit variants",
)

EMAIL = Comparison(
    "email",
    ("email", "email_local"),
    (
        null_level("email"),
        Level("exact", exact("email"), 0.7, 0.0001),
        Level("local part similar", jaro_winkler_at_least("email_local", 0.92), 0.1, 0.001),
        else_level(0.2, 0.9989),
    ),
    "exact; local part Jaro-Winkler >= 0.92 (other domain or a typo); else",
)

CITY = Comparison(
    "city",
    ("city_key",),
    (
        null_level("city_key"),
        Level("exact", exact("city_key"), 0.85, 0.05, tf="city_key"),
        else_level(0.15, 0.95),
    ),
    "same city in hanzi or pinyin (宁波 = Ningbo), weighted by the city's frequency",
)

GENDER = Comparison(
    "gender",
    ("gender",),
    (
        null_level("gender"),
        Level("exact", exact("gender"), 0.97, 0.5),
        Level("conflict", None, 0.03, 0.5),
    ),
    "same or conflicting",
)

ID_CARD = Comparison(
    "id_card",
    ("id_card",),
    (
        null_level("id_card"),
        Level("exact", exact("id_card"), 0.95, 0.00001),
        Level("conflict", None, 0.05, 0.99999),
    ),
    "same or conflicting resident id; a conflict is also a hard guard in tasks.link",
)

MEMBER_COMPARISONS: tuple[Comparison, ...] = (
    NAME,
    BIRTH_DATE,
    PHONE,
    EMAIL,
    CITY,
    GENDER,
    ID_CARD,
)


def comparison_columns(comparisons: Sequence[Comparison]) -> list[str]:
    """Record columns the comparisons read, in a stable order."""
    return list(dict.fromkeys(c for comparison in comparisons for c in comparison.columns))


def describe(comparisons: Sequence[Comparison]) -> pl.DataFrame:
    """The comparison table read back: one row per field level, with its starting m/u."""
    return pl.DataFrame(
        [
            {
                "field": c.field,
                "level": code,
                "label": level.label,
                "m_prior": level.m,
                "u_prior": level.u,
                "tf_column": level.tf,
                "description": c.description,
            }
            for c in comparisons
            for code, level in enumerate(c.levels)
        ],
        schema={
            "field": pl.Utf8,
            "level": pl.Int8,
            "label": pl.Utf8,
            "m_prior": pl.Float64,
            "u_prior": pl.Float64,
            "tf_column": pl.Utf8,
            "description": pl.Utf8,
        },
    )
