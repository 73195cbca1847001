"""Identity accuracy on generated channels: normalize -> deterministic match -> linkage.

    .venv/bin/python bench/bench_generated.py [--people 20000] [--seed 7] [--keep]

Uses `tasks.demo_data.generate_demo` + `tasks.normalize` + `tasks.match` when they
are importable, else a built-in generator of already-normalized members and a
plain deterministic matcher (exact phone hash / unionid / email / id card).
Reports pairwise precision, recall and F1 against the generator's truth, and the
recall ceiling: the share of true pairs reachable through any real evidence
(deterministic identifiers, or blocked pairs agreeing on name, birth date,
phone, email or id card). The generated channels go to a temporary folder that is
removed at the end (hundreds of MB at 20k people), unless `--keep` is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks import comparisons as cmp
from tasks import link
from tasks.graph import component_labels
from tasks.privacy import sha256_hex
from tasks.schema import MEMBER_SCHEMA
from tasks.settings import LinkSettings

SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = list(
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏飞斌宇浩凯健俊帆帅旭宁亮婷雪琳晶欣怡佳雨嘉子涵梓轩博文思颖晨阳"
)
CITIES = [
    "上海",
    "北京",
    "广州",
    "深圳",
    "杭州",
    "成都",
    "重庆",
    "武汉",
    "南京",
    "西安",
    "苏州",
    "天津",
    "长沙",
    "郑州",
    "青岛",
    "沈阳",
    "宁波",
    "东莞",
    "无锡",
    "厦门",
    "福州",
    "济南",
    "合肥",
    "昆明",
    "大连",
    "哈尔滨",
    "佛山",
    "南宁",
    "贵阳",
    "石家庄",
]
NICKS = ["小可爱", "阳光", "追梦人", "快乐每一天", "Lucky", "Amy", "Jack", "微笑", "晴天", "简单"]
ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])


def _zipf_choice(rng: np.random.Generator, items: list, size: int, a: float = 1.1) -> np.ndarray:
    p = 1 / np.arange(1, len(items) + 1) ** a
    return np.array(items, dtype=object)[rng.choice(len(items), size=size, p=p / p.sum())]


def _digits(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    return np.array(["".join(r) for r in rng.integers(0, 10, (size, n)).astype(str)], dtype=object)


def _typo(rng: np.random.Generator, phones: np.ndarray) -> np.ndarray:
    """One digit replaced, keeping the 1[3-9] prefix valid."""
    out = phones.copy()
    pos = rng.integers(3, 11, len(phones))
    for i, (p, k) in enumerate(zip(phones, pos, strict=True)):
        digit = str((int(p[k]) + rng.integers(1, 10)) % 10)
        out[i] = p[:k] + digit + p[k + 1 :]
    return out


def _id_cards(rng: np.random.Generator, births: np.ndarray, male: np.ndarray) -> np.ndarray:
    region = rng.choice(["110101", "310104", "440106", "330106", "510107"], len(births))
    seq = rng.integers(0, 500, len(births)) * 2 + male.astype(int)
    bodies = [f"{r}{b:%Y%m%d}{s:03d}" for r, b, s in zip(region, births, seq, strict=True)]
    digits = np.array([[int(c) for c in b] for b in bodies])
    check = np.array(list("10X98765432"))[(digits * ID_WEIGHTS).sum(axis=1) % 11]
    return np.array([b + c for b, c in zip(bodies, check, strict=True)], dtype=object)


def _frame(columns: dict) -> pl.DataFrame:
    """numpy object arrays (with None) to typed polars columns."""
    return pl.DataFrame(
        {
            k: pl.Series(k, v.tolist()) if isinstance(v, np.ndarray) else v
            for k, v in columns.items()
        }
    )


@dataclass
class Generated:
    members: pl.DataFrame  # members frame (MEMBER_SCHEMA + record_idx)
    truth: pl.Series  # person id per record_idx
    det_edges: pl.DataFrame  # deterministic edges
    source: str
    demo_ceiling: dict | None = None  # tasks.demo_data.linkable_pairs_ceiling, when from the demo
    truth_dir: Path | None = None  # the demo's truth/ folder (phenomena.parquet, ...)
    refused_keys: pl.DataFrame | None = None  # record_idx, key_type refused as hub/blocked


def synthetic_members(people: int, seed: int = 7) -> tuple[pl.DataFrame, np.ndarray]:
    """Normalized members of five channels with known truth (person id per record)."""
    from pypinyin import lazy_pinyin

    rng = np.random.default_rng(seed)
    surname = _zipf_choice(rng, SURNAMES, people, 0.9)
    given = np.where(
        rng.random(people) < 0.6,
        _zipf_choice(rng, GIVEN, people, 0.7),
        _zipf_choice(rng, GIVEN, people, 0.7) + _zipf_choice(rng, GIVEN, people, 0.7),
    )
    name = surname + given
    male = rng.random(people) < 0.5
    birth = np.array([date(1960, 1, 1).toordinal()]) + rng.integers(0, 16000, people)
    births = np.array([date.fromordinal(int(o)) for o in birth])
    city = _zipf_choice(rng, CITIES, people, 1.0)
    phone = np.array(["1" + str(a) for a in rng.integers(3, 10, people)], dtype=object) + _digits(
        rng, people, 9
    )
    pinyin = np.array([" ".join(lazy_pinyin(n)).title() for n in name], dtype=object)
    email = np.array([p.replace(" ", "").lower() for p in pinyin], dtype=object) + _digits(
        rng, people, 3
    )
    email = email + rng.choice(["@qq.com", "@163.com", "@126.com", "@gmail.com"], people)
    id_card = _id_cards(rng, births, male)
    unionid = np.array(["o" + u for u in _digits(rng, people, 12)], dtype=object)
    gender = np.where(male, "M", "F").astype(object)
    person = np.arange(people)

    def swap_or_typo(values: np.ndarray, share: float) -> np.ndarray:
        out = values.copy()
        hit = rng.random(len(values)) < share
        for i in np.flatnonzero(hit):
            d = values[i]
            out[i] = (
                date(d.year, d.day, d.month)
                if d.day <= 12 and rng.random() < 0.5
                else d.replace(
                    year=d.year + int(rng.choice([-10, 10])) if d.year < 1995 else d.year - 1
                )
            )
        return out

    def pick(share: float) -> np.ndarray:
        return person[rng.random(people) < share]

    def maybe(values: np.ndarray, share: float) -> np.ndarray:
        out = values.copy()
        out[rng.random(len(values)) >= share] = None
        return out

    def changed_phone(p: np.ndarray, typo: float, new: float) -> np.ndarray:
        out = p.copy()
        r = rng.random(len(p))
        out[r < typo] = _typo(rng, p[r < typo])
        fresh = (r >= typo) & (r < typo + new)
        out[fresh] = np.array(
            ["1" + str(a) for a in rng.integers(3, 10, fresh.sum())], dtype=object
        ) + _digits(rng, fresh.sum(), 9)
        return out

    frames = []
    p = pick(0.6)  # store POS / CRM: real names, often an id card
    frames.append(
        _frame(
            {
                "channel": "pos",
                "person": p,
                "name": name[p],
                "name_kind": "hanzi",
                "surname": surname[p],
                "phone": changed_phone(phone[p], 0.06, 0.06),
                "id_card": maybe(id_card[p], 0.4),
                "birth_date": swap_or_typo(births[p], 0.08),
                "gender": gender[p],
                "city": city[p],
            }
        )
    )
    p = pick(0.5)  # Tmall: hashed phone, masked name
    frames.append(
        _frame(
            {
                "channel": "tmall",
                "person": p,
                "name": surname[p] + "**",
                "name_kind": "masked",
                "surname": surname[p],
                "hashed_phone": changed_phone(phone[p], 0.0, 0.08),
                "city": maybe(city[p], 0.7),
                "gender": maybe(gender[p], 0.5),
            }
        )
    )
    p = pick(0.5)  # WeChat mini-program: unionid and a nickname
    frames.append(
        _frame(
            {
                "channel": "wechat",
                "person": p,
                "name": rng.choice(NICKS, len(p)).astype(object),
                "name_kind": "other",
                "unionid": unionid[p],
                "gender": maybe(gender[p], 0.8),
                "city": maybe(city[p], 0.6),
            }
        )
    )
    p = pick(0.5)  # brand app: pinyin name, email, phone
    frames.append(
        _frame(
            {
                "channel": "app",
                "person": p,
                "name": pinyin[p],
                "name_kind": "pinyin",
                "phone": changed_phone(phone[p], 0.05, 0.1),
                "email": maybe(email[p], 0.7),
                "unionid": maybe(unionid[p], 0.5),
                "birth_date": maybe(swap_or_typo(births[p], 0.05), 0.8),
                "gender": maybe(gender[p], 0.7),
            }
        )
    )
    p = pick(0.4)  # JD: hashed phone, hanzi name
    frames.append(
        _frame(
            {
                "channel": "jd",
                "person": p,
                "name": maybe(name[p], 0.8),
                "name_kind": "hanzi",
                "surname": surname[p],
                "hashed_phone": changed_phone(phone[p], 0.0, 0.1),
                "birth_date": maybe(births[p], 0.5),
                "city": maybe(city[p], 0.8),
            }
        )
    )
    raw = pl.concat(frames, how="diagonal_relaxed")
    raw = raw.with_columns(
        pl.when(pl.col("name").is_null())
        .then(pl.lit("placeholder"))
        .otherwise("name_kind")
        .alias("name_kind"),
        pl.col("birth_date").cast(pl.Date),
    )
    raw = raw.with_columns(
        sha256_hex(raw.select(pl.coalesce("phone", "hashed_phone")).to_series()).alias(
            "phone_sha256"
        ),
        pl.col("channel").cum_count().over("channel").cast(pl.Utf8).str.zfill(7).alias("member_id"),
        pl.lit(1, pl.Int32).alias("trust"),
    )
    members = (
        raw.select(
            [
                pl.col(c).cast(t) if c in raw.columns else pl.lit(None, t).alias(c)
                for c, t in MEMBER_SCHEMA.items()
            ]
            + [pl.col("person")]
        )
        .sort("channel", "member_id")
        .with_row_index("record_idx")
    )
    truth = members["person"].to_numpy()
    return members.drop("person").with_columns(pl.col("record_idx").cast(pl.UInt32)), truth


def simple_deterministic(members: pl.DataFrame) -> pl.DataFrame:
    """Exact identifier links, skipping values held by more than four records."""
    frames = []
    for rule, col in (
        ("phone", "phone_sha256"),
        ("unionid", "unionid"),
        ("email", "email"),
        ("id_card", "id_card"),
    ):
        keyed = members.select("record_idx", col).drop_nulls().filter(pl.len().over(col) <= 4)
        first = keyed.group_by(col).agg(pl.col("record_idx").min().alias("root"))
        frames.append(
            keyed.join(first, on=col)
            .filter(pl.col("record_idx") != pl.col("root"))
            .select(
                pl.col("root").alias("left"),
                pl.col("record_idx").alias("right"),
                pl.lit(rule).alias("rule"),
            )
        )
    return pl.concat(frames).with_columns(
        pl.lit(1.0).alias("score"), pl.lit(None, pl.Utf8).alias("weights")
    )


def simple_refused_keys(members: pl.DataFrame) -> pl.DataFrame:
    """(record_idx, key_type) of the values `simple_deterministic` skips (hubs)."""
    frames = [
        members.select("record_idx", col)
        .drop_nulls()
        .filter(pl.len().over(col) > 4)
        .select("record_idx", pl.lit(rule).alias("key_type"))
        for rule, col in (
            ("phone", "phone_sha256"),
            ("unionid", "unionid"),
            ("email", "email"),
            ("id_card", "id_card"),
        )
    ]
    return pl.concat(frames).cast({"record_idx": pl.UInt32})


@contextmanager
def bench_workdir(keep: bool = False) -> Iterator[Path]:
    """A folder for the generated channels: removed on exit unless `keep` (then printed),
    so repeated runs do not pile up gigabytes under /tmp."""
    if keep:
        path = Path(tempfile.mkdtemp(prefix="memberlink-bench-"))
        try:
            yield path
        finally:
            print(f"kept the generated channels in {path}")
        return
    with tempfile.TemporaryDirectory(prefix="memberlink-bench-") as tmp:
        yield Path(tmp)


def add_keep_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the generated channels (a memberlink-bench-* folder under the temp dir)",
    )


def generated(
    people: int, seed: int, builtin: bool = False, workdir: Path | None = None
) -> Generated:
    """Members, truth and deterministic edges; demo channels are written under `workdir`
    (a new temporary folder, left for the caller, when None)."""
    try:
        if builtin:
            raise ImportError("built-in generator asked for")
        from tasks.demo_data import generate_demo  # noqa: F401
        from tasks.match import deterministic_links  # noqa: F401
        from tasks.normalize import normalize_members  # noqa: F401
    except ImportError:
        members, truth = synthetic_members(people, seed)
        return Generated(
            members,
            pl.Series(truth),
            simple_deterministic(members),
            "built-in generator",
            refused_keys=simple_refused_keys(members),
        )
    return _from_demo(people, seed, workdir)


def _from_demo(people: int, seed: int, workdir: Path | None = None) -> Generated:
    """generate_demo -> read -> normalize -> (drop rows validation would quarantine) -> match.

    GX validation is skipped for speed; rows the demo marks as bad (truth/bad_rows)
    are dropped instead, which is what a perfect validator would do.
    """
    from tasks.config import load_config
    from tasks.demo_data import generate_demo, linkable_pairs_ceiling
    from tasks.match import deterministic_links
    from tasks.normalize import normalize_members
    from tasks.read import read_dataset

    out = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="memberlink-bench-"))
    manifest = generate_demo(out, people=people, seed=seed)
    config = load_config(manifest.config)
    frames = []
    for source in config.sources:
        raw = read_dataset(source, "members")
        if raw is not None:
            frames.append(
                normalize_members(raw, source.channel, source.trust, source.phone_hash.case)
            )
    bad = pl.read_parquet(manifest.truth["bad_rows"]).filter(pl.col("dataset") == "members")
    members = (
        pl.concat(frames)
        .join(bad.select("channel", "source_row"), on=["channel", "source_row"], how="anti")
        .drop_nulls("member_id")
        .unique(["channel", "member_id"], keep="first")
        .sort("channel", "member_id")
        .with_row_index("record_idx")
        .with_columns(pl.col("record_idx").cast(pl.UInt32))
    )
    persons = (
        pl.read_parquet(manifest.truth["persons"])
        .select("channel", "member_id", "person_id")
        .unique(["channel", "member_id"])
    )
    truth = members.join(persons, on=["channel", "member_id"], how="left", maintain_order="left")
    det = deterministic_links(members, config.matching)
    ceiling = linkable_pairs_ceiling(
        Path(manifest.truth["persons"]).parent, config.matching.hub_max_people
    )
    return Generated(
        members,
        truth["person_id"].fill_null(-1 - truth["record_idx"].cast(pl.Int64)),
        det.edges,
        f"tasks.demo_data ({out})",
        ceiling,
        Path(manifest.truth["persons"]).parent,
        det.refused_keys,
    )


def pairwise(labels: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true positive pairs, predicted pairs, true pairs) of a clustering."""

    def pairs_of(keys: pl.DataFrame) -> int:
        return int(
            keys.group_by(keys.columns)
            .len()
            .select((pl.col("len") * (pl.col("len") - 1) // 2).sum())
            .item()
        )

    frame = pl.DataFrame({"c": labels, "t": truth})
    return pairs_of(frame), pairs_of(frame.select("c")), pairs_of(frame.select("t"))


def evaluate(name: str, labels: np.ndarray, truth: np.ndarray, seconds: float) -> dict:
    tp, predicted, true = pairwise(labels, truth)
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "method": name,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "pairs_predicted": predicted,
        "seconds": seconds,
    }


def recall_ceiling(data: Generated, settings: LinkSettings) -> float:
    """Pairwise recall if every true pair with real evidence were linked, and nothing else."""
    truth = data.truth.to_numpy()
    keys = cmp.member_keys(data.members)
    pairs, _ = link.candidate_pairs(keys, link.MEMBER_BLOCKING_RULES, settings.max_block_size)
    # A refused identifier (hub, blocked value) is no evidence, as in the linkage.
    records = link.without_refused_keys(keys, data.refused_keys)
    vectors = link.comparison_vectors(records, pairs, cmp.MEMBER_COMPARISONS)
    strong = pl.any_horizontal(
        (pl.col(c.field) > 0) & (pl.col(c.field) < len(c.levels) - 1)
        for c in cmp.MEMBER_COMPARISONS
        if c.field not in ("city", "gender")
    )
    evidence = pl.concat(
        [
            vectors.filter(strong).select("left", "right"),
            data.det_edges.select("left", "right").cast(pl.UInt32),
        ]
    )
    evidence = evidence.filter(
        pl.Series(truth[evidence["left"].to_numpy()] == truth[evidence["right"].to_numpy()])
    )
    labels = component_labels(data.members.height, evidence)
    tp, _, true = pairwise(labels, truth)
    return tp / true


def run_ours(
    data: Generated, settings: LinkSettings, *, blank_refused: bool = True
) -> tuple[np.ndarray, link.ProbabilisticLinks, float]:
    """Our linkage after the deterministic edges; `blank_refused=False` compares refused
    identifiers (hubs, blocked values) as values, as before they were read as missing."""
    start = time.perf_counter()
    result = link.probabilistic_links(
        data.members,
        data.det_edges,
        settings,
        refused_keys=data.refused_keys if blank_refused else None,
    )
    seconds = time.perf_counter() - start
    edges = pl.concat(
        [
            data.det_edges.select("left", "right").cast(pl.UInt32),
            result.edges.select("left", "right"),
        ]
    )
    return component_labels(data.members.height, edges), result, seconds


EDGE_COLUMNS = ["left", "right", "rule"]


def _phenomena_per_person(truth_dir: Path) -> pl.DataFrame:
    """person_id -> the '+'-joined identity phenomena injected into any of their rows."""
    return (
        pl.read_parquet(truth_dir / "phenomena.parquet")
        .group_by("person_id")
        .agg(pl.col("phenomenon").unique().sort().str.join("+").alias("phenomena"))
    )


def false_merge_breakdown(data: Generated, labels: np.ndarray, edges: pl.DataFrame) -> pl.DataFrame:
    """False pairs of a clustering, by the phenomena of the people it merged and the rules
    of the wrong edges (`edges`: left, right, rule) that merged them."""
    truth = data.truth.to_numpy()
    frame = pl.DataFrame({"c": labels, "person": truth})
    sizes = frame.filter(pl.col("person").n_unique().over("c") > 1).group_by("c", "person").len()
    if sizes.is_empty():
        return pl.DataFrame()
    pairs = (pl.col("len") * (pl.col("len") - 1)) // 2
    false_pairs = sizes.group_by("c").agg(
        ((pl.col("len").sum() * (pl.col("len").sum() - 1)) // 2 - pairs.sum()).alias("false_pairs")
    )
    left, right = edges["left"].to_numpy(), edges["right"].to_numpy()
    rules = (
        edges.select("rule")
        .with_columns(pl.Series("c", labels[left]))
        .filter(pl.Series(truth[left] != truth[right]))
        .group_by("c")
        .agg(pl.col("rule").unique().sort().str.join("+").alias("wrong_edges"))
    )
    phenomena = (
        sizes.join(
            _phenomena_per_person(data.truth_dir),
            left_on="person",
            right_on="person_id",
            how="left",
        )
        .group_by("c")
        .agg(pl.col("phenomena").drop_nulls().unique().sort().str.join(", "))
    )
    return (
        false_pairs.join(phenomena, on="c")
        .join(rules, on="c", how="left")
        .group_by("phenomena", "wrong_edges")
        .agg(pl.len().alias("components"), pl.col("false_pairs").sum())
        .sort("false_pairs", descending=True)
    )


def missed_breakdown(data: Generated, labels: np.ndarray) -> pl.DataFrame:
    """True pairs the ceiling counts as reachable but the clustering left apart, by the
    phenomena of their person and the evidence their two rows share."""
    from tasks.demo_data import linkable_pairs

    index = data.members.select("channel", "member_id", "record_idx")
    pairs = (
        linkable_pairs(data.truth_dir)
        .filter("transitive")
        .join(index, on=["channel", "member_id"])
        .join(
            index.rename({"channel": "channel_r", "member_id": "member_id_r", "record_idx": "r"}),
            on=["channel_r", "member_id_r"],
        )
    )
    missed = pairs.filter(
        pl.Series(labels[pairs["record_idx"].to_numpy()] != labels[pairs["r"].to_numpy()])
    )
    evidence = ("phone", "unionid", "email", "id_card", "name_birth")
    return (
        missed.join(_phenomena_per_person(data.truth_dir), on="person_id", how="left")
        .with_columns(
            pl.concat_str(
                [pl.when(pl.col(e)).then(pl.lit(e)) for e in evidence],
                separator="+",
                ignore_nulls=True,
            )
            .replace("", "(transitive only)")
            .alias("shared_evidence")
        )
        .group_by("phenomena", "shared_evidence")
        .len("missed_pairs")
        .sort("missed_pairs", descending=True)
    )


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="right" if key != "method" else "left")
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
    Console(width=180).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--builtin", action="store_true", help="use the built-in generator")
    parser.add_argument(
        "--keep-refused",
        action="store_true",
        help="compare hub and blocked identifiers as values (the behaviour before they were "
        "read as missing), for an A/B",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="false merges by phenomenon and rule, missed pairs by phenomenon (demo data only)",
    )
    add_keep_flag(parser)
    args = parser.parse_args()
    with bench_workdir(args.keep) as workdir:
        report(args, workdir)


def report(args: argparse.Namespace, workdir: Path) -> None:
    """Generate, link and print the figures (the demo's truth files must still exist)."""
    settings = LinkSettings()
    start = time.perf_counter()
    data = generated(args.people, args.seed, args.builtin, workdir)
    print(
        f"{data.members.height:,} records of {args.people:,} people ({data.source}) "
        f"in {time.perf_counter() - start:.1f}s; {data.det_edges.height:,} deterministic edges"
    )
    truth = data.truth.to_numpy()
    det_labels = component_labels(data.members.height, data.det_edges)
    labels, result, seconds = run_ours(data, settings, blank_refused=not args.keep_refused)
    rows = [
        evaluate("deterministic only", det_labels, truth, 0.0),
        evaluate("deterministic + memberlink linkage", labels, truth, seconds),
    ]
    print_table(rows, "Pairwise accuracy on generated members")
    print(
        f"recall ceiling (true pairs with any evidence, via our blocking): "
        f"{recall_ceiling(data, settings):.4f}"
    )
    if data.demo_ceiling:
        print(
            f"recall ceiling (tasks.demo_data.linkable_pairs_ceiling, transitive): "
            f"{data.demo_ceiling['ceiling_transitive']:.4f}"
        )
    edges = result.edges
    correct = (truth[edges["left"].to_numpy()] == truth[edges["right"].to_numpy()]).sum()
    print(
        f"precision of the linkage's own edges: {correct}/{edges.height}"
        f" = {correct / max(edges.height, 1):.4f}"
    )
    print(
        f"model: {result.model.status}, lambda {result.model.lambda_:.4g}, "
        f"{result.model.pairs_scored:,} pairs scored, {result.edges.height:,} edges, "
        f"{result.review_queue.height:,} to review"
    )
    with pl.Config(tbl_rows=40):
        print(result.model.levels)
    if args.breakdown and data.truth_dir is not None:
        edges = pl.concat(
            [data.det_edges.select("left", "right", "rule"), result.edges.select(EDGE_COLUMNS)]
        )
        with pl.Config(tbl_rows=30, fmt_str_lengths=70, tbl_width_chars=160):
            print("false merges, deterministic only:")
            print(false_merge_breakdown(data, det_labels, data.det_edges))
            print("false merges, deterministic + linkage:")
            print(false_merge_breakdown(data, labels, edges))
            print("true pairs within the ceiling left apart, deterministic + linkage:")
            print(missed_breakdown(data, labels).head(20))


if __name__ == "__main__":
    main()
