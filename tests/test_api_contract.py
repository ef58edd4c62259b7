"""The API keeps its OpenAPI document: schemathesis sends generated requests to every operation.

Valid and invalid requests (positive and negative generation); every answer
must have a documented status, content type and body schema, invalid ones
must be refused, and no operation may answer 500. The export operations may
answer 502 (a generated host is, rightly, unreachable). Driven through each
operation's hypothesis strategy (schemathesis' pytest loader does not run on
pytest 9 yet).
"""
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from gigsterpg.api.app import create_app
from tests.figures import FIGURES
from tests.helpers import API_AUTH as AUTH, API_TOKEN as TOKEN

EXAMPLES = 40


def test_every_operation_keeps_the_contract(api_settings):
    app = create_app(api_settings, TOKEN, source_timeout_s=2)
    with TestClient(app):  # runs the lifespan: reconcile at start, jobs stopped at the end
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        statuses = {}
        for operation in operations:
            upstream = operation.method.upper() == "POST" and operation.path.startswith("/exports")

            @given(case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def keeps_the_contract(case):
                # A one-item list in the query is sent exactly as its item alone (?after=0.0 for [0.0]): such a
                # "violating" case is byte for byte a valid request, so no server can tell it apart.
                assume(not any(isinstance(value, list) and len(value) == 1 for value in (case.query or {}).values()))
                # The real token where the case carries one; a negative case that leaves the header out must
                # reach the server without it (and be refused), not be made valid behind schemathesis' back.
                if case.headers and "Authorization" in case.headers:
                    case.headers["Authorization"] = AUTH["Authorization"]
                response = case.call_and_validate(excluded_checks=[not_a_server_error] if upstream else None)
                assert response.status_code < 500 or (upstream and response.status_code == 502), response.text
                statuses.setdefault(operation.label, set()).add(response.status_code)

            keeps_the_contract()
        # Every operation got past the token too (the cases carried it), not only refusals of it.
        assert all(seen - {401} for seen in statuses.values()), statuses
        FIGURES["api contract: operations checked"] = len(statuses)
        assert set(statuses) == {operation.label for operation in operations}
