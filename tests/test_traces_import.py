"""core/traces: `adlens import-traces` (validation, idempotence, unknown names, missing ids,
atomicity) and the logged-request API, on SQLite and PostgreSQL (the `db_url` fixture)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from core.cli import main
from core.common.errors import NotFoundError, ValidationError
from core.data.ingest import ingest_directory
from core.store.db import make_engine
from core.store.models import LoggedRequest, TraceSet
from core.store.settings import load_settings
from core.traces import importer, read_files
from core.traces.importer import import_traces
from core.traces.logged import iter_logged_requests, list_logged_requests, load_logged_request
from core.traces.schema import render_trace_markdown

REPO = Path(__file__).resolve().parents[1]


def requests_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": ["r2", "r1", "r3"], "user_id": ["u1", "u2", "u1"],
        "ts": ["2026-10-14T18:03:00", "2026-10-14T19:00:00", "2026-10-15T08:00:00+02:00"],
        "community_id": ["c_hiking", "", ""], "placement": ["community_feed", "home_feed", "home_feed"],
        "device": ["ios", "android", "desktop"], "country": ["US", "CA", "US"], "experiment": ["A", "B", ""],
    })


def candidates_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": ["r1", "r2", "r1", "r2", "r1", "r3"],
        "ad_id": ["a1", "a2", "a3", "a1", "a2", "a1"],
        "sources": ["two_tower|prod_lookalike", "targeting", "two_tower", "two_tower", "ease", "popular_in_context"],
        "stage_reached": ["slate", "retrieved", "eligible", "ranked", "Slate", "slate"],
        "reasons": ["", "PACING_THROTTLE|GEO_MISMATCH", "BELOW_CUTOFF", "ADVERTISER_CAP", "", ""],
        "source_ranks": ["1|3", "2", "5", "", "7", ""], "source_scores": ["0.9|0.1", "", "", "", "", ""],
        "early_score": ["0.1", "", "0.05", "0.2", "0.3", ""], "bid": ["1", "2", "", "3", "1.5", ""],
        "ecpm": ["", "", "", "", "", ""], "slate_position": ["2", "", "", "", "1", "1"],
    })


def write(directory: Path, fmt: str = "csv", requests: pd.DataFrame | None = None,
          candidates: pd.DataFrame | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in (("requests", requests if requests is not None else requests_frame()),
                        ("trace_candidates", candidates if candidates is not None else candidates_frame())):
        if fmt == "csv":
            frame.to_csv(directory / f"{name}.csv", index=False)
        else:
            frame.to_parquet(directory / f"{name}.parquet", index=False)
    return directory


def typed_candidates() -> pa.Table:
    """candidates_frame as a typed Parquet table (lists as lists, numbers as numbers)."""
    f = candidates_frame()
    split = lambda s: [x for x in s.split("|") if x]  # noqa: E731
    num = lambda s: float(s) if s else None  # noqa: E731
    return pa.table({
        "request_id": f["request_id"], "ad_id": f["ad_id"],
        "sources": pa.array([split(s) for s in f["sources"]], pa.list_(pa.string())),
        "stage_reached": f["stage_reached"],
        "reasons": pa.array([split(s) for s in f["reasons"]], pa.list_(pa.string())),
        "source_ranks": pa.array([[int(x) for x in split(s)] for s in f["source_ranks"]], pa.list_(pa.int64())),
        "source_scores": pa.array([[float(x) for x in split(s)] for s in f["source_scores"]], pa.list_(pa.float64())),
        "early_score": pa.array([num(s) for s in f["early_score"]], pa.float64()),
        "bid": pa.array([num(s) for s in f["bid"]], pa.float64()),
        "ecpm": pa.array([None] * len(f), pa.float64()),
        "slate_position": pa.array([int(s) if s else None for s in f["slate_position"]], pa.int64()),
    })


@pytest.fixture
def ctx(tmp_path, db_url):
    settings = load_settings(workspace=tmp_path / "ws", db_url=db_url)
    engine = make_engine(db_url)
    yield settings, engine
    engine.dispose()


def _stored(settings, engine) -> tuple[int, int, list[str]]:
    with engine.connect() as conn:
        n_req = conn.execute(select(func.count()).select_from(LoggedRequest)).scalar_one()
        n_sets = conn.execute(select(func.count()).select_from(TraceSet)).scalar_one()
    root = settings.traces_dir
    return n_req, n_sets, sorted(p.name for p in root.iterdir()) if root.is_dir() else []


# ---- round trip ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_import_then_open_one_request(ctx, tmp_path, fmt):
    settings, engine = ctx
    rep = import_traces(settings, engine, write(tmp_path / "d", fmt))
    assert (rep.status, rep.n_requests, rep.n_candidates) == ("imported", 3, 6)
    assert rep.stages == {"slate": 3, "retrieved": 1, "eligible": 1, "ranked": 1}
    assert rep.extra_context == ["experiment"]
    lr = load_logged_request(settings, engine, "r1")
    assert lr.request.user_id == "u2" and lr.request.community_id is None and lr.request.device == "android"
    assert lr.request.ts == datetime(2026, 10, 14, 19, 0) and lr.extra == {"experiment": "B"}
    c = lr.candidates
    assert c["ad_id"].tolist() == ["a1", "a3", "a2"]  # the log's order within the request
    assert c["sources"].tolist() == [["two_tower", "prod_lookalike"], ["two_tower"], ["ease"]]
    assert c["stage_reached"].tolist() == ["slate", "eligible", "slate"]  # allowed values lower-cased
    assert c["source_ranks"].tolist() == [[1, 3], [5], [7]] and c["source_scores"].tolist()[0] == [0.9, 0.1]
    assert c["reasons"].tolist() == [[], ["BELOW_CUTOFF"], []]
    assert c["early_score"].tolist() == [0.1, 0.05, 0.3] and pd.isna(c["bid"].iloc[1])
    assert lr.slate()["ad_id"].tolist() == ["a2", "a1"]  # by slate position
    assert lr.stage_counts() == {"retrieved": 3, "eligible": 3, "ranked": 2, "slate": 2}
    r3 = load_logged_request(settings, engine, "r3")  # +02:00 converted to UTC, empty extra dropped
    assert r3.request.ts == datetime(2026, 10, 15, 6, 0) and r3.extra == {}
    assert load_logged_request(settings, engine, "r2").candidates["ad_id"].tolist() == ["a2", "a1"]


def test_list_by_user_time_and_ids_and_iterate(ctx, tmp_path):
    settings, engine = ctx
    import_traces(settings, engine, write(tmp_path / "d"))
    assert list_logged_requests(engine, user_id="u1")["request_id"].tolist() == ["r2", "r3"]
    assert list_logged_requests(engine, start="2026-10-14T18:30:00", end="2026-10-15")["request_id"].tolist() == ["r1"]
    by_id = list_logged_requests(engine, request_ids=["r3", "r1"])
    assert by_id["request_id"].tolist() == ["r1", "r3"] and by_id["n_candidates"].tolist() == [3, 1]
    got = {lr.request_id: lr.candidates["ad_id"].tolist() for lr in iter_logged_requests(settings, engine, ["r3", "r1", "r2"])}
    assert got == {"r1": ["a1", "a3", "a2"], "r2": ["a2", "a1"], "r3": ["a1"]}
    with pytest.raises(NotFoundError, match="no logged request 'r9'"):
        load_logged_request(settings, engine, "r9")


def test_unknown_sources_and_reason_codes_survive_verbatim(ctx, tmp_path):
    settings, engine = ctx
    rep = import_traces(settings, engine, write(tmp_path / "d"))
    assert rep.unknown_sources == ["prod_lookalike"] and rep.unknown_reasons == ["PACING_THROTTLE"]
    assert rep.sources["prod_lookalike"] == 1 and rep.reasons["PACING_THROTTLE"] == 1
    assert load_logged_request(settings, engine, "r2").candidates["reasons"].iloc[0] == ["PACING_THROTTLE", "GEO_MISMATCH"]
    assert load_logged_request(settings, engine, "r1").unknown_sources() == ["prod_lookalike"]


def test_ads_and_users_the_catalog_lacks_are_reported(ctx, tmp_path):
    settings, engine = ctx
    cat = tmp_path / "catalog"
    cat.mkdir()
    pd.DataFrame({"ad_id": ["a1"], "title": ["One"]}).to_csv(cat / "ads.csv", index=False)
    pd.DataFrame({"user_id": ["u1"], "ad_id": ["a1"], "ts": ["2026-10-01"]}).to_csv(cat / "impressions.csv", index=False)
    ingest_directory(engine, cat)
    rep = import_traces(settings, engine, write(tmp_path / "d"))
    assert (rep.missing_ads.ids, rep.missing_ads.rows, rep.missing_ads.examples) == (2, 3, ["a2", "a3"])
    assert (rep.missing_users.ids, rep.missing_users.rows, rep.missing_users.examples) == (1, 1, ["u2"])
    assert load_logged_request(settings, engine, "r1").candidates["ad_id"].tolist() == ["a1", "a3", "a2"]  # kept


# ---- re-imports ---------------------------------------------------------------------------------
def test_reimport_is_idempotent_also_across_formats(ctx, tmp_path):
    settings, engine = ctx
    first = import_traces(settings, engine, write(tmp_path / "csv"))
    before = _stored(settings, engine)
    assert import_traces(settings, engine, tmp_path / "csv").status == "unchanged"
    d = tmp_path / "pq"
    d.mkdir()
    requests_frame().to_parquet(d / "requests.parquet", index=False)
    pq.write_table(typed_candidates(), d / "trace_candidates.parquet")
    again = import_traces(settings, engine, d)
    assert (again.status, again.set_id) == ("unchanged", first.set_id)
    assert _stored(settings, engine) == before == (3, 1, [first.set_id])


def test_other_content_for_imported_requests_is_refused_unless_replace(ctx, tmp_path):
    settings, engine = ctx
    first = import_traces(settings, engine, write(tmp_path / "a"))
    changed = candidates_frame().assign(bid=["9"] * 6)
    with pytest.raises(ValidationError, match=r"requests.csv: 3 request id\(s\) were already imported"):
        import_traces(settings, engine, write(tmp_path / "b", candidates=changed))
    assert _stored(settings, engine) == (3, 1, [first.set_id])
    rep = import_traces(settings, engine, tmp_path / "b", replace=True)
    assert rep.replaced_sets == [first.set_id] and _stored(settings, engine) == (3, 1, [rep.set_id])
    assert load_logged_request(settings, engine, "r1").candidates["bid"].tolist() == [9.0] * 3
    new = requests_frame().assign(request_id=["r7", "r8", "r9"])
    more = candidates_frame().assign(request_id=["r8", "r7", "r8", "r7", "r8", "r9"])
    added = import_traces(settings, engine, write(tmp_path / "c", requests=new, candidates=more))
    assert added.status == "imported" and _stored(settings, engine)[:2] == (6, 2)


def test_failed_registration_leaves_nothing(ctx, tmp_path, monkeypatch):
    settings, engine = ctx

    def boom(*a, **k):
        raise RuntimeError("database went away")

    monkeypatch.setattr(importer, "_insert", boom)
    with pytest.raises(RuntimeError):
        import_traces(settings, engine, write(tmp_path / "d"))
    assert _stored(settings, engine) == (0, 0, [])


# ---- validation ---------------------------------------------------------------------------------
def _bad(column: str, row: int, value: str, table: str = "candidates") -> dict:
    return {"table": table, "column": column, "row": row, "value": value}


BAD = {
    "ts": (_bad("ts", 1, "yesterday", "requests"), "requests.csv, column 'ts': value is not an ISO 8601 timestamp in 1 row: row 2 (line 3)"),
    "placement": (_bad("placement", 0, "sidebar", "requests"), "requests.csv, column 'placement': value is not allowed"),
    "stage": (_bad("stage_reached", 3, "shown"), "trace_candidates.csv, column 'stage_reached': value is not allowed in 1 row: row 4 (line 5) 'shown'"),
    "request": (_bad("request_id", 2, "r404"), "trace_candidates.csv, column 'request_id': id not found in requests.csv in 1 row: row 3 (line 4) 'r404'"),
    "ranks": (_bad("source_ranks", 0, "1|x"), "trace_candidates.csv, column 'source_ranks': value is not a list of whole numbers >= 1 in 1 row: row 1 (line 2)"),
    "aligned": (_bad("source_scores", 0, "0.5"), "column 'source_scores': number of items differs from the number of sources in 1 row: row 1 (line 2)"),
    "no_source": (_bad("sources", 5, ""), "trace_candidates.csv, column 'sources': required value is empty in 1 row: row 6 (line 7)"),
    "json": (_bad("sources", 1, "['two_tower']"), "trace_candidates.csv, column 'sources': value is not a list in 1 row: row 2 (line 3)"),
    "bid": (_bad("bid", 1, "-2"), "trace_candidates.csv, column 'bid': value is negative in 1 row: row 2 (line 3)"),
    "score": (_bad("early_score", 4, "$3"), "trace_candidates.csv, column 'early_score': value is not a number in 1 row: row 5 (line 6) '$3'"),
    "position": (_bad("slate_position", 0, "1.5"), "trace_candidates.csv, column 'slate_position': value is not a whole number in 1 row: row 1 (line 2)"),
    "duplicate": (_bad("ad_id", 2, "a1"), "trace_candidates.csv, column 'ad_id': duplicate candidate (the same request_id / ad_id twice) in 2 rows: row 1 (line 2) 'r1 / a1', row 3 (line 4) 'r1 / a1'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_file_is_named_with_row_and_column_and_nothing_is_written(ctx, tmp_path, case):
    settings, engine = ctx
    bad, message = BAD[case]
    req, cand = requests_frame(), candidates_frame()
    frame = req if bad["table"] == "requests" else cand
    frame.loc[bad["row"], bad["column"]] = bad["value"]
    with pytest.raises(ValidationError) as err:
        import_traces(settings, engine, write(tmp_path / "d", requests=req, candidates=cand))
    assert message in str(err.value) and "nothing was written" in str(err.value)
    assert _stored(settings, engine) == (0, 0, [])  # no rows, no set folder, no staging left


def test_missing_columns_and_files_and_chunked_row_numbers(ctx, tmp_path, monkeypatch):
    settings, engine = ctx
    d = write(tmp_path / "d", candidates=candidates_frame().drop(columns=["ad_id"]))
    with pytest.raises(ValidationError, match="trace_candidates.csv: required column 'ad_id' is missing"):
        import_traces(settings, engine, d)
    (d / "trace_candidates.csv").unlink()
    with pytest.raises(ValidationError, match=r"required file trace_candidates.csv \(or trace_candidates.parquet\)"):
        import_traces(settings, engine, d)
    requests_frame().to_parquet(d / "requests.parquet", index=False)  # now beside requests.csv
    with pytest.raises(ValidationError) as err:
        import_traces(settings, engine, d)
    assert "both requests.parquet and requests.csv are present" in str(err.value)
    assert "required file requests.csv" not in str(err.value)  # present twice is not missing
    (d / "requests.parquet").unlink()
    monkeypatch.setattr(read_files, "CHUNK_ROWS", 2)  # rows counted across chunks
    cand = candidates_frame()
    cand.loc[4, "bid"] = "lots"
    with pytest.raises(ValidationError, match=r"column 'bid': value is not a number in 1 row: row 5 \(line 6\)"):
        import_traces(settings, engine, write(tmp_path / "e", candidates=cand))
    t = typed_candidates()  # Parquet: typed values are checked the same way, rows without lines
    t = t.set_column(t.schema.get_field_index("source_ranks"), "source_ranks",
                     pa.array([[1, 0], [2], [5], [], [7], []], pa.list_(pa.int64())))
    p = tmp_path / "p"
    p.mkdir()
    requests_frame().to_parquet(p / "requests.parquet", index=False)
    pq.write_table(t, p / "trace_candidates.parquet")
    with pytest.raises(ValidationError, match=r"trace_candidates.parquet, column 'source_ranks': value is not a list "
                                              r"of whole numbers >= 1 in 1 row: row 1 \[1, 0\]"):
        import_traces(settings, engine, p)
    assert _stored(settings, engine) == (0, 0, [])


# ---- CLI and docs ---------------------------------------------------------------------------------
def test_cli_import_traces_and_logged(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    d = write(tmp_path / "d")
    assert main(["--workspace", ws, "import-traces", str(d), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_candidates"] == 6 and out["unknown_sources"] == ["prod_lookalike"]
    assert main(["--workspace", ws, "import-traces", str(d)]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert main(["--workspace", ws, "logged", "--user", "u1"]) == 0
    assert "r3" in capsys.readouterr().out
    assert main(["--workspace", ws, "logged", "--verify"]) == 0
    assert "1 trace set(s) verified" in capsys.readouterr().out
    assert main(["--workspace", ws, "logged", "--request", "r1"]) == 0
    shown = capsys.readouterr().out
    assert "two_tower|prod_lookalike" in shown and "experiment=B" in shown
    (d / "trace_candidates.csv").write_text("request_id,ad_id,sources,stage_reached\nr1,a1,two_tower,won\n")
    assert main(["--workspace", ws, "import-traces", str(d), "--replace"]) == 2
    err = capsys.readouterr().err
    assert "trace_candidates.csv, column 'stage_reached'" in err and "nothing was written" in err
    assert main(["--workspace", ws, "logged", "--request", "nope"]) == 2


def test_readme_documents_the_trace_format():
    readme = (REPO / "data" / "README.md").read_text()
    assert render_trace_markdown().strip() in readme, "paste `python -m core.traces.schema` into data/README.md"


def test_readme_worked_example_imports(ctx, tmp_path):
    settings, engine = ctx
    readme = (REPO / "data" / "README.md").read_text()
    d = tmp_path / "example"
    d.mkdir()
    for name in ("requests", "trace_candidates"):
        block = readme.split(f"<!-- example {name}.csv -->\n```csv\n", 1)[1].split("```", 1)[0]
        (d / f"{name}.csv").write_text(block)
    rep = import_traces(settings, engine, d)
    assert (rep.n_requests, rep.n_candidates, rep.extra_context) == (2, 5, ["app_version"])
    assert rep.unknown_sources == ["prod_lookalike"] and rep.unknown_reasons == ["PACING_THROTTLE"]
    assert rep.stages == {"slate": 2, "retrieved": 2, "ranked": 1} and rep.sources["two_tower"] == 3
    assert (rep.missing_ads.ids, rep.missing_users.examples) == (4, ["u_000042"])  # the set id varies with pyarrow
    lr = load_logged_request(settings, engine, "req_000001")
    assert lr.extra == {"app_version": "5.2.1"} and lr.candidates["source_scores"].iloc[0] == [0.82, 1.0]


def test_both_bad_files_are_named(ctx, tmp_path):
    settings, engine = ctx
    req = requests_frame().drop(columns=["ts"])
    cand = candidates_frame()
    cand.loc[1, "stage_reached"] = "won"
    with pytest.raises(ValidationError) as err:
        import_traces(settings, engine, write(tmp_path / "d", requests=req, candidates=cand))
    msg = str(err.value)
    assert "requests.csv: required column 'ts' is missing" in msg
    assert "trace_candidates.csv, column 'stage_reached': value is not allowed in 1 row: row 2 (line 3) 'won'" in msg
    assert "id not found" not in msg and _stored(settings, engine) == (0, 0, [])


def test_a_modified_candidates_file_is_detected(ctx, tmp_path):
    from core.common.errors import ArtifactError
    from core.traces.logged import verify_trace_sets

    settings, engine = ctx
    rep = import_traces(settings, engine, write(tmp_path / "d"))
    assert verify_trace_sets(settings, engine) == [{"set_id": rep.set_id, "n_requests": 3, "n_candidates": 6}]
    path = settings.traces_dir / rep.set_id / "candidates.parquet"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # same size: only the checksum tells
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        verify_trace_sets(settings, engine)
    path.write_bytes(bytes(data[:-5]))  # truncated: opening a request says so at once
    with pytest.raises(ArtifactError, match="modified or truncated"):
        load_logged_request(settings, engine, "r1")
