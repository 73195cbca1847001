"""Demo channels with ground truth: realistic mess for benchmarks and end-to-end tests.

`generate_demo` writes five channels the way a brand actually receives them --
offline POS in GB18030 with Chinese headers, Tmall and JD with only a hashed
mobile (in two letter cases), a WeChat mini-program full of "微信用户"
placeholders, the brand app -- each with a points ledger and reported balances,
plus `truth/`: who every member row really is, which identity phenomena and
points faults were injected where, and which rows must be quarantined.

Why synthetic: real member data is personal information (PIPL) and no public set
has Chinese loyalty data with ground truth. The phenomena that break naive
matching are injected at known rates (`IDENTITY_RATES`, `FAULT_RATES`) so
benchmarks can score precision and recall against `truth/persons.parquet`.

Everything is drawn from one numpy Generator in a fixed order and written in a
fixed row order, so one seed gives byte-identical files; every step is a numpy or
polars operation over all people at once (Python loops only run over channels,
fault kinds, or a member's n-th redemption), so 200k people take seconds.

Ledger semantics (what a correct reconciler can rely on, see `_clean_ledger`):
earn rows carry `expires_at` = txn_time + 365 days; `task` and `adjust` points
never expire; redemptions and expiries consume the oldest expiring points first;
every earn row expiring before the end of `as_of` has had its unredeemed rest
booked as an `expire` row at its `expires_at`, except where `unexpired_points`
was injected. Without injected faults no running balance goes below zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl

from tasks.privacy import sha256_hex

DEMO_AS_OF = date(2026, 11, 30)
CHANNELS: tuple[str, ...] = ("pos", "tmall", "jd", "wechat", "app")
TEST_NUMBER = "13800138000"
EXPIRY_DAYS = 365
_DAY = 86_400
_EXPIRY = EXPIRY_DAYS * _DAY
_FIRST_REGISTRATION = datetime(2019, 1, 1)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_KEY_SPAN = 10**10  # member ordinal * span + epoch seconds sorts a ledger by member, then time

# Share of people holding a membership in each channel (at least one is forced).
CHANNEL_SHARE: dict[str, float] = {
    "pos": 0.45,
    "tmall": 0.40,
    "jd": 0.25,
    "wechat": 0.45,
    "app": 0.25,
}

# Injected identity phenomena: rate over the eligible records (or people), and a floor
# so that every phenomenon is present even in a small demo.
IDENTITY_RATES: dict[str, tuple[float, int, str]] = {
    "family_phone": (0.01, 3, "family groups (2-3 people on one mobile) per person"),
    "same_channel_duplicate": (0.02, 3, "second POS (or app) membership per POS (app) person"),
    "unlinkable": (0.04, 3, "people with two records that share no evidence, per such person"),
    "store_phone": (0.04, 5, "POS records carrying the store's phone (clerk-typed)"),
    "test_number": (0.003, 4, "POS/app/WeChat records carrying 13800138000"),
    "changed_number": (0.05, 3, "POS records with the old number, per POS person seen elsewhere"),
    "phone_typo": (0.02, 3, "POS/app phones with one digit wrong"),
    "garbage_phone": (0.01, 3, "POS phones that are not a mobile number at all"),
    "name_typo": (0.02, 3, "POS/app hanzi names with a homophone typo"),
    "date_swap": (0.015, 3, "POS/app birth dates with day and month swapped"),
    "invalid_id_card": (0.02, 3, "POS id cards with a wrong check character"),
    "bad_birth_date": (0.01, 3, "POS birth dates that do not parse"),
}

# Injected points faults: rate over a channel's members with a ledger, and a floor.
FAULT_RATES: dict[str, tuple[float, int]] = {
    "balance_mismatch": (0.01, 2),
    "duplicate_txn": (0.005, 2),
    "double_credit": (0.005, 3),  # per person with memberships in two channels
    "negative_balance": (0.003, 1),
    "orphan_txn": (0.001, 1),  # orphan member ids per channel
    "over_redemption": (0.003, 1),
    "unexpired_points": (0.005, 1),
}
BAD_MEMBER_ROWS = {"missing_member_id": (0.001, 3), "duplicate_member_id": (0.001, 3)}
BAD_LEDGER_ROWS: tuple[str, ...] = ("invalid_points", "unknown_txn_type", "missing_txn_id")

# --- vocabulary ----------------------------------------------------------------------------

# Surname, pinyin, share in percent (2020 census order of magnitude): a handful of
# surnames covers a large share of people, so 王伟 and 李娜 repeat a lot.
_SURNAMES: tuple[tuple[str, str, float], ...] = (
    ("王", "wang", 7.1),
    ("李", "li", 7.0),
    ("张", "zhang", 6.7),
    ("刘", "liu", 5.4),
    ("陈", "chen", 4.6),
    ("杨", "yang", 3.1),
    ("黄", "huang", 2.4),
    ("赵", "zhao", 2.3),
    ("吴", "wu", 2.0),
    ("周", "zhou", 1.9),
    ("徐", "xu", 1.5),
    ("孙", "sun", 1.5),
    ("马", "ma", 1.4),
    ("朱", "zhu", 1.3),
    ("胡", "hu", 1.2),
    ("郭", "guo", 1.2),
    ("何", "he", 1.2),
    ("林", "lin", 1.1),
    ("高", "gao", 1.1),
    ("罗", "luo", 1.0),
    ("郑", "zheng", 0.9),
    ("梁", "liang", 0.9),
    ("谢", "xie", 0.8),
    ("宋", "song", 0.7),
    ("唐", "tang", 0.7),
    ("许", "xu", 0.7),
    ("韩", "han", 0.7),
    ("冯", "feng", 0.6),
    ("邓", "deng", 0.6),
    ("曹", "cao", 0.6),
    ("彭", "peng", 0.6),
    ("曾", "zeng", 0.5),
    ("肖", "xiao", 0.5),
    ("田", "tian", 0.5),
    ("董", "dong", 0.5),
    ("袁", "yuan", 0.5),
    ("潘", "pan", 0.4),
    ("于", "yu", 0.4),
    ("蒋", "jiang", 0.4),
    ("蔡", "cai", 0.4),
    ("余", "yu", 0.4),
    ("杜", "du", 0.4),
    ("叶", "ye", 0.4),
    ("程", "cheng", 0.4),
    ("苏", "su", 0.3),
    ("魏", "wei", 0.3),
    ("吕", "lv", 0.3),
    ("丁", "ding", 0.3),
    ("任", "ren", 0.3),
    ("沈", "shen", 0.3),
    ("姚", "yao", 0.3),
    ("卢", "lu", 0.3),
    ("姜", "jiang", 0.3),
    ("崔", "cui", 0.3),
    ("钟", "zhong", 0.3),
    ("谭", "tan", 0.3),
    ("陆", "lu", 0.3),
    ("汪", "wang", 0.3),
    ("范", "fan", 0.3),
    ("金", "jin", 0.3),
    ("石", "shi", 0.2),
    ("廖", "liao", 0.2),
    ("贾", "jia", 0.2),
    ("夏", "xia", 0.2),
    ("韦", "wei", 0.2),
    ("付", "fu", 0.2),
    ("方", "fang", 0.2),
    ("白", "bai", 0.2),
    ("邹", "zou", 0.2),
    ("孟", "meng", 0.2),
    ("熊", "xiong", 0.2),
    ("秦", "qin", 0.2),
    ("邱", "qiu", 0.2),
    ("江", "jiang", 0.2),
    ("尹", "yin", 0.2),
    ("薛", "xue", 0.2),
    ("闫", "yan", 0.2),
    ("段", "duan", 0.2),
    ("雷", "lei", 0.2),
    ("侯", "hou", 0.2),
    ("欧阳", "ouyang", 0.05),
    ("司马", "sima", 0.01),
    ("上官", "shangguan", 0.01),
)
# The most common given names, by weight: they make exact name collisions common.
_COMMON_GIVEN = {
    "M": (
        ("伟", 30),
        ("强", 12),
        ("磊", 12),
        ("军", 12),
        ("勇", 10),
        ("杰", 10),
        ("涛", 8),
        ("明", 8),
        ("超", 8),
        ("刚", 6),
        ("平", 6),
        ("辉", 6),
        ("建华", 5),
        ("建国", 5),
        ("志强", 4),
        ("海涛", 3),
    ),
    "F": (
        ("芳", 25),
        ("娜", 22),
        ("静", 18),
        ("敏", 15),
        ("丽", 12),
        ("秀英", 10),
        ("艳", 10),
        ("娟", 8),
        ("霞", 8),
        ("婷", 8),
        ("秀兰", 6),
        ("桂英", 6),
        ("丹", 6),
        ("萍", 6),
        ("红", 6),
        ("玲", 6),
        ("玉兰", 4),
    ),
}
_GIVEN_CHARS = {
    "M": "伟强磊军勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆帅旭宁龙林洋峰"
    "建国文志海东亮成博晨阳子轩豪然睿泽天毅晓云德嘉瑞",
    "F": "芳娜敏静丽艳娟霞秀英兰玲燕萍红梅琳雪婷慧颖倩琴"
    "晶妍欣怡佳雨涵萱思梦璐瑶诗月莉蓉洁薇丹凤玉桂",
}
# Input-method typos: the last character replaced by a homophone (same pinyin).
_HOMOPHONE_TYPOS = dict(
    zip(
        "伟强磊军杰涛明超刚平辉鹏华飞波斌宇浩凯俊帆旭宁林洋峰国文志东成博晨阳子轩豪然睿泽天毅晓云德嘉瑞鑫龙健帅建"
        "芳娜敏静丽艳娟霞秀英兰玲萍红梅雪婷慧颖倩琴晶欣怡佳涵萱思梦璐瑶月洁薇丹雨诗莉蓉凤玉桂燕妍",
        "玮蔷垒君洁滔铭潮钢苹晖朋桦菲博彬雨皓恺骏凡煦凝琳阳锋帼雯智冬诚搏辰杨紫萱浩燃瑞则添艺筱芸得佳睿新隆建率健"
        "方那民婧莉燕涓侠绣莹岚铃苹虹媚学亭惠莹茜芹菁心宜家含宣丝孟露遥悦杰微单宇师丽荣风钰贵艳研",
        strict=True,
    )
)
# City, 6-digit region code (id cards), English spelling (WeChat profiles), weight.
# City, English spelling (WeChat profiles), weight, and the 6-digit region codes of
# id cards issued there: one valid for people born before 1983, one from 1983 on
# (codes were redrawn in 1983; python-stdnum checks the code existed at birth).
_CITIES: tuple[tuple[str, str, int, int, float], ...] = (
    ("北京", "Beijing", 110102, 110102, 8),
    ("上海", "Shanghai", 310104, 310104, 8),
    ("广州", "Guangzhou", 440120, 440103, 6),
    ("深圳", "Shenzhen", 440320, 440301, 6),
    ("杭州", "Hangzhou", 330120, 330102, 5),
    ("成都", "Chengdu", 510120, 510112, 5),
    ("武汉", "Wuhan", 420120, 420102, 4),
    ("南京", "Nanjing", 320120, 320102, 4),
    ("西安", "Xi'an", 610120, 610102, 4),
    ("天津", "Tianjin", 120102, 120102, 4),
    ("郑州", "Zhengzhou", 410120, 410102, 3),
    ("长沙", "Changsha", 430121, 430121, 3),
    ("青岛", "Qingdao", 370220, 370202, 3),
    ("沈阳", "Shenyang", 210120, 210102, 2),
    ("宁波", "Ningbo", 330220, 330203, 2),
    ("合肥", "Hefei", 340120, 340121, 2),
    ("厦门", "Xiamen", 350220, 350203, 2),
)
_DISTRICTS = ("城区", "新区", "高新区", "开发区", "东城区", "西城区", "南区", "北区")
_ROADS = (
    "人民路",
    "解放路",
    "中山路",
    "建设路",
    "和平路",
    "新华路",
    "胜利路",
    "朝阳路",
    "青年路",
    "文化路",
    "长江路",
    "黄河路",
    "友谊路",
    "光明路",
    "幸福路",
)
_NICKNAMES = (
    "快乐的小鱼",
    "Sunny",
    "阳光男孩",
    "小猫咪",
    "追风少年",
    "Lily",
    "安静的美男子",
    "木子",
    "一只猫",
    "Aaron",
    "晴天",
    "柠檬",
    "A-阿伟",
    "岁月静好",
    "Coco",
    "小太阳",
    "🌸花开",
    "Jason",
)
_PLACEHOLDER_NAME = "微信用户"
_EMAIL_DOMAINS = ("163.com", "126.com", "sina.com", "gmail.com", "outlook.com", "foxmail.com")
_MOBILE_PREFIXES = (
    130,
    131,
    132,
    133,
    134,
    135,
    136,
    137,
    138,
    139,
    150,
    151,
    152,
    153,
    155,
    156,
    157,
    158,
    159,
    166,
    173,
    175,
    176,
    177,
    178,
    180,
    181,
    182,
    183,
    184,
    185,
    186,
    187,
    188,
    189,
    191,
    195,
    198,
    199,
)
_GARBAGE_PHONES = (
    "12345",
    "无",
    "000000",
    "1380013800",
    "电话待补",
    "138001380001",
    "abcdefg",
    "021-55551234",
)
_GARBAGE_BIRTHS = ("abc", "1990-13-45", "0000-00-00", "不详", "19901345")
_FULLWIDTH = [chr(0xFF10 + d) for d in range(10)]
_ASCII_DIGITS = [str(d) for d in range(10)]
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
_ID_CHECK = np.array(list("10X98765432"))

# How each channel shows a member: share of records carrying each field.
_PRESENCE: dict[str, dict[str, float]] = {
    "pos": {
        "phone": 0.97,
        "id_card": 0.6,
        "birth": 0.85,
        "gender": 0.95,
        "city": 1.0,
        "address": 0.8,
    },
    "tmall": {"phone": 0.92, "city": 0.8},
    "jd": {"phone": 0.9, "city": 0.7},
    "wechat": {"phone": 0.55, "unionid": 1.0, "gender": 0.9, "city": 0.5},
    "app": {"phone": 0.95, "unionid": 0.6, "email": 0.7, "birth": 0.65},
}
# Share of records showing each kind of name (None: no name at all).
_NAME_STYLES: dict[str, dict[str | None, float]] = {
    "pos": {"hanzi": 1.0},
    "tmall": {"masked": 0.5, "nickname": 0.5},
    "jd": {"masked": 0.85, "nickname": 0.15},
    "wechat": {"placeholder": 0.35, "pinyin": 0.15, "hanzi": 0.2, "nickname": 0.3},
    "app": {"hanzi": 0.75, "pinyin": 0.1, None: 0.15},
}
_MEMBER_ID = {  # prefix, first number (ids are prefix + shuffled numbers)
    "pos": ("P", 10_000_000),
    "tmall": ("TM", 3_000_000_000),
    "jd": ("JD", 500_000_000),
    "wechat": ("WX", 70_000_000),
    "app": ("A", 20_000_000),
}
_ORDER_PREFIX = {"pos": "SO", "tmall": "TB", "jd": "JDO", "wechat": "WXO", "app": "APO"}
_TXN_PREFIX = {"pos": "PT", "tmall": "TT", "jd": "JT", "wechat": "WT", "app": "AT"}
_MEAN_TXNS = {"pos": 6.0, "tmall": 5.0, "jd": 4.0, "wechat": 3.0, "app": 4.0}

# Column names per channel file (canonical name -> name in the file); what sources.toml maps.
_POS_HEADERS = {
    "member_id": "会员编号",
    "name": "姓名",
    "phone": "手机号",
    "id_card": "身份证号",
    "gender": "性别",
    "birth_date": "生日",
    "city": "城市",
    "address": "地址",
    "registered_at": "注册时间",
    "txn_id": "流水号",
    "txn_time": "交易时间",
    "points": "积分",
    "txn_type": "交易类型",
    "order_id": "订单号",
    "expires_at": "过期时间",
    "balance": "积分余额",
    "as_of": "截止日期",
}
_MEMBER_COLUMNS: dict[str, tuple[str, ...]] = {
    "pos": (
        "member_id",
        "name",
        "phone",
        "id_card",
        "gender",
        "birth_date",
        "city",
        "address",
        "registered_at",
    ),
    "tmall": ("member_id", "phone_sha256", "name", "city", "registered_at"),
    "jd": ("member_id", "name", "phone_sha256", "city", "registered_at"),
    "wechat": ("member_id", "unionid", "name", "phone", "gender", "city", "registered_at"),
    "app": ("member_id", "unionid", "phone", "email", "name", "birth_date", "registered_at"),
}
_RENAMES: dict[str, dict[str, str]] = {
    "pos": _POS_HEADERS,
    "tmall": {"name": "nick"},
    "jd": {},
    "wechat": {"name": "nickname"},
    "app": {},
}
_FILES: dict[str, dict[str, str]] = {
    "pos": {
        "members": "pos_members.csv",
        "points": "pos_points.csv",
        "balances": "pos_balances.csv",
    },
    "tmall": {
        "members": "tmall_members.parquet",
        "points": "tmall_points.parquet",
        "balances": "tmall_balances.parquet",
    },
    "jd": {"members": "jd_members.csv", "points": "jd_points.csv", "balances": "jd_balances.csv"},
    "wechat": {
        "members": "wechat_members.ndjson",
        "points": "wechat_points.csv",
        "balances": "wechat_balances.csv",
    },
    "app": {
        "members": "app_members.csv",
        "points": "app_points.csv",
        "balances": "app_balances.csv",
    },
}
_ENCODING = {"pos": "gb18030", "jd": "utf-8-sig"}
_TRUST = {"pos": 3, "tmall": 1, "jd": 1, "wechat": 2, "app": 2}


@dataclass(frozen=True)
class DemoManifest:
    """Where a generated demo lives and how big it is; `counts` keys are `<what>.<name>`."""

    out_dir: Path
    config: Path
    as_of: date
    people: int
    seed: int
    files: dict[str, dict[str, Path]]
    truth: dict[str, Path]
    counts: dict[str, int] = field(default_factory=dict)


# --- entry point ---------------------------------------------------------------------------


def generate_demo(
    out_dir: Path, people: int = 5000, seed: int = 7, as_of: date = DEMO_AS_OF
) -> DemoManifest:
    """Write the five demo channels, `sources.toml` and `truth/` into `out_dir`."""
    if people < 10:
        raise ValueError(
            f"generate_demo needs at least 10 people to inject every phenomenon, got {people}"
        )
    out_dir = Path(out_dir)
    (out_dir / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    horizon = int(
        (datetime.combine(as_of, datetime.min.time()) + timedelta(days=1)).timestamp()
        - datetime(1970, 1, 1).timestamp()
    )
    phones = _PhonePool(rng, people)
    persons = _draw_persons(rng, people, as_of, phones)
    persons, families = _share_family_phones(rng, persons)
    records = _channel_records(rng, persons, horizon)
    records, phenomena = _inject_identity_phenomena(rng, records, persons, phones)
    phenomena = [_family_phenomena(records, families), *phenomena]

    members, bad_member_rows = _render_members(rng, records)
    ledgers = _ledgers(rng, members, horizon)
    files = _write_channels(out_dir, members, ledgers, as_of)
    truth = _write_truth(
        out_dir / "truth",
        records,
        members,
        ledgers,
        bad_member_rows,
        pl.concat(phenomena),
        as_of,
        seed,
        people,
    )
    config = _write_sources_toml(out_dir, as_of)
    counts = json.loads((out_dir / "truth" / "meta.json").read_text())["counts"]
    return DemoManifest(
        out_dir=out_dir,
        config=config,
        as_of=as_of,
        people=people,
        seed=seed,
        files=files,
        truth=truth,
        counts=counts,
    )


# --- people --------------------------------------------------------------------------------


class _PhonePool:
    """Distinct valid mobile numbers, handed out in draw order so a seed fixes them all."""

    def __init__(self, rng: np.random.Generator, people: int) -> None:
        size = int(people * 1.4) + 200
        prefixes = np.array(_MOBILE_PREFIXES, dtype=np.int64)
        drawn = rng.choice(prefixes, size) * 10**8 + rng.integers(0, 10**8, size)
        _, first = np.unique(drawn, return_index=True)
        numbers = drawn[np.sort(first)].astype(str)
        self._numbers = numbers[numbers != TEST_NUMBER]
        self._next = 0

    def take(self, count: int) -> np.ndarray:
        taken = self._numbers[self._next : self._next + count]
        if len(taken) < count:
            raise RuntimeError("phone pool exhausted; raise _PhonePool size")
        self._next += count
        return taken


def _weights(values: tuple) -> np.ndarray:
    weights = np.array([v[-1] for v in values], dtype=float)
    return weights / weights.sum()


@cache
def _char_pinyin(chars: str) -> tuple[str, ...]:
    from pypinyin import lazy_pinyin

    return tuple("".join(lazy_pinyin(c)) for c in chars)


def _given_names(rng: np.random.Generator, female: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Given names and their pinyin: a third from the most common names, the rest composed."""
    n = len(female)
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for sex in ("M", "F"):
        common = _COMMON_GIVEN[sex]
        names = np.array([g for g, _ in common])
        pinyin = np.array(["".join(_char_pinyin(g)) for g, _ in common])
        pick = rng.choice(len(common), n, p=_weights(common))
        chars = np.array(list(_GIVEN_CHARS[sex]))
        chars_py = np.array(_char_pinyin(_GIVEN_CHARS[sex]))
        first, second = rng.integers(0, len(chars), n), rng.integers(0, len(chars), n)
        two = rng.random(n) < 0.8
        composed = np.where(two, np.strings.add(chars[first], chars[second]), chars[first])
        composed_py = np.where(
            two, np.strings.add(chars_py[first], chars_py[second]), chars_py[first]
        )
        use_common = rng.random(n) < 0.35
        parts[sex] = (
            np.where(use_common, names[pick], composed),
            np.where(use_common, pinyin[pick], composed_py),
        )
    given = np.where(female, parts["F"][0], parts["M"][0])
    given_py = np.where(female, parts["F"][1], parts["M"][1])
    return given, given_py


def _id_cards(
    rng: np.random.Generator, region: np.ndarray, birth: np.ndarray, male: np.ndarray
) -> np.ndarray:
    """18-character resident ids (GB 11643) with a correct ISO 7064 MOD 11-2 check character."""
    year = birth.astype("datetime64[Y]").astype(np.int64) + 1970
    month = birth.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (birth - birth.astype("datetime64[M]")).astype(np.int64) + 1
    sequence = rng.integers(0, 500, len(birth)) * 2 + male.astype(np.int64)  # odd = male
    body = region * 10**11 + (year * 10_000 + month * 100 + day) * 1000 + sequence
    digits = (body[:, None] // 10 ** np.arange(16, -1, -1)) % 10
    check = _ID_CHECK[(digits * _ID_WEIGHTS).sum(axis=1) % 11]
    return np.strings.add(body.astype(str), check)


def _draw_persons(
    rng: np.random.Generator, n: int, as_of: date, phones: _PhonePool
) -> pl.DataFrame:
    """One row per real person: the true identity every channel record derives from."""
    surname_idx = rng.choice(len(_SURNAMES), n, p=_weights(_SURNAMES))
    surnames = np.array([s for s, _, _ in _SURNAMES])[surname_idx]
    surnames_py = np.array([p for _, p, _ in _SURNAMES])[surname_idx]
    female = rng.random(n) < 0.55
    given, given_py = _given_names(rng, female)
    age = rng.normal(36, 11, n)
    age = np.where((age < 18) | (age > 72), rng.uniform(18, 60, n), age)  # no pile-up at the bounds
    age_days = (age * 365.25).astype(np.int64)
    birth = np.datetime64(as_of, "D") - age_days
    city_idx = rng.choice(len(_CITIES), n, p=_weights(_CITIES))
    # Id cards carry the birthplace: mostly the city of residence, migrants elsewhere.
    born_elsewhere = rng.random(n) < 0.2
    birthplace = np.where(born_elsewhere, rng.choice(len(_CITIES), n), city_idx)
    born_before_1983 = birth < np.datetime64("1983-01-01")
    region = np.where(
        born_before_1983,
        np.array([c[2] for c in _CITIES])[birthplace],
        np.array([c[3] for c in _CITIES])[birthplace],
    ).astype(np.int64)
    id_card = _id_cards(rng, region, birth, ~female)
    person = np.arange(n, dtype=np.int64)
    qq = rng.random(n) < 0.35
    domain = np.array(_EMAIL_DOMAINS)[rng.integers(0, len(_EMAIL_DOMAINS), n)]
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    unionid = np.strings.add("oX", alphabet[rng.integers(0, 64, (n, 26))].view("<U26")[:, 0])
    road = np.array(_ROADS)[rng.integers(0, len(_ROADS), n)]
    district = np.array(_DISTRICTS)[rng.integers(0, len(_DISTRICTS), n)]
    number, building, room = (
        rng.integers(1, 999, n),
        rng.integers(1, 30, n),
        rng.integers(101, 2808, n),
    )
    frame = pl.DataFrame(
        {
            "person": person,
            "surname": surnames,
            "given": given,
            "surname_py": surnames_py,
            "given_py": given_py,
            "gender": np.where(female, "F", "M"),
            "birth": birth,
            "city": np.array([c[0] for c in _CITIES])[city_idx],
            "phone": phones.take(n),
            "unionid": unionid,
            "id_card": id_card,
            "qq": qq,
            "qq_number": 100_000 + person * 37 + rng.integers(0, 37, n),
            "domain": domain,
            "road": road,
            "district": district,
            "number": number,
            "building": building,
            "room": room,
        }
    )
    return frame.with_columns(
        name=pl.col("surname") + pl.col("given"),
        pinyin=pl.col("surname_py") + pl.col("given_py"),
        email=pl.when("qq")
        .then(pl.col("qq_number").cast(pl.Utf8) + "@qq.com")
        .otherwise(
            pl.col("surname_py")
            + pl.col("given_py")
            + (pl.col("person") + 100).cast(pl.Utf8)
            + "@"
            + pl.col("domain")
        ),
        address=pl.concat_str(
            [
                pl.col("city"),
                pl.lit("市"),
                "district",
                "road",
                pl.col("number").cast(pl.Utf8),
                pl.lit("号"),
                pl.col("building").cast(pl.Utf8),
                pl.lit("栋"),
                pl.col("room").cast(pl.Utf8),
                pl.lit("室"),
            ]
        ),
    ).drop("qq", "qq_number", "domain", "road", "district", "number", "building", "room")


def _share_family_phones(
    rng: np.random.Generator, persons: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Families of 2-3 people use one mobile everywhere (different names and birthdays)."""
    n = persons.height
    rate, floor, _ = IDENTITY_RATES["family_phone"]
    groups = max(floor, round(rate * n))
    sizes = rng.choice([2, 3], groups, p=[0.6, 0.4])
    chosen = rng.choice(n, int(sizes.sum()), replace=False)
    group = np.repeat(np.arange(groups), sizes)
    head = chosen[np.searchsorted(group, group, "left")]
    phone = persons["phone"].to_numpy().copy()
    city = persons["city"].to_numpy().copy()
    phone[chosen], city[chosen] = phone[head], city[head]
    families = pl.DataFrame({"person": chosen, "family": group, "head": head})
    return persons.with_columns(pl.Series("phone", phone), pl.Series("city", city)), families


# --- channel records -----------------------------------------------------------------------

_RECORD_SCHEMA: dict[str, pl.DataType] = {
    "rec": pl.Int64(),
    "person": pl.Int64(),
    "channel": pl.Utf8(),
    "phone": pl.Utf8(),
    "phone_raw": pl.Utf8(),
    "unionid": pl.Utf8(),
    "email": pl.Utf8(),
    "id_card": pl.Utf8(),
    "id_card_raw": pl.Utf8(),
    "name": pl.Utf8(),
    "name_kind": pl.Utf8(),
    "name_pinyin": pl.Utf8(),
    "birth": pl.Date(),
    "birth_raw": pl.Utf8(),
    "gender": pl.Utf8(),
    "city": pl.Utf8(),
    "address": pl.Utf8(),
    "registered": pl.Int64(),
}


def _channel_records(rng: np.random.Generator, persons: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """One row per membership, with the values the channel shows (before formatting mess)."""
    n = persons.height
    member = np.column_stack([rng.random(n) < CHANNEL_SHARE[c] for c in CHANNELS])
    nowhere = np.flatnonzero(~member.any(axis=1))
    member[
        nowhere, rng.choice(len(CHANNELS), len(nowhere), p=_weights(tuple(CHANNEL_SHARE.items())))
    ] = True
    frames = []
    for column, channel in enumerate(CHANNELS):
        holders = np.flatnonzero(member[:, column])
        if channel in ("pos", "app"):  # signed up twice: another store, a reinstalled app
            twice = rng.choice(
                holders, _count("same_channel_duplicate", len(holders)), replace=False
            )
            holders = np.concatenate([holders, np.sort(twice)])
        frames.append(_show_in_channel(rng, persons, channel, holders, horizon))
    records = pl.concat(frames)
    return records.with_columns(rec=pl.int_range(records.height, dtype=pl.Int64)).select(
        list(_RECORD_SCHEMA)
    )


def _pick_style(rng: np.random.Generator, styles: dict[str | None, float], n: int) -> np.ndarray:
    keys = list(styles)
    codes = rng.choice(len(keys), n, p=np.array(list(styles.values())) / sum(styles.values()))
    return np.array([k or "" for k in keys], dtype=object)[codes]


def _show_in_channel(
    rng: np.random.Generator, persons: pl.DataFrame, channel: str, holders: np.ndarray, horizon: int
) -> pl.DataFrame:
    m = len(holders)
    shows = {
        f: rng.random(m) < _PRESENCE[channel].get(f, 0.0)
        for f in ("phone", "unionid", "email", "id_card", "birth", "gender", "city", "address")
    }
    first = int((_FIRST_REGISTRATION - datetime(1970, 1, 1)).total_seconds())
    registered = first + (rng.random(m) * (horizon - 7 * _DAY - first)).astype(np.int64)
    style = _pick_style(rng, _NAME_STYLES[channel], m)
    pinyin_format = rng.integers(0, 4, m)
    nickname = np.array(_NICKNAMES)[rng.integers(0, len(_NICKNAMES), m)]
    nick_suffix = rng.integers(0, 10_000, m)
    taobao = rng.random(m) < 0.4
    base = persons[holders].with_columns(
        pl.Series("style", style),
        pl.Series("pinyin_format", pinyin_format),
        pl.Series("nickname", nickname),
        pl.Series("nick_suffix", nick_suffix),
        pl.Series("taobao", taobao),
        **{f"show_{f}": pl.Series(v) for f, v in shows.items()},
    )
    masked = (
        pl.col("surname") + pl.col("given").str.replace_all(".", "*")
        if channel != "jd"
        else pl.when(pl.col("given").str.len_chars() >= 2)
        .then(pl.col("surname") + "*" + pl.col("given").str.slice(-1))
        .otherwise(pl.col("surname") + "*")
    )
    sur_py, giv_py = pl.col("surname_py"), pl.col("given_py")
    pinyin_shown = (
        pl.when(pl.col("pinyin_format") == 0)
        .then(sur_py + " " + giv_py)
        .when(pl.col("pinyin_format") == 1)
        .then(sur_py.str.to_titlecase() + " " + giv_py.str.to_titlecase())
        .when(pl.col("pinyin_format") == 2)
        .then(sur_py + giv_py)
        .otherwise(giv_py.str.to_titlecase() + " " + sur_py.str.to_titlecase())
    )
    nickname_shown = (
        pl.when(pl.lit(channel == "tmall") & pl.col("taobao"))
        .then(pl.lit("tb") + (pl.col("nick_suffix") * 7919 + 10_000_000).cast(pl.Utf8))
        .when(pl.col("nick_suffix") < 5000)
        .then(pl.col("nickname"))
        .otherwise(pl.col("nickname") + pl.col("nick_suffix").cast(pl.Utf8))
    )
    style_col = pl.col("style")
    name = (
        pl.when(style_col == "hanzi")
        .then(pl.col("name"))
        .when(style_col == "pinyin")
        .then(pinyin_shown)
        .when(style_col == "masked")
        .then(masked)
        .when(style_col == "placeholder")
        .then(pl.lit(_PLACEHOLDER_NAME))
        .when(style_col == "nickname")
        .then(nickname_shown)
    )

    def shown(column: str, flag: str) -> pl.Expr:
        return pl.when(pl.col(f"show_{flag}")).then(pl.col(column))

    return base.select(
        rec=pl.lit(0, pl.Int64),
        person="person",
        channel=pl.lit(channel),
        phone=shown("phone", "phone"),
        phone_raw=pl.lit(None, pl.Utf8),
        unionid=shown("unionid", "unionid"),
        email=shown("email", "email"),
        id_card=shown("id_card", "id_card"),
        id_card_raw=pl.lit(None, pl.Utf8),
        name=name,
        name_kind=pl.when(style_col != "").then(style_col),
        name_pinyin=pl.when(style_col.is_in(["hanzi", "pinyin"])).then(pl.col("pinyin")),
        birth=shown("birth", "birth"),
        birth_raw=pl.lit(None, pl.Utf8),
        gender=shown("gender", "gender"),
        city=shown("city", "city"),
        address=shown("address", "address"),
        registered=pl.Series(registered),
    )


# --- identity phenomena --------------------------------------------------------------------


def _count(name: str, eligible: int, table: dict = IDENTITY_RATES) -> int:
    rate, floor = table[name][:2]
    return min(eligible, max(floor, round(rate * eligible)))


def _assign(frame: pl.DataFrame, rows: np.ndarray, **values: object) -> pl.DataFrame:
    """Overwrite some cells of a few rows; values are a scalar, None, or one value per row."""
    columns = []
    for column, value in values.items():
        series = frame.get_column(column).clone()
        dtype = series.dtype
        if value is None or np.isscalar(value):
            value = pl.Series(column, [value] * len(rows), dtype=dtype)
        elif isinstance(value, np.ndarray) and value.dtype == object:  # None mixed in
            value = pl.Series(column, value.tolist(), dtype=dtype)
        elif not isinstance(value, pl.Series):
            value = pl.Series(column, value).cast(dtype)
        if len(rows):
            series.scatter(rows, value)
        columns.append(series)
    return frame.with_columns(columns)


def _phenomenon(name: str, rows: np.ndarray, detail: pl.Series | str) -> pl.DataFrame:
    detail = (
        detail if isinstance(detail, pl.Series) else pl.Series([detail] * len(rows), dtype=pl.Utf8)
    )
    return pl.DataFrame(
        {"phenomenon": [name] * len(rows), "rec": rows.astype(np.int64), "detail": detail},
        schema={"phenomenon": pl.Utf8, "rec": pl.Int64, "detail": pl.Utf8},
    )


def _family_phenomena(records: pl.DataFrame, families: pl.DataFrame) -> pl.DataFrame:
    """Every record that shows a family's shared mobile (or its hash)."""
    shared = records.join(families, on="person").filter(pl.col("phone").is_not_null())
    return shared.select(
        phenomenon=pl.lit("family_phone"),
        rec="rec",
        detail=pl.format("family {} shares one mobile", "family"),
    ).sort("rec")


def _choose(rng: np.random.Generator, eligible: np.ndarray, name: str) -> np.ndarray:
    k = _count(name, len(eligible))
    return np.sort(rng.choice(eligible, k, replace=False)) if k else eligible[:0]


def _inject_identity_phenomena(
    rng: np.random.Generator, records: pl.DataFrame, persons: pl.DataFrame, phones: _PhonePool
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Apply every record-level phenomenon; each record gets at most one phone phenomenon."""
    channel = records["channel"].to_numpy()
    later = (
        records.filter(pl.col("channel").is_in(["pos", "app"]))
        .group_by("person", "channel")
        .agg(pl.col("rec").sort().slice(1))
        .explode("rec")
        .drop_nulls("rec")["rec"]
        .sort()
        .to_numpy()
    )
    found = [_phenomenon("same_channel_duplicate", later, "second membership in the same channel")]
    has_phone = records["phone"].is_not_null().to_numpy()
    touched = np.zeros(records.height, bool)  # phone already altered by a phenomenon

    # Unlinkable: a person with exactly two memberships, one of them sharing nothing.
    per_person = records.group_by("person").agg(
        pl.len(), pl.col("rec").max(), pl.col("channel").n_unique().alias("channels")
    )
    pairs = per_person.filter((pl.col("len") == 2) & (pl.col("channels") == 2)).sort("person")
    last_rec = pairs["rec"].to_numpy()
    last_rec = last_rec[channel[last_rec] != "pos"]
    scrub = _choose(rng, last_rec, "unlinkable")
    scrub_channel = channel[scrub]
    records = _assign(
        records,
        scrub,
        phone=np.where(
            records["phone"].is_not_null().to_numpy()[scrub], phones.take(len(scrub)), None
        ),
        unionid=np.where(scrub_channel == "wechat", _fresh_unionids(rng, len(scrub)), None),
        email=None,
        id_card=None,
        birth=None,
        name_pinyin=None,
        name=np.where(
            scrub_channel == "wechat",
            _PLACEHOLDER_NAME,
            np.where(scrub_channel == "app", None, "木子"),
        ),
        name_kind=np.where(
            scrub_channel == "wechat",
            "placeholder",
            np.where(scrub_channel == "app", None, "nickname"),
        ),
    )
    touched[scrub] = True
    found.append(_phenomenon("unlinkable", scrub, "second SIM, other WeChat account, no name"))

    # Store phone: the clerk types the store's own mobile for walk-ins without one at hand.
    pos_rows = np.flatnonzero((channel == "pos") & has_phone & ~touched)
    store_rows = _choose(rng, pos_rows, "store_phone")
    stores = max(3, persons.height // 800)
    store_phones = phones.take(stores)
    which = rng.integers(0, stores, len(store_rows))
    records = _assign(records, store_rows, phone=store_phones[which])
    touched[store_rows] = True
    found.append(
        _phenomenon(
            "store_phone", store_rows, pl.Series([f"store {s}" for s in range(stores)])[which]
        )
    )

    # The well-known test number, typed by several different people.
    test_rows = np.flatnonzero(np.isin(channel, ["pos", "app", "wechat"]) & has_phone & ~touched)
    test_rows = _choose(rng, test_rows, "test_number")
    records = _assign(records, test_rows, phone=TEST_NUMBER)
    touched[test_rows] = True
    found.append(_phenomenon("test_number", test_rows, "13800138000"))

    # Changed number: the POS record kept the old mobile; the other channels have the new one.
    elsewhere = records.filter(pl.col("channel") != "pos", pl.col("phone").is_not_null())["person"]
    pos_rows = np.flatnonzero(
        (channel == "pos")
        & has_phone
        & ~touched
        & records["person"].is_in(elsewhere.implode()).to_numpy()
    )
    changed = _choose(rng, pos_rows, "changed_number")
    records = _assign(records, changed, phone=phones.take(len(changed)))
    touched[changed] = True
    found.append(
        _phenomenon("changed_number", changed, "old number in pos; same name, birth date and city")
    )

    # One-digit typos by a clerk or the member.
    typo_rows = np.flatnonzero(np.isin(channel, ["pos", "app"]) & has_phone & ~touched)
    typo_rows = _choose(rng, typo_rows, "phone_typo")
    digits = (
        records["phone"].to_numpy()[typo_rows].astype("S11").view(np.uint8).reshape(-1, 11).copy()
    )
    position = rng.integers(3, 11, len(typo_rows))
    row_ix = np.arange(len(typo_rows))
    digits[row_ix, position] = (
        digits[row_ix, position] - 48 + rng.integers(1, 10, len(typo_rows))
    ) % 10 + 48
    records = _assign(records, typo_rows, phone=digits.view("S11")[:, 0].astype(str))
    touched[typo_rows] = True
    found.append(
        _phenomenon(
            "phone_typo",
            typo_rows,
            pl.Series([f"digit {p + 1} mistyped" for p in range(11)])[position],
        )
    )

    # Garbage in the phone field: the normalizer must null it, not the row.
    garbage_rows = _choose(
        rng, np.flatnonzero((channel == "pos") & has_phone & ~touched), "garbage_phone"
    )
    garbage = np.array(_GARBAGE_PHONES)[rng.integers(0, len(_GARBAGE_PHONES), len(garbage_rows))]
    records = _assign(records, garbage_rows, phone=None, phone_raw=garbage)
    touched[garbage_rows] = True
    found.append(_phenomenon("garbage_phone", garbage_rows, "not a mobile number"))

    # Homophone typo in the last character of a hanzi name (the pinyin stays the same).
    last_char = records["name"].str.slice(-1)
    typo_ok = (records["name_kind"] == "hanzi").fill_null(False) & last_char.is_in(
        list(_HOMOPHONE_TYPOS)
    )
    name_rows = _choose(
        rng, np.flatnonzero(np.isin(channel, ["pos", "app"]) & typo_ok.to_numpy()), "name_typo"
    )
    names = records["name"].gather(name_rows)
    records = _assign(
        records,
        name_rows,
        name=names.str.slice(0, names.str.len_chars() - 1)
        + names.str.slice(-1).replace(_HOMOPHONE_TYPOS),
    )
    found.append(_phenomenon("name_typo", name_rows, "homophone typo in the last character"))

    # Day and month swapped (05-03 typed as 03-05).
    birth = records["birth"]
    swappable = (birth.dt.day() <= 12) & (birth.dt.day() != birth.dt.month())
    swap_rows = _choose(
        rng,
        np.flatnonzero(np.isin(channel, ["pos", "app"]) & swappable.fill_null(False).to_numpy()),
        "date_swap",
    )
    chosen = birth.gather(swap_rows)
    swapped = pl.select(pl.date(chosen.dt.year(), chosen.dt.day(), chosen.dt.month())).to_series()
    records = _assign(records, swap_rows, birth=swapped)
    found.append(_phenomenon("date_swap", swap_rows, "true birth date " + chosen.cast(pl.Utf8)))

    # Id cards with a wrong check character (the row stays; the id card is unusable).
    id_rows = _choose(
        rng,
        np.flatnonzero((channel == "pos") & records["id_card"].is_not_null().to_numpy()),
        "invalid_id_card",
    )
    ids = records["id_card"].to_numpy()[id_rows].astype(str)
    right = np.strings.slice(ids, 17, 18)
    position = (right[:, None] == _ID_CHECK[None, :]).argmax(axis=1)
    wrong = _ID_CHECK[(position + rng.integers(1, 11, len(ids))) % 11]  # never the right one
    records = _assign(
        records,
        id_rows,
        id_card=None,
        id_card_raw=np.strings.add(np.strings.slice(ids, 0, 17), wrong) if len(ids) else ids,
    )
    found.append(_phenomenon("invalid_id_card", id_rows, "wrong check character"))

    # Birth dates nobody can parse.
    bad_birth_rows = _choose(
        rng,
        np.flatnonzero(
            (channel == "pos")
            & birth.is_not_null().to_numpy()
            & ~np.isin(np.arange(len(channel)), swap_rows)
        ),
        "bad_birth_date",
    )
    bad = np.array(_GARBAGE_BIRTHS)[rng.integers(0, len(_GARBAGE_BIRTHS), len(bad_birth_rows))]
    records = _assign(records, bad_birth_rows, birth=None, birth_raw=bad)
    found.append(_phenomenon("bad_birth_date", bad_birth_rows, "unparseable birth date"))
    return records, found


def _fresh_unionids(rng: np.random.Generator, n: int) -> np.ndarray:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    return np.strings.add("oX", alphabet[rng.integers(0, 64, (n, 26))].view("<U26")[:, 0])


# --- member files --------------------------------------------------------------------------

# Phone formats (index = style code) and each channel's mix of them.
_PHONE_STYLE_MIX = {
    "pos": (0.40, 0.10, 0.08, 0.07, 0.07, 0.10, 0.08, 0.10),
    "app": (0.80, 0.10, 0.00, 0.05, 0.00, 0.05, 0.00, 0.00),
    "wechat": (0.90, 0.00, 0.00, 0.00, 0.10, 0.00, 0.00, 0.00),
}


def messy_phone(phone: pl.Expr, style: pl.Expr) -> pl.Expr:
    """An 11-digit mobile as people type it: +86/0086/(+86)/86 prefixes, spaces, dashes,
    full-width digits (style 0..7)."""
    head, middle, tail = phone.str.slice(0, 3), phone.str.slice(3, 4), phone.str.slice(7, 4)
    styles = (
        phone,
        pl.concat_str([pl.lit("+86 "), head, pl.lit(" "), middle, pl.lit(" "), tail]),
        pl.concat_str([pl.lit("0086-"), head, pl.lit("-"), middle, pl.lit("-"), tail]),
        pl.lit("(+86)") + phone,
        pl.lit("86") + phone,
        pl.concat_str([head, pl.lit("-"), middle, pl.lit("-"), tail]),
        phone.str.replace_many(_ASCII_DIGITS, _FULLWIDTH),
        pl.concat_str([head, pl.lit(" "), middle, pl.lit(" "), tail]),
    )
    expr = pl.when(style == 0).then(styles[0])
    for code, shown in enumerate(styles[1:], start=1):
        expr = expr.when(style == code).then(shown)
    return expr.otherwise(phone)


def _render_members(
    rng: np.random.Generator, records: pl.DataFrame
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Each channel's member rows in file order, with member ids, bad rows and shown text.

    Columns: the record's, `member_id`, `bad` (expected quarantine reason), `copy`
    (a re-exported duplicate), `source_row`, and `out_<column>` as written to the file.
    """
    rendered = {}
    for channel in CHANNELS:
        frame = records.filter(pl.col("channel") == channel).sort("registered", "rec")
        prefix, start = _MEMBER_ID[channel]
        numbers = start + rng.permutation(frame.height)
        frame = frame.with_columns(
            member_id=pl.lit(prefix) + pl.Series(numbers).cast(pl.Utf8),
            bad=pl.lit(None, pl.Utf8),
            copy=pl.lit(False),
        )
        if channel == "pos":
            frame = _break_member_ids(rng, frame)
        frame = frame.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))
        rendered[channel] = _shown_text(rng, channel, frame)
    bad_rows = pl.concat(
        [
            f.filter(pl.col("bad").is_not_null()).select(
                "channel",
                dataset=pl.lit("members"),
                source_row="source_row",
                record_id="member_id",
                reason="bad",
            )
            for f in rendered.values()
        ]
    )
    return rendered, bad_rows


def _break_member_ids(rng: np.random.Generator, frame: pl.DataFrame) -> pl.DataFrame:
    """A few POS rows lose their member id; a few are exported twice under the same id."""
    rows = rng.choice(
        frame.height,
        _count("missing_member_id", frame.height, BAD_MEMBER_ROWS)
        + _count("duplicate_member_id", frame.height, BAD_MEMBER_ROWS),
        replace=False,
    )
    missing = np.sort(rows[: _count("missing_member_id", frame.height, BAD_MEMBER_ROWS)])
    twice = np.sort(rows[len(missing) :])
    frame = _assign(frame, missing, member_id=None, bad="missing_member_id")
    copies = frame[twice].with_columns(
        copy=pl.lit(True), bad=pl.lit("duplicate_member_id"), address=pl.lit(None, pl.Utf8)
    )
    return pl.concat([frame, copies]).sort("registered", "rec", "copy")


def _shown_text(rng: np.random.Generator, channel: str, frame: pl.DataFrame) -> pl.DataFrame:
    """The text each file shows: messy phones and dates, hashes, 男/女, 北京市, ..."""
    n = frame.height
    mix = _PHONE_STYLE_MIX.get(channel, (1.0,) + (0.0,) * 7)
    style = pl.Series(rng.choice(8, n, p=mix))
    birth_style = pl.Series(rng.choice(3, n, p=[0.5, 0.25, 0.25]))
    with_shi = pl.Series(rng.random(n) < 0.2)
    lower_x = pl.Series(rng.random(n) < 0.3)
    birth = pl.col("birth")
    shown = frame.with_columns(
        out_phone=pl.coalesce("phone_raw", messy_phone(pl.col("phone"), pl.lit(style))),
        out_id_card=pl.coalesce(
            "id_card_raw",
            pl.when(pl.lit(lower_x))
            .then(pl.col("id_card").str.to_lowercase())
            .otherwise(pl.col("id_card")),
        ),
        out_birth_date=pl.coalesce(
            "birth_raw",
            (
                pl.when(pl.lit(birth_style) == 0)
                .then(birth.dt.strftime("%Y-%m-%d"))
                .when(pl.lit(birth_style) == 1)
                .then(birth.dt.strftime("%Y%m%d"))
                .otherwise(birth.dt.strftime("%Y/%-m/%-d"))
            )
            if channel == "pos"
            else birth.dt.strftime("%Y-%m-%d"),
        ),
        out_gender=(
            pl.col("gender").replace_strict({"M": "男", "F": "女"}, default=None)
            if channel == "pos"
            else pl.col("gender").replace_strict({"M": 1, "F": 2}, default=0, return_dtype=pl.Int64)
        ),
        out_city=(
            pl.when(pl.lit(with_shi)).then(pl.col("city") + "市").otherwise(pl.col("city"))
            if channel == "pos"
            else pl.col("city") + "市"
            if channel == "tmall"
            else pl.col("city").replace_strict({c[0]: c[1] for c in _CITIES}, default=None)
            if channel == "wechat"
            else pl.col("city")
        ),
        out_registered_at=(
            pl.from_epoch("registered", time_unit="s")
            if channel == "tmall"
            else pl.from_epoch("registered", time_unit="s").dt.strftime(_TIME_FORMAT)
        ),
        out_member_id=pl.col("member_id"),
        out_name=pl.col("name"),
        out_email=pl.col("email"),
        out_unionid=pl.col("unionid"),
        out_address=pl.col("address"),
    )
    if channel in ("tmall", "jd"):
        digest = sha256_hex(shown["phone"])
        shown = shown.with_columns(
            out_phone_sha256=digest.str.to_uppercase() if channel == "jd" else digest
        )
    if channel == "app":  # people type emails with capitals and stray spaces
        shown = shown.with_columns(
            out_email=pl.when(pl.lit(pl.Series(rng.random(n) < 0.1)))
            .then(" " + pl.col("email").str.to_titlecase() + " ")
            .otherwise(pl.col("email"))
        )
    return shown


# --- points ledgers ------------------------------------------------------------------------

_LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "m": pl.Int64(),
    "member_id": pl.Utf8(),
    "t": pl.Int64(),
    "txn_type": pl.Utf8(),
    "points": pl.Int64(),
    "order_id": pl.Utf8(),
    "expires": pl.Int64(),
    "row": pl.Int64(),
    "lot": pl.Int64(),
    "fault": pl.Utf8(),
    "detail": pl.Utf8(),
    "dup": pl.Boolean(),
}


_KIND_NAMES = ("earn", "task", "redeem", "adjust", "expire")


@dataclass
class _Ledger:
    """A channel's ledger in file order (internal columns kept) and its reported balances."""

    points: pl.DataFrame
    balances: pl.DataFrame
    mismatches: pl.DataFrame


def _clean_ledger(
    rng: np.random.Generator, channel: str, accounts: pl.DataFrame, horizon: int
) -> pl.DataFrame:
    """A ledger no reconciliation check can fault.

    Redemptions take a share of the points still valid (expiring points, oldest
    first); each earn row expiring before `horizon` gets an expire row for what
    was not redeemed. Consumption C (redeemed + expired so far) then satisfies,
    for every earn row j with cumulative expiring points A_j: C never exceeds what
    was earned, and C reaches A_j at j's expiry. Computed with cumulative sums and
    one vectorized pass per redemption rank (a member's 1st, 2nd, ... redemption).
    """
    n = accounts.height
    registered = accounts["registered"].to_numpy()
    count = rng.poisson(_MEAN_TXNS[channel], n)
    m = np.repeat(np.arange(n, dtype=np.int64), count)
    t = registered[m] + (rng.random(m.size) * (horizon - registered[m])).astype(np.int64)
    kind = rng.choice(4, m.size, p=[0.66, 0.12, 0.16, 0.06])  # earn, task, redeem, adjust
    points = np.select(
        [kind == 0, kind == 1, kind == 3],
        [
            rng.integers(1, 60, m.size) * 10,
            rng.integers(1, 11, m.size) * 5,
            rng.integers(1, 21, m.size) * 5,
        ],
        0,
    ).astype(np.int64)
    order = np.argsort(m * _KEY_SPAN + t, kind="stable")
    m, t, kind, points = m[order], t[order], kind[order], points[order]
    key = m * _KEY_SPAN + t
    first = np.searchsorted(m, m, "left")
    expiring = np.where(kind == 0, points, 0)
    running = np.cumsum(expiring)
    earned = running - (running[first] - expiring[first])  # expiring points up to each row

    redeem = np.flatnonzero(kind == 2)
    redeem_m = m[redeem]
    before = np.searchsorted(key, key[redeem] - _EXPIRY, "right") - 1
    expired_by = np.where(
        (before >= 0) & (m[np.maximum(before, 0)] == redeem_m), earned[np.maximum(before, 0)], 0
    )
    rank = np.arange(redeem.size) - np.searchsorted(redeem_m, redeem_m, "left")
    share = rng.uniform(0.3, 0.9, redeem.size)
    consumed = np.zeros(n, np.int64)
    consumed_after = np.zeros(redeem.size, np.int64)
    for r in range(int(rank.max()) + 1 if redeem.size else 0):
        at = np.flatnonzero(rank == r)
        who = redeem_m[at]
        start = np.maximum(consumed[who], expired_by[at])
        amount = (np.floor(share[at] * (earned[redeem[at]] - start)) // 10 * 10).astype(np.int64)
        points[redeem[at]] = -amount
        consumed[who] = consumed_after[at] = start + amount
    kept_redeem = points[redeem] < 0
    redeem_key, redeem_c = key[redeem][kept_redeem], consumed_after[kept_redeem]

    lots = np.flatnonzero((kind == 0) & (t + _EXPIRY < horizon))
    expiry_key = key[lots] + _EXPIRY
    last = np.searchsorted(redeem_key, expiry_key, "left") - 1
    same = (last >= 0) & (redeem_key[np.maximum(last, 0)] // _KEY_SPAN == m[lots])
    consumed_then = np.where(same, redeem_c[np.maximum(last, 0)], 0)
    rest = earned[lots] - np.maximum(earned[lots] - points[lots], consumed_then)
    lots, rest = lots[rest > 0], rest[rest > 0]

    keep = ~((kind == 2) & (points == 0))
    base = pl.DataFrame(
        {
            "m": m[keep],
            "t": t[keep],
            "kind": kind[keep],
            "points": points[keep],
            "row": np.flatnonzero(keep).astype(np.int64),
        }
    )
    expires = pl.DataFrame(
        {
            "m": m[lots],
            "t": t[lots] + _EXPIRY,
            "kind": np.full(lots.size, 4),
            "points": -rest,
            "row": m.size + np.arange(lots.size, dtype=np.int64),
            "lot": lots.astype(np.int64),
        }
    )
    ledger = pl.concat([base, expires], how="diagonal").sort("m", "t", "row")
    earn = pl.col("txn_type") == "earn"
    ledger = ledger.with_columns(
        txn_type=pl.col("kind").replace_strict(dict(enumerate(_KIND_NAMES)), return_dtype=pl.Utf8),
        member_id=accounts["member_id"].gather(ledger["m"]),
    ).with_columns(
        order_id=pl.when(earn).then(
            pl.lit(_ORDER_PREFIX[channel]) + (10**11 + pl.col("row") * 7 + 3).cast(pl.Utf8)
        ),
        expires=pl.when(earn).then(pl.col("t") + _EXPIRY),
        fault=pl.lit(None, pl.Utf8),
        detail=pl.lit(None, pl.Utf8),
        dup=pl.lit(False),
    )
    return ledger.select(list(_LEDGER_SCHEMA)).cast(_LEDGER_SCHEMA)


def _ledgers(
    rng: np.random.Generator, members: dict[str, pl.DataFrame], horizon: int
) -> dict[str, _Ledger]:
    """Every channel's ledger with injected faults, bad rows and reported balances."""
    accounts = {
        c: members[c].filter(pl.col("bad").is_null()).select("member_id", "person", "registered")
        for c in CHANNELS
    }
    ledgers = {c: _clean_ledger(rng, c, accounts[c], horizon) for c in CHANNELS}
    free = {c: np.ones(accounts[c].height, bool) for c in CHANNELS}  # no fault yet
    ledgers = _inject_double_credit(rng, ledgers, accounts, free, horizon)
    result = {}
    for channel in CHANNELS:
        ledger = _inject_account_faults(
            rng, channel, ledgers[channel], accounts[channel], free[channel], horizon
        )
        ledger = _add_bad_rows(
            rng, channel, _number_txns(channel, ledger), accounts[channel], horizon
        )
        copies = ledger.filter("dup").with_columns(
            copy=pl.lit(True), fault=pl.lit(None, pl.Utf8), detail=pl.lit(None, pl.Utf8)
        )
        ledger = pl.concat([ledger, copies]).sort("t", "row", "copy")
        ledger = ledger.with_row_index("source_row").with_columns(
            pl.col("source_row").cast(pl.Int64)
        )
        balances, mismatches = _reported_balances(rng, ledger, accounts[channel], free[channel])
        result[channel] = _Ledger(ledger, balances, mismatches)
    return result


def _free_only(frame: pl.DataFrame, free: np.ndarray) -> pl.DataFrame:
    return frame.filter(pl.Series(free).gather(frame["m"]))


def _sample(rng: np.random.Generator, frame: pl.DataFrame, count: int) -> pl.DataFrame:
    count = min(count, frame.height)
    return (
        frame[np.sort(rng.choice(frame.height, count, replace=False))] if count else frame.head(0)
    )


def _new_rows(ledger: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """Append rows (a subset of the ledger columns) with fresh internal row numbers."""
    start = int(ledger["row"].max() or 0) + 1
    rows = rows.with_columns(row=pl.int_range(start, start + rows.height, dtype=pl.Int64))
    return (
        pl.concat([ledger, rows], how="diagonal_relaxed")
        .select(list(_LEDGER_SCHEMA))
        .cast(_LEDGER_SCHEMA)
    )


def _when(seconds: pl.Expr) -> pl.Expr:
    return pl.from_epoch(seconds, time_unit="s").dt.strftime(_TIME_FORMAT)


def _inject_double_credit(
    rng: np.random.Generator,
    ledgers: dict[str, pl.DataFrame],
    accounts: dict[str, pl.DataFrame],
    free: dict[str, np.ndarray],
    horizon: int,
) -> dict[str, pl.DataFrame]:
    """One order earns points twice: once where it was placed, once in another channel.

    The source earn row is recent enough never to expire before `as_of`, so the
    extra credit touches no expiry or redemption check of the receiving account.
    """
    sources, holders = [], []
    for channel in CHANNELS:
        recent = (
            ledgers[channel]
            .filter(
                pl.col("txn_type") == "earn",
                pl.col("t") >= horizon - _EXPIRY + _DAY,
                pl.col("t") < horizon - 3 * _DAY,
            )
            .sort("m", "t", "row")
            .unique("m", keep="first", maintain_order=True)
        )
        sources.append(
            recent.select(
                "m",
                "t",
                "points",
                "order_id",
                "row",
                from_channel=pl.lit(channel),
                person=accounts[channel]["person"].gather(recent["m"]),
            )
        )
        holders.append(
            accounts[channel]
            .with_row_index("to_m")
            .select("person", to_channel=pl.lit(channel), to_m=pl.col("to_m").cast(pl.Int64))
        )
    holder = pl.concat(holders)
    multi = (
        holder.group_by("person")
        .agg(pl.col("to_channel").n_unique())
        .filter(pl.col("to_channel") > 1)
        .height
    )
    pairs = (
        pl.concat(sources)
        .join(holder, on="person")
        .filter(pl.col("from_channel") != pl.col("to_channel"))
        .sort("person", "from_channel", "m", "to_channel", "to_m")
    )
    pairs = (
        pairs.with_columns(u=pl.Series(rng.random(pairs.height)))
        .sort("u", "person", "from_channel", "m", "to_channel", "to_m")
        .unique("person", keep="first", maintain_order=True)
        .head(_count("double_credit", multi, FAULT_RATES))
    )
    pairs = pairs.with_columns(
        t_copy=pl.col("t") + pl.Series(rng.integers(600, 2 * _DAY, pairs.height))
    )
    for channel in CHANNELS:
        given = pairs.filter(pl.col("from_channel") == channel)
        free[channel][given["m"].to_numpy()] = False
        ledgers[channel] = ledgers[channel].update(
            given.select(
                "row",
                fault=pl.lit("double_credit"),
                detail=pl.format("order {} also earned in {}", "order_id", "to_channel"),
            ),
            on="row",
        )
        taken = pairs.filter(pl.col("to_channel") == channel).sort("to_m", "t_copy")
        free[channel][taken["to_m"].to_numpy()] = False
        ledgers[channel] = _new_rows(
            ledgers[channel],
            taken.select(
                m="to_m",
                member_id=accounts[channel]["member_id"].gather(taken["to_m"]),
                t="t_copy",
                txn_type=pl.lit("earn"),
                points="points",
                order_id="order_id",
                expires=pl.col("t_copy") + _EXPIRY,
                fault=pl.lit("double_credit"),
                detail=pl.format("order {} already earned in {}", "order_id", "from_channel"),
                dup=pl.lit(False),
            ),
        )
    return ledgers


def _inject_account_faults(
    rng: np.random.Generator,
    channel: str,
    ledger: pl.DataFrame,
    accounts: pl.DataFrame,
    free: np.ndarray,
    horizon: int,
) -> pl.DataFrame:
    """unexpired_points, duplicate_txn, negative_balance, over_redemption and orphan_txn."""
    active = ledger["m"].n_unique()

    # unexpired_points: drop the member's last expire row when nothing was redeemed after it,
    # so exactly that expiry is missing whichever way a reconciler allocates redemptions.
    last_expire = (
        ledger.filter(pl.col("txn_type") == "expire")
        .sort("m", "t", "row")
        .group_by("m", maintain_order=True)
        .last()
    )
    last_redeem = (
        ledger.filter(pl.col("txn_type") == "redeem")
        .group_by("m")
        .agg(last_redeem=pl.col("t").max())
    )
    candidates = _free_only(
        last_expire.join(last_redeem, on="m", how="left")
        .filter(
            pl.col("last_redeem").is_null() | (pl.col("last_redeem") < pl.col("t")),
            pl.col("t") < horizon - 2 * _DAY,
        )
        .sort("m"),
        free,
    )
    unexpired = _sample(rng, candidates, _count("unexpired_points", active, FAULT_RATES))
    free[unexpired["m"].to_numpy()] = False
    ledger = ledger.filter(~pl.col("row").is_in(unexpired["row"].implode())).update(
        unexpired.select(
            row="lot",
            fault=pl.lit("unexpired_points"),
            detail=pl.format(
                "{} points expired at {} were never deducted", -pl.col("points"), _when(pl.col("t"))
            ),
        ),
        on="row",
    )

    # duplicate_txn: an earn row exported twice (the copy is added after txn ids exist).
    firsts = _free_only(
        ledger.filter(pl.col("txn_type") == "earn")
        .sort("m", "t", "row")
        .unique("m", keep="first", maintain_order=True),
        free,
    )
    duplicated = _sample(rng, firsts, _count("duplicate_txn", active, FAULT_RATES))
    free[duplicated["m"].to_numpy()] = False
    ledger = ledger.update(
        duplicated.select(
            "row",
            dup=pl.lit(True),
            fault=pl.lit("duplicate_txn"),
            detail=pl.lit("exported twice with the same txn_id and values"),
        ),
        on="row",
    )

    # negative_balance / over_redemption: a last deduction larger than the balance.
    stats = _free_only(
        ledger.group_by("m")
        .agg(balance=pl.col("points").sum(), last=pl.col("t").max())
        .filter(pl.col("last") < horizon - 2 * 3600)
        .sort("m"),
        free,
    )
    n_negative = _count("negative_balance", active, FAULT_RATES)
    chosen = _sample(rng, stats, n_negative + _count("over_redemption", active, FAULT_RATES))
    order = rng.permutation(chosen.height)
    chosen = chosen.with_columns(
        over=pl.Series(order >= n_negative),
        amount=pl.col("balance") + pl.Series(rng.integers(1, 21, chosen.height) * 10),
        t=pl.col("last")
        + 1
        + (pl.Series(rng.random(chosen.height)) * (horizon - 2 - pl.col("last"))).cast(pl.Int64),
    )
    free[chosen["m"].to_numpy()] = False
    ledger = _new_rows(
        ledger,
        chosen.select(
            "m",
            "t",
            member_id=accounts["member_id"].gather(chosen["m"]),
            txn_type=pl.when("over").then(pl.lit("redeem")).otherwise(pl.lit("adjust")),
            points=-pl.col("amount"),
            fault=pl.when("over")
            .then(pl.lit("over_redemption"))
            .otherwise(pl.lit("negative_balance")),
            detail=pl.when("over")
            .then(pl.format("redeemed {} with {} available", "amount", "balance"))
            .otherwise(pl.format("adjusted -{} with {} on the balance", "amount", "balance")),
            dup=pl.lit(False),
        ),
    )

    # orphan_txn: ledger rows of member ids the channel's member list does not have.
    prefix, start = _MEMBER_ID[channel]
    orphans = _count("orphan_txn", accounts.height, FAULT_RATES)
    per_orphan = rng.integers(1, 4, orphans)
    owner = np.repeat(np.arange(orphans), per_orphan)
    when = horizon - 1 - (rng.random(owner.size) * 300 * _DAY).astype(np.int64)
    ledger = _new_rows(
        ledger,
        pl.DataFrame(
            {
                "m": -1 - owner,
                "t": when,
                "points": rng.integers(1, 60, owner.size) * 10,
            }
        ).with_columns(
            member_id=pl.lit(prefix)
            + (start + 2 * accounts.height + 1000 + pl.col("m").abs()).cast(pl.Utf8),
            txn_type=pl.lit("earn"),
            expires=pl.col("t") + _EXPIRY,
            order_id=pl.lit(_ORDER_PREFIX[channel] + "9")
            + (pl.int_range(pl.len()) + 10**10).cast(pl.Utf8),
            fault=pl.lit("orphan_txn"),
            detail=pl.lit("member id not in the channel's member list"),
            dup=pl.lit(False),
        ),
    )
    return ledger


def _number_txns(channel: str, ledger: pl.DataFrame) -> pl.DataFrame:
    """Txn ids in time order, as a channel's system would issue them."""
    return ledger.sort("t", "row").with_columns(
        txn_id=pl.lit(_TXN_PREFIX[channel])
        + (pl.int_range(pl.len()) + 1).cast(pl.Utf8).str.zfill(10),
        points_raw=pl.lit(None, pl.Utf8),
        bad=pl.lit(None, pl.Utf8),
        copy=pl.lit(False),
    )


def _add_bad_rows(
    rng: np.random.Generator,
    channel: str,
    ledger: pl.DataFrame,
    accounts: pl.DataFrame,
    horizon: int,
) -> pl.DataFrame:
    """Rows the pipeline must quarantine: points "abc", an unknown txn_type, no txn_id.

    Parquet keeps types, so Tmall's typed ledger cannot carry "abc" points.
    """
    reasons = [r for r in BAD_LEDGER_ROWS if not (channel == "tmall" and r == "invalid_points")]
    each = max(2, round(0.0002 * ledger.height))
    reason = np.repeat(np.array(reasons), each)
    m = rng.integers(0, accounts.height, reason.size)
    t = horizon - 1 - (rng.random(reason.size) * 300 * _DAY).astype(np.int64)
    seq = ledger.height + 1 + np.arange(reason.size)
    start = int(ledger["row"].max()) + 1
    bad = (
        pl.DataFrame({"bad": reason, "m": m, "t": t, "seq": seq})
        .with_columns(
            member_id=accounts["member_id"].gather(pl.Series(m)),
            txn_id=pl.when(pl.col("bad") != "missing_txn_id").then(
                pl.lit(_TXN_PREFIX[channel]) + pl.col("seq").cast(pl.Utf8).str.zfill(10)
            ),
            txn_type=pl.when(pl.col("bad") == "unknown_txn_type")
            .then(pl.lit("bonus"))
            .otherwise(pl.lit("earn")),
            points=pl.lit(100, pl.Int64),
            points_raw=pl.when(pl.col("bad") == "invalid_points").then(pl.lit("abc")),
            order_id=pl.lit(_ORDER_PREFIX[channel] + "8") + (pl.col("seq") + 10**10).cast(pl.Utf8),
            expires=pl.col("t") + _EXPIRY,
            row=start + pl.int_range(pl.len(), dtype=pl.Int64),
            dup=pl.lit(False),
            copy=pl.lit(False),
        )
        .drop("seq")
    )
    return pl.concat([ledger, bad], how="diagonal_relaxed")


def _reported_balances(
    rng: np.random.Generator, ledger: pl.DataFrame, accounts: pl.DataFrame, free: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What the channel reports: the de-duplicated ledger sum, off for a few members."""
    counted = ledger.filter(~pl.col("copy"), pl.col("bad").is_null(), pl.col("m") >= 0)
    sums = counted.group_by("m").agg(ledger_balance=pl.col("points").sum())
    balances = (
        accounts.with_row_index("m")
        .with_columns(pl.col("m").cast(pl.Int64))
        .join(sums, on="m", how="left")
        .with_columns(pl.col("ledger_balance").fill_null(0))
        .sort("m")
    )
    eligible = _free_only(balances.filter(pl.col("m").is_in(sums["m"].implode())), free)
    off = _sample(rng, eligible, _count("balance_mismatch", sums.height, FAULT_RATES))
    sign = np.where(rng.random(off.height) < 0.5, -1, 1)
    off = off.select("m", delta=pl.Series(sign * rng.integers(1, 51, off.height) * 10))
    free[off["m"].to_numpy()] = False
    balances = (
        balances.join(off, on="m", how="left")
        .with_columns(balance=pl.col("ledger_balance") + pl.col("delta").fill_null(0))
        .sort("member_id")
    )
    mismatches = balances.filter(pl.col("delta").is_not_null()).select(
        "member_id", detail=pl.format("reported {}, ledger {}", "balance", "ledger_balance")
    )
    return balances.select("member_id", "balance"), mismatches


# --- files ---------------------------------------------------------------------------------


def _write_frame(frame: pl.DataFrame, path: Path, encoding: str | None) -> None:
    """Write by extension; CSV text in the channel's encoding (utf-8-sig adds a BOM)."""
    if path.suffix == ".parquet":
        frame.write_parquet(path, compression="zstd", statistics=True)
    elif path.suffix == ".ndjson":
        frame.write_ndjson(path)
    elif encoding == "utf-8-sig":
        frame.write_csv(path, include_bom=True)
    elif encoding:
        path.write_bytes(frame.write_csv().encode(encoding))
    else:
        frame.write_csv(path)


def _file_columns(channel: str, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    return frame.select(pl.col(c).alias(_RENAMES[channel].get(c, c)) for c in columns)


def _ledger_file_frame(channel: str, ledger: pl.DataFrame, as_parquet: bool) -> pl.DataFrame:
    expires = pl.from_epoch("expires", time_unit="s")
    txn_time = pl.from_epoch("t", time_unit="s")
    typed = ledger.select(
        "txn_id",
        "member_id",
        txn_time=txn_time if as_parquet else txn_time.dt.strftime(_TIME_FORMAT),
        points=pl.col("points")
        if as_parquet
        else pl.coalesce("points_raw", pl.col("points").cast(pl.Utf8)),
        txn_type="txn_type",
        order_id="order_id",
        expires_at=expires if as_parquet else expires.dt.strftime(_TIME_FORMAT),
    )
    return _file_columns(channel, typed, tuple(typed.columns))


def _write_channels(
    out_dir: Path, members: dict[str, pl.DataFrame], ledgers: dict[str, _Ledger], as_of: date
) -> dict[str, dict[str, Path]]:
    files: dict[str, dict[str, Path]] = {}
    for channel in CHANNELS:
        paths = {dataset: out_dir / name for dataset, name in _FILES[channel].items()}
        encoding = _ENCODING.get(channel)
        shown = members[channel].select(
            pl.col(f"out_{c}").alias(c) for c in _MEMBER_COLUMNS[channel]
        )
        _write_frame(
            _file_columns(channel, shown, _MEMBER_COLUMNS[channel]), paths["members"], encoding
        )
        as_parquet = paths["points"].suffix == ".parquet"
        _write_frame(
            _ledger_file_frame(channel, ledgers[channel].points, as_parquet),
            paths["points"],
            encoding,
        )
        balances = ledgers[channel].balances.with_columns(
            as_of=pl.lit(as_of) if as_parquet else pl.lit(as_of.isoformat())
        )
        _write_frame(
            _file_columns(channel, balances, ("member_id", "balance", "as_of")),
            paths["balances"],
            encoding,
        )
        files[channel] = paths
    return files


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _write_sources_toml(out_dir: Path, as_of: date) -> Path:
    """The run config of the demo: one [[sources]] per channel, as a brand would write it."""
    lines = [
        "# memberlink demo channels, written by tasks.demo_data.generate_demo",
        "[run]",
        'warehouse = "warehouse.duckdb"',
        f'as_of = "{as_of.isoformat()}"',
    ]
    for channel in CHANNELS:
        lines += ["", "[[sources]]", f'channel = "{channel}"']
        lines += [f'{dataset} = "{name}"' for dataset, name in _FILES[channel].items()]
        if channel in _ENCODING and _ENCODING[channel] != "utf-8-sig":
            lines.append(f'encoding = "{_ENCODING[channel]}"')
        lines.append(f"trust = {_TRUST[channel]}")
        if channel == "jd":
            lines += ["[sources.phone_hash]", 'case = "upper"']
        if _RENAMES[channel]:
            lines.append("[sources.columns]")
            lines += [
                f"{canonical} = {_toml_string(header)}"
                for canonical, header in _RENAMES[channel].items()
            ]
    path = out_dir / "sources.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- truth ---------------------------------------------------------------------------------


def _write_truth(
    truth_dir: Path,
    records: pl.DataFrame,
    members: dict[str, pl.DataFrame],
    ledgers: dict[str, _Ledger],
    bad_member_rows: pl.DataFrame,
    phenomena: pl.DataFrame,
    as_of: date,
    seed: int,
    people: int,
) -> dict[str, Path]:
    rows = pl.concat(
        [
            f.select("channel", "member_id", "source_row", "rec", "person", "bad", "copy")
            for f in members.values()
        ]
    )
    persons = rows.select("channel", "member_id", "source_row", person_id="person")
    located = (
        phenomena.join(rows.filter(~pl.col("copy")), on="rec")
        .select(
            "phenomenon",
            "channel",
            "member_id",
            "source_row",
            person_id="person",
            detail="detail",
        )
        .sort("phenomenon", "channel", "source_row")
    )
    evidence = pl.concat([_evidence(f) for f in members.values()])
    faults = _points_faults(ledgers)
    bad_rows = pl.concat(
        [
            bad_member_rows,
            *[
                ledger.points.filter(pl.col("bad").is_not_null()).select(
                    channel=pl.lit(channel),
                    dataset=pl.lit("points"),
                    source_row="source_row",
                    record_id="txn_id",
                    reason="bad",
                )
                for channel, ledger in ledgers.items()
            ],
        ]
    ).sort("channel", "dataset", "source_row")
    paths = {
        name: truth_dir / f"{name}.parquet"
        for name in ("persons", "points_faults", "bad_rows", "phenomena", "evidence")
    }
    for name, frame in (
        ("persons", persons),
        ("points_faults", faults),
        ("bad_rows", bad_rows),
        ("phenomena", located),
        ("evidence", evidence),
    ):
        frame.write_parquet(paths[name], compression="zstd")
    per_person = records.group_by("person").agg(pl.col("channel").n_unique())
    counts = {
        "people.total": people,
        "people.multi_channel": per_person.filter(pl.col("channel") > 1).height,
        **{f"members.{c}": members[c].height for c in CHANNELS},
        **{f"points.{c}": ledgers[c].points.height for c in CHANNELS},
        **{f"balances.{c}": ledgers[c].balances.height for c in CHANNELS},
        **{f"phenomena.{k}": v for k, v in _tally(located, "phenomenon").items()},
        **{
            f"faults.{k}": v for k, v in _tally(faults.filter(~pl.col("secondary")), "kind").items()
        },
        **{f"bad_rows.{k}": v for k, v in _tally(bad_rows, "reason").items()},
        **{
            f"name_kind.{k}": v
            for k, v in _tally(evidence.drop_nulls("name_kind"), "name_kind").items()
        },
    }
    meta = {
        "as_of": as_of.isoformat(),
        "seed": seed,
        "people": people,
        "expiry_days": EXPIRY_DAYS,
        "identity_rates": {
            k: {"rate": r, "floor": f, "basis": b} for k, (r, f, b) in IDENTITY_RATES.items()
        },
        "fault_rates": {k: {"rate": r, "floor": f} for k, (r, f) in FAULT_RATES.items()},
        "counts": counts,
    }
    paths["meta"] = truth_dir / "meta.json"
    paths["meta"].write_text(
        json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    paths["as_of"] = truth_dir / "as_of.txt"
    paths["as_of"].write_text(as_of.isoformat() + "\n")
    return paths


def _tally(frame: pl.DataFrame, column: str) -> dict[str, int]:
    counted = frame.group_by(column).len().sort(column)
    return dict(zip(counted[column].to_list(), counted["len"].to_list(), strict=True))


def _evidence(frame: pl.DataFrame) -> pl.DataFrame:
    """What a perfect normalizer extracts from each member row (the ceiling's input)."""
    hashed = "out_phone_sha256" in frame.columns
    return frame.filter(~pl.col("copy")).select(
        "channel",
        "member_id",
        "source_row",
        person_id="person",
        quarantined=pl.col("bad").is_not_null(),
        phone=pl.lit(None, pl.Utf8) if hashed else pl.col("phone"),
        phone_sha256=pl.col("out_phone_sha256").str.to_lowercase()
        if hashed
        else pl.lit(None, pl.Utf8),
        unionid="unionid",
        email="email",
        id_card="id_card",
        name="name",
        name_kind="name_kind",
        name_pinyin="name_pinyin",
        birth_date="birth",
        gender="gender",
        city="city",
    )


def _points_faults(ledgers: dict[str, _Ledger]) -> pl.DataFrame:
    parts = []
    for channel, ledger in ledgers.items():
        marked = ledger.points.filter(pl.col("fault").is_not_null(), ~pl.col("copy")).select(
            kind="fault",
            channel=pl.lit(channel),
            member_id="member_id",
            txn_id="txn_id",
            order_id="order_id",
            detail="detail",
            secondary=pl.lit(False),
        )
        implied = marked.filter(pl.col("kind") == "over_redemption").with_columns(
            kind=pl.lit("negative_balance"),
            secondary=pl.lit(True),
            detail="implied by over_redemption: " + pl.col("detail"),
        )
        mismatched = ledger.mismatches.select(
            kind=pl.lit("balance_mismatch"),
            channel=pl.lit(channel),
            member_id="member_id",
            txn_id=pl.lit(None, pl.Utf8),
            order_id=pl.lit(None, pl.Utf8),
            detail="detail",
            secondary=pl.lit(False),
        )
        parts += [marked, implied, mismatched]
    return pl.concat(parts).sort("kind", "channel", "member_id", "txn_id", nulls_last=True)


# --- recall ceiling ------------------------------------------------------------------------


def linkable_pairs(
    truth_dir: Path, hub_max_people: int = 4, blocked_values: tuple[str, ...] = (TEST_NUMBER,)
) -> pl.DataFrame:
    """Every true same-person record pair, with the evidence the two rows share.

    Input: `truth/evidence.parquet` (what a perfect normalizer reads from each row).
    Rows to be quarantined are left out. A pair is *directly linkable* when the two
    rows share, or nearly share, one piece of evidence:
      - phone: same mobile, a mobile vs. the SHA-256 of it, or two mobiles one digit
        apart; values held by more than `hub_max_people` people, and `blocked_values`,
        are hubs and count as no evidence (a guarded linker refuses them too);
      - unionid, email or id card: equal;
      - name + birth date: birth dates equal or day/month swapped, and names equal,
        one hanzi apart, or equal in pinyin (masked names, nicknames and placeholders
        never count).
    A pair is *transitively linkable* when a chain of directly linkable pairs of the
    same person joins its rows: what a linker that clusters links can reach at best.
    Columns: `person_id`, both rows' `channel`/`member_id`, one flag per evidence,
    `direct`, `transitive`.
    """
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cpdist

    from tasks.graph import component_labels

    evidence = pl.read_parquet(Path(truth_dir) / "evidence.parquet").filter(~pl.col("quarantined"))
    evidence = evidence.with_row_index("node").with_columns(
        phone_hash=pl.coalesce("phone_sha256", sha256_hex(evidence["phone"]))
    )
    blocked = sha256_hex(pl.Series(list(blocked_values), dtype=pl.Utf8))
    hubs = (
        evidence.drop_nulls("phone_hash")
        .group_by("phone_hash")
        .agg(people=pl.col("person_id").n_unique())
        .filter(pl.col("people") > hub_max_people)["phone_hash"]
    )
    hub = pl.col("phone_hash").is_in(pl.concat([hubs, blocked]).implode())
    evidence = evidence.with_columns(
        phone_hash=pl.when(~hub).then("phone_hash"), phone=pl.when(~hub).then("phone")
    )
    pairs = (
        evidence.join(evidence, on="person_id", suffix="_r")
        .filter(pl.col("node") < pl.col("node_r"))
        .sort("node", "node_r")
    )

    def equal(column: str) -> pl.Expr:
        return (pl.col(column) == pl.col(f"{column}_r")).fill_null(False)

    one_digit = (
        pl.sum_horizontal(
            pl.col("phone").str.slice(i, 1) != pl.col("phone_r").str.slice(i, 1) for i in range(11)
        )
        == 1
    )
    birth, birth_r = pl.col("birth_date"), pl.col("birth_date_r")
    same_birth = (birth == birth_r) | (
        (birth.dt.day() == birth_r.dt.month())
        & (birth.dt.month() == birth_r.dt.day())
        & (birth.dt.year() == birth_r.dt.year())
    )
    distance = (
        cpdist(
            pairs["name"].fill_null("").to_list(),
            pairs["name_r"].fill_null("").to_list(),
            scorer=Levenshtein.distance,
            workers=1,
        )
        if pairs.height
        else np.zeros(0)
    )
    hanzi_both = (pl.col("name_kind") == "hanzi") & (pl.col("name_kind_r") == "hanzi")
    similar_name = (hanzi_both & (pl.lit(pl.Series(distance)) <= 1)) | equal("name_pinyin")
    flags = pairs.select(
        "person_id",
        "node",
        "node_r",
        "channel",
        "member_id",
        "channel_r",
        "member_id_r",
        phone=equal("phone_hash") | one_digit.fill_null(False),
        unionid=equal("unionid"),
        email=equal("email"),
        id_card=equal("id_card"),
        name_birth=(similar_name & same_birth).fill_null(False),
    ).with_columns(direct=pl.any_horizontal("phone", "unionid", "email", "id_card", "name_birth"))
    direct = flags.filter("direct").select(left="node", right="node_r")
    labels = component_labels(evidence.height, direct)
    return flags.with_columns(
        transitive=pl.Series(labels[flags["node"].to_numpy()] == labels[flags["node_r"].to_numpy()])
    ).drop("node", "node_r")


def linkable_pairs_ceiling(
    truth_dir: Path, hub_max_people: int = 4, blocked_values: tuple[str, ...] = (TEST_NUMBER,)
) -> dict[str, object]:
    """The recall ceiling: the share of true same-person pairs any linker could find.

    `ceiling_direct` counts pairs whose two rows share evidence themselves;
    `ceiling_transitive` also counts pairs joined through other rows of the same
    person (see `linkable_pairs` for the evidence rules), the relevant ceiling for
    pairwise recall of a clustering linker.
    """
    pairs = linkable_pairs(truth_dir, hub_max_people, blocked_values)
    total = pairs.height
    direct, transitive = int(pairs["direct"].sum()), int(pairs["transitive"].sum())
    return {
        "true_pairs": total,
        "direct_linkable": direct,
        "transitive_linkable": transitive,
        "ceiling_direct": direct / total if total else 1.0,
        "ceiling_transitive": transitive / total if total else 1.0,
        "by_evidence": {
            k: int(pairs[k].sum()) for k in ("phone", "unionid", "email", "id_card", "name_birth")
        },
    }
