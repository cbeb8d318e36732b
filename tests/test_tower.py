"""The learned user tower: shapes, cold start, planted-signal recovery, determinism, artifacts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import insert

from core.cli import main
from core.common.errors import AdLensError, ArtifactError, NotFoundError
from core.data.features import FeatureStore
from core.data.request import REQUEST_COLUMNS
from core.store.catalog import Catalog
from core.store.db import make_engine
from core.store.models import Ad, Community, Impression, Tower, User
from core.tower.model import UserTowerEncoder, build_vocab
from core.tower.registry import load_query_encoder, load_tower
from core.tower.split import make_split
from core.tower.train import fit_tower, nearest_unclicked, train_tower

T0 = datetime(2026, 1, 1)
N_TOPICS, DIM = 6, 32


def planted_catalog(n_ads: int = 300, n_users: int = 150, per_user: int = 60, seed: int = 0) -> tuple[Catalog, np.ndarray, np.ndarray]:
    """Users in a topic's communities click that topic's ads (p=0.5 vs 0.02); ad text vectors sit
    around their topic's centre. Exposure is skewed (a few ads shown a lot), so popularity alone is
    a weak but non-trivial baseline. Returns (catalog, ad_ids, ad_text_vectors)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_TOPICS, DIM))
    ad_topic = np.arange(n_ads) % N_TOPICS
    vecs = centres[ad_topic] + 0.8 * rng.normal(size=(n_ads, DIM))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    ad_ids = np.array([f"ad_{i:04d}" for i in range(n_ads)], dtype=object)
    comm_ids = [f"c_{k:02d}" for k in range(2 * N_TOPICS)]
    user_topic = np.arange(n_users) % N_TOPICS
    users = pd.DataFrame({
        "user_id": [f"u_{i:04d}" for i in range(n_users)],
        "country": rng.choice(["US", "DE", "FR"], n_users),
        "age_bucket": rng.choice(["18-24", "25-34", "35-44"], n_users),
        "device": rng.choice(["ios", "android", "desktop"], n_users),
        "communities": [[comm_ids[t], comm_ids[t + N_TOPICS]][: 1 + i % 2] for i, t in enumerate(user_topic)],
        "signup_date": None,
    })
    exposure = 1.0 / (1 + np.arange(n_ads)) ** 0.3
    exposure = rng.permutation(exposure / exposure.sum())
    rows = []
    for u in range(n_users):
        shown = rng.choice(n_ads, per_user, p=exposure)
        ts = np.sort(rng.uniform(0, 10 * 86400, per_user))
        click_p = np.where(ad_topic[shown] == user_topic[u], 0.5, 0.02)
        clicked = rng.random(per_user) < click_p
        in_comm = rng.random(per_user) < 0.6
        for j in range(per_user):
            rows.append({
                "impression_id": f"i_{u:04d}_{j:03d}", "user_id": users.user_id[u], "ad_id": ad_ids[shown[j]],
                "ts": T0 + timedelta(seconds=float(ts[j])),
                "community_id": users.communities[u][0] if in_comm[j] else None,
                "placement": "community_feed" if in_comm[j] else "home_feed",
                "device": users.device[u], "clicked": bool(clicked[j]),
            })
    imps = pd.DataFrame(rows).sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    communities = pd.DataFrame({"community_id": comm_ids, "name": comm_ids, "topic": "t", "safety_tier": "safe"})
    ads = pd.DataFrame({"ad_id": ad_ids, "title": [f"ad {i}" for i in range(n_ads)]})
    empty = pd.DataFrame()
    return Catalog(ads=ads, campaigns=empty, advertisers=empty, users=users, communities=communities,
                   impressions=imps), ad_ids, vecs


def write_catalog(engine, cat: Catalog) -> None:
    """Insert a planted catalog into a database (only the tables the tower reads)."""
    with engine.begin() as c:
        c.execute(insert(Ad), cat.ads.to_dict("records"))
        c.execute(insert(Community), cat.communities.to_dict("records"))
        c.execute(insert(User), cat.users.to_dict("records"))
        recs = cat.impressions.to_dict("records")
        for r in recs:
            r["ts"] = pd.Timestamp(r["ts"]).to_pydatetime()
            r["community_id"] = None if pd.isna(r["community_id"]) else r["community_id"]
        c.execute(insert(Impression), recs)


@pytest.fixture(scope="module")
def planted():
    return planted_catalog()


@pytest.fixture(scope="module")
def trained(planted):
    cat, ids, vecs = planted
    split = make_split(cat.impressions, "time")
    enc, stats, losses = fit_tower(cat, ids, vecs, split, epochs=8, batch_size=128, seed=1)
    return enc, split, stats, losses


def _requests(rows: list[dict]) -> pd.DataFrame:
    base = {"user_id": "u_0000", "community_id": None, "placement": "home_feed", "device": "ios",
            "country": "US", "ts": T0 + timedelta(days=5)}
    return pd.DataFrame([{**base, **r} for r in rows], columns=list(REQUEST_COLUMNS))


def test_untrained_shapes_and_normalisation(planted):
    cat, ids, vecs = planted
    enc = UserTowerEncoder({"text_dim": DIM}, build_vocab(cat.users, cat.communities, cat.impressions))
    fs = FeatureStore(cat, ids, vecs)
    q = enc.encode_requests(_requests([{}, {"user_id": "u_0003", "community_id": "c_03"}]), fs)
    a = enc.transform_ads(vecs)
    assert q.shape == (2, DIM) and a.shape == vecs.shape
    assert q.dtype == np.float32 and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    # The adapter starts at zero: before training the ad side is the normalised text vector.
    np.testing.assert_allclose(a, vecs / np.linalg.norm(vecs, axis=1, keepdims=True), atol=1e-6)
    assert enc.encode_requests(_requests([])[:0], fs).shape == (0, DIM)
    with pytest.raises(ValueError, match=f"\\(n, {DIM}\\)"):
        enc.transform_ads(np.zeros((3, DIM + 1), np.float32))


def test_cold_start_requests_give_finite_unit_vectors(trained, planted):
    enc, *_ = trained
    cat, ids, vecs = planted
    fs = FeatureStore(cat, ids, vecs)
    reqs = _requests([
        {"user_id": "nobody", "country": "unknown", "device": "unknown"},  # unknown user
        {"user_id": "u_0001", "community_id": "c_never_seen", "placement": "new_placement"},
        {"user_id": "u_0001", "ts": T0 - timedelta(days=1)},  # before any click: no history
        {"user_id": "nobody", "country": None, "community_id": float("nan"), "device": None},
    ])
    q = enc.encode_requests(reqs, fs)
    assert np.isfinite(q).all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    inputs = enc.featurize(reqs, fs)
    assert inputs.history_count[2] == 0 and inputs.country[0] == 0  # unknown slot


def test_planted_signal_is_recovered(trained):
    from core.tower.evaluate import evaluate_encoder

    enc, split, stats, losses = trained
    cat, ids, vecs = planted_catalog()
    report = evaluate_encoder(enc, cat, ids, vecs, split, ks=(10, 50))
    tower, pop, rnd = (report.models[m]["recall@50"] for m in ("tower", "most_popular", "random"))
    # Perfect topic recognition puts the clicked ad among its topic's 50 ads: recall@50 ~ 1.
    assert tower > 0.7, report.models
    assert tower > pop + 0.3 and tower > rnd + 0.4
    assert losses[-1] < losses[0]


def test_cold_user_is_served_from_subscriptions(trained, planted):
    """A brand-new user (profile only: no history, never seen in training) subscribed to topic 3's
    community gets topic-3 ads on top; the untrained tower does not."""
    enc, *_ = trained
    cat, ids, vecs = planted
    newbie = pd.DataFrame([{"user_id": "newbie", "country": "US", "age_bucket": "25-34", "device": "ios",
                            "communities": ["c_03"], "signup_date": None}])
    cat2 = Catalog(**{**cat.__dict__, "users": pd.concat([cat.users, newbie], ignore_index=True)})
    fs = FeatureStore(cat2, ids, vecs)
    req = _requests([{"user_id": "newbie"}])
    assert enc.featurize(req, fs).history_count[0] == 0
    top = np.argsort(-(enc.transform_ads(vecs) @ enc.encode_requests(req, fs)[0]))[:50]
    share = np.mean(np.arange(len(ids))[top] % N_TOPICS == 3)
    assert share > 0.6, share  # random: 1/6
    untrained = UserTowerEncoder({"text_dim": DIM}, enc.vocab)
    top0 = np.argsort(-(untrained.transform_ads(vecs) @ untrained.encode_requests(req, fs)[0]))[:50]
    assert np.mean(top0 % N_TOPICS == 3) < 0.5


def test_training_is_deterministic_for_a_seed(planted):
    cat, ids, vecs = planted
    split = make_split(cat.impressions, "time")
    kw = dict(epochs=1, batch_size=256, seed=7, hard_negatives=True)
    a, _, la = fit_tower(cat, ids, vecs, split, **kw)
    b, _, lb = fit_tower(cat, ids, vecs, split, **kw)
    c, _, _ = fit_tower(cat, ids, vecs, split, **{**kw, "seed": 8})
    sa, sb, sc = a.net.state_dict(), b.net.state_dict(), c.net.state_dict()
    assert la == lb
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_save_load_round_trip_identical_vectors(trained, planted, tmp_path):
    enc, *_ = trained
    cat, ids, vecs = planted
    fs = FeatureStore(cat, ids, vecs)
    enc.save(tmp_path / "t")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    back = load_query_encoder(tmp_path / "t")
    assert isinstance(back, UserTowerEncoder)
    reqs = _requests([{}, {"user_id": "u_0007", "community_id": "c_01"}, {"user_id": "x"}])
    assert back._numpy_weights() is not None  # loaded for serving: numpy, no torch network yet
    np.testing.assert_array_equal(back.encode_requests(reqs, fs), enc.encode_requests(reqs, fs))
    # the ad side in numpy: torch's to float32 rounding (its matmul sums in another order)
    np.testing.assert_allclose(back.transform_ads(vecs), enc.transform_ads(vecs), rtol=0, atol=1e-6)
    many = _requests([{"user_id": f"u_{i:04d}"} for i in range(40)])  # above NUMPY_MAX_BATCH
    np.testing.assert_allclose(back.encode_requests(many, fs), enc.encode_requests(many, fs), rtol=0, atol=2e-6)
    back.net  # the torch network, built from the loaded arrays: now identical to the trained one
    assert back._numpy_weights() is None
    np.testing.assert_array_equal(back.transform_ads(vecs), enc.transform_ads(vecs))
    np.testing.assert_array_equal(back.encode_requests(many, fs), enc.encode_requests(many, fs))


@pytest.mark.parametrize("damage", ["missing_key", "extra_key", "wrong_shape", "truncated", "garbage",
                                    "no_weights", "bad_config", "vocab_mismatch"])
def test_loading_damaged_artifacts_fails_clearly(trained, tmp_path, damage):
    enc, *_ = trained
    d = tmp_path / "t"
    enc.save(d)
    w = d / "model.safetensors"
    state = load_file(str(w))
    if damage == "missing_key":
        del state["mlp.0.weight"]
        save_file(state, str(w))
        match = r"missing keys \['mlp.0.weight'\]"
    elif damage == "extra_key":
        state["surprise"] = torch.zeros(2)
        save_file(state, str(w))
        match = r"unexpected keys \['surprise'\]"
    elif damage == "wrong_shape":
        state["no_history"] = torch.zeros(DIM + 1)
        save_file(state, str(w))
        match = r"no_history: file \(33,\) != expected \(32,\)"
    elif damage == "truncated":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        match = "model.safetensors: unreadable or corrupted"
    elif damage == "garbage":
        w.write_bytes(b"\x00" * 7)
        match = "model.safetensors: unreadable or corrupted"
    elif damage == "no_weights":
        w.unlink()
        match = "model.safetensors: missing"
    elif damage == "bad_config":
        (d / "config.json").write_text("{not json")
        match = "config.json: not valid JSON"
    else:  # one more community in the vocabulary than the weights were trained with
        vocab = json.loads((d / "vocab.json").read_text())
        vocab["community"].append("zz_new")
        (d / "vocab.json").write_text(json.dumps(vocab))
        match = r"shape mismatches \[.*subscriptions.weight"
    with pytest.raises(ArtifactError, match=match):
        UserTowerEncoder.load(d)


def test_no_context_tower_has_no_context_weights(planted):
    cat, ids, vecs = planted
    split = make_split(cat.impressions, "time")
    enc, _, _ = fit_tower(cat, ids, vecs, split, epochs=1, use_context=False, ad_adapter=False)
    keys = set(enc.net.state_dict())
    assert not any(k.startswith(("community.", "placement.", "hour.", "request_device.")) for k in keys)
    assert not any(k.startswith("ad_adapter") for k in keys)
    np.testing.assert_allclose(enc.transform_ads(vecs), vecs / np.linalg.norm(vecs, axis=1, keepdims=True), atol=1e-6)


def test_nearest_unclicked_picks_same_user_nearest_in_time():
    t = lambda h: T0 + timedelta(hours=h)  # noqa: E731
    clicks = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "ts": [t(5), t(10), t(5), t(1)]})
    shown = pd.DataFrame({"user_id": ["a", "a", "a", "b", "d"], "ts": [t(1), t(6), t(12), t(20), t(1)]})
    got = nearest_unclicked(clicks, shown, np.array([10, 11, 12, 13, 14]))
    # a@5 -> a@6 (1h); a@10 -> a@12 (2h) not a@6 (4h); b@5 -> b@20; c has none.
    assert got.tolist() == [11, 12, 13, -1]


@pytest.mark.slow
def test_train_tower_saves_registers_and_refuses_duplicates(settings, planted):
    cat, ids, vecs = planted
    engine = make_engine(settings.db_url)
    write_catalog(engine, cat)
    res = train_tower(settings, "t1", epochs=2, batch_size=128, seed=3, engine=engine,
                      ad_ids=ids, ad_text_vectors=vecs, hard_negatives=True)
    assert sorted(p.name for p in res.path.iterdir()) == ["config.json", "manifest.json", "metrics.json",
                                                         "model.safetensors", "vocab.json"]
    metrics = json.loads((res.path / "metrics.json").read_text())
    assert metrics["training"]["split"]["kind"] == "time" and metrics["training"]["n_hard_negatives"] > 0
    assert metrics["evaluation"]["models"]["tower"]["recall@100"] is not None
    from sqlalchemy.orm import Session
    with Session(engine) as s:
        row = s.get(Tower, "t1")
        assert row is not None and row.metrics["n_test_clicks"] == res.report.n_test_clicks
    assert isinstance(load_tower(settings, "t1"), UserTowerEncoder)
    with pytest.raises(AdLensError, match="already exists"):
        train_tower(settings, "t1", epochs=1, engine=engine, ad_ids=ids, ad_text_vectors=vecs)
    with pytest.raises(AdLensError, match="invalid tower name"):
        train_tower(settings, "../evil", epochs=1, engine=engine, ad_ids=ids, ad_text_vectors=vecs)
    with pytest.raises(NotFoundError, match="existing: t1"):
        load_tower(settings, "nope")
    assert not list(settings.towers_dir.glob(".*tmp"))  # no temp folders left behind


def test_cli_train_rejects_bad_name(tmp_path, capsys):
    assert main(["--workspace", str(tmp_path / "ws"), "train", "--name", "bad name"]) == 2
    assert "invalid tower name" in capsys.readouterr().err


def test_cli_defaults_are_the_training_defaults():
    from core.cli.tower_cmds import build_parser_defaults
    from core.tower.train import DEFAULTS

    cli = build_parser_defaults()
    assert {k: cli[k] for k in DEFAULTS if k in cli} == {k: DEFAULTS[k] for k in DEFAULTS if k in cli}
    assert {"epochs", "batch_size", "lr", "temperature", "logq", "history_limit", "hidden"} <= set(cli)


def test_impossible_cutoff_is_refused_before_embedding_or_training(settings, planted, monkeypatch):
    import core.tower.train as tr

    cat, ids, vecs = planted
    engine = make_engine(settings.db_url)
    write_catalog(engine, cat)

    def boom(*a, **k):
        raise AssertionError("must not be reached: the cutoff is checked first")

    monkeypatch.setattr(tr, "catalog_embeddings", boom)
    monkeypatch.setattr(tr, "fit_tower", boom)
    with pytest.raises(AdLensError, match="no clicked impression to evaluate on.*--holdout none"):
        train_tower(settings, "late", cutoff="2030-01-01", engine=engine)
    with pytest.raises(AdLensError, match="no clicked impression to train on"):
        train_tower(settings, "early", cutoff="2000-01-01", engine=engine)
    ws = ["--workspace", str(settings.workspace)]
    assert main([*ws, "train", "--name", "late", "--cutoff", "2030-01-01"]) == 2
    assert not settings.towers_dir.exists() or not list(settings.towers_dir.iterdir())


@pytest.mark.slow
def test_holdout_none_trains_on_everything_and_says_it_is_not_evaluated(settings, planted, capsys, monkeypatch):
    import core.tower.train as tr
    from core.tower.evaluate import evaluate_tower

    cat, ids, vecs = planted
    engine = make_engine(settings.db_url)
    write_catalog(engine, cat)
    monkeypatch.setattr(tr, "catalog_embeddings", lambda s, c: (ids, vecs, {"fingerprint": "ab12"}))
    assert main(["--workspace", str(settings.workspace), "train", "--name", "final", "--holdout", "none",
                 "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "not evaluated" in out and "--holdout none" in out
    metrics = json.loads((settings.towers_dir / "final" / "metrics.json").read_text())
    assert metrics["training"]["split"]["kind"] == "none"
    assert metrics["training"]["n_train_clicks"] == int(cat.impressions.clicked.sum())  # every click
    assert "not evaluated" in metrics["evaluation"]["not_evaluated"]
    with pytest.raises(AdLensError, match="trained on every impression"):
        evaluate_tower(settings, "final", engine=engine, ad_ids=ids, ad_text_vectors=vecs)


@pytest.mark.slow
def test_user_split_tower_is_evaluated_with_the_user_protocol(settings, planted):
    cat, ids, vecs = planted
    engine = make_engine(settings.db_url)
    write_catalog(engine, cat)
    res = train_tower(settings, "u1", split="user", epochs=2, batch_size=128, engine=engine,
                      ad_ids=ids, ad_text_vectors=vecs, history_limit=0)
    rep = res.report
    assert rep.protocol == "user" and {"tower", "random", "most_popular", "history_mean"} == set(rep.models)
    # the planted topics make the tower far better than chance
    assert rep.models["tower"]["hr@50"] > 2 * rep.models["random"]["hr@50"]
    assert json.loads((res.path / "config.json").read_text())["history_limit"] >= 10**9  # the whole history


def test_bad_inputs_are_refused_clearly(trained, planted):
    enc, *_ = trained
    cat, ids, vecs = planted
    with pytest.raises(ArtifactError, match="trained on 32-d ad text vectors but the catalog's vectors are 16-d"):
        enc.encode_requests(_requests([{}]), FeatureStore(cat, ids, vecs[:, :16]))
    with pytest.raises(ValueError, match=r"lacks columns \['country'\]"):
        enc.encode_requests(_requests([{}]).drop(columns="country"), FeatureStore(cat, ids, vecs))


@pytest.mark.slow
def test_id_embeddings_learn_co_clicks_text_cannot_see(planted):
    """With the text vectors shuffled (no topic signal left in them), only per-ad id vectors can
    learn which ads a user's cohort clicks; unseen ads keep the text-only vector."""
    cat, ids, vecs = planted
    noise = vecs[np.random.default_rng(1).permutation(len(vecs))]
    split = make_split(cat.impressions, "user", seed=0)
    from core.tower.user_protocol import evaluate_encoder_user

    hr = {}
    for flag in (False, True):
        enc, _, _ = fit_tower(cat, ids, noise, split, epochs=15, lr=1e-2, batch_size=128,
                              id_embeddings=flag, history_limit=0)
        hr[flag] = evaluate_encoder_user(enc, cat, ids, noise, split, (30,)).models["tower"]["hr@30"]
    assert hr[True] > 1.8 * hr[False], hr
    unseen = np.array(["never_clicked"], dtype=object)
    np.testing.assert_allclose(enc.transform_ads(noise[:1], unseen), enc.transform_ads(noise[:1]), atol=1e-6)
    assert not np.allclose(enc.transform_ads(noise[:5], ids[:5]), enc.transform_ads(noise[:5]))


def _torch_queries(enc: UserTowerEncoder, inputs) -> np.ndarray:
    enc.net.eval()
    with torch.inference_mode():
        return enc.net(inputs.tensors()).numpy()


@pytest.mark.parametrize("kind", ["trained", "no_context", "id_embeddings"])
def test_numpy_forward_equals_torch(trained, planted, kind):
    """Issue #13: one request's query vector comes from the numpy forward pass
    (core.tower.numpy_forward); it equals the torch forward to float32 rounding, cold starts,
    padded subscriptions and id-embedding histories included."""
    from core.tower.numpy_forward import NUMPY_MAX_BATCH, forward

    cat, ids, vecs = planted
    if kind == "trained":
        enc = trained[0]
    else:
        vocab = build_vocab(cat.users, cat.communities, cat.impressions, with_ads=True)
        cfg = {"text_dim": DIM, "use_context": kind != "no_context", "id_embeddings": kind == "id_embeddings"}
        enc = UserTowerEncoder(cfg, vocab)
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():  # every weight non-zero, so no term of the forward can hide
            for p in enc.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    fs = FeatureStore(cat, ids, vecs)
    reqs = _requests([
        {}, {"user_id": "u_0003", "community_id": "c_03", "placement": "community_feed"},
        {"user_id": "nobody", "country": "unknown", "device": "unknown"},
        {"user_id": "u_0001", "community_id": "c_never_seen", "placement": "new_placement"},
        {"user_id": "u_0001", "ts": T0 - timedelta(days=1)},
        {"user_id": "nobody", "country": None, "community_id": float("nan"), "device": None},
        {"user_id": "u_0100", "ts": T0 + timedelta(days=9, hours=13)},
    ])
    inputs = enc.featurize(reqs, fs)
    assert (inputs.history_count == 0).any() and (inputs.history_count > 0).any()
    ref = _torch_queries(enc, inputs)
    got = forward(enc.net, inputs)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    # encode_requests: one request at a time (numpy) equals the batched torch path.
    batch = pd.concat([reqs] * (NUMPY_MAX_BATCH // len(reqs) + 1), ignore_index=True)
    assert len(batch) > NUMPY_MAX_BATCH
    big = enc.encode_requests(batch, fs)
    one = np.concatenate([enc.encode_requests(batch.iloc[[i]], fs) for i in range(len(reqs))])
    np.testing.assert_allclose(one, big[:len(reqs)], rtol=0, atol=2e-6)


@pytest.mark.parametrize("kind", ["no_context", "id_embeddings", "no_adapter"])
def test_a_tower_loaded_for_serving_equals_torch_without_building_the_network(planted, tmp_path, kind):
    """A saved tower loads as numpy arrays (no torch network: opening a version imports no torch);
    its queries (any batch size) and ad vectors equal the torch network's to float32 rounding."""
    from core.tower.tower_net import TowerNet
    from core.tower.tower_spec import param_shapes

    cat, ids, vecs = planted
    vocab = build_vocab(cat.users, cat.communities, cat.impressions, with_ads=True)
    cfg = {"text_dim": DIM, "use_context": kind != "no_context", "id_embeddings": kind == "id_embeddings",
           "ad_adapter": kind != "no_adapter"}
    enc = UserTowerEncoder(cfg, vocab)
    assert param_shapes(enc.cfg, enc.sizes) == {k: tuple(v.shape) for k, v in TowerNet(enc.cfg, enc.sizes).state_dict().items()}
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():  # every weight non-zero, so no term can hide
        for p in enc.net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    enc.save(tmp_path / "t")
    back = UserTowerEncoder.load(tmp_path / "t")
    assert back._numpy_weights() is not None
    fs = FeatureStore(cat, ids, vecs)
    reqs = _requests([{"user_id": f"u_{i:04d}", "community_id": "c_02" if i % 2 else None} for i in range(30)]
                     + [{"user_id": "nobody", "country": None}])
    np.testing.assert_allclose(back.encode_requests(reqs, fs), enc.encode_requests(reqs, fs), rtol=0, atol=2e-6)
    np.testing.assert_allclose(back.encode_requests(reqs.iloc[:2], fs), enc.encode_requests(reqs.iloc[:2], fs),
                               rtol=0, atol=2e-6)
    np.testing.assert_allclose(back.transform_ads(vecs, ids), enc.transform_ads(vecs, ids), rtol=0, atol=2e-6)
    np.testing.assert_allclose(back.transform_ads(vecs), enc.transform_ads(vecs), rtol=0, atol=2e-6)
    if kind == "id_embeddings":  # the id vectors took part
        assert not np.allclose(back.transform_ads(vecs, ids), back.transform_ads(vecs), atol=1e-3)


def test_numpy_forward_follows_weight_changes(planted):
    """The numpy path's cached weight views see in-place updates (training, load_state_dict) and
    replaced parameters, and do not keep the net alive."""
    import gc
    import weakref

    from core.tower.numpy_forward import forward

    cat, ids, vecs = planted
    enc = UserTowerEncoder({"text_dim": DIM}, build_vocab(cat.users, cat.communities, cat.impressions))
    inputs = enc.featurize(_requests([{}, {"user_id": "nobody"}]), FeatureStore(cat, ids, vecs))
    forward(enc.net, inputs)
    with torch.no_grad():
        enc.net.mlp[3].bias.add_(0.5)  # in place, as an optimiser step
    np.testing.assert_allclose(forward(enc.net, inputs), _torch_queries(enc, inputs), rtol=0, atol=2e-6)
    enc.net.history_gate = torch.nn.Parameter(torch.tensor(-2.0))  # replaced
    np.testing.assert_allclose(forward(enc.net, inputs), _torch_queries(enc, inputs), rtol=0, atol=2e-6)
    ref = weakref.ref(enc.net)
    del enc
    gc.collect()
    assert ref() is None
