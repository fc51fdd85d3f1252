"""Every catalogued model served side by side: own routes, schema, 503 and reload; the default's routes unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from nightshift.errors import ConfigError
from nightshift.settings import Settings
from serving.state import served_model_names
from tasks.data.demo import DEMO_CATEGORICAL, DEMO_NUMERIC, generate_demo
from tests.serving.conftest import TOKEN, Server, register_servable, start_server, stop_server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHURN = [*DEMO_NUMERIC, *DEMO_CATEGORICAL]
IRIS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
IRIS_ROWS = [{"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2},
             {"sepal_length_cm": 6.7, "sepal_width_cm": 3.0, "petal_length_cm": 5.2, "petal_width_cm": 2.3}]


def _entry(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "features": f"{name}/{{date:%Y-%m-%d}}.parquet", "label": "churned", **extra}


def _catalogue(path: Path, *entries: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump({"models": list(entries)}))
    return path


def _churn_rows(n: int) -> list[dict]:
    return json.loads(generate_demo(n, seed=5, day=2)[CHURN].to_json(orient="records"))


def test_served_models_are_the_default_then_the_enabled_catalogue_ones(tmp_path: Path) -> None:
    missing = Settings(model_name="solo", catalogue_path=tmp_path / "none.yaml")
    assert served_model_names(missing) == ["solo"]
    path = _catalogue(tmp_path / "models.yaml", _entry("a"), _entry("solo"), _entry("off", enabled=False), _entry("b"))
    assert served_model_names(Settings(model_name="solo", catalogue_path=path)) == ["solo", "a", "b"]


def test_an_invalid_catalogue_names_the_model(tmp_path: Path) -> None:
    path = _catalogue(tmp_path / "models.yaml", _entry("a"), {"name": "b", "features": "no-date.parquet"})
    with pytest.raises(ConfigError, match="model 'b'"):
        served_model_names(Settings(model_name="solo", catalogue_path=path))


@pytest.mark.integration
def test_an_invalid_catalogue_stops_start_up_with_its_message(tmp_path: Path) -> None:
    path = _catalogue(tmp_path / "models.yaml", _entry("a"), {"name": "b", "features": "no-date.parquet"})
    env = {**os.environ, "NIGHTSHIFT_CATALOGUE_PATH": str(path), "NIGHTSHIFT_MODEL_NAME": "solo"}
    proc = subprocess.run([sys.executable, "-m", "serving.server", "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model server not started" in proc.stderr and "is not a valid model catalogue" in proc.stderr
    assert "model 'b' (#2), field 'label'" in proc.stderr


def _train(name: str, source: str) -> str:
    from flows.train import EstimatorParams, TrainParams, train
    from tasks.data.datasets import DatasetParams

    dataset = DatasetParams(source="demo", rows=2_000) if source == "demo" else DatasetParams(source="iris")
    grid = {"n_estimators": [20], "max_depth": [6]}
    params = TrainParams(dataset=dataset, model_name=name, cv_folds=2, estimator=EstimatorParams(param_grid=grid))
    result = train(params)
    return result.model_version


@pytest.fixture(scope="module")
def fleet(prefect_harness, tracking, tmp_path_factory) -> tuple[Server, dict[str, str]]:
    """A server for default churn model `a` plus catalogue models `b` (iris), `c` (no champion), `d` (disabled)."""
    from tasks.registry.versions import move_champion

    tag = uuid.uuid4().hex[:6]
    names = {key: f"fleet-{key}-{tag}" for key in "abcd"}
    move_champion(tracking, names["a"], _train(names["a"], "demo"))
    move_champion(tracking, names["b"], _train(names["b"], "iris"))
    folder = tmp_path_factory.mktemp("fleet")
    path = _catalogue(folder / "models.yaml", _entry(names["b"]), _entry(names["c"]),
                      _entry(names["d"], enabled=False))
    srv = start_server(names["a"], folder / "server.log", NIGHTSHIFT_CATALOGUE_PATH=str(path))
    yield srv, names
    stop_server(srv)


@pytest.mark.integration
def test_each_model_scores_on_its_own_routes_with_its_own_schema(fleet) -> None:
    srv, names = fleet
    a, b = names["a"], names["b"]
    churn = httpx.post(f"{srv.url}/models/{a}/predict", json={"rows": _churn_rows(3)})
    assert churn.status_code == 200, churn.text
    assert set(churn.json()["predictions"][0]["probabilities"]) == {"0", "1"}
    iris = httpx.post(f"{srv.url}/models/{b}/predict", json={"rows": IRIS_ROWS})
    assert iris.status_code == 200, iris.text
    assert len(iris.json()["predictions"]) == 2 and len(iris.json()["predictions"][0]["probabilities"]) == 3
    records = httpx.post(f"{srv.url}/models/{b}/invocations", json={"dataframe_records": IRIS_ROWS}).json()
    assert records["predictions"] == [p["label"] for p in iris.json()["predictions"]]
    churn_records = httpx.post(f"{srv.url}/models/{a}/invocations", json={"dataframe_records": _churn_rows(2)})
    assert churn_records.status_code == 200

    wrong = httpx.post(f"{srv.url}/models/{b}/invocations", json={"dataframe_records": _churn_rows(2)})
    assert wrong.status_code == 400 and "missing column(s): 'sepal_length_cm'" in wrong.json()["message"]
    assert httpx.post(f"{srv.url}/models/{a}/predict", json={"rows": IRIS_ROWS}).status_code == 422

    schema = httpx.get(f"{srv.url}/openapi.json").json()
    components = schema["components"]["schemas"]
    assert set(components[f"{b}.PredictRow"]["required"]) == set(IRIS)
    assert set(components[f"{a}.PredictRow"]["required"]) == set(CHURN) == set(components["PredictRow"]["required"])
    body = schema["paths"]["/models/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"anyOf": [{"$ref": f"#/components/schemas/{a}.PredictRequest"},
                              {"$ref": f"#/components/schemas/{b}.PredictRequest"}]}
    parameter = schema["paths"]["/models/{name}/predict"]["post"]["parameters"][0]
    assert parameter["schema"]["enum"] == [a, b, names["c"]]


@pytest.mark.integration
def test_a_model_without_a_champion_answers_503_and_the_others_serve(fleet) -> None:
    srv, names = fleet
    c = names["c"]
    for method, route in [("get", "ready"), ("get", "version"), ("post", "predict"), ("post", "invocations")]:
        response = httpx.request(method, f"{srv.url}/models/{c}/{route}", json={"rows": IRIS_ROWS})
        assert response.status_code == 503, (route, response.text)
        assert f"model '{c}' has no 'champion' alias yet" in response.json()["message"]
    assert httpx.post(f"{srv.url}/models/{names['b']}/predict", json={"rows": IRIS_ROWS}).status_code == 200

    for route in ["predict", "invocations", "version", "ready"]:
        unknown = httpx.request("post" if route in ("predict", "invocations") else "get",
                                f"{srv.url}/models/unknown/{route}", json={"rows": IRIS_ROWS})
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["message"] == f"model 'unknown' is not served here (served: {names['a']}, " \
                                            f"{names['b']}, {c})"
    assert httpx.post(f"{srv.url}/models/{names['d']}/predict", json={"rows": IRIS_ROWS}).status_code == 404

    listing = httpx.get(f"{srv.url}/models").json()
    assert listing["default_model"] == names["a"] and list(listing["models"]) == [names["a"], names["b"], c]
    assert listing["models"][c]["status"].startswith(f"no champion yet: model '{c}' has no 'champion' alias yet")
    assert listing["models"][names["b"]]["status"] == "loaded"


@pytest.mark.integration
def test_single_model_routes_serve_the_default_model(fleet, tracking) -> None:
    from tasks.registry.versions import CHAMPION, get_alias

    srv, names = fleet
    a = names["a"]
    version = httpx.get(f"{srv.url}/version").json()
    assert version["model_name"] == a and version["model_version"] == get_alias(tracking, a, CHAMPION)
    assert {k: v for k, v in version.items() if k != "models"} == httpx.get(f"{srv.url}/models/{a}/version").json()
    assert list(version["models"]) == [a, names["b"], names["c"]]
    assert version["models"][names["b"]]["model_version"] == "1" and "loaded_at" in version["models"][names["b"]]
    assert version["models"][names["c"]]["status"].startswith("no champion yet: ")
    assert httpx.get(f"{srv.url}/ready").json() == httpx.get(f"{srv.url}/models/{a}/ready").json()
    typed = httpx.post(f"{srv.url}/predict", json={"rows": _churn_rows(3)})
    assert typed.json() == httpx.post(f"{srv.url}/models/{a}/predict", json={"rows": _churn_rows(3)}).json()
    assert httpx.post(f"{srv.url}/invocations", json={"dataframe_records": IRIS_ROWS}).status_code == 400


@pytest.mark.integration
def test_reloading_one_model_swaps_only_that_one(fleet, tracking) -> None:
    """Runs last in this module: it moves b's and c's champions."""
    from tasks.registry.versions import move_champion

    srv, names = fleet
    a, b, c = names["a"], names["b"], names["c"]
    before = {n: httpx.get(f"{srv.url}/models/{n}/version").json() for n in (a, b)}
    assert httpx.post(f"{srv.url}/models/{b}/reload").status_code == 401
    assert httpx.post(f"{srv.url}/models/{b}/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.post(f"{srv.url}/models/unknown/reload", headers=AUTH).status_code == 404

    new = _train(b, "iris")
    move_champion(tracking, b, new)
    swapped = httpx.post(f"{srv.url}/models/{b}/reload", headers=AUTH, timeout=120)
    assert swapped.status_code == 200, swapped.text
    assert swapped.json() == {"status": "swapped", "from_version": before[b]["model_version"], "to_version": new,
                              "schema_changes": []}
    after_b = httpx.get(f"{srv.url}/models/{b}/version").json()
    assert after_b["model_version"] == new and after_b["loaded_at"] > before[b]["loaded_at"]
    assert httpx.get(f"{srv.url}/models/{a}/version").json() == before[a]  # untouched: same version, same load time
    assert httpx.post(f"{srv.url}/models/{b}/predict", json={"rows": IRIS_ROWS}).json()["model_version"] == new

    churn_for_c = _train(c, "demo")  # c gets a champion: a reload brings it online without a restart
    refused = httpx.post(f"{srv.url}/models/{c}/reload", headers=AUTH, timeout=120)
    assert refused.status_code == 503 and refused.json()["status"] == "kept"  # no champion moved yet
    move_champion(tracking, c, churn_for_c)
    online = httpx.post(f"{srv.url}/models/{c}/reload", headers=AUTH, timeout=120)
    assert online.json() == {"status": "swapped", "from_version": None, "to_version": churn_for_c,
                             "schema_changes": []}
    assert httpx.post(f"{srv.url}/models/{c}/predict", json={"rows": _churn_rows(2)}).status_code == 200

    move_champion(tracking, c, _train(c, "iris"))  # a new input schema: refused for c alone, as /reload does
    kept = httpx.post(f"{srv.url}/models/{c}/reload", headers=AUTH, timeout=120)
    assert kept.status_code == 422, kept.text
    assert set(kept.json()) == {"status", "model_version", "reason"} and kept.json()["status"] == "kept"
    assert kept.json()["model_version"] == churn_for_c and "pass allow_schema_change=true" in kept.json()["reason"]
    forced = httpx.post(f"{srv.url}/models/{c}/reload", params={"allow_schema_change": "true"}, headers=AUTH,
                        timeout=120)
    assert forced.status_code == 200 and forced.json()["from_version"] == churn_for_c
    assert any("sepal_length_cm" in change for change in forced.json()["schema_changes"])
    assert httpx.get(f"{srv.url}/models/{a}/version").json() == before[a]
    assert httpx.get(f"{srv.url}/models/{b}/version").json() == after_b
    schema = httpx.get(f"{srv.url}/openapi.json").json()["components"]["schemas"]
    assert set(schema[f"{c}.PredictRow"]["required"]) == set(IRIS)  # the docs follow the swap


@pytest.mark.integration
def test_schemathesis_finds_no_server_errors_on_the_model_routes(fleet, tmp_path) -> None:
    """Fuzz /models/{name}/... on a server whose models all have a champion (a 503 is a server error to it)."""
    _, names = fleet
    path = _catalogue(tmp_path / "models.yaml", _entry(names["b"]))
    srv = start_server(names["a"], tmp_path / "server.log", NIGHTSHIFT_CATALOGUE_PATH=str(path))
    try:
        exe = Path(sys.executable).with_name("schemathesis")
        proc = subprocess.run(
            [str(exe), "run", f"{srv.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "30",
             "--include-path-regex", "^/models", "--exclude-path-regex", "/reload$", "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        stop_server(srv)
    (tmp_path / "schemathesis.txt").write_text(proc.stdout + proc.stderr)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # /models, the four non-reload /models/{name}/... operations and the shadow's POST and DELETE (401 without a
    # token: fuzzed for server errors too)
    assert "7 selected" in proc.stdout


@pytest.mark.integration
def test_a_model_catalogued_after_start_up_is_served_from_its_first_reload(prefect_harness, tracking,
                                                                           tmp_path: Path) -> None:
    """The first promotion of a newly catalogued model reaches a running server; no champion any more unloads it."""
    from tasks.registry.versions import AliasState, move_champion, restore_aliases

    tag = uuid.uuid4().hex[:6]
    default, new, off = f"late-default-{tag}", f"late-new-{tag}", f"late-off-{tag}"
    path = _catalogue(tmp_path / "models.yaml", _entry(off, enabled=False))
    srv = start_server(default, tmp_path / "server.log", wait_for="/health", NIGHTSHIFT_CATALOGUE_PATH=str(path))
    try:
        version = register_servable(tracking, new)
        move_champion(tracking, new, version)
        reload = f"{srv.url}/models/{new}/reload"
        unknown = httpx.post(reload, headers=AUTH, timeout=120)
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["message"] == (f"model '{new}' is not served here (served: {default}) and it is not in "
                                             f"the catalogue {path}")
        _catalogue(path, _entry(off, enabled=False), _entry(new, enabled=False))
        assert f"it is disabled in the catalogue {path}" in httpx.post(reload, headers=AUTH).json()["message"]
        path.write_text("models: [")
        assert f"the catalogue {path} cannot be read: " in httpx.post(reload, headers=AUTH).json()["message"]

        _catalogue(path, _entry(off, enabled=False), _entry(new))  # what adding a model to the catalogue does
        assert httpx.post(reload).status_code == 401  # the token is checked before the catalogue is read
        online = httpx.post(reload, headers=AUTH, timeout=120)
        assert online.status_code == 200, online.text
        assert online.json() == {"status": "swapped", "from_version": None, "to_version": version, "schema_changes": []}
        assert httpx.post(f"{srv.url}/models/{new}/predict", json={"rows": _churn_rows(2)}).status_code == 200
        listing = httpx.get(f"{srv.url}/models").json()["models"]
        assert list(listing) == [default, new] and listing[new]["model_version"] == version
        schema = httpx.get(f"{srv.url}/openapi.json").json()
        assert schema["paths"]["/models/{name}/ready"]["get"]["parameters"][0]["schema"]["enum"] == [default, new]
        assert f"{new}.PredictRequest" in schema["components"]["schemas"]

        _catalogue(path, _entry(off, enabled=False))  # removed again: served (and reloadable) until a restart
        again = httpx.post(reload, headers=AUTH, timeout=120)
        assert again.status_code == 200 and again.json()["to_version"] == version

        restore_aliases(tracking, new, AliasState(None, None))  # e.g. its first promotion rolled back
        unloaded = httpx.post(reload, headers=AUTH, timeout=120)
        assert unloaded.status_code == 200, unloaded.text
        assert unloaded.json() == {"status": "unloaded", "from_version": version, "to_version": None,
                                   "reason": f"model '{new}' has no 'champion' alias yet: nothing to serve"}
        for method, route in [("get", "ready"), ("get", "version"), ("post", "predict"), ("post", "invocations")]:
            gone = httpx.request(method, f"{srv.url}/models/{new}/{route}", json={"rows": _churn_rows(2)})
            assert gone.status_code == 503 and "has no 'champion' alias yet" in gone.json()["message"], gone.text
        assert httpx.get(f"{srv.url}/models").json()["models"][new]["status"].startswith("no champion yet: ")
        nothing = httpx.post(reload, headers=AUTH, timeout=120)
        assert nothing.status_code == 503 and nothing.json()["status"] == "kept"
        move_champion(tracking, new, version)
        back = httpx.post(reload, headers=AUTH, timeout=120)
        assert back.json() == {"status": "swapped", "from_version": None, "to_version": version, "schema_changes": []}
    finally:
        stop_server(srv)
