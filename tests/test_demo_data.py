"""The demo generator: reproducible files, the declared formats, and truth that holds.

The fault checks below re-derive every points fault from the written files with
an independent, plain reading of the ledger rules, and require the result to equal
`truth/points_faults.parquet` exactly: each fault is present where injected and
nowhere else, so a reconciler scored against the truth is scored fairly.
"""

from __future__ import annotations

import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from tasks.demo_data import (
    BAD_LEDGER_ROWS,
    CHANNELS,
    FAULT_RATES,
    IDENTITY_RATES,
    TEST_NUMBER,
    DemoManifest,
    generate_demo,
    linkable_pairs,
    linkable_pairs_ceiling,
)
from tasks.schema import SOURCE_COLUMNS, TXN_TYPES

MEMBER_COLUMNS = {
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


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    return generate_demo(tmp_path_factory.mktemp("demo"), people=5000, seed=7)


def sources(manifest: DemoManifest) -> dict[str, dict]:
    config = tomllib.loads(manifest.config.read_text(encoding="utf-8"))
    return {source["channel"]: source for source in config["sources"]}


def read_dataset(manifest: DemoManifest, channel: str, dataset: str) -> pl.DataFrame:
    """A dataset as written, all columns Utf8 (datetimes kept), renamed to canonical names."""
    source = sources(manifest)[channel]
    path = manifest.config.parent / source[dataset]
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        frame = frame.with_columns(
            pl.col(c).cast(pl.Utf8) for c, t in frame.schema.items() if not t.is_temporal()
        )
    elif path.suffix == ".ndjson":
        frame = pl.read_ndjson(path).with_columns(pl.all().cast(pl.Utf8))
    else:
        text = path.read_bytes().decode(source.get("encoding", "utf-8")).removeprefix("\ufeff")
        frame = pl.read_csv(text.encode(), infer_schema=False)
    renames = {
        header: canonical
        for canonical, header in source.get("columns", {}).items()
        if header in frame.columns
    }
    return frame.rename(renames)


def truth(manifest: DemoManifest, name: str) -> pl.DataFrame:
    return pl.read_parquet(manifest.truth[name])


# --- files ---------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = generate_demo(tmp_path / "a", people=400, seed=11)
    second = generate_demo(tmp_path / "b", people=400, seed=11)
    other = generate_demo(tmp_path / "c", people=400, seed=12)
    names = sorted(p.relative_to(first.out_dir) for p in first.out_dir.rglob("*") if p.is_file())
    assert len(names) == 1 + 5 * 3 + 7  # sources.toml, 5 channels x 3 datasets, truth
    for name in names:
        assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes(), name
    assert (first.out_dir / "pos_members.csv").read_bytes() != (
        other.out_dir / "pos_members.csv"
    ).read_bytes()


def test_pos_files_are_gb18030_not_utf8(demo: DemoManifest) -> None:
    for dataset in ("members", "points", "balances"):
        raw = demo.files["pos"][dataset].read_bytes()
        text = raw.decode("gb18030")
        assert text.startswith("会员编号") or "会员编号" in text.splitlines()[0]
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
    members = read_dataset(demo, "pos", "members")
    assert set(members["gender"].drop_nulls()) == {"男", "女"}
    phones = members["phone"].drop_nulls()
    for shape in (
        r"^\+86 \d{3} \d{4} \d{4}$",
        r"^0086-",
        r"^\(\+86\)",
        "^[０-９]{11}$",
        r"^\d{3}-\d{4}-",
    ):
        assert phones.str.contains(shape).any(), shape
    births = members["birth_date"].drop_nulls()
    for shape in (r"^\d{4}-\d{2}-\d{2}$", r"^\d{8}$", r"^\d{4}/\d{1,2}/\d{1,2}$"):
        assert births.str.contains(shape).any(), shape
    assert births.is_in(["abc", "1990-13-45", "0000-00-00", "不详", "19901345"]).any()


def test_jd_has_bom_and_upper_case_hashes_tmall_lower(demo: DemoManifest) -> None:
    assert demo.files["jd"]["members"].read_bytes().startswith(b"\xef\xbb\xbf")
    jd = read_dataset(demo, "jd", "members")["phone_sha256"].drop_nulls()
    tmall = read_dataset(demo, "tmall", "members")["phone_sha256"].drop_nulls()
    assert jd.str.contains(r"^[0-9A-F]{64}$").all()
    assert tmall.str.contains(r"^[0-9a-f]{64}$").all()
    wechat = read_dataset(demo, "wechat", "members")
    assert (wechat["name"] == "微信用户").mean() > 0.2
    assert wechat["name"].str.contains(r"^[a-z]+ [a-z]+$").any()  # "zhang wei"
    assert set(wechat["gender"].unique()) <= {"0", "1", "2"}


def test_every_channel_file_exists_with_declared_columns(demo: DemoManifest) -> None:
    config = sources(demo)
    assert tomllib.loads(demo.config.read_text())["run"]["as_of"] == "2026-11-30"
    assert list(config) == list(CHANNELS)
    assert config["pos"]["encoding"] == "gb18030" and config["pos"]["trust"] == 3
    assert [config[c]["trust"] for c in ("tmall", "jd", "wechat", "app")] == [1, 1, 2, 2]
    for channel in CHANNELS:
        for dataset in ("members", "points", "balances"):
            assert (demo.config.parent / config[channel][dataset]).exists()
            frame = read_dataset(demo, channel, dataset)
            expected = MEMBER_COLUMNS[channel] if dataset == "members" else SOURCE_COLUMNS[dataset]
            assert tuple(frame.columns) == tuple(expected), (channel, dataset)
            assert frame.height > 0


def test_sources_toml_loads_with_the_pipeline_config(demo: DemoManifest) -> None:
    from tasks.config import load_config

    config = load_config(demo.config)
    assert [s.channel for s in config.sources] == list(CHANNELS)
    assert config.run.as_of == date(2026, 11, 30)


# --- identity truth ------------------------------------------------------------------------


def test_id_cards_and_hashes_are_what_they_claim(demo: DemoManifest) -> None:
    from stdnum.cn import ric

    members = read_dataset(demo, "pos", "members").with_row_index("source_row")
    invalid = truth(demo, "phenomena").filter(pl.col("phenomenon") == "invalid_id_card")
    cards = members.drop_nulls("id_card").with_columns(
        injected=pl.col("source_row").is_in(invalid["source_row"].implode())
    )
    valid = [ric.is_valid(card) for card in cards["id_card"].to_list()]  # region, date, check
    assert valid == (~cards["injected"]).to_list()
    assert cards["id_card"].str.ends_with("x").any()  # lower-case check character
    evidence = truth(demo, "evidence")
    hashed = evidence.filter(pl.col("channel") == "tmall").drop_nulls("phone_sha256").head(50)
    phones = evidence.filter(pl.col("channel") == "app").drop_nulls("phone")
    import hashlib

    digests = {hashlib.sha256(p.encode()).hexdigest(): p for p in phones["phone"].to_list()}
    shared = hashed.filter(pl.col("phone_sha256").is_in(list(digests)))
    assert set(read_dataset(demo, "tmall", "members")["phone_sha256"].drop_nulls()) >= set(
        shared["phone_sha256"]
    )
    assert all(len(digests[h]) == 11 for h in shared["phone_sha256"].to_list())


def test_truth_covers_every_member_row(demo: DemoManifest) -> None:
    persons = truth(demo, "persons")
    for channel in CHANNELS:
        members = read_dataset(demo, channel, "members")
        mine = persons.filter(pl.col("channel") == channel).sort("source_row")
        assert mine["source_row"].to_list() == list(range(members.height))
        assert mine["member_id"].to_list() == members["member_id"].to_list()
        assert mine["person_id"].null_count() == 0
    assert persons["member_id"].null_count() == 3  # rows with a missing id: source_row only


def test_each_identity_phenomenon_is_present(demo: DemoManifest) -> None:
    phenomena = truth(demo, "phenomena")
    persons = truth(demo, "persons")
    counts = dict(phenomena.group_by("phenomenon").len().iter_rows())
    for name, (_, floor, _) in IDENTITY_RATES.items():
        assert counts.get(name, 0) >= floor, name
    per_person = persons.group_by("person_id").agg(pl.col("channel").n_unique())
    assert per_person.filter(pl.col("channel") >= 3).height > 100  # one person, several channels
    evidence = truth(demo, "evidence")
    assert set(evidence["name_kind"].drop_nulls()) == {
        "hanzi",
        "pinyin",
        "masked",
        "nickname",
        "placeholder",
    }
    assert (evidence["name"] == "王伟").sum() >= 5 and (evidence["name"] == "李娜").sum() >= 3

    def people_on(phone: pl.Series) -> int:
        return evidence.filter(pl.col("phone").is_in(phone.implode()))["person_id"].n_unique()

    assert people_on(pl.Series([TEST_NUMBER])) >= 3
    store = evidence.join(
        phenomena.filter(pl.col("phenomenon") == "store_phone"), on=["channel", "source_row"]
    )
    assert (
        store.group_by("phone")
        .agg(pl.col("person_id").n_unique())
        .filter(pl.col("person_id") >= 3)
        .height
        >= 1
    )
    family = evidence.join(
        phenomena.filter(pl.col("phenomenon") == "family_phone"), on=["channel", "source_row"]
    ).drop_nulls("phone")
    shared = family.group_by("phone").agg(
        pl.col("person_id").n_unique(),
        pl.col("name").n_unique(),
        pl.col("birth_date").drop_nulls().n_unique(),
    )
    assert shared.filter(pl.col("person_id").is_between(2, 3)).height >= 3
    assert (shared["person_id"] <= 3).all()


def test_changed_number_keeps_name_birth_and_city(demo: DemoManifest) -> None:
    evidence = truth(demo, "evidence")
    changed = (
        truth(demo, "phenomena")
        .filter(pl.col("phenomenon") == "changed_number")
        .join(evidence, on=["channel", "source_row"])
    )
    assert (changed["channel"] == "pos").all()
    others = evidence.filter(pl.col("channel") != "pos").join(
        changed.select(
            "person_id", old_phone="phone", old_pinyin="name_pinyin", old_birth="birth_date"
        ),
        on="person_id",
    )
    assert others.height > 0
    assert (others["phone"].fill_null("") != others["old_phone"]).all()
    named = others.filter(pl.col("name_kind") == "hanzi")  # homophone typos keep the pinyin
    assert named.height > 0 and (named["name_pinyin"] == named["old_pinyin"]).all()
    dated = others.drop_nulls(["birth_date", "old_birth"])
    assert dated.height > 0 and (dated["birth_date"] == dated["old_birth"]).mean() > 0.8


def test_unlinkable_people_share_no_evidence_and_ceiling_is_sane(demo: DemoManifest) -> None:
    pairs = linkable_pairs(demo.out_dir / "truth")
    unlinkable = truth(demo, "phenomena").filter(pl.col("phenomenon") == "unlinkable")["person_id"]
    theirs = pairs.filter(pl.col("person_id").is_in(unlinkable.implode()))
    assert theirs.height == unlinkable.len()
    assert not theirs["direct"].any() and not theirs["transitive"].any()
    typos = truth(demo, "phenomena").filter(pl.col("phenomenon") == "phone_typo")["person_id"]
    assert pairs.filter(pl.col("person_id").is_in(typos.implode()), "phone").height > 0
    ceiling = linkable_pairs_ceiling(demo.out_dir / "truth")
    assert 0.5 < ceiling["ceiling_direct"] <= ceiling["ceiling_transitive"] < 1.0
    assert all(count > 0 for count in ceiling["by_evidence"].values())


# --- points truth --------------------------------------------------------------------------


def ledger_rows(demo: DemoManifest, channel: str) -> pl.DataFrame:
    frame = read_dataset(demo, channel, "points").with_row_index("source_row")
    for column in ("txn_time", "expires_at"):
        if frame.schema[column] == pl.Utf8:
            frame = frame.with_columns(pl.col(column).str.to_datetime("%Y-%m-%d %H:%M:%S"))
    return frame.with_columns(value=pl.col("points").cast(pl.Int64, strict=False))


def test_bad_rows_are_exactly_the_unusable_rows(demo: DemoManifest) -> None:
    bad = truth(demo, "bad_rows")
    assert set(bad["reason"]) == {"missing_member_id", "duplicate_member_id", *BAD_LEDGER_ROWS}
    for channel in CHANNELS:
        rows = ledger_rows(demo, channel)
        unusable = rows.filter(
            pl.col("txn_id").is_null()
            | pl.col("value").is_null()
            | ~pl.col("txn_type").is_in(TXN_TYPES)
        )
        expected = bad.filter(pl.col("channel") == channel, pl.col("dataset") == "points")
        assert sorted(unusable["source_row"]) == sorted(expected["source_row"]), channel
    members = read_dataset(demo, "pos", "members").with_row_index("source_row")
    missing = members.filter(pl.col("member_id").is_null())["source_row"].to_list()
    repeated = (
        members.drop_nulls("member_id")
        .filter(pl.col("member_id").is_duplicated())
        .group_by("member_id")
        .agg(pl.col("source_row").max())["source_row"]
        .to_list()
    )
    listed = bad.filter(pl.col("dataset") == "members")
    assert sorted(missing) == sorted(
        listed.filter(pl.col("reason") == "missing_member_id")["source_row"]
    )
    assert sorted(repeated) == sorted(
        listed.filter(pl.col("reason") == "duplicate_member_id")["source_row"]
    )


def observed_faults(demo: DemoManifest) -> pl.DataFrame:
    """Every fault an independent, plain reading of the ledger rules finds in the files."""
    as_of = date.fromisoformat((demo.out_dir / "truth" / "as_of.txt").read_text().strip())
    cutoff = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
    persons = truth(demo, "persons").drop_nulls("member_id").unique(["channel", "member_id"])
    found, earned = [], []
    for channel in CHANNELS:
        rows = ledger_rows(demo, channel).filter(
            pl.col("txn_id").is_not_null(),
            pl.col("value").is_not_null(),
            pl.col("txn_type").is_in(TXN_TYPES),
        )
        members = set(read_dataset(demo, channel, "members")["member_id"].drop_nulls())
        repeated = rows.filter(pl.col("txn_id").is_duplicated())
        rows = rows.unique("txn_id", keep="first", maintain_order=True)
        known = rows.filter(pl.col("member_id").is_in(list(members)))
        running = known.sort("txn_time", "txn_id").with_columns(
            balance=pl.col("value").cum_sum().over("member_id")
        )
        before = pl.col("balance") - pl.col("value")
        due = (pl.col("expires_at") < cutoff).fill_null(False) & pl.col("txn_type").is_in(
            ["earn", "task"]
        )
        per_member = running.group_by("member_id").agg(
            ledger=pl.col("value").sum(),
            low=pl.col("balance").min(),
            due=pl.col("value").filter(due).sum(),
            consumed=-pl.col("value").filter(pl.col("txn_type").is_in(["redeem", "expire"])).sum(),
        )
        reported = (
            read_dataset(demo, channel, "balances")
            .with_columns(pl.col("balance").cast(pl.Int64))
            .join(per_member, on="member_id", how="left")
        )
        earned.append(
            known.filter(pl.col("txn_type") == "earn").select(
                "member_id", "txn_id", "order_id", channel=pl.lit(channel)
            )
        )
        found += [
            repeated.unique("txn_id").select("member_id", "txn_id", kind=pl.lit("duplicate_txn")),
            rows.filter(~pl.col("member_id").is_in(list(members))).select(
                "member_id", "txn_id", kind=pl.lit("orphan_txn")
            ),
            reported.filter(pl.col("balance") != pl.col("ledger").fill_null(0)).select(
                "member_id", txn_id=pl.lit(None, pl.Utf8), kind=pl.lit("balance_mismatch")
            ),
            running.filter(pl.col("txn_type") == "redeem", -pl.col("value") > before).select(
                "member_id", "txn_id", kind=pl.lit("over_redemption")
            ),
            per_member.filter(pl.col("low") < 0).select(
                "member_id", txn_id=pl.lit(None, pl.Utf8), kind=pl.lit("negative_balance")
            ),
            per_member.filter(
                pl.min_horizontal(pl.col("due") - pl.col("consumed"), "ledger") > 0
            ).select("member_id", txn_id=pl.lit(None, pl.Utf8), kind=pl.lit("unexpired_points")),
        ]
        found[-6:] = [f.with_columns(channel=pl.lit(channel)) for f in found[-6:]]
    credited = pl.concat(earned).join(persons, on=["channel", "member_id"])
    twice = credited.filter(pl.col("channel").n_unique().over("person_id", "order_id") > 1)
    found.append(
        twice.select("member_id", "txn_id", kind=pl.lit("double_credit"), channel="channel")
    )
    return pl.concat(found, how="diagonal").select("kind", "channel", "member_id", "txn_id")


def test_each_points_fault_is_present_where_injected_and_nowhere_else(demo: DemoManifest) -> None:
    faults = truth(demo, "points_faults")
    for kind, (_, floor) in FAULT_RATES.items():
        assert faults.filter(pl.col("kind") == kind, ~pl.col("secondary")).height >= floor, kind
    observed = observed_faults(demo)
    by_txn = ("duplicate_txn", "orphan_txn", "over_redemption", "double_credit")
    for kind in FAULT_RATES:
        keys = ["channel", "member_id", "txn_id"] if kind in by_txn else ["channel", "member_id"]
        expected = faults.filter(pl.col("kind") == kind).select(keys).unique().sort(keys)
        seen = observed.filter(pl.col("kind") == kind).select(keys).unique().sort(keys)
        assert seen.equals(expected), kind


# --- scale ---------------------------------------------------------------------------------


def test_100k_people_generate(tmp_path: Path) -> None:
    """Vectorized generation finishes at scale (time it with bench/, not here)."""
    manifest = generate_demo(tmp_path, people=100_000, seed=3)
    persons = pl.read_parquet(manifest.truth["persons"])
    assert persons["person_id"].n_unique() == 100_000
    assert sum(manifest.counts[f"members.{c}"] for c in CHANNELS) == persons.height
