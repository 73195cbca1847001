"""Deterministic matching on shared identifiers, with guards against false merges.

A shared phone, unionid, e-mail or id card is the cheapest strong link between
two channel records, and also the most dangerous one: a clerk types the store's
phone for every walk-in customer, a family shares one mobile, a recycled number
reaches a stranger, a test number is everywhere. Gluing those records together
merges points of different people, which a brand pays for; refusing every shared
value loses real members, which a brand also pays for. So each value links only
the records its evidence says belong to one person, and weak evidence counts:
Tmall and JD hand over a hashed phone and a masked name (张**, 李*明), WeChat a
nickname and a gender, and two such records that disagree on a surname, a
gender, a name's sound or a stated birth date are two people.

1. blocked values link nobody;
2. a value whose records hold more than `hub_max_people` distinct people, or
   more than `hub_max_records` records (a hub), links nobody;
3. inside any other value, records are partitioned into people, strongest
   evidence first (`people_within_values`), and only records of one person are
   linked; a record that fits several of the value's people links nobody;
4. across values and rules, no component may end up holding two id cards.

Everything is a polars join or window over the long (record, identifier) frame
(pypinyin runs once per distinct character); the only Python loop is over the
handful of rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tasks.comparisons import pinyin_of
from tasks.errors import ConfigError
from tasks.graph import component_labels
from tasks.normalize import COMPOUND_SURNAMES
from tasks.privacy import keyed_token, sha256_hex
from tasks.settings import MatchSettings

# Which column of the members frame carries each rule's identifier. Phones are
# matched on their hash, so a channel that only hands over a hash still links.
RULE_COLUMNS: dict[str, str] = {
    "phone": "phone_sha256",
    "unionid": "unionid",
    "email": "email",
    "id_card": "id_card",
}

EDGE_SCHEMA: dict[str, pl.DataType] = {
    "left": pl.UInt32(),
    "right": pl.UInt32(),
    "rule": pl.Utf8(),
    "score": pl.Float64(),
    "weights": pl.Utf8(),
}

HUB_SCHEMA: dict[str, pl.DataType] = {
    "key_type": pl.Utf8(),
    "value_token": pl.Utf8(),
    "n_records": pl.UInt32(),
    "n_people": pl.UInt32(),
    "n_channels": pl.UInt32(),
    "reason": pl.Utf8(),
}

REFUSED_SCHEMA: dict[str, pl.DataType] = {"record_idx": pl.UInt32(), "key_type": pl.Utf8()}

_VALUE = ["key_type", "value"]
_SIGNATURE = ["key_type", "value", "name_sound", "birth_key"]
_HEX64 = r"^[0-9a-f]{64}$"


@dataclass(frozen=True)
class DeterministicLinks:
    """What deterministic matching decided, and what its guards refused.

    `guarded` counts (record, value) memberships the guards kept from linking,
    by guard, so a run report can show how much each guard held back.

    `refused_keys` (record_idx, key_type) names every record whose identifier of
    that rule was refused outright, as a blocked value or a hub: a store's phone
    or a test number says nothing about its holder, so probabilistic linkage
    reads it as missing rather than as a disagreement. It holds no value (not
    even a token), so passing it on cannot leak one; it is not published.
    """

    edges: pl.DataFrame
    hub_values: pl.DataFrame
    guarded: dict[str, int] = field(default_factory=dict)
    refused_keys: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema=REFUSED_SCHEMA), repr=False
    )


def deterministic_links(members: pl.DataFrame, settings: MatchSettings) -> DeterministicLinks:
    """Link records that share an identifier, unless the guards say they are different people."""
    _check_rules(settings.rules)
    evidence = strong_evidence(members)
    keyed = identifier_values(members, settings.rules).join(evidence, on="record_idx", how="left")

    blocked_mask = _is_blocked(keyed, settings)
    blocked = keyed.filter(blocked_mask)
    # A value held by one record links nobody and cannot be a hub: most values are
    # like that, and dropping them here keeps every later join small.
    keyed = keyed.filter(~blocked_mask).filter(pl.len().over(_VALUE) > 1)

    people = people_within_values(keyed, settings.hub_max_people, settings.hub_max_records)
    hub_keys = people.values.filter("is_hub").select(_VALUE)
    hubs = keyed.join(hub_keys, on=_VALUE, how="semi")
    linkable = people.memberships.join(hub_keys, on=_VALUE, how="anti")

    memberships = sub_group_memberships(linkable)
    edges, n_cut = edges_without_id_card_conflicts(memberships, members, settings.rules)

    hub_values = _hub_report(blocked, hubs, people.values, settings.rules, settings.hub_max_people)
    guarded = {
        "blocked_values": blocked.select(_VALUE).unique().height,
        "blocked_records": blocked.height,
        "hub_values": hub_keys.height,
        "hub_records": hubs.height,
        "conflict_unlinked": people.n_conflict_unlinked,
        "ambiguous_unlinked": people.n_ambiguous_unlinked,
        "id_card_conflict_cut": n_cut,
    }
    refused_keys = (
        pl.concat([blocked.select("record_idx", "key_type"), hubs.select("record_idx", "key_type")])
        .unique()
        .sort("record_idx", "key_type")
        .cast(REFUSED_SCHEMA)
    )
    return DeterministicLinks(
        edges=edges, hub_values=hub_values, guarded=guarded, refused_keys=refused_keys
    )


def _check_rules(rules: tuple[str, ...]) -> None:
    unknown = [rule for rule in rules if rule not in RULE_COLUMNS]
    if unknown:
        raise ConfigError(
            f"[matching] rules: unknown rule {unknown[0]!r}; "
            f"use any of {', '.join(RULE_COLUMNS)}, strongest first"
        )


# --- evidence --------------------------------------------------------------------------

# The ~200 most common surnames (2020 census order), which nearly every Han Chinese
# person holds. A 2-4 hanzi "name" that starts with anything else is far more likely a
# nickname (小猫咪, 追风少年, 晴天) than a rare surname, and a nickname's first character
# must not be read as a surname contradicting the member's real one.
COMMON_SURNAMES: frozenset[str] = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶"
    "程魏苏吕丁任卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付傅方邹熊白孟秦邱侯江尹薛闫阎段雷龙黎史陶"
    "贺毛郝顾龚邵万覃武钱戴严欧莫孔向常汤康易乔赖文施洪辛柳甘倪庄聂章鲁岳翟殷詹申耿关兰焦俞"
    "左祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游靳管柴蒙鲍华喻祁蒲房滕屈饶"
    "解牟艾尤穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂佟应臧闵苟邬边"
    "卞姬师仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩佘池查麻苑迟邝"
) | frozenset(COMPOUND_SURNAMES)

# Toneless Mandarin syllables (ü written v), to tell a pinyin name (zhang wei, Wei Zhang,
# zhangwei) from a Latin nickname (Coco, Jason, Lily) that says nothing about the name.
_SYLLABLES = """
    a ai an ang ao ba bai ban bang bao bei ben beng bi bian biao bie bin bing bo bu ca cai
    can cang cao ce cen ceng cha chai chan chang chao che chen cheng chi chong chou chu chua
    chuai chuan chuang chui chun chuo ci cong cou cu cuan cui cun cuo da dai dan dang dao de
    den deng di dian diao die ding diu dong dou du duan dui dun duo e ei en eng er fa fan
    fang fei fen feng fo fou fu ga gai gan gang gao ge gei gen geng gong gou gu gua guai
    guan guang gui gun guo ha hai han hang hao he hei hen heng hong hou hu hua huai huan
    huang hui hun huo ji jia jian jiang jiao jie jin jing jiong jiu ju juan jue jun ka kai
    kan kang kao ke ken keng kong kou ku kua kuai kuan kuang kui kun kuo la lai lan lang lao
    le lei leng li lia lian liang liao lie lin ling liu lo long lou lu luan lun luo lv lve
    ma mai man mang mao me mei men meng mi mian miao mie min ming miu mo mou mu na nai nan
    nang nao ne nei nen neng ni nian niang niao nie nin ning niu nong nou nu nuan nun nuo nv
    nve o ou pa pai pan pang pao pei pen peng pi pian piao pie pin ping po pou pu qi qia
    qian qiang qiao qie qin qing qiong qiu qu quan que qun ran rang rao re ren reng ri rong
    rou ru rua ruan rui run ruo sa sai san sang sao se sen seng sha shai shan shang shao she
    shen sheng shi shou shu shua shuai shuan shuang shui shun shuo si song sou su suan sui
    sun suo ta tai tan tang tao te teng ti tian tiao tie ting tong tou tu tuan tui tun tuo
    wa wai wan wang wei wen weng wo wu xi xia xian xiang xiao xie xin xing xiong xiu xu xuan
    xue xun ya yan yang yao ye yi yin ying yo yong you yu yuan yue yun za zai zan zang zao
    ze zei zen zeng zha zhai zhan zhang zhao zhe zhen zheng zhi zhong zhou zhu zhua zhuai
    zhuan zhuang zhui zhun zhuo zi zong zou zu zuan zui zun zuo
"""
PINYIN_SYLLABLES: tuple[str, ...] = tuple(_SYLLABLES.split())
# Two to four syllables: a surname and a given name, as a person writes them in Latin.
_PINYIN_NAME = "^(?:" + "|".join(sorted(PINYIN_SYLLABLES, key=len, reverse=True)) + "){2,4}$"

# What a record says about its holder besides identifiers. Two records of one value
# that both state one of these, and state it differently, are two people (`disagree`).
#   surname        张 of 张伟 or 张**; surname_sound its pinyin (zhang)
#   name_fwd/rev   the whole name's pinyin in both orders (zhangwei / weizhang): a pinyin
#                  name may be written given name first
#   last_sound     pinyin of the name's last character (张伟, or 张*伟 where a mask shows it)
#   given_len      characters of the given name (张伟: 1; a mask hides one per star: 张**: 2)
EVIDENCE_COLUMNS: tuple[str, ...] = (
    "id_card",
    "surname",
    "surname_sound",
    "name_fwd",
    "name_rev",
    "last_sound",
    "given_len",
    "gender",
    "birth",
)


def id_card_birth_date(col: str = "id_card") -> pl.Expr:
    """Birth date encoded in a GB 11643 id card (characters 7-14)."""
    return pl.col(col).str.slice(6, 8).str.to_date("%Y%m%d", strict=False)


def id_card_gender(col: str = "id_card") -> pl.Expr:
    """Gender encoded in a GB 11643 id card: the 17th character is odd for men."""
    digit = pl.col(col).str.slice(16, 1).cast(pl.Int32, strict=False)
    return pl.when(digit % 2 == 1).then(pl.lit("M")).when(digit.is_not_null()).then(pl.lit("F"))


def stated_surname() -> pl.Expr:
    """The surname a record states: a masked name's (the platform hid only the given
    name), or a hanzi name's when it is a common surname (else it reads as a nickname)."""
    kind, surname = pl.col("name_kind"), pl.col("surname")
    return (
        pl.when(kind == "masked")
        .then(surname)
        .when((kind == "hanzi") & surname.is_in(list(COMMON_SURNAMES)))
        .then(surname)
    )


def _sound(chars: pl.Series, *, surname: bool = False) -> pl.Series:
    """Pinyin of each short hanzi string, letters only, ü as u (Lü is written lu or lv)."""
    return (
        pinyin_of(chars, surname_first=surname)
        .str.replace_all(r"[^a-z]", "")
        .str.replace_all("v", "u")
    )


def name_evidence(members: pl.DataFrame) -> pl.DataFrame:
    """Per record, what its name says: `EVIDENCE_COLUMNS` from surname to given_len.

    Names are compared by sound, so a homophone typo (林秀英 / 林秀莹) is not a second
    person, and a hanzi name meets its pinyin spelling. pypinyin runs once per distinct
    character (`tasks.comparisons.pinyin_of`); everything else is vectorized.
    """
    kind, name, surname = pl.col("name_kind"), pl.col("name"), stated_surname()
    real = (kind == "hanzi") & surname.is_not_null()
    masked = (kind == "masked") & surname.is_not_null()
    hidden = name.str.slice(surname.str.len_chars())
    words = name.str.to_lowercase().str.extract_all(r"[a-z]+")
    pinyin = (kind == "pinyin") & words.list.join("").str.contains(_PINYIN_NAME)
    parts = members.select(
        "record_idx",
        surname.alias("surname"),
        pl.when(real).then(hidden).alias("given"),
        pl.when(real | (masked & name.str.slice(-1).str.contains(r"^\p{Han}$")))
        .then(name.str.slice(-1))
        .alias("last"),
        pl.when(real)
        .then(hidden.str.len_chars())
        .when(masked & hidden.str.contains(r"^[*×\p{Han}]+$") & hidden.str.contains(r"[*×]"))
        .then(hidden.str.len_chars())
        .cast(pl.Int32)
        .alias("given_len"),
        pl.when(pinyin).then(words.list.join("").str.replace_all("v", "u")).alias("py_fwd"),
        pl.when(pinyin)
        .then(words.list.reverse().list.join("").str.replace_all("v", "u"))
        .alias("py_rev"),
    )
    chars = (
        parts.select("record_idx", pl.col("given").str.split("").alias("char"))
        .explode("char")
        .filter(pl.col("char").is_not_null() & (pl.col("char") != ""))
    )
    given = (
        chars.with_columns(_sound(chars["char"]).alias("sound"))
        .group_by("record_idx", maintain_order=True)
        .agg(pl.col("sound").str.join("").alias("given_sound"))
    )
    sounds = parts.with_columns(
        _sound(parts["surname"], surname=True).alias("surname_sound"),
        _sound(parts["last"]).alias("last_sound"),
    ).join(given, on="record_idx", how="left")
    full = pl.col("surname_sound") + pl.col("given_sound")
    return sounds.select(
        "record_idx",
        "surname_sound",
        pl.coalesce(full, "py_fwd").alias("name_fwd"),
        pl.coalesce(full, "py_rev").alias("name_rev"),
        "last_sound",
        "given_len",
    )


def birth_key(col: str = "birth") -> pl.Expr:
    """A birth date with month and day in order, so 1990-03-12 and 1990-12-03 (the
    same date typed day first) are one key."""
    birth = pl.col(col)
    month, day = birth.dt.month(), birth.dt.day()
    return pl.date(birth.dt.year(), pl.min_horizontal(month, day), pl.max_horizontal(month, day))


def strong_evidence(members: pl.DataFrame) -> pl.DataFrame:
    """Per record, what tells one person from another, and how strongly.

    An id card is the person; its own birth date and gender outrank typed ones. Without
    one, a real hanzi name together with a birth date is the next best thing (signed by
    `name_sound` and `birth_key`, so homophone and day/month typos sign alike). `kind`:
    `id`, `name_birth`, `partial` (a name, a surname or a birth date: enough to
    contradict another person, not to identify one) or `faint` (a gender at most).
    The evidence columns (`EVIDENCE_COLUMNS`) are what the guards compare.
    """
    card = pl.col("id_card").is_not_null()
    evidence = members.select(
        "record_idx",
        "channel",
        "id_card",
        "name_kind",
        pl.when(card)
        .then(pl.coalesce(id_card_birth_date(), pl.col("birth_date")))
        .otherwise(pl.col("birth_date"))
        .alias("birth"),
        pl.coalesce(pl.when(card).then(id_card_gender()), pl.col("gender")).alias("gender"),
        stated_surname().alias("surname"),
    ).join(name_evidence(members), on="record_idx", how="left")
    real_name = (pl.col("name_kind") == "hanzi") & pl.col("name_fwd").is_not_null()
    partial = pl.any_horizontal(
        pl.col(c).is_not_null() for c in ("surname", "name_fwd", "last_sound", "birth")
    )
    return evidence.with_columns(
        pl.when(real_name).then(pl.col("name_fwd")).alias("name_sound"),
        birth_key().alias("birth_key"),
        pl.when(card)
        .then(pl.lit("id"))
        .when(real_name & pl.col("birth").is_not_null())
        .then(pl.lit("name_birth"))
        .when(partial)
        .then(pl.lit("partial"))
        .otherwise(pl.lit("faint"))
        .alias("kind"),
    ).drop("name_kind")


def _differ(column: str, suffix: str) -> pl.Expr:
    return (pl.col(column) != pl.col(f"{column}{suffix}")).fill_null(False)


def _names_differ(suffix: str) -> pl.Expr:
    """Both records carry a whole name, and it sounds different in either order."""
    fwd, rev = pl.col("name_fwd"), pl.col("name_rev")
    fwd_o, rev_o = pl.col(f"name_fwd{suffix}"), pl.col(f"name_rev{suffix}")
    same = (fwd == fwd_o) | (fwd == rev_o) | (rev == fwd_o) | (rev == rev_o)
    return (~same).fill_null(False)


def _pinyin_misses(part: str, stating: str, pinyin: str) -> pl.Expr:
    """One record (columns suffixed `stating`) states a surname or last character
    (`part`) that the other's pinyin-only name (suffix `pinyin`), read in either order,
    does not start or end with."""
    sound = pl.col(f"{part}{stating}")
    fwd, rev = pl.col(f"name_fwd{pinyin}"), pl.col(f"name_rev{pinyin}")
    pinyin_only = fwd.is_not_null() & pl.col(f"surname{pinyin}").is_null()
    if part == "last_sound":
        found = fwd.str.ends_with(sound) | rev.str.ends_with(sound)
    else:
        found = fwd.str.starts_with(sound) | rev.str.starts_with(sound)
    return (pinyin_only & sound.is_not_null() & ~found).fill_null(False)


def disagree(suffix: str = "_o") -> pl.Expr:
    """Both records state a piece of evidence and state it differently: two people.

    A birth date with day and month swapped (03-12 / 12-03) is one date mistyped; a
    pinyin name meets the other's surname and last character by sound.
    """
    stated = ("id_card", "surname", "last_sound", "given_len", "gender")
    plain = [_differ(c, suffix) for c in stated]
    birth, other = pl.col("birth"), pl.col(f"birth{suffix}")
    swapped = (
        (birth.dt.year() == other.dt.year())
        & (birth.dt.month() == other.dt.day())
        & (birth.dt.day() == other.dt.month())
    )
    return pl.any_horizontal(
        *plain,
        ((birth != other) & ~swapped).fill_null(False),
        _names_differ(suffix),
        *[
            _pinyin_misses(part, stating, pinyin)
            for part in ("surname_sound", "last_sound")
            for stating, pinyin in (("", suffix), (suffix, ""))
        ],
    )


def identifier_values(members: pl.DataFrame, rules: tuple[str, ...]) -> pl.DataFrame:
    """Long frame of (record_idx, key_type, value): one row per identifier a record holds."""
    frames = [
        members.select(
            "record_idx",
            pl.lit(rule).alias("key_type"),
            pl.col(RULE_COLUMNS[rule]).cast(pl.Utf8).alias("value"),
        ).filter(pl.col("value").is_not_null() & (pl.col("value") != ""))
        for rule in rules
    ]
    if not frames:
        return pl.DataFrame(
            schema={"record_idx": pl.UInt32(), "key_type": pl.Utf8(), "value": pl.Utf8()}
        )
    return pl.concat(frames)


def _is_blocked(keyed: pl.DataFrame, settings: MatchSettings) -> pl.Series:
    """Blocked values as they appear in the keyed frame: phones by their hash.

    A blocked phone may be listed as the 11 digits or as its SHA-256 already.
    """
    raw = pl.Series("value", [v.strip() for v in settings.blocked_values], dtype=pl.Utf8)
    lowered = raw.str.to_lowercase()
    phone_forms = pl.concat([sha256_hex(raw), lowered.filter(lowered.str.contains(_HEX64))])
    other_forms = pl.concat([raw, lowered])
    blocked = (
        pl.when(pl.col("key_type") == "phone")
        .then(pl.col("value").is_in(phone_forms.implode()))
        .otherwise(pl.col("value").is_in(other_forms.implode()))
        .fill_null(False)
    )
    return keyed.select(blocked).to_series()


# --- people within one value -------------------------------------------------------------


@dataclass(frozen=True)
class PeopleWithinValues:
    """Each (record, value) membership labelled with the person it belongs to.

    `memberships.person` is null where the record is left unlinked by that value
    (ambiguous or conflicting); `values` holds per-value counts for the hub guard.
    """

    memberships: pl.DataFrame
    values: pl.DataFrame
    n_conflict_unlinked: int
    n_ambiguous_unlinked: int


def people_within_values(
    keyed: pl.DataFrame, hub_max_people: int, hub_max_records: int | None = None
) -> PeopleWithinValues:
    """Partition each value's records into people, strongest evidence first.

    1. Strong people: the value's distinct id cards, plus (name sound, birth date)
       signatures of real hanzi names that match no id card (`_signature_people`).
    2. Partial records (a surname, a name's sound, a birth date) join the one strong
       person they contradict nothing of, provided no other person of the value fits
       them too. Those that contradict every strong person are people of their own:
       records that contradict nobody among them are one person; where they do
       (张** -- 张*伟 -- 张*明), the records in between are ambiguous.
    3. Faint records (a gender at most) join the one person they fit; on a value with
       no person yet, they are one person when none contradicts another.
    4. A person's records that contradict each other (two partial records that each
       fit a card but not one another) are taken off it.
    Unlinked records are null. A value with more id cards or stated surnames than
    `hub_max_people`, or more records than `hub_max_records`, is a hub outright, which
    keeps the pairwise joins below small.
    """
    values = keyed.group_by(_VALUE).agg(
        pl.len().alias("n_records"),
        pl.col("channel").n_unique().alias("n_channels"),
        pl.col("id_card").drop_nulls().n_unique().alias("n_id_cards"),
        pl.col("surname").drop_nulls().n_unique().alias("n_surnames"),
    )
    obvious = pl.max_horizontal("n_id_cards", "n_surnames") > hub_max_people
    if hub_max_records is not None:
        obvious = obvious | (pl.col("n_records") > hub_max_records)
    values = values.with_columns(obvious.alias("obvious_hub"))
    obvious_hubs = values.filter("obvious_hub").select(_VALUE)
    considered = keyed.join(obvious_hubs, on=_VALUE, how="anti")

    strong = _strong_people(considered)
    partial = _partial_people(considered, strong)
    faint = _faint_people(considered, pl.concat([strong, partial]))
    labelled = _without_inner_conflicts(pl.concat([strong, partial, faint]))

    counted = (
        labelled.filter(pl.col("person").is_not_null())
        .group_by(_VALUE)
        .agg(pl.col("person").n_unique().alias("n_found"))
    )
    labelled = labelled.with_columns(
        pl.when(pl.col("person").str.starts_with("x:").not_()).then("person").alias("person")
    )
    n_conflict = labelled.filter(
        (pl.col("kind") == "name_birth") & pl.col("person").is_null()
    ).height
    n_ambiguous = labelled.filter(
        pl.col("kind").is_in(["partial", "faint"]) & pl.col("person").is_null()
    ).height

    values = (
        values.join(counted, on=_VALUE, how="left")
        .with_columns(
            pl.when("obvious_hub")
            .then(pl.max_horizontal("n_id_cards", "n_surnames", "n_found"))
            .otherwise(pl.col("n_found").fill_null(0))
            .clip(lower_bound=1)
            .cast(pl.UInt32)
            .alias("n_people")
        )
        .with_columns(
            (pl.col("obvious_hub") | (pl.col("n_people") > hub_max_people)).alias("is_hub")
        )
        .drop("n_found", "n_surnames", "obvious_hub")
    )
    return PeopleWithinValues(
        memberships=labelled.select("record_idx", *_VALUE, "person"),
        values=values,
        n_conflict_unlinked=n_conflict,
        n_ambiguous_unlinked=n_ambiguous,
    )


_LABELLED = ["record_idx", *_VALUE, "kind", "person", *EVIDENCE_COLUMNS]


def _strong_people(considered: pl.DataFrame) -> pl.DataFrame:
    """Id-card holders and name + birth date records, labelled with their person.

    A signature that cannot be placed (several cards fit, or it clashes on its card)
    gets a placeholder person `x:<record>`: it still counts as somebody when weaker
    records look for the one person they fit, but links nobody.
    """
    kind = pl.col("kind")
    card_records = (
        considered.filter(kind == "id")
        .select(*_VALUE, "id_card", "name_sound", "birth_key")
        .unique()
    )
    signatures = considered.filter(kind == "name_birth").select(_SIGNATURE).unique()
    signature_people = _signature_people(signatures, card_records)
    holders = considered.filter(kind == "id").with_columns(
        ("id:" + pl.col("id_card")).alias("person")
    )
    signed = considered.filter(kind == "name_birth").join(
        signature_people.select(*_SIGNATURE, "person"), on=_SIGNATURE, how="left"
    )
    return pl.concat([holders.select(_LABELLED), signed.select(_LABELLED)]).with_columns(
        pl.coalesce("person", pl.format("x:{}", "record_idx")).alias("person")
    )


def _partial_people(considered: pl.DataFrame, strong: pl.DataFrame) -> pl.DataFrame:
    """Partial records: joined to the one person they fit, or people of their own."""
    partial = considered.filter(pl.col("kind") == "partial").select(
        [c for c in _LABELLED if c != "person"]
    )
    to_strong = _compatible_people(partial, strong)
    orphans = partial.join(
        to_strong.filter(pl.col("n_compatible") == 0).select("record_idx", *_VALUE),
        on=["record_idx", *_VALUE],
    )
    orphan_people = _clique_people(orphans, "w")
    fits_one = partial.join(
        to_strong.filter(pl.col("n_compatible") == 1).select("record_idx", *_VALUE, "person"),
        on=["record_idx", *_VALUE],
    )
    also_orphans = _compatible_people(fits_one.drop("person"), orphan_people)
    attached = fits_one.join(
        also_orphans.filter(pl.col("n_compatible") == 0).select("record_idx", *_VALUE),
        on=["record_idx", *_VALUE],
        how="semi",
    )
    placed = pl.concat([orphan_people.select(_LABELLED), attached.select(_LABELLED)])
    rest = partial.join(placed, on=["record_idx", *_VALUE], how="anti").with_columns(
        pl.lit(None, dtype=pl.Utf8).alias("person")
    )
    return pl.concat([placed, rest.select(_LABELLED)])


def _faint_people(considered: pl.DataFrame, people: pl.DataFrame) -> pl.DataFrame:
    """Faint records: the one person they fit, or one person on a value with nobody else."""
    faint = considered.filter(pl.col("kind") == "faint").select(
        [c for c in _LABELLED if c != "person"]
    )
    known = people.filter(pl.col("person").is_not_null())
    fits = _compatible_people(faint, known)
    alone = faint.join(known.select(_VALUE).unique(), on=_VALUE, how="anti")
    joined = faint.join(alone, on=["record_idx", *_VALUE], how="anti").join(
        fits.select("record_idx", *_VALUE, "n_compatible", "person"),
        on=["record_idx", *_VALUE],
        how="left",
    )
    joined = joined.with_columns(
        pl.when(pl.col("n_compatible") == 1).then("person").alias("person")
    )
    return pl.concat([joined.select(_LABELLED), _clique_people(alone, "f").select(_LABELLED)])


def _compatible_people(records: pl.DataFrame, people: pl.DataFrame) -> pl.DataFrame:
    """Per record, how many people of its value it contradicts nothing of, and (when
    exactly one) who; a person is all its records, so one contradiction rules it out."""
    others = people.filter(pl.col("person").is_not_null()).select(
        *_VALUE, "person", *[pl.col(c).alias(f"{c}_o") for c in EVIDENCE_COLUMNS]
    )
    per_person = (
        records.select("record_idx", *_VALUE, *EVIDENCE_COLUMNS)
        .join(others, on=_VALUE)
        .group_by("record_idx", *_VALUE, "person")
        .agg(disagree().any().alias("conflict"))
        .filter(~pl.col("conflict"))
        .group_by("record_idx", *_VALUE)
        .agg(pl.len().alias("n_compatible"), pl.col("person").min())
    )
    return (
        records.select("record_idx", *_VALUE)
        .join(per_person, on=["record_idx", *_VALUE], how="left")
        .with_columns(pl.col("n_compatible").fill_null(0))
    )


def _clique_people(records: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """One person per group of a value's records that contradict nobody in the group.

    Groups are the connected parts of "does not contradict"; a part where two records
    contradict each other (张** between 张*伟 and 张*明) is several people who cannot
    be told apart, so each of its records is only a placeholder `x:<record>`.
    """
    nodes = records.select([c for c in _LABELLED if c != "person"]).with_row_index("node")
    pairs = nodes.join(
        nodes.select("node", *_VALUE, *[pl.col(c).alias(f"{c}_o") for c in EVIDENCE_COLUMNS]),
        on=_VALUE,
        suffix="_o",
    ).filter(pl.col("node") < pl.col("node_o"))
    fitting = pairs.filter(~disagree()).select(
        pl.col("node").alias("left"), pl.col("node_o").alias("right")
    )
    labels = component_labels(nodes.height, fitting)
    nodes = nodes.with_columns(pl.Series("part", labels))
    part_pairs = (
        fitting.with_columns(pl.Series("part", labels[fitting["left"].to_numpy()]))
        .group_by("part")
        .len("n_pairs")
    )
    return (
        nodes.with_columns(pl.len().over("part").alias("size"))
        .join(part_pairs, on="part", how="left")
        .with_columns(
            pl.when(pl.col("n_pairs").fill_null(0) == pl.col("size") * (pl.col("size") - 1) // 2)
            .then(pl.format(f"{prefix}:{{}}", pl.col("record_idx").min().over("part")))
            .otherwise(pl.format("x:{}", "record_idx"))
            .alias("person")
        )
        .select(_LABELLED)
    )


def _without_inner_conflicts(labelled: pl.DataFrame) -> pl.DataFrame:
    """Take weaker records off a person when they contradict another of its records."""
    members = labelled.filter(pl.col("person").is_not_null()).with_row_index("node")
    pairs = members.join(
        members.select(
            "node",
            *_VALUE,
            "person",
            pl.col("kind").alias("kind_o"),
            pl.col("record_idx").alias("record_idx_o"),
            *[pl.col(c).alias(f"{c}_o") for c in EVIDENCE_COLUMNS],
        ),
        on=[*_VALUE, "person"],
        suffix="_o",
    ).filter((pl.col("node") < pl.col("node_o")) & disagree())
    weak = ["partial", "faint"]
    contested = pl.concat(
        [
            pairs.filter(pl.col("kind").is_in(weak)).select("record_idx", *_VALUE),
            pairs.filter(pl.col("kind_o").is_in(weak)).select(
                pl.col("record_idx_o").alias("record_idx"), *_VALUE
            ),
        ]
    ).unique()
    return (
        labelled.join(
            contested.with_columns(pl.lit(True).alias("_contested")),
            on=["record_idx", *_VALUE],
            how="left",
        )
        .with_columns(pl.when(pl.col("_contested").is_null()).then("person").alias("person"))
        .drop("_contested")
    )


def _signature_people(signatures: pl.DataFrame, card_records: pl.DataFrame) -> pl.DataFrame:
    """Decide, per (value, name sound, birth date) signature, which person it is.

    status: `card` (joins exactly one id card: person = that card), `standalone`
    (agrees with no card: a person of its own), `ambiguous` (agrees with several
    cards, or clashes with another signature on its card: person null).
    """
    agreeing = (
        pl.concat(
            [
                signatures.join(
                    card_records.select(*_VALUE, "birth_key", "id_card"), on=[*_VALUE, "birth_key"]
                ),
                signatures.join(
                    card_records.select(*_VALUE, "name_sound", "id_card").drop_nulls("name_sound"),
                    on=[*_VALUE, "name_sound"],
                ),
            ]
        )
        .select(*_SIGNATURE, "id_card")
        .unique()
    )
    compatible = (
        agreeing.join(
            card_records.select(
                *_VALUE,
                "id_card",
                pl.col("name_sound").alias("card_name"),
                pl.col("birth_key").alias("card_birth"),
            ),
            on=[*_VALUE, "id_card"],
        )
        .group_by(*_SIGNATURE, "id_card")
        .agg(
            _conflicts("name_sound", "birth_key", "card_name", "card_birth").any().alias("conflict")
        )
        .filter(~pl.col("conflict"))
    )
    candidates = compatible.group_by(_SIGNATURE).agg(
        pl.len().alias("n_cards"), pl.col("id_card").first()
    )
    attached = candidates.filter(pl.col("n_cards") == 1).drop("n_cards")
    clashing = _clashing_on_one_card(attached)

    return (
        signatures.join(candidates, on=_SIGNATURE, how="left")
        .join(clashing.with_columns(pl.lit(True).alias("clash")), on=_SIGNATURE, how="left")
        .with_columns(
            pl.when(pl.col("n_cards").is_null())
            .then(pl.lit("standalone"))
            .when((pl.col("n_cards") == 1) & pl.col("clash").is_null())
            .then(pl.lit("card"))
            .otherwise(pl.lit("ambiguous"))
            .alias("status")
        )
        .with_columns(
            pl.when(pl.col("status") == "card")
            .then("id:" + pl.col("id_card"))
            .when(pl.col("status") == "standalone")
            .then(pl.format("nb:{}|{}", pl.col("name_sound"), pl.col("birth_key")))
            .alias("person")
        )
        .select(*_SIGNATURE, "status", "person")
    )


def _conflicts(name_a: str, birth_a: str, name_b: str, birth_b: str) -> pl.Expr:
    """A name that sounds different AND a different birth date: two people, not a typo."""
    return ((pl.col(name_a) != pl.col(name_b)) & (pl.col(birth_a) != pl.col(birth_b))).fill_null(
        False
    )


def _clashing_on_one_card(attached: pl.DataFrame) -> pl.DataFrame:
    """Signatures that joined the same card but contradict each other: keep them off it."""
    pairs = attached.join(attached, on=[*_VALUE, "id_card"], suffix="_other").filter(
        _conflicts("name_sound", "birth_key", "name_sound_other", "birth_key_other")
    )
    return pairs.select(_SIGNATURE).unique()


# --- edges -------------------------------------------------------------------------------


def sub_group_memberships(labelled: pl.DataFrame) -> pl.DataFrame:
    """Records of one person within one value, each pointed at the sub-group's smallest record.

    A record holds one value per rule, so within a rule `center` names its sub-group.
    """
    group = ["key_type", "value", "person"]
    return (
        labelled.filter(pl.col("person").is_not_null())
        .with_columns(
            pl.col("record_idx").min().over(group).alias("center"),
            pl.len().over(group).alias("group_size"),
        )
        .filter(pl.col("group_size") > 1)
        .select("record_idx", "key_type", "center")
    )


def _star_edges(memberships: pl.DataFrame, group: str, rule: str) -> pl.DataFrame:
    """Edges from each sub-group's smallest record to every other one (left < right)."""
    return (
        memberships.with_columns(pl.col("record_idx").min().over(group).alias("_hub"))
        .filter(pl.col("record_idx") != pl.col("_hub"))
        .select(
            pl.col("_hub").cast(pl.UInt32).alias("left"),
            pl.col("record_idx").cast(pl.UInt32).alias("right"),
            pl.lit(rule).alias("rule"),
            pl.lit(1.0).alias("score"),
            pl.lit(None, dtype=pl.Utf8).alias("weights"),
        )
    )


def edges_without_id_card_conflicts(
    memberships: pl.DataFrame, members: pl.DataFrame, rules: tuple[str, ...]
) -> tuple[pl.DataFrame, int]:
    """Add each rule's links, strongest rule first, never joining two id cards in one component.

    Each value is already free of clashing cards, but a chain can still bridge
    them (card X -phone- record without card -email- card Y). A rule's
    sub-group "carries" the card of the components it touches. Sub-groups that
    carry none are safe; sub-groups that carry two are dropped; a record reached
    by sub-groups carrying different cards is cut from those sub-groups. Weaker
    rules come later, so they are the ones cut. Returns edges and the number of
    memberships cut.
    """
    n = members.height
    card_codes = _id_card_codes(members)
    accepted: list[pl.DataFrame] = [pl.DataFrame(schema=EDGE_SCHEMA)]
    labels = np.arange(n, dtype=np.int64)
    n_cut = 0
    for rule in rules:
        rule_members = memberships.filter(pl.col("key_type") == rule).select(
            pl.col("record_idx").cast(pl.UInt32), "center"
        )
        if rule_members.is_empty():
            continue
        card_of = _component_cards(card_codes, labels)
        touched = rule_members.with_columns(_card_column(card_of, rule_members["record_idx"]))
        carried = touched.group_by("center").agg(
            pl.col("card").drop_nulls().n_unique().alias("n_carried"),
            pl.col("card").max().alias("carried"),
        )
        touched = touched.join(carried, on="center", how="left")
        free = touched.filter(pl.col("n_carried") == 0)
        carriers = touched.filter(pl.col("n_carried") == 1)
        free_edges = _star_edges(free, "center", rule)

        regions = component_labels(n, pl.concat([*accepted, free_edges]))
        carriers = carriers.with_columns(
            pl.Series("region", regions[carriers["record_idx"].to_numpy()])
        )
        holders = np.flatnonzero(card_of >= 0)
        region_cards = pl.concat(
            [
                pl.DataFrame({"region": regions[holders], "card": card_of[holders]}),
                carriers.select("region", pl.col("carried").alias("card")),
            ]
        )
        contested = (
            region_cards.group_by("region")
            .agg(pl.col("card").n_unique().alias("n_cards"))
            .filter(pl.col("n_cards") > 1)
        )
        kept = carriers.join(contested, on="region", how="anti")
        carrier_edges = _star_edges(kept, "center", rule)
        n_cut += touched.height - free.height - kept.height

        candidate = pl.concat([*accepted, free_edges, carrier_edges])
        labels = component_labels(n, candidate)
        accepted = [candidate]
    edges = accepted[0].unique(subset=["left", "right"], keep="first", maintain_order=True)
    return edges.sort("left", "right"), n_cut


def _id_card_codes(members: pl.DataFrame) -> np.ndarray:
    """Per record_idx, an integer code of its id card (-1 without one); exact, not a hash."""
    holders = members.select("record_idx", "id_card").drop_nulls("id_card")
    codes = np.full(members.height, -1, dtype=np.int64)
    codes[holders["record_idx"].to_numpy()] = holders["id_card"].rank("dense").to_numpy() - 1
    return codes


def _component_cards(card_codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per record, the code of the one id card its current component holds (-1: none)."""
    holders = card_codes >= 0
    component_card = np.full(int(labels.max(initial=0)) + 1, -1, dtype=np.int64)
    component_card[labels[holders]] = card_codes[holders]
    return component_card[labels]


def _card_column(card_of: np.ndarray, record_idx: pl.Series) -> pl.Series:
    cards = pl.Series("card", card_of[record_idx.to_numpy()])
    return pl.select(pl.when(cards >= 0).then(cards)).to_series().alias("card")


# --- report ------------------------------------------------------------------------------


def _hub_report(
    blocked: pl.DataFrame,
    hubs: pl.DataFrame,
    values: pl.DataFrame,
    rules: tuple[str, ...],
    hub_max_people: int,
) -> pl.DataFrame:
    """hub_values: what was refused and why, with the value only as a keyed token."""
    blocked_stats = (
        blocked.group_by(_VALUE)
        .agg(
            pl.len().cast(pl.UInt32).alias("n_records"),
            pl.col("channel").n_unique().cast(pl.UInt32).alias("n_channels"),
            pl.col("id_card").drop_nulls().n_unique().cast(pl.UInt32).alias("n_people"),
        )
        .with_columns(
            pl.col("n_people").clip(lower_bound=1), pl.lit("blocked value").alias("reason")
        )
    )
    hub_stats = values.join(hubs.select(_VALUE).unique(), on=_VALUE, how="semi").select(
        *_VALUE,
        pl.col("n_records").cast(pl.UInt32),
        pl.col("n_channels").cast(pl.UInt32),
        pl.col("n_people").cast(pl.UInt32),
        pl.when(pl.col("n_people") > hub_max_people)
        .then(pl.format("hub: {} distinct people", pl.col("n_people")))
        .otherwise(pl.format("hub: {} records", pl.col("n_records")))
        .alias("reason"),
    )
    report = pl.concat([blocked_stats, hub_stats], how="diagonal")
    if report.is_empty():
        return pl.DataFrame(schema=HUB_SCHEMA)
    rule_rank = {rule: i for i, rule in enumerate(rules)}
    report = report.with_columns(keyed_token(report["value"]).alias("value_token"))
    return (
        report.sort(
            pl.col("key_type").replace_strict(rule_rank, return_dtype=pl.Int32),
            pl.col("n_people"),
            "value_token",
            descending=[False, True, False],
        )
        .select(list(HUB_SCHEMA))
        .cast(HUB_SCHEMA)
    )
