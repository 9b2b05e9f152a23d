"""The five-views feature spec as a Parallax plan: five agents in parallel, one merge."""

from __future__ import annotations

from pydantic import BaseModel

from parallax.core.plan import Plan
from parallax.examples.feature_spec import models as m
from parallax.patterns import disjoint, every, fanout, llm

ASK = "Feature brief: {{input.brief}}\n\nWrite the {view} view of this feature. Be concrete."
VIEWS: dict[str, type[BaseModel]] = {
    "frontend": m.FrontendView,
    "backend": m.BackendView,
    "security": m.SecurityView,
    "devops": m.DevopsView,
    "product": m.ProductView,
}
RULES = [
    every("backend.endpoints[*].path", within="security.authorization[*].endpoint", name="endpoints have authz"),
    disjoint("frontend.client_storage[*]", "security.sensitive_data[*]", name="no sensitive data client-side"),
]


def build(brief: str = "Let users export all their data as a CSV file.", model: str = "test") -> Plan:
    return fanout(
        "feature-spec",
        brief=brief,
        model=model,
        agents={name: llm(ASK.replace("{view}", name), output=view) for name, view in VIEWS.items()},
        merge_into=m.FeatureSpec,
        rules=RULES,
        timeout_s=120,
    )


plan = build()
