"""schemathesis over the published OpenAPI spec of a real `parallax serve`: generated requests
(with the admin token) never make the server fail with a 5xx. Streaming (SSE) endpoints never
end by design and are left out."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.server.live_server import serve

TOKEN = "schemathesis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_no_server_errors(tmp_path: Path) -> None:
    with serve(tmp_path / "st.db", TOKEN, tmp_path / "server.log") as (base, _):
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=AUTH)
        schema = schema.exclude(path_regex=r".*/(events|live)$")
        checked = []
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=base, headers=AUTH, checks=[not_a_server_error])

            check()
            checked.append(operation.label)
        log = (tmp_path / "server.log").read_text()
    assert len(checked) >= 15, checked
    assert "Traceback" not in log, log[-3000:]
