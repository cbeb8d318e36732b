"""Index versions: atomic builds, registry rows, verification on load (checksums, truncation,
dimensions), slugs, towers, listing and deletion, derived artifacts."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from core.common.errors import AdLensError, ArtifactError, NotFoundError
from core.index import versions
from core.index.versions import (
    EXTRA_ARTIFACT_BUILDERS,
    add_artifacts,
    build_version,
    delete_version,
    list_versions,
    load_version,
    validate_name,
)
from core.store.models import (
    Ad,
    Advertiser,
    Campaign,
    Community,
    Impression,
    IndexVersion,
    Tower,
    User,
)
from core.store.settings import load_settings
from core.text.embeddings import HashingEncoder
from core.tower.query_encoder import HistoryMeanEncoder

TOPICS = {
    "travel": ["flights", "hotel", "beach", "weekend", "lisbon", "rome", "tokyo", "cruise"],
    "fitness": ["running", "shoes", "yoga", "gym", "protein", "bike", "trail", "marathon"],
    "finance": ["budget", "savings", "credit", "invest", "bank", "loan", "tax", "retire"],
    "food": ["pizza", "coffee", "vegan", "recipes", "grill", "tacos", "sushi", "bakery"],
    "gaming": ["console", "rpg", "arcade", "esports", "controller", "quest", "pixel", "co-op"],
}


def _dataset(engine, n_ads_per_topic: int = 8, with_impressions: bool = True) -> None:
    """A few dozen ads with distinct texts, users with topic preferences, clicked impressions."""
    rng = np.random.default_rng(0)
    t0 = datetime(2026, 1, 1)
    advertisers = [{"advertiser_id": f"adv_{t}", "name": t.title(), "vertical": t} for t in TOPICS]
    campaigns = [{"campaign_id": f"cmp_{t}", "advertiser_id": f"adv_{t}"} for t in TOPICS]
    ads = []
    for t, words in TOPICS.items():
        for i in range(n_ads_per_topic):
            w1, w2 = words[i % len(words)], words[(i * 3 + 1) % len(words)]
            ads.append({"ad_id": f"ad_{t}_{i:02d}", "campaign_id": f"cmp_{t}", "title": f"{w1} {w2} deal {i}",
                        "body": f"best {t} {w1} offers", "call_to_action": "Shop now", "vertical": t})
    communities = [{"community_id": f"c_{t}", "name": f"r/{t}"} for t in TOPICS]
    users = [{"user_id": f"u_{j:02d}", "country": "US"} for j in range(12)]
    imps = []
    if with_impressions:
        topic_names = list(TOPICS)
        for j in range(12):
            fav = topic_names[j % len(topic_names)]
            for k in range(25):
                t = fav if rng.random() < 0.8 else topic_names[int(rng.integers(len(topic_names)))]
                ad = f"ad_{t}_{int(rng.integers(n_ads_per_topic)):02d}"
                imps.append({"impression_id": f"imp_{j}_{k}", "user_id": f"u_{j:02d}", "ad_id": ad,
                             "ts": t0 + timedelta(hours=j * 100 + k), "community_id": f"c_{t}",
                             "placement": "home_feed", "device": "ios", "clicked": bool(rng.random() < 0.5)})
    with engine.begin() as c:
        for model, rows in ((Advertiser, advertisers), (Campaign, campaigns), (Ad, ads), (Community, communities),
                            (User, users), (Impression, imps)):
            if rows:
                c.execute(insert(model), rows)


@pytest.fixture
def vsettings(tmp_path, db_url):
    return load_settings(workspace=tmp_path / "ws", db_url=db_url)


@pytest.fixture
def data_engine(engine):
    _dataset(engine)
    return engine


def _build(s, engine, name="v1", factory="Flat", **kw):
    return build_version(s, name, factory, engine=engine, text_encoder=HashingEncoder(), **kw)


def _rows(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(IndexVersion)).scalar_one()


def test_build_flat_version_writes_a_complete_registered_manifest(vsettings, data_engine):
    v = _build(vsettings, data_engine)
    files = sorted(p.relative_to(v.path).as_posix() for p in v.path.rglob("*") if p.is_file())
    assert files == ["ad_ids.npy", "ad_text_vectors.npy", "encoder/config.json", "index.faiss", "manifest.json"]
    m = json.loads((v.path / "manifest.json").read_text())
    for key in ("name", "created_at", "parent", "embedding", "dims", "factory", "search_params", "n_ads",
                "timings", "bytes_per_ad", "recall", "files"):
        assert key in m, key
    assert m["n_ads"] == 40 and m["dims"] == {"text": 64, "index": 64}
    assert m["recall"] == {"recall@10": 1.0, "recall@100": 1.0, "recall@500": 1.0}
    assert m["recall_queries"]["source"] == "sampled_requests" and m["recall_queries"]["n"] == 200
    assert m["embedding"]["fingerprint"] == HashingEncoder().fingerprint
    assert set(m["files"]) == set(files) - {"manifest.json"}
    assert np.load(v.path / "ad_ids.npy", allow_pickle=False).dtype.kind == "U"
    assert not [p for p in vsettings.versions_dir.iterdir() if p.name.startswith(".")], "no temp dirs left"
    with data_engine.connect() as c:
        row = c.execute(select(IndexVersion)).one()
    assert row.name == "v1" and row.n_ads == 40 and row.factory == "Flat" and row.manifest_sha256 == v.checksum


def test_loaded_version_maps_positions_and_searches(vsettings, data_engine):
    _build(vsettings, data_engine)
    v = load_version(vsettings, "v1")
    assert list(v.ad_ids) == sorted(v.ad_ids) and v.ad_ids.dtype == object
    assert v.position_of(["ad_food_03", "nope"]).tolist() == [list(v.ad_ids).index("ad_food_03"), -1]
    q = v.ad_vectors[v.position_of(["ad_travel_01"])[0]]
    (scores, pos), = v.search(q, 5)
    assert v.ad_ids[pos[0]] == "ad_travel_01" and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert pos.tolist() == v.exact_search(q, 5)[0][1].tolist()
    assert np.allclose(np.linalg.norm(v.ad_vectors, axis=1), 1, atol=1e-5)


def test_ivf_version_stores_given_or_tuned_params(vsettings, data_engine):
    given = _build(vsettings, data_engine, "ivf-a", "IVF4,Flat", search_params={"nprobe": 2})
    assert given.search_params == {"nprobe": 2} and given.manifest["search_params_source"] == "given"
    assert given.manifest["nlist"] == 4 and given.manifest["index_kind"] == "ivf"
    tuned = _build(vsettings, data_engine, "ivf-b", "IVF4,Flat", parent="ivf-a")
    assert tuned.manifest["search_params_source"].startswith("tuned")
    assert tuned.manifest["recall"]["recall@500"] >= 0.95
    assert tuned.manifest["parent"] == "ivf-a"
    nprobe_before = tuned.index._ivf.nprobe
    tuned.search(tuned.ad_vectors[:3], 10, {"nprobe": 4})
    assert tuned.index._ivf.nprobe == nprobe_before
    with pytest.raises(AdLensError, match="unknown search params"):
        _build(vsettings, data_engine, "ivf-c", "IVF4,Flat", search_params={"probes": 2})


def test_build_failing_midway_leaves_no_directory_and_no_row(vsettings, data_engine, monkeypatch):
    def boom(ctx, directory):
        assert (directory / "index.faiss").exists()  # midway: files already written
        raise RuntimeError("injected failure")

    monkeypatch.setattr(versions, "EXTRA_ARTIFACT_BUILDERS", [boom])
    with pytest.raises(RuntimeError, match="injected"):
        _build(vsettings, data_engine)
    assert list(vsettings.versions_dir.iterdir()) == []
    assert _rows(data_engine) == 0


def test_failed_registration_removes_the_renamed_directory(vsettings, data_engine, monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("db down")

    monkeypatch.setattr(versions, "_register", fail)
    with pytest.raises(RuntimeError, match="db down"):
        _build(vsettings, data_engine)
    assert list(vsettings.versions_dir.iterdir()) == [] and _rows(data_engine) == 0


def test_extra_artifact_builders_are_checksummed_and_merged(vsettings, data_engine, monkeypatch):
    def extra(ctx, directory):
        assert ctx.ad_vectors.shape == (40, 64) and ctx.features.dim == 64
        np.save(directory / "extra.npy", ctx.ad_vectors[:, :2], allow_pickle=False)
        return {"extra": {"points": len(ctx.ad_ids)}}

    monkeypatch.setattr(versions, "EXTRA_ARTIFACT_BUILDERS", [extra])
    v = _build(vsettings, data_engine)
    assert v.manifest["extra"] == {"points": 40} and "extra.npy" in v.manifest["files"]
    assert EXTRA_ARTIFACT_BUILDERS is not versions.EXTRA_ARTIFACT_BUILDERS  # the patch did not leak


def test_build_reports_its_stages_through_the_progress_convention(vsettings, data_engine):
    def extra_artifact_builder(ctx, directory):
        return {}

    seen: list[tuple[float, str]] = []
    _build(vsettings, data_engine, extra_builders=(extra_artifact_builder,),
           progress=lambda f, step: seen.append((f, step)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    steps = [s for _, s in seen]
    assert all(isinstance(s, str) and s for s in steps)
    for stage in ("Embedding ad texts", "Building the index", "Measuring recall", "extra artifacts"):
        assert any(stage in s for s in steps), (stage, steps)


@pytest.mark.parametrize("victim", ["ad_text_vectors.npy", "encoder/config.json", "ad_ids.npy"])
def test_tampered_file_is_named_on_load(vsettings, data_engine, victim):
    v = _build(vsettings, data_engine)
    p = v.path / victim
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{victim}: sha256 mismatch"):
        load_version(vsettings, "v1")


def test_tampered_file_is_caught_after_a_remembered_verification(vsettings, data_engine, monkeypatch):
    from core.store import checksum_memo

    monkeypatch.setattr(checksum_memo, "RACY_S", -1.0)  # remember the just-built files
    v = _build(vsettings, data_engine)
    load_version(vsettings, "v1")
    assert (vsettings.cache_dir / checksum_memo.MEMO_FILE).is_file()
    load_version(vsettings, "v1")  # from the memo
    p = v.path / "ad_text_vectors.npy"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="ad_text_vectors.npy: sha256 mismatch"):
        load_version(vsettings, "v1")


def test_truncated_index_is_detected(vsettings, data_engine):
    v = _build(vsettings, data_engine)
    p = v.path / "index.faiss"
    os.truncate(p, p.stat().st_size // 3)
    with pytest.raises(ArtifactError, match="index.faiss: sha256 mismatch"):
        load_version(vsettings, "v1")
    (v.path / "index.faiss").unlink()
    with pytest.raises(ArtifactError, match="index.faiss: missing"):
        load_version(vsettings, "v1")


def test_dimension_mismatch_is_detected(vsettings, data_engine):
    v = _build(vsettings, data_engine)
    m = json.loads((v.path / "manifest.json").read_text())
    m["dims"]["text"] = 384  # as if the manifest described another model's vectors
    (v.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="ad_text_vectors.npy: dim"):
        load_version(vsettings, "v1")


@pytest.mark.parametrize("bad", ["", "-v", "../v", "a/b", "a b", "x" * 65, ".hidden", "ä"])
def test_names_must_be_safe_slugs(bad):
    with pytest.raises(AdLensError, match="invalid version name"):
        validate_name(bad)


def test_existing_and_bad_names_are_refused(vsettings, data_engine):
    _build(vsettings, data_engine)
    with pytest.raises(AdLensError, match="already exists"):
        _build(vsettings, data_engine)
    with pytest.raises(AdLensError, match="invalid version name"):
        _build(vsettings, data_engine, "../escape")
    with pytest.raises(NotFoundError, match="parent version 'nope' not found; existing: v1"):
        _build(vsettings, data_engine, "v2", parent="nope")
    with pytest.raises(AdLensError, match="need at least.*Use IVF"):
        _build(vsettings, data_engine, "v3", "IVF64,Flat")
    assert _rows(data_engine) == 1


def test_list_and_delete(vsettings, data_engine):
    _build(vsettings, data_engine, "a")
    _build(vsettings, data_engine, "b", "IVF4,Flat", parent="a")
    rows = list_versions(vsettings, engine=data_engine)
    assert [r["name"] for r in rows] == ["a", "b"] and {r["status"] for r in rows} == {"ok"}
    assert rows[1]["parent"] == "a" and rows[1]["factory"] == "IVF4,Flat" and rows[1]["recall@10"] is not None
    delete_version(vsettings, "a", engine=data_engine)
    assert [r["name"] for r in list_versions(vsettings, engine=data_engine)] == ["b"]
    assert sorted(p.name for p in vsettings.versions_dir.iterdir()) == ["b"]
    with pytest.raises(NotFoundError, match="version 'a' not found; existing: b"):
        delete_version(vsettings, "a", engine=data_engine)
    with pytest.raises(NotFoundError, match="existing: b"):
        load_version(vsettings, "a")


def test_unregistered_folder_is_listed_as_such(vsettings, data_engine):
    v = _build(vsettings, data_engine)
    with data_engine.begin() as c:
        c.execute(IndexVersion.__table__.delete())
    rows = list_versions(vsettings, engine=data_engine)
    assert [(r["name"], r["status"]) for r in rows] == [("v1", "unregistered")]
    delete_version(vsettings, "v1", engine=data_engine)
    assert not v.path.exists()


def test_tower_from_folder_or_registry_and_unknown_tower(vsettings, data_engine):
    HistoryMeanEncoder(history_limit=5).save(vsettings.towers_dir / "t1")
    v = _build(vsettings, data_engine, tower="t1")
    assert v.manifest["tower"] == "t1" and v.encoder.config()["history_limit"] == 5
    assert (v.path / "encoder" / "config.json").is_file()
    elsewhere = vsettings.workspace / "elsewhere"
    HistoryMeanEncoder(history_limit=7).save(elsewhere)
    with data_engine.begin() as c:
        c.execute(insert(Tower), [{"name": "t2", "created_at": datetime(2026, 1, 1), "path": str(elsewhere),
                                   "config": {}, "metrics": {"recall@100": 0.5}}])
    # A registered path outside the workspace is never followed (a copied workspace would read the
    # original's tower): towers live in <workspace>/towers/<name>.
    with pytest.raises(ArtifactError, match="tower 't2' is registered but .*towers/t2 does not exist"):
        _build(vsettings, data_engine, "v2", tower="t2")
    shutil.copytree(elsewhere, vsettings.towers_dir / "t2")
    v2 = _build(vsettings, data_engine, "v2", tower="t2")
    assert v2.encoder.config()["history_limit"] == 7 and v2.manifest["tower_metrics"] == {"recall@100": 0.5}
    with pytest.raises(NotFoundError, match="tower 'zzz' not found; existing towers: t1, t2"):
        _build(vsettings, data_engine, "v3", tower="zzz")


def test_tower_trained_on_another_text_model_is_refused(vsettings, data_engine):
    d = vsettings.towers_dir / "t1"
    HistoryMeanEncoder().save(d)
    (d / "metrics.json").write_text(json.dumps({"training": {"embeddings": {"fingerprint": "f" * 64}}}))
    with pytest.raises(ArtifactError, match="trained on the ad embeddings of text model ffffffffffff.*"
                                            "come from hashing-64.*--text-backend"):
        _build(vsettings, data_engine, tower="t1")
    assert _rows(data_engine) == 0


def test_without_impressions_recall_uses_ad_queries(vsettings, engine):
    _dataset(engine, with_impressions=False)
    v = _build(vsettings, engine, "v1", "IVF4,Flat")
    assert v.manifest["recall_queries"]["source"] == "ad_vectors"
    assert 0 <= v.manifest["recall"]["recall@10"] <= 1


def test_empty_catalog_is_refused(vsettings, engine):
    with pytest.raises(AdLensError, match="no ads"):
        _build(vsettings, engine)


def test_add_artifacts_adds_files_without_overwriting(vsettings, data_engine):
    v = _build(vsettings, data_engine)

    def map_builder(ctx, directory):
        (directory / "map").mkdir()
        np.save(directory / "map" / "xy.npy", ctx.ad_vectors[:, :2], allow_pickle=False)
        return {"map": {"n": len(ctx.ad_ids)}}

    v2 = add_artifacts(vsettings, "v1", map_builder, engine=data_engine)
    assert v2.manifest["map"] == {"n": 40} and "map/xy.npy" in v2.manifest["files"]
    assert v2.checksum != v.checksum
    with data_engine.connect() as c:
        assert c.execute(select(IndexVersion.manifest_sha256)).scalar_one() == v2.checksum
    with pytest.raises(AdLensError, match="already has map/xy.npy"):
        add_artifacts(vsettings, "v1", map_builder, engine=data_engine)
    assert not [p for p in v.path.iterdir() if p.name.startswith(".")]
    assert load_version(vsettings, "v1").manifest["map"] == {"n": 40}


def test_cli_build_list_delete(tmp_path, capsys, monkeypatch):
    from core.cli import main
    from core.store.db import make_engine
    from core.text import embedding_cache

    ws = tmp_path / "ws"
    engine = make_engine(f"sqlite:///{ws / 'adlens.db'}")
    _dataset(engine)
    engine.dispose()
    fake = HashingEncoder()
    monkeypatch.setattr(embedding_cache, "model_fingerprint", lambda name: fake.fingerprint)
    monkeypatch.setattr(embedding_cache.AdEncoder, "load", classmethod(lambda cls, name: fake))
    assert main(["--workspace", str(ws), "build-index", "--name", "v1", "--factory", "IVF4,Flat",
                 "--nprobe", "2", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["search_params"] == {"nprobe": 2} and m["n_ads"] == 40
    assert main(["--workspace", str(ws), "versions", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["v1"]
    assert main(["--workspace", str(ws), "versions"]) == 0
    assert "IVF4,Flat" in capsys.readouterr().out
    assert main(["--workspace", str(ws), "build-index", "--name", "v1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["--workspace", str(ws), "versions", "--delete", "v1"]) == 0
    assert main(["--workspace", str(ws), "versions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1]) == []


@pytest.mark.slow
def test_build_with_the_real_model(vsettings, data_engine):
    v = build_version(vsettings, "real", "Flat", engine=data_engine)
    assert v.manifest["dims"] == {"text": 384, "index": 384}
    assert v.manifest["embedding"]["model"] == "default" and v.manifest["recall"]["recall@10"] == 1.0
    assert load_version(vsettings, "real").checksum == v.checksum
