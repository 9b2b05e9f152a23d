"""The contributions of the five-views feature spec, and the spec they merge into.

Some fields deliberately appear in more than one view (auth_method, database,
rate_limit_per_minute, data_retention_days): when two agents fill them differently, the merge
reports a conflict instead of picking one.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Endpoint(BaseModel):
    method: str = Field(description="HTTP method")
    path: str = Field(description="URL path, e.g. /api/exports/{id}")
    purpose: str


class AuthorizationRule(BaseModel):
    endpoint: str = Field(description="the endpoint path this rule protects")
    rule: str = Field(description="who may call it")


class FrontendView(BaseModel):
    pages: list[str]
    components: list[str]
    client_storage: list[str] = Field(description="everything kept in the browser (localStorage, cookies)")
    auth_flow: str
    confidence: float = Field(ge=0, le=1)


class BackendView(BaseModel):
    endpoints: list[Endpoint]
    data_model: list[str]
    auth_method: str
    database: str
    rate_limit_per_minute: int
    confidence: float = Field(ge=0, le=1)


class SecurityView(BaseModel):
    authorization: list[AuthorizationRule] = Field(description="one rule per endpoint")
    sensitive_data: list[str] = Field(description="data that must never be stored client-side")
    auth_method: str
    threats: list[str]
    data_retention_days: int
    confidence: float = Field(ge=0, le=1)


class DevopsView(BaseModel):
    deploy_target: str
    environments: list[str]
    database: str
    rate_limit_per_minute: int
    observability: list[str]
    confidence: float = Field(ge=0, le=1)


class ProductView(BaseModel):
    user_stories: list[str]
    success_metrics: list[str]
    launch_scope: str
    data_retention_days: int
    confidence: float = Field(ge=0, le=1)


class FeatureSpec(BaseModel):
    """One document: each view as its section, shared decisions only where the views agree."""

    auth_method: str | None = None
    database: str | None = None
    rate_limit_per_minute: int | None = None
    data_retention_days: int | None = None
    frontend: FrontendView | None = None
    backend: BackendView | None = None
    security: SecurityView | None = None
    devops: DevopsView | None = None
    product: ProductView | None = None
