"""Ingest: round trip, every validation error, one transaction, idempotency, updates, bare rows.

The dataset is tiny and hand-written (known answers); the `engine` fixture runs the database
tests on SQLite and, when ADLENS_TEST_PG_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from core.cli import main
from core.common.errors import ValidationError
from core.data.ingest import ingest_directory, read_dataset, validate_dataset
from core.data.schema import TABLES, render_markdown
from core.store.catalog import load_catalog, table_counts
from core.store.db import make_engine
from core.store.models import Base
from core.store.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
TZ = "Etc/GMT-2"  # UTC+02:00


def typed_frames() -> dict[str, pd.DataFrame]:
    """A small complete dataset with typed values (lists, tz-aware datetimes, nulls)."""
    return {
        "advertisers": pd.DataFrame({
            "advertiser_id": ["a1", "a2"], "name": ["Northwind Travel", None],
            "vertical": ["travel", "fintech"], "brand_safety": ["sensitive", "safe"],
        }),
        "campaigns": pd.DataFrame({
            "campaign_id": ["c1", "c2"], "advertiser_id": ["a1", "a2"], "name": ["Autumn", None],
            "status": ["active", "paused"],
            "start_ts": pd.to_datetime(["2026-10-01T02:00:00", None]).tz_localize(TZ),
            "end_ts": pd.to_datetime([None, None]).tz_localize(TZ),
            "daily_budget": [500.0, None], "spend_today": [10.5, None], "bid": [2.5, None],
            "bid_type": ["cpc", None], "frequency_cap": pd.array([3, None], dtype="Int64"),
            "target_countries": [["US", "CA"], []], "age_min": pd.array([18, None], dtype="Int64"),
            "age_max": pd.array([34, None], dtype="Int64"), "target_devices": [["ios"], []],
            "include_communities": [["c_hike"], []], "exclude_communities": [[], ["c_news"]],
        }),
        "ads": pd.DataFrame({
            "ad_id": ["ad1", "ad2", "ad3"], "campaign_id": ["c1", "c2", None],
            "title": ["Fly to Lisbon from $49", "Budget app", "Hiking boots"],
            "body": ["Book by Friday.", "Save more.", None], "call_to_action": ["Book now", "Install", None],
            "landing_domain": ["northwind.example", None, None], "vertical": ["travel", "fintech", None],
            "policy_status": ["approved", "rejected", None],
        }),
        "communities": pd.DataFrame({
            "community_id": ["c_hike", "c_news"], "name": ["r/hiking", None],
            "topic": ["outdoors", "news"], "safety_tier": ["safe", "sensitive"],
        }),
        "users": pd.DataFrame({
            "user_id": ["u1", "u2"], "country": ["US", "CA"], "age_bucket": ["25-34", None],
            "device": ["ios", "android"], "communities": [["c_hike", "c_news"], []],
            "signup_date": [date(2024, 5, 17), None],
        }),
        "impressions": pd.DataFrame({
            "impression_id": ["i1", "i2", None, "i4"], "user_id": ["u1", "u1", "u2", "u2"],
            "ad_id": ["ad1", "ad2", "ad3", "ad1"],
            "ts": pd.to_datetime(["2026-10-14T20:03:00", "2026-10-14T20:04:00", "2026-10-15T09:00:00",
                                  "2026-10-15T10:30:00.250000"], format="ISO8601").tz_localize(TZ),
            "community_id": ["c_hike", None, "c_news", "c_hike"],
            "placement": ["community_feed", "home_feed", None, "conversation"],
            "device": ["ios", "ios", "android", None], "clicked": [True, False, True, False],
        }),
    }


def _csv_cell(v) -> str:
    if isinstance(v, list):
        return "|".join(v)
    if v is None or v is pd.NA or (isinstance(v, float) and v != v) or v is pd.NaT:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return str(v)


def write_dataset(frames: dict[str, pd.DataFrame], directory: Path, fmt: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        if fmt == "parquet":
            df.to_parquet(directory / f"{name}.parquet", index=False)
        else:
            text = pd.DataFrame({c: [_csv_cell(v) for v in df[c].tolist()] for c in df.columns})
            text.to_csv(directory / f"{name}.csv", index=False)
    return directory


@pytest.fixture(autouse=True)
def _workspace_database(monkeypatch):
    """CLI calls in these tests use their workspace's SQLite file, whatever the shell exports."""
    monkeypatch.delenv("ADLENS_DB_URL", raising=False)


@pytest.fixture(params=["csv", "parquet"])
def dataset(request, tmp_path) -> Path:
    return write_dataset(typed_frames(), tmp_path / f"data_{request.param}", request.param)


@pytest.fixture
def sqlite_engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'v.db'}")
    yield eng
    eng.dispose()


def snapshot(engine) -> dict[str, list]:
    """Every row of every data table, for before/after comparisons."""
    out = {}
    with engine.connect() as conn:
        for t in TABLES:
            tbl = Base.metadata.tables[t.name]
            out[t.name] = sorted(tuple(map(repr, r)) for r in conn.execute(select(tbl)).all())
    return out


# ---- round trip ------------------------------------------------------------------------------

def test_round_trip_values(engine, dataset):
    report = ingest_directory(engine, dataset)
    assert {n: c.inserted for n, c in report.tables.items()} == {
        "advertisers": 2, "campaigns": 2, "ads": 3, "communities": 2, "users": 2, "impressions": 4}
    assert all(c.created_bare == 0 and c.updated == 0 for c in report.tables.values())
    cat = load_catalog(engine)
    ads = cat.ads.set_index("ad_id")
    assert ads.loc["ad1", "title"] == "Fly to Lisbon from $49"
    assert ads.loc["ad3", "policy_status"] == "approved"  # default
    assert ads.loc["ad3", "body"] == "" and ads.loc["ad3", "vertical"] == "unknown"
    assert pd.isna(ads.loc["ad3", "campaign_id"])
    assert ads.loc["ad1", "advertiser_name"] == "Northwind Travel"
    camp = cat.campaigns.set_index("campaign_id")
    assert camp.loc["c1", "target_countries"] == ["US", "CA"]
    assert camp.loc["c2", "exclude_communities"] == ["c_news"] and camp.loc["c2", "target_countries"] == []
    assert pd.Timestamp(camp.loc["c1", "start_ts"]) == pd.Timestamp("2026-10-01T00:00:00")  # UTC
    assert pd.isna(camp.loc["c2", "start_ts"]) and pd.isna(camp.loc["c2", "daily_budget"])
    assert camp.loc["c2", "bid"] == 1.0 and camp.loc["c2", "bid_type"] == "cpm"  # defaults
    assert camp.loc["c1", "frequency_cap"] == 3 and camp.loc["c1", "age_max"] == 34
    assert camp.loc["c2", "spend_today"] == 0.0
    adv = cat.advertisers.set_index("advertiser_id")
    assert adv.loc["a2", "name"] == "a2"  # default: the id
    com = cat.communities.set_index("community_id")
    assert com.loc["c_news", "name"] == "c_news" and com.loc["c_news", "safety_tier"] == "sensitive"
    users = cat.users.set_index("user_id")
    assert users.loc["u1", "communities"] == ["c_hike", "c_news"] and users.loc["u2", "communities"] == []
    assert users.loc["u1", "signup_date"] == date(2024, 5, 17) and users.loc["u2", "signup_date"] is None
    assert users.loc["u2", "age_bucket"] == "unknown"
    imp = cat.impressions.set_index("impression_id")
    assert imp.loc["i1", "ts"] == pd.Timestamp("2026-10-14T18:03:00")
    assert imp.loc["i4", "ts"] == pd.Timestamp("2026-10-15T08:30:00.250000")
    assert imp.loc["i1", "clicked"] is True or imp.loc["i1", "clicked"] == True  # noqa: E712
    assert not imp.loc["i2", "clicked"]
    assert pd.isna(imp.loc["i2", "community_id"]) and imp.loc["i4", "device"] == "unknown"
    derived = [i for i in imp.index if i not in {"i1", "i2", "i4"}]
    assert len(derived) == 1 and derived[0].startswith("imp_")
    assert imp.loc[derived[0], "placement"] == "home_feed"


def test_reimport_is_idempotent_across_formats(engine, tmp_path):
    frames = typed_frames()
    ingest_directory(engine, write_dataset(frames, tmp_path / "csv", "csv"))
    before = snapshot(engine)
    for fmt in ("csv", "parquet"):
        report = ingest_directory(engine, write_dataset(frames, tmp_path / f"again_{fmt}", fmt))
        assert report.changed == 0, report
        assert report.tables["impressions"].unchanged == 4 and report.tables["ads"].unchanged == 3
    assert snapshot(engine) == before


def test_changed_catalog_updates_in_place(engine, tmp_path):
    frames = typed_frames()
    ingest_directory(engine, write_dataset(frames, tmp_path / "v1", "parquet"))
    ads = frames["ads"]
    ads.loc[ads.ad_id == "ad2", "title"] = "Budget app: 3 months free"
    frames["ads"] = pd.concat([ads[ads.ad_id != "ad3"], pd.DataFrame({"ad_id": ["ad9"], "title": ["New ad"]})])
    frames["campaigns"].loc[0, "bid"] = 3.0
    frames["campaigns"].at[1, "target_countries"] = ["DE"]
    report = ingest_directory(engine, write_dataset(frames, tmp_path / "v2", "csv"))
    a = report.tables["ads"]
    assert (a.inserted, a.updated, a.unchanged) == (1, 1, 1)
    c = report.tables["campaigns"]
    assert (c.inserted, c.updated, c.unchanged) == (0, 2, 0)
    assert report.tables["impressions"].unchanged == 4
    cat = load_catalog(engine)
    ads_db = cat.ads.set_index("ad_id")
    assert list(ads_db.index) == ["ad1", "ad2", "ad3", "ad9"]  # ad3 absent from v2: kept
    assert ads_db.loc["ad2", "title"] == "Budget app: 3 months free"
    camp = cat.campaigns.set_index("campaign_id")
    assert camp.loc["c1", "bid"] == 3.0 and camp.loc["c2", "target_countries"] == ["DE"]


def test_bare_rows_for_absent_optional_tables(engine, tmp_path):
    frames = typed_frames()
    subset = {"ads": frames["ads"], "impressions": frames["impressions"]}
    report = ingest_directory(engine, write_dataset(subset, tmp_path / "d", "csv"))
    bare = {n: c.created_bare for n, c in report.tables.items()}
    assert bare == {"advertisers": 2, "campaigns": 2, "ads": 0, "communities": 2, "users": 2, "impressions": 0}
    cat = load_catalog(engine)
    u = cat.users.set_index("user_id")
    assert u.loc["u1", "country"] == "unknown" and u.loc["u1", "communities"] == []
    c = cat.campaigns.set_index("campaign_id")
    assert c.loc["c1", "status"] == "active" and c.loc["c1", "advertiser_id"] == "c1"
    assert cat.communities.set_index("community_id").loc["c_hike", "safety_tier"] == "safe"
    # A later import with the real users updates the bare rows in place.
    report = ingest_directory(engine, write_dataset({"users": frames["users"]}, tmp_path / "u", "csv"))
    assert report.tables["users"].updated == 2
    assert load_catalog(engine).users.set_index("user_id").loc["u1", "country"] == "US"


def test_impressions_only_import_references_ads_in_the_database(engine, tmp_path):
    frames = typed_frames()
    ingest_directory(engine, write_dataset(frames, tmp_path / "all", "csv"))
    more = frames["impressions"].iloc[:1].copy()
    more["impression_id"] = "i5"
    report = ingest_directory(engine, write_dataset({"impressions": more}, tmp_path / "imp", "csv"))
    assert report.tables["impressions"].inserted == 1
    bad = more.assign(ad_id="ad_missing", impression_id="i6")
    with pytest.raises(ValidationError) as exc:
        ingest_directory(engine, write_dataset({"impressions": bad}, tmp_path / "bad", "csv"))
    assert "impressions.csv, column 'ad_id'" in str(exc.value) and "ad_missing" in str(exc.value)
    assert "include ads.csv or ads.parquet" in str(exc.value)


def test_numeric_ids_stay_text(sqlite_engine, tmp_path):
    d = tmp_path / "num"
    d.mkdir()
    (d / "ads.csv").write_text("ad_id,title\n12,First\n007,Second\n")
    (d / "impressions.csv").write_text("user_id,ad_id,ts,clicked\n5,12,2026-10-14T18:03:00,1\n5,007,2026-10-14,no\n")
    ingest_directory(sqlite_engine, d)
    cat = load_catalog(sqlite_engine)
    assert sorted(cat.ads["ad_id"]) == ["007", "12"] and list(cat.users["user_id"]) == ["5"]
    assert sorted(cat.impressions["clicked"].tolist()) == [False, True]
    p = tmp_path / "num_pq"
    p.mkdir()
    pd.DataFrame({"ad_id": [12, 13], "title": ["First", "Third"]}).to_parquet(p / "ads.parquet")
    pd.DataFrame({"user_id": [5.0, 6.0], "ad_id": [12, 13], "ts": ["2026-10-14T18:03:00"] * 2,
                  "community_id": [None, 4.0]}).to_parquet(p / "impressions.parquet")
    report = ingest_directory(sqlite_engine, p)
    assert report.tables["ads"].unchanged == 1 and report.tables["ads"].inserted == 1  # 12 == "12"
    cat = load_catalog(sqlite_engine)
    assert sorted(cat.users["user_id"]) == ["5", "6"] and "4" in set(cat.communities["community_id"])


def test_bool_spellings_and_timezones(sqlite_engine, tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    (d / "ads.csv").write_text("ad_id,title\na,T\n")
    rows = ["TRUE", "False", "yes", "No", "1", "0", ""]
    (d / "impressions.csv").write_text(
        "impression_id,user_id,ad_id,ts,clicked\n"
        + "".join(f"i{k},u,a,2026-10-14T12:00:00-05:00,{v}\n" for k, v in enumerate(rows)))
    ingest_directory(sqlite_engine, d)
    imp = load_catalog(sqlite_engine).impressions.set_index("impression_id").sort_index()
    assert imp["clicked"].astype(bool).tolist() == [True, False, True, False, True, False, False]
    assert (imp["ts"] == pd.Timestamp("2026-10-14T17:00:00")).all()


def test_derived_impression_ids_are_deterministic(sqlite_engine, tmp_path):
    d = tmp_path / "dup"
    d.mkdir()
    (d / "ads.csv").write_text("ad_id,title\na,T\n")
    # Two identical rows are two impressions; re-importing keeps exactly two.
    (d / "impressions.csv").write_text("user_id,ad_id,ts\nu,a,2026-10-14T12:00:00\nu,a,2026-10-14T12:00:00\n")
    assert ingest_directory(sqlite_engine, d).tables["impressions"].inserted == 2
    assert ingest_directory(sqlite_engine, d).tables["impressions"].unchanged == 2
    assert table_counts(sqlite_engine)["impressions"] == 2


# ---- validation errors -----------------------------------------------------------------------

def _edit(frames, table, column, row, value):
    df = frames[table].astype(object)
    df.at[row, column] = value
    frames[table] = df


def _errors(engine, frames, tmp_path, fmt="csv") -> str:
    d = write_dataset(frames, tmp_path / f"bad_{fmt}", fmt)
    before = snapshot(engine)
    with pytest.raises(ValidationError) as exc:
        ingest_directory(engine, d)
    assert snapshot(engine) == before
    return str(exc.value)


CASES = {
    # name: (edit, [substrings the message must contain])
    "non-numeric bid": (lambda f: _edit(f, "campaigns", "bid", 1, "cheap"),
                        ["campaigns.csv, column 'bid'", "row 2 (line 3)", "'cheap'", "not a number", "Fix:"]),
    "negative budget": (lambda f: _edit(f, "campaigns", "daily_budget", 0, -5),
                        ["campaigns.csv, column 'daily_budget'", "row 1 (line 2)", "negative", "Fix: use a number >= 0"]),
    "age range": (lambda f: (_edit(f, "campaigns", "age_min", 0, 40), _edit(f, "campaigns", "age_max", 0, 20)),
                  ["campaigns.csv, column 'age_min'", "row 1 (line 2)", "'40 > 20'", "Fix: swap"]),
    "duplicate ad ids": (lambda f: _edit(f, "ads", "ad_id", 2, "ad1"),
                         ["ads.csv, column 'ad_id'", "duplicate id", "row 1 (line 2) 'ad1'", "row 3 (line 4) 'ad1'",
                          "Fix: each ad_id must appear once"]),
    "unknown ad": (lambda f: _edit(f, "impressions", "ad_id", 3, "ad404"),
                   ["impressions.csv, column 'ad_id'", "row 4 (line 5) 'ad404'", "not found in ads.csv",
                    "Fix: add these ids to ads.csv"]),
    "unknown campaign": (lambda f: _edit(f, "ads", "campaign_id", 0, "c404"),
                         ["ads.csv, column 'campaign_id'", "row 1 (line 2) 'c404'", "campaigns.csv"]),
    "unknown advertiser": (lambda f: _edit(f, "campaigns", "advertiser_id", 1, "a404"),
                           ["campaigns.csv, column 'advertiser_id'", "row 2 (line 3) 'a404'", "advertisers.csv"]),
    "unknown community": (lambda f: _edit(f, "impressions", "community_id", 0, "c_404"),
                          ["impressions.csv, column 'community_id'", "row 1 (line 2) 'c_404'", "communities.csv"]),
    "unknown user": (lambda f: _edit(f, "impressions", "user_id", 1, "u404"),
                     ["impressions.csv, column 'user_id'", "row 2 (line 3) 'u404'", "users.csv"]),
    "empty title": (lambda f: _edit(f, "ads", "title", 1, "  "),
                    ["ads.csv, column 'title'", "row 2 (line 3) empty", "Fix: give every ad a non-empty title"]),
    "bad timestamp": (lambda f: _edit(f, "impressions", "ts", 2, "yesterday"),
                      ["impressions.csv, column 'ts'", "row 3 (line 4) 'yesterday'", "ISO 8601", "Fix: write e.g."]),
    "bad start_ts": (lambda f: _edit(f, "campaigns", "start_ts", 0, "2026-13-45"),
                     ["campaigns.csv, column 'start_ts'", "'2026-13-45'", "ISO 8601"]),
    "unknown enum": (lambda f: _edit(f, "impressions", "placement", 0, "sidebar"),
                     ["impressions.csv, column 'placement'", "row 1 (line 2) 'sidebar'",
                      "Fix: use one of: home_feed, community_feed, conversation"]),
    "unknown status": (lambda f: _edit(f, "campaigns", "status", 0, "running"),
                       ["campaigns.csv, column 'status'", "'running'", "active, paused, ended"]),
    "bad bool": (lambda f: _edit(f, "impressions", "clicked", 0, "maybe"),
                 ["impressions.csv, column 'clicked'", "row 1 (line 2) 'maybe'", "true/false, 1/0 or yes/no"]),
    "missing column": (lambda f: f.__setitem__("impressions", f["impressions"].drop(columns=["ts"])),
                       ["impressions.csv: required column 'ts' is missing", "Fix: add a 'ts' column"]),
    "missing file": (lambda f: f.pop("ads"),
                     ["required file ads.csv (or ads.parquet) is missing", "Fix: add it"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validation_error_names_file_row_column_and_fix(case, sqlite_engine, tmp_path):
    ingest_directory(sqlite_engine, write_dataset(typed_frames(), tmp_path / "good", "csv"))
    frames = typed_frames()
    edit, expected = CASES[case]
    edit(frames)
    if case in ("missing file", "unknown ad"):  # ads are known from the database otherwise
        sqlite_engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    msg = _errors(sqlite_engine, frames, tmp_path)
    for s in expected:
        assert s in msg, f"{s!r} not in:\n{msg}"


def test_all_problems_are_collected(sqlite_engine, tmp_path):
    frames = typed_frames()
    for table, col, row, value in [("campaigns", "bid", 0, "x"), ("ads", "title", 0, ""),
                                   ("impressions", "ts", 1, "soon"), ("users", "age_bucket", 0, "30ish"),
                                   ("communities", "safety_tier", 1, "spicy"), ("advertisers", "brand_safety", 0, "?")]:
        _edit(frames, table, col, row, value)
    msg = _errors(sqlite_engine, frames, tmp_path)
    assert msg.startswith("6 problem(s) found; nothing was written")
    assert "'30ish'" in msg and "'spicy'" in msg and "65+, unknown" in msg


def test_parquet_non_text_copy_and_rows(sqlite_engine, tmp_path):
    frames = typed_frames()
    frames["ads"]["title"] = [1.5, 2.0, 3.0]  # a Parquet column has one type
    frames["ads"]["body"] = [["a list"], [], None]
    msg = _errors(sqlite_engine, frames, tmp_path, fmt="parquet")
    assert "ads.parquet, column 'title': value is not text in 3 rows: row 1 1.5, row 2 2.0, row 3 3.0" in msg
    assert "ads.parquet, column 'body': value is not text in 2 rows: row 1 ['a list'], row 2 []" in msg
    assert "line" not in msg  # Parquet has rows, not lines


def test_csv_line_numbers_follow_multiline_cells(sqlite_engine, tmp_path):
    d = tmp_path / "ml"
    d.mkdir()
    (d / "ads.csv").write_text('ad_id,title,body\na,T,"two\nlines"\nb,U,x\nc,V,x\n\nd,W,x\n')
    (d / "impressions.csv").write_text("user_id,ad_id,ts,placement\nu,a,2026-10-14,home_feed\nu,d,2026-10-14,feed\n")
    with pytest.raises(ValidationError) as exc:
        ingest_directory(sqlite_engine, d)
    assert "impressions.csv, column 'placement'" in str(exc.value)
    frames = read_dataset(d)
    assert len(frames["ads"]) == 4
    frames["ads"].loc[3, "title"] = ""
    with pytest.raises(ValidationError) as exc:
        validate_dataset(frames, d)
    assert "row 4 (line 7)" in str(exc.value)  # the body spans lines 2-3; line 6 is blank


def test_both_formats_and_ignored_files(sqlite_engine, tmp_path):
    d = write_dataset(typed_frames(), tmp_path / "both", "csv")
    typed_frames()["ads"].to_parquet(d / "ads.parquet")
    with pytest.raises(ValidationError) as exc:
        ingest_directory(sqlite_engine, d)
    assert "both ads.parquet and ads.csv" in str(exc.value) and "Fix: keep only one" in str(exc.value)
    (d / "ads.parquet").unlink()
    (d / "notes.txt").write_text("hello")
    frames = typed_frames()
    frames["ads"]["color"] = "red"
    write_dataset({"ads": frames["ads"]}, d, "csv")
    report = ingest_directory(sqlite_engine, d)
    assert any("notes.txt" in w for w in report.warnings)
    assert any("ads.csv: kept extra column(s) color" in w for w in report.warnings)  # for funnel rules
    from core.store.catalog import load_catalog
    assert set(load_catalog(sqlite_engine).extra["ads"]["color"]) == {"red"}


def test_unreadable_files_are_reported_together(sqlite_engine, tmp_path):
    d = write_dataset(typed_frames(), tmp_path / "d", "csv")
    (d / "users.csv").write_text("")
    (d / "communities.csv").unlink()
    (d / "communities.parquet").write_bytes(b"not parquet at all")
    (d / "ads.csv").write_bytes("\ufeffad_id,title\nad1,Caf\u00e9 deals\nad2,B\nad3,C\n".encode())
    with pytest.raises(ValidationError) as exc:
        ingest_directory(sqlite_engine, d)
    msg = str(exc.value)
    assert "users.csv: the file is empty. Fix: write a header line" in msg
    assert "communities.parquet: cannot be read" in msg and "must be a valid Parquet file" in msg
    assert "ads.csv" not in msg  # UTF-8 with a byte-order mark is fine


def test_missing_directory(sqlite_engine, tmp_path):
    with pytest.raises(ValidationError, match="not a directory"):
        ingest_directory(sqlite_engine, tmp_path / "nope")


# ---- one transaction -------------------------------------------------------------------------

def test_failure_mid_write_changes_nothing(engine, tmp_path):
    frames = typed_frames()
    ingest_directory(engine, write_dataset({k: frames[k] for k in ("ads", "impressions")}, tmp_path / "a", "csv"))
    before = snapshot(engine)
    frames["ads"].loc[0, "title"] = "Changed title"

    def fail_at_impressions(fraction: float, step: str) -> None:
        if step == "write impressions":
            raise RuntimeError("injected failure")

    frames["impressions"]["impression_id"] = ["n1", "n2", "n3", "n4"]
    with pytest.raises(RuntimeError, match="injected"):
        ingest_directory(engine, write_dataset(frames, tmp_path / "b", "csv"), fail_at_impressions)
    assert snapshot(engine) == before


def test_replace_deletes_old_rows_in_the_same_transaction(engine, tmp_path):
    frames = typed_frames()
    ingest_directory(engine, write_dataset(frames, tmp_path / "a", "csv"))
    small = {"ads": frames["ads"].iloc[:1], "impressions": frames["impressions"].iloc[:1]}
    report = ingest_directory(engine, write_dataset(small, tmp_path / "b", "csv"), replace=True)
    assert report.tables["ads"].inserted == 1
    assert table_counts(engine) == {"advertisers": 1, "campaigns": 1, "ads": 1, "communities": 1,
                                    "users": 1, "impressions": 1}


# ---- CLI, docs, sample -----------------------------------------------------------------------

def test_cli_ingest_json_and_error_exit(tmp_path, capsys):
    d = write_dataset(typed_frames(), tmp_path / "d", "csv")
    ws = str(tmp_path / "ws")
    assert main(["--workspace", ws, "ingest", str(d), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["report"]["tables"]["impressions"]["inserted"] == 4 and out["counts"]["ads"] == 3
    assert main(["--workspace", ws, "ingest", str(d)]) == 0
    assert "unchanged" in capsys.readouterr().out
    (d / "ads.csv").write_text("ad_id,title\nad1,\n")
    assert main(["--workspace", ws, "ingest", str(d)]) == 2
    err = capsys.readouterr().err
    assert "ads.csv, column 'title'" in err and "nothing was written" in err


def test_readme_contains_the_rendered_schema():
    readme = (REPO / "data" / "README.md").read_text()
    assert render_markdown().strip() in readme, "paste `python -m core.data.schema` output into data/README.md"


def test_sample_dataset_ingests(engine):
    sample = REPO / "data" / "sample"
    if not (sample / "ads.csv").exists() and not (sample / "ads.parquet").exists():
        pytest.skip("data/sample/ has no dataset yet")
    report = ingest_directory(engine, sample)
    assert report.tables["ads"].inserted > 0 and report.tables["impressions"].inserted > 0
    assert ingest_directory(engine, sample).changed == 0


def test_sqlite_fast_datetime_text_equals_sqlalchemys():
    from sqlalchemy.dialects import sqlite

    from core.data.ingest_write import sqlite_datetimes
    from core.store.models import Impression

    values = pd.Series(pd.to_datetime(["2026-10-14T18:03:00", None, "1999-01-02T03:04:05.123456"], format="ISO8601"))
    dialect = sqlite.dialect()
    proc = Impression.__table__.c.ts.type.dialect_impl(dialect).bind_processor(dialect)
    expected = [None if pd.isna(v) else proc(v.to_pydatetime()) for v in values]
    assert sqlite_datetimes(values) == expected


def _schema_objects(engine) -> dict:
    from sqlalchemy import inspect

    insp = inspect(engine)
    return {t.name: (sorted(i["name"] for i in insp.get_indexes(t.name)),
                     sorted(str(fk["constrained_columns"]) for fk in insp.get_foreign_keys(t.name)))
            for t in TABLES}


def test_bulk_load_mode_restores_indexes_and_foreign_keys(engine, tmp_path, monkeypatch):
    import core.data.ingest_write

    monkeypatch.setattr(core.data.ingest_write, "BULK_MIN_ROWS", 0)  # tiny data takes the bulk path
    objects = _schema_objects(engine)
    assert objects["impressions"][0] == ["ix_impressions_ad_id", "ix_impressions_user_ts"]
    frames = typed_frames()
    d = write_dataset(frames, tmp_path / "a", "csv")

    def fail_late(fraction: float, step: str) -> None:
        if step == "write impressions" and fraction > 0.99:
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError):
        ingest_directory(engine, d, fail_late)
    assert table_counts(engine)["ads"] == 0 and _schema_objects(engine) == objects
    ingest_directory(engine, d)
    assert _schema_objects(engine) == objects
    assert table_counts(engine)["impressions"] == 4
    assert ingest_directory(engine, d).changed == 0


# ---- demo pipeline ---------------------------------------------------------------------------

def test_build_demo_runs_named_timed_steps(settings, monkeypatch):
    import core.demo.pipeline as pl
    from core.common.errors import AdLensError

    def generate(ctx, tick):
        tick(0.5)
        write_dataset(typed_frames(), ctx.settings.demo_data_dir, "csv")
        return {"ads": 3}

    monkeypatch.setattr(pl, "DEMO_STEPS", [pl.DemoStep("generate", generate, 1.0),
                                           pl.DemoStep("ingest", pl._ingest, 1.0)])
    seen: list[tuple[str, float]] = []
    assert not pl.workspace_has_demo(settings)
    report = pl.build_demo(settings, n_ads=3, n_users=2, progress=lambda f, s: seen.append((s, f)))
    assert [s.name for s in report.steps] == ["generate", "ingest"] and report.steps[0].detail == {"ads": 3}
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and ("generate", 0.25) in seen
    assert {s for s, _ in seen} == {"generate", "ingest", "done"}
    assert report.counts["ads"] == 3 and report.ingest.tables["ads"].inserted == 3
    assert pl.workspace_has_demo(settings) and pl.read_marker(settings)["status"] == "complete"
    assert pl.build_demo(settings, n_ads=3, n_users=2).ingest.changed == 0  # same parameters
    with pytest.raises(AdLensError, match="--replace"):
        pl.build_demo(settings, n_ads=4, n_users=2)
    # A step added by a later version makes the old build unfinished, so --if-missing completes it.
    monkeypatch.setattr(pl, "DEMO_STEPS", [*pl.DEMO_STEPS, pl.DemoStep("embed", lambda ctx, tick: {})])
    state = pl.workspace_state(settings)
    assert not state.has_demo and state.interrupted_demo and not state.has_other_data


def test_demo_if_missing_leaves_imported_data_alone(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    assert main(["--workspace", ws, "ingest", str(write_dataset(typed_frames(), tmp_path / "d", "csv"))]) == 0
    capsys.readouterr()
    assert main(["--workspace", ws, "demo", "--if-missing", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped"] and "imported" in out["reason"]
    assert table_counts(make_engine(load_settings(workspace=ws).db_url))["ads"] == 3


@pytest.mark.slow
def test_demo_command_end_to_end(demo_workspace, capsys):
    """`adlens demo --json` (the shared demo workspace is built by that command: conftest.py) reports
    its steps and the rows it imported; `--if-missing` then leaves the workspace alone."""
    from conftest import DEMO_ADS, DEMO_USERS

    from core.index.versions import load_version

    report = demo_workspace.demo_report
    assert [s["name"] for s in report["steps"]][:3] == ["generate", "write files", "ingest"]
    # the last step left every version's fitted pCTR model in the cache for the dashboard
    assert report["steps"][-1]["name"] == "warm caches"
    warm = report["steps"][-1]["detail"]
    assert sorted(set(warm) - {"reports"}) == sorted(demo_workspace.versions)
    assert {"health_s", "parity_s"} <= set(warm["reports"])  # saved for the pages' first views
    cache = load_settings(workspace=demo_workspace.path).cache_dir
    for name in demo_workspace.versions:
        checksum = load_version(load_settings(workspace=demo_workspace.path), name).checksum
        assert list(cache.glob(f"pctr-{checksum[:12]}-*.json")), name
    counts = report["counts"]
    assert counts["ads"] == DEMO_ADS and counts["users"] == DEMO_USERS and counts["impressions"] > 3_000
    settings = load_settings(workspace=demo_workspace.path)
    assert table_counts(make_engine(settings.db_url)) == counts  # the retitle after it updated, added nothing
    assert sorted(p.name for p in settings.demo_data_dir.glob("*.parquet")) == sorted(
        f"{t.name}.parquet" for t in TABLES)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in settings.versions_dir.iterdir())
    assert main(["--workspace", str(demo_workspace.path), "demo", "--if-missing"]) == 0
    assert "already has a demo" in capsys.readouterr().out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in settings.versions_dir.iterdir()) == before


def test_data_revision_counts_changing_imports_only(engine, tmp_path):
    """Regression: an update-only import (same row counts) must still invalidate the dashboard's
    catalog cache, which keys on table counts plus this revision."""
    from core.store.catalog import data_revision

    frames = typed_frames()
    assert data_revision(engine) == 0
    ingest_directory(engine, write_dataset(frames, tmp_path / "v1", "csv"))
    assert data_revision(engine) == 1
    ingest_directory(engine, write_dataset(frames, tmp_path / "same", "csv"))  # nothing changed
    assert data_revision(engine) == 1
    frames["ads"].loc[frames["ads"].ad_id == "ad1", "title"] = "A <b>new</b> title"
    before = table_counts(engine)
    ingest_directory(engine, write_dataset(frames, tmp_path / "edit", "csv"))
    assert table_counts(engine) == before and data_revision(engine) == 2
