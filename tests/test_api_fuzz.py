"""The controller API fuzzed from its own OpenAPI spec with schemathesis: no 5xx, no response that
breaks the spec. With a user token (every route reachable) and without one (every route but health
must refuse with 401)."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from controller.api import Tokens, create_app
from controller.config import Paths

USER, AGENT = "user-secret-fuzz", "agent-secret-fuzz"
CASES: dict[str, int] = {}


def _app():
    """The API with a broker (a private redis-server, stopped at exit), so sweeps are really submitted."""
    import atexit
    import tempfile
    from pathlib import Path

    from controller.embedded import RedisServer

    root = Path(tempfile.mkdtemp(prefix="fleetbench-fuzz-"))
    broker = RedisServer(root / "redis", root / "redis.log").start()
    atexit.register(broker.stop)
    paths = Paths.resolve(root / "fb")
    paths.run.mkdir(parents=True, exist_ok=True)
    return create_app(paths, paths.db_url(), broker.url, Tokens({USER}, {AGENT}), max_upload_bytes=200_000,
                      run_scheduler=False)  # fmt: skip


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


#: Every check but one: "a schema-valid request is accepted" cannot hold for uploads, whose bodies must be
#: a real model or data set (OpenAPI cannot say "a loadable .keras file"); they are refused with 415/422.
EXCLUDED = [positive_data_acceptance]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_a_user_token(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {USER}"}, excluded_checks=EXCLUDED)
    CASES[case.operation.label] = CASES.get(case.operation.label, 0) + 1


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_without_a_token_refuses(case):
    response = case.call()
    assert response.status_code < 500
    if not case.operation.path.endswith("/health"):
        # 401; or, for a generated path no route matches, 404/405 (routing answers before auth)
        assert response.status_code in (401, 404, 405), (case.operation.label, response.status_code, response.text[:200])
        assert response.status_code != 200


def test_cases_ran():
    """How many cases ran, per operation (printed with -s; docs/benchmarks.md keeps the count)."""
    if not CASES:
        pytest.skip("run with the fuzz tests above")
    total = sum(CASES.values())
    print(f"schemathesis: {total} cases with a user token over {len(CASES)} operations")
    assert len(CASES) >= 8


def test_sweeps_and_their_jobs_statefully(tiny_model):
    """Issue 14: the stateful link. A submitted sweep's id is followed (OpenAPI links) to its state, its jobs and
    its results, in random sequences of calls: no 5xx, no response off the spec, and a linked sweep is found."""
    from hypothesis import Phase
    from starlette.testclient import TestClient

    app = _app()
    headers = {"Authorization": f"Bearer {USER}"}
    with TestClient(app) as client:
        up = client.post("/api/v1/models", params={"filename": "tiny.tflite"}, content=tiny_model["path"].read_bytes(),
                         headers=headers)  # fmt: skip
        assert up.status_code == 201, up.text
    model_id = up.json()["model_id"]
    seen: dict[str, list[int]] = {}
    machine = schemathesis.openapi.from_asgi("/openapi.json", app).as_state_machine()

    class Workflow(machine):
        def before_call(self, case):
            if case.operation.label == "POST /api/v1/sweeps":  # a spec that is valid, so the links have an id to follow
                name = f"fuzz-{len(seen.get(case.operation.label, []))}"
                case.body = {"spec": {"name": name, "models": [{"id": model_id}], "variants": ["tflite-fp32"],
                                      "devices": ["litert:cpu"], "settings": {"min_iterations": 10}}}  # fmt: skip

        def get_call_kwargs(self, case):
            return {"headers": headers}

        def after_call(self, response, case):
            seen.setdefault(case.operation.label, []).append(response.status_code)

        def validate_response(self, response, case, **kwargs):
            case.validate_response(response, excluded_checks=EXCLUDED)

    Workflow.run(settings=settings(max_examples=12, stateful_step_count=5, deadline=None, phases=[Phase.generate],
                                   suppress_health_check=list(HealthCheck)))  # fmt: skip
    assert 201 in seen.get("POST /api/v1/sweeps", []), seen
    # each link followed from a 201 finds the sweep it names
    assert 200 in seen.get("GET /api/v1/sweeps/{ref}", []), seen
    assert 200 in seen.get("GET /api/v1/jobs", []), seen
