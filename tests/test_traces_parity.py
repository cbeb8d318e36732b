"""core/traces/export + parity: AdLens's own replay, exported and imported, replays to parity 1.0;
planted differences (a rule AdLens lacks, a source it lacks, a changed reason) are named with
their exact counts; `adlens parity` / `export-traces` errors. On a copy of the demo workspace."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.cli import main
from core.funnel.engine import open_engine
from core.funnel.reasons import ELIGIBILITY_REASONS
from core.store.db import make_engine
from core.traces.export import as_logged, export_replay
from core.traces.importer import import_traces
from core.traces.parity import run_parity
from tests.conftest import copy_workspace

N = 12
VERSION = "exact"


@pytest.fixture(scope="module")
def ws(demo_workspace, tmp_path_factory):
    """A copy of the demo workspace, its engine on VERSION, and AdLens's replay of N requests exported."""
    root = tmp_path_factory.mktemp("parity")
    settings = copy_workspace(demo_workspace.path, root / "ws")
    engine = open_engine(settings, VERSION)
    rep = export_replay(engine, root / "export", N, seed=3)
    db = make_engine(settings.db_url)
    yield settings, db, engine, root / "export", rep
    db.dispose()


def _parity(ws, folder):
    settings, db, engine, _, _ = ws
    import_traces(settings, db, folder, replace=True)
    return run_parity(settings, db, engine, n_requests=N, seed=0)


def test_export_maps_the_trace_once(ws):
    settings, db, engine, folder, rep = ws
    assert (rep.n_requests, rep.version) == (N, VERSION)
    cands = pq.read_table(folder / "trace_candidates.parquet").to_pandas()
    assert len(cands) == rep.n_candidates > 0
    assert set(cands["stage_reached"]) <= {"retrieved", "eligible", "ranked", "slate"}
    slate = cands[cands["stage_reached"] == "slate"]
    assert slate["reasons"].map(len).eq(0).all() and slate["slate_position"].notna().all()
    filtered = cands[cands["stage_reached"] == "retrieved"]
    assert filtered["reasons"].map(len).gt(0).all()
    assert (cands["sources"].map(len) == cands["source_ranks"].map(len)).all()


def test_own_replay_is_parity_one(ws):
    rep = _parity(ws, ws[3])
    assert rep.n_requests == N and rep.slates_equal == N and rep.slates_equal_rate == 1.0
    assert rep.mean_jaccard == 1.0 and rep.recall.recall == 1.0
    assert all(r.recall == 1.0 for r in rep.stage_recall.values() if r.n)
    assert rep.disagreements == [] and rep.unknown_sources == [] and rep.unknown_reasons == []
    assert all(k == v for k, row in rep.confusion.items() for v in row)  # only the diagonal
    assert "100 %" in rep.verdict and "agree" in rep.verdict


def _plant(ws, out):
    """PACING_THROTTLE drops every slate ad of the most-shown advertiser; every 7th other row also
    credits prod_lookalike; the most common first eligibility reason R0 is logged as another code;
    every 5th BELOW_CUTOFF row is logged without a reason (not a disagreement: same stage)."""
    settings, db, engine, folder, _ = ws
    c = pq.read_table(folder / "trace_candidates.parquet").to_pandas()
    adv = dict(zip(engine.catalog.ads["ad_id"], engine.catalog.ads["advertiser_id"]))
    c["adv"] = c["ad_id"].map(adv)
    top = c[c["stage_reached"] == "slate"]["adv"].value_counts().index[0]
    throttle = (c["stage_reached"] == "slate") & (c["adv"] == top)
    c.loc[throttle, "stage_reached"] = "retrieved"
    c.loc[throttle, "reasons"] = pd.Series([["PACING_THROTTLE"]] * int(throttle.sum()), index=c.index[throttle])
    c.loc[throttle, "slate_position"] = None
    first = c["reasons"].map(lambda r: r[0] if len(r) else None)
    r0 = first[first.isin([str(x) for x in ELIGIBILITY_REASONS])].value_counts().index[0]
    y = next(str(x) for x in ELIGIBILITY_REASONS if str(x) != r0)
    changed = first == r0
    c.loc[changed, "reasons"] = c.loc[changed, "reasons"].map(lambda r: [y, *list(r)[1:]])
    quiet = (first == "BELOW_CUTOFF") & (pd.Series(range(len(c))) % 5 == 1).to_numpy()  # logged without reason
    c.loc[quiet, "reasons"] = pd.Series([[]] * int(quiet.sum()), index=c.index[quiet], dtype=object)
    extra = (pd.Series(range(len(c))) % 7 == 0).to_numpy() & ~throttle.to_numpy()
    for col, add in (("sources", "prod_lookalike"), ("source_ranks", 1), ("source_scores", 0.5)):
        c.loc[extra, col] = c.loc[extra, col].map(lambda xs, a=add: [*list(xs), a])
    out.mkdir()
    pq.write_table(pa.Table.from_pandas(c.drop(columns="adv"), preserve_index=False),
                   out / "trace_candidates.parquet")
    (out / "requests.parquet").write_bytes((folder / "requests.parquet").read_bytes())
    hit_requests = c.loc[throttle, "request_id"].nunique()
    return {"throttle": int(throttle.sum()), "r0": r0, "quiet": c.loc[quiet, "stage_reached"].value_counts().to_dict(), "y": y, "changed": int(changed.sum()),
            "extra": int(extra.sum()), "hit_requests": hit_requests}


def test_planted_differences_are_named_with_their_counts(ws, tmp_path):
    p = _plant(ws, tmp_path / "planted")
    rep = _parity(ws, tmp_path / "planted")
    got = {(d.kind, d.name): (d.logged_only, d.replay_only, d.modelled) for d in rep.disagreements}
    assert got == {
        ("rule", "PACING_THROTTLE"): (p["throttle"], 0, False),
        ("source", "prod_lookalike"): (p["extra"], 0, False),
        ("rule", p["y"]): (p["changed"], 0, True),
        ("rule", p["r0"]): (0, p["changed"], True),
    }
    assert rep.slates_equal == N - p["hit_requests"] and rep.recall.recall == 1.0
    assert rep.stage_recall["retrieved"].recall == 1.0 and rep.stage_recall["slate"].recall == 1.0
    assert rep.unknown_sources == ["prod_lookalike"] and rep.unknown_reasons == ["PACING_THROTTLE"]
    assert rep.confusion["PACING_THROTTLE"] == {"slate": p["throttle"]}
    assert p["quiet"] and all(rep.confusion[f"{st} (no reason)"] == {"BELOW_CUTOFF": n} for st, n in p["quiet"].items())
    assert rep.confusion[p["y"]][p["r0"]] == p["changed"] and p["r0"] not in rep.confusion  # all relabelled
    src = {s.name: s for s in rep.source_recall}
    assert (src["prod_lookalike"].n, src["prod_lookalike"].same_source, src["prod_lookalike"].modelled) == \
        (p["extra"], 0, False)
    top = rep.disagreements[0]  # the only one that moves slates, though the fewest candidates
    assert (top.name, top.slate_changes, top.fate_changes) == ("PACING_THROTTLE", p["throttle"], p["throttle"])
    assert "most disagreements: logged reason PACING_THROTTLE, which AdLens does not model" in rep.verdict
    lookalike = next(d for d in rep.disagreements if d.name == "prod_lookalike")
    assert (lookalike.fate_changes, lookalike.slate_changes) == (0, 0) and rep.disagreements[-1] is lookalike
    ex = top.examples[0]
    assert top.name in rep.verdict and ex.link == f"?request={ex.request_id}&version={VERSION}&ad={ex.ad_id}"
    pacing = next(d for d in rep.disagreements if d.name == "PACING_THROTTLE")
    assert "which AdLens does not model" in pacing.label()


def test_mapping_matches_the_trace(ws):
    """as_logged is shared by export and parity, so parity 1.0 cannot catch a mapping error: check it
    against the Trace's own columns here."""
    settings, db, engine, _, _ = ws
    req = engine.default_request(sorted(map(str, engine.user_ids))[0])
    tr = engine.run(req)
    frame = as_logged(tr, engine.bid)
    c = tr.candidates
    assert frame["ad_id"].tolist() == c["ad_id"].tolist()
    expected = {"slate": "slate", "advertiser_cap": "ranked", "filtered": "retrieved"}
    n_ranked = tr.params.n_ranked
    for i, (o, rank) in enumerate(zip(c["outcome"], c["rank_position"])):
        want = expected.get(o) or ("ranked" if rank <= n_ranked else "eligible")
        assert frame["stage_reached"].iloc[i] == want, (o, rank)
    filtered = (c["outcome"] == "filtered").to_numpy()
    assert filtered.any() and (~filtered).any()
    assert frame.loc[filtered, "reasons"].tolist() == [list(map(str, r)) for r in c.loc[filtered, "failed_reasons"]]
    rest = ~filtered & (c["outcome"] != "slate").to_numpy()
    assert frame.loc[rest, "reasons"].tolist() == [list(map(str, f)) or [str(r)] for f, r in
                                                   zip(c.loc[rest, "failed_reasons"], c.loc[rest, "primary_reason"])]
    slate = (c["outcome"] == "slate").to_numpy()
    assert frame.loc[slate, "slate_position"].tolist() == c.loc[slate, "final_position"].tolist()
    assert frame["ecpm"].tolist() == c["ecpm"].tolist() and frame["early_score"].tolist() == c["pctr"].tolist()
    assert frame["bid"].tolist() == engine.bid[c["version_pos"].to_numpy()].tolist()
    two = c["rank_two_tower"].notna().to_numpy()
    assert [r[0] for r in frame.loc[two, "source_ranks"]] == c.loc[two, "rank_two_tower"].tolist()


# ---- the command line ---------------------------------------------------------------------------
def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([*args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_parity_and_errors(ws, tmp_path, capsys):
    settings, db, engine, folder, _ = ws
    import_traces(settings, db, folder, replace=True)
    w = ["--workspace", str(settings.workspace)]
    code, out, err = _cli(capsys, *w, "parity", "--version", VERSION, "--requests", "5", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["n_requests"] == 5 and rep["slates_equal"] == 5 and rep["disagreements"] == []
    code, out, _ = _cli(capsys, *w, "parity", "--version", VERSION, "--requests", "3")
    assert code == 0 and "verdict: the replay on exact reproduces 100 %" in out and "no rule or source" in out
    code, _, err = _cli(capsys, *w, "parity", "--version", "nope")
    assert code == 2 and "nope" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main([*w, "parity", "--version", VERSION, "--requests", "0"])
    assert exc.value.code == 2 and "--requests" in capsys.readouterr().err
    code, _, err = _cli(capsys, *w, "export-traces", "--version", VERSION, "--requests", "2", "--out", str(folder))
    assert code == 2 and "already holds" in err
    empty = ["--workspace", str(tmp_path / "empty")]
    code, _, err = _cli(capsys, *empty, "parity", "--version", VERSION)
    assert code == 2 and "adlens import-traces DIR" in err


def test_own_rules_replay_to_parity_and_are_missed_by_the_builtin_funnel(ws, tmp_path):
    """A version's own funnel (an eligibility rule and a ranking-stage rule of the team's) exported
    replays to 1.0 on that funnel; the built-in funnel names both codes as rules it does not model."""
    from core.funnel.definition import parse_definition
    from core.funnel.engine import FunnelEngine

    settings, db, engine, _, _ = ws
    vertical = engine.catalog.ads["vertical"].value_counts().index[0]
    tr = engine.run(engine.default_request(sorted(map(str, engine.user_ids))[0]))
    cut = float(tr.candidates.loc[tr.candidates["outcome"] != "filtered", "ecpm"].median())
    own = FunnelEngine(engine.version, engine.catalog, funnel_definition=parse_definition(f'''
unlisted_builtins = "first"
[[rule]]
code = "VERTICAL_BAN"
expr = 'ad.vertical == "{vertical}"'
[[rule]]
code = "LOW_ECPM"
stage = "ranking"
expr = "candidate.ecpm < {cut}"
'''))
    export_replay(own, tmp_path / "own", 6, seed=5)
    import_traces(settings, db, tmp_path / "own", replace=True)
    same = run_parity(settings, db, own, n_requests=6)
    assert same.slates_equal == 6 and same.disagreements == [] and same.unknown_reasons == []
    assert same.confusion["VERTICAL_BAN"] == {"VERTICAL_BAN": same.confusion["VERTICAL_BAN"]["VERTICAL_BAN"]}
    assert "LOW_ECPM" in same.confusion
    builtin = run_parity(settings, db, engine, n_requests=6)
    got = {d.name: (d.logged_only, d.modelled) for d in builtin.disagreements if d.kind == "rule" and d.logged_only}
    assert got["VERTICAL_BAN"] == (sum(same.confusion["VERTICAL_BAN"].values()), False)
    assert got["LOW_ECPM"] == (sum(same.confusion["LOW_ECPM"].values()), False)
    assert builtin.unknown_reasons == ["LOW_ECPM", "VERTICAL_BAN"]


def _rewrite(folder, out, change):
    """The export in `folder` with its candidates passed through `change(frame) -> frame`, into `out`."""
    c = pq.read_table(folder / "trace_candidates.parquet").to_pandas()
    out.mkdir()
    pq.write_table(pa.Table.from_pandas(change(c), preserve_index=False), out / "trace_candidates.parquet")
    (out / "requests.parquet").write_bytes((folder / "requests.parquet").read_bytes())


def test_a_different_early_ranker_is_named_with_its_spearman(ws, tmp_path):
    """The logged eCPM and early score reversed among each request's eligible candidates, fates
    kept: only the early ranker differs (Spearman -1 where the order is strict), no rule or source."""
    import numpy as np

    def reverse(c):
        for _, idx in c.groupby("request_id").groups.items():
            elig = [i for i in idx if c.at[i, "stage_reached"] != "retrieved"]
            for col in ("ecpm", "early_score"):
                c.loc[elig, col] = -c.loc[elig, col].to_numpy()
        return c

    _rewrite(ws[3], tmp_path / "ranker", reverse)
    rep = _parity(ws, tmp_path / "ranker")
    assert [(d.kind, d.name) for d in rep.disagreements] == [("ranker", "early ranker")]
    d = rep.disagreements[0]
    assert d.requests == d.compared_requests == N and d.spearman == pytest.approx(-1.0, abs=1e-6)
    assert d.count > 0 and d.knock_on == 0 and d.logged_only == d.replay_only == 0  # fates untouched
    assert rep.slates_equal == N and np.isclose(rep.mean_jaccard, 1.0)
    assert "the early ranker orders eligible ads differently (Spearman -1.00; differs in 12 of 12 requests)" \
        in d.label() and "most disagreements: the early ranker" in rep.verdict


def test_a_smaller_logged_quota_is_a_quota_finding(ws, tmp_path):
    """Production took popular_in_context's top 5 (the replay takes its default 100): the log is
    AdLens's own replay with those quota-5 params, so only the quota differs, named with both numbers;
    the knock-on fates it causes are credited to it, not to BELOW_CUTOFF."""
    from core.funnel.params import FunnelParams

    settings, db, engine, _, _ = ws
    out = tmp_path / "quota"
    export_replay(engine, out, N, seed=3, params=FunnelParams(quotas={"popular_in_context": 5}))
    rep = _parity(ws, out)
    assert [(d.kind, d.name) for d in rep.disagreements] == [("quota", "popular_in_context")]
    q = rep.disagreements[0]
    assert (q.logged_max_rank, q.replay_quota) == (5, 100) and q.replay_only == q.count > 0 and q.logged_only == 0
    assert q.label() == "source popular_in_context: logged ranks up to 5, replay quota 100"
    assert q.examples and q.requests == N and q.knock_on > 0  # the extra candidates moved the cut-off
    assert "most disagreements: source popular_in_context: logged ranks up to 5, replay quota 100" in rep.verdict
