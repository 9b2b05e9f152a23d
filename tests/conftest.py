"""Suite-wide guards: warnings are errors (pyproject), and nothing here may reach a network
service or a paid model API."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # A test never falls back to the developer's store or model.
    for name in list(os.environ):
        if name.startswith("PARALLAX_"):
            monkeypatch.delenv(name)


# No test may reach a model provider: pydantic-ai refuses every real model request (even to
# loopback) unless a test re-allows it explicitly for a fake server it started itself.
import pydantic_ai.models  # noqa: E402

pydantic_ai.models.ALLOW_MODEL_REQUESTS = False
