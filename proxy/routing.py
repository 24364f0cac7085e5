"""Which credential serves a requested model, at which price.

Model names:
- `provider/model` (e.g. `openai/gpt-4.1-mini`, `groq/openai/gpt-oss-120b`): the first segment names a
  provider type or one of the workspace's credential slugs (an openai_compatible server is addressed
  as `<credential-slug>/<model>`). A model the catalog does not know is still forwarded: the provider
  decides, and the request is recorded as unpriced.
- a bare model (`gpt-4o-mini`): looked up in the catalog and served by the first provider, in
  PROVIDER_PREFERENCE order, for which the workspace has a credential.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.pricing import Price
from contracts.providers import PROVIDERS, get_spec
from proxy.auth import Credential, WorkspaceContext
from proxy.catalog import Catalog
from proxy.errors import ProxyError


@dataclass(frozen=True, slots=True)
class Route:
    credential: Credential
    provider: str  # the credential's provider type
    model: str  # the model id sent upstream
    price: Price | None  # None = unpriced
    base_url: str


def _price_for(
    workspace: WorkspaceContext, catalog: Catalog, *, prefix: str, provider: str, model: str
) -> Price | None:
    return workspace.prices.get((prefix, model)) or catalog.price(provider, model)


def _base_url(credential: Credential, overrides: dict[str, str]) -> str:
    if credential.base_url:
        return credential.base_url.rstrip("/")
    if credential.provider in overrides:
        return overrides[credential.provider].rstrip("/")
    default = get_spec(credential.provider).default_base_url
    if not default:
        raise ProxyError.bad_gateway(f"credential {credential.slug!r} has no base URL")
    return default.rstrip("/")


def resolve(
    requested: str, *, workspace: WorkspaceContext, catalog: Catalog, base_url_overrides: dict[str, str]
) -> Route:
    if not isinstance(requested, str) or not requested.strip():
        raise ProxyError.invalid_request("`model` must be a non-empty string", param="model")
    prefix, sep, rest = requested.partition("/")
    if sep and rest:
        credential = next((c for c in workspace.credentials if c.slug == prefix), None)
        if credential is None and prefix in PROVIDERS:
            credential = workspace.credential_for(prefix)
            if credential is None:
                raise ProxyError.model_not_found(
                    f"The model `{requested}` needs a {prefix} credential, and this workspace has none. "
                    "Add one in the dashboard under Provider credentials."
                )
        if credential is not None:
            price = _price_for(workspace, catalog, prefix=prefix, provider=credential.provider, model=rest)
            return Route(
                credential=credential,
                provider=credential.provider,
                model=rest,
                price=price,
                base_url=_base_url(credential, base_url_overrides),
            )
    for provider in catalog.providers_for(requested):
        credential = workspace.credential_for(provider)
        if credential is not None:
            return Route(
                credential=credential,
                provider=provider,
                model=requested,
                price=_price_for(workspace, catalog, prefix=provider, provider=provider, model=requested),
                base_url=_base_url(credential, base_url_overrides),
            )
    if catalog.providers_for(requested):
        raise ProxyError.model_not_found(
            f"The model `{requested}` is offered by {', '.join(catalog.providers_for(requested))}, "
            "and this workspace has no credential for any of them."
        )
    raise ProxyError.model_not_found(
        f"The model `{requested}` does not exist or you do not have access to it. "
        "Name it as `provider/model` (e.g. `openai/gpt-4o-mini`) to send it to a provider directly."
    )
