"""The version manifest: one typed reader/writer; old manifests still load."""

import pytest

from core.common.errors import ArtifactError
from core.index.manifest import Manifest

OLD = {  # a manifest as the first release wrote it (no index_bytes, tower metrics in metrics.json shape)
    "format": 1, "name": "ivf", "created_at": "2026-11-01T10:00:00", "parent": None, "tower": "t1",
    "embedding": {"model": "default", "fingerprint": "ab" * 32, "n_encoded": 3, "n_reused": 0},
    "encoder": {"kind": "history_mean"}, "dims": {"text": 384, "index": 64}, "factory": "IVF4,Flat",
    "index_kind": "ivf", "nlist": 4, "search_params": {"nprobe": 2}, "n_ads": 3,
    "recall": {"recall@10": 1.0}, "files": {"index.faiss": "00"},
    "tower_metrics": {"evaluation": {"models": {"tower": {"recall@100": 0.5}}}, "training": {}},
    "map": {"n": 3},
}


def test_old_manifest_loads_with_tower_metrics_normalised_and_extras_kept():
    m = Manifest.from_dict(OLD)
    assert m.tower_metrics == {"models": {"tower": {"recall@100": 0.5}}}
    assert m.extras == {"map": {"n": 3}} and m.index_bytes is None and m.timings == {}
    assert m["map"] == {"n": 3} and m.get("missing", 7) == 7 and m.fingerprint == "ab" * 32
    again = Manifest.from_dict(m.to_dict())
    assert again == m and again.to_dict()["map"] == {"n": 3} and "extras" not in again.to_dict()


def test_report_shape_is_kept_as_is():
    m = Manifest.from_dict({**OLD, "tower_metrics": {"models": {"tower": {"recall@100": 0.4}}}})
    assert m.tower_metrics == {"models": {"tower": {"recall@100": 0.4}}}


@pytest.mark.parametrize("drop", ["name", "dims", "embedding", "n_ads", "factory"])
def test_missing_required_field_names_it(drop):
    with pytest.raises(ArtifactError, match=drop):
        Manifest.from_dict({k: v for k, v in OLD.items() if k != drop}, where="v/manifest.json")


def test_bad_dims_is_an_artifact_error():
    with pytest.raises(ArtifactError, match="bad embedding or dims"):
        Manifest.from_dict({**OLD, "dims": {"text": "x"}})


def test_get_and_getitem_read_what_to_dict_holds():
    """Regression (issue #13): `get`/`[]` convert only the asked key, with the values `to_dict()`
    gives (why-not read `manifest.get("shards")` per request, converting every file's checksum)."""
    import math

    m = Manifest.from_dict({**OLD, "shards": {"n": 2, "sizes": (1, 2)}, "nan_extra": float("nan"),
                            "timings": {"total_s": float("nan")}})
    full = m.to_dict()
    for key in list(full) + ["missing"]:
        if key not in m.extras:  # extras come back from `get` as stored, as before
            assert m.get(key, "dflt") == full.get(key, "dflt")
        if key in full:
            assert m[key] == full[key]
        else:
            with pytest.raises(KeyError):
                m[key]
    assert m.get("shards") is m.extras["shards"]  # extras come back as stored, as before
    assert math.isnan(m.get("nan_extra")) and m["nan_extra"] is None and m["timings"] == {"total_s": None}
