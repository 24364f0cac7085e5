"""Errors the proxy returns, in the envelope the client's SDK expects.

    ProxyError(status, message, type, code, param)   base: one error response
      .invalid_request(...)   400 invalid_request_error   malformed JSON, wrong types, missing fields,
                                                          unsupported parameter/provider combinations
      .unauthorized(...)      401 authentication_error    missing, unknown, revoked or expired key
      .insufficient_balance() 402 insufficient_balance    balance at or below zero, or below the request's
                                                          estimated maximum cost (both amounts and the
                                                          workspace's billing page in the message)
      .forbidden(...)         403 permission_denied       the key may not use this model/endpoint
      .model_not_found(...)   404 model_not_found         unknown model / no credential for its provider
      .too_large(...)         413 request_too_large       body over TURNPIKE_PROXY_MAX_BODY_BYTES
      .rate_limited(...)      429 rate_limit_exceeded     upstream (or our) rate limit; Retry-After kept
      .bad_gateway(...)       502 upstream_error          provider failed or answered garbage
      .unavailable(...)       503 service_unavailable     provider overloaded / down
      .timeout(...)           504 upstream_timeout        provider did not answer in time

OpenAI-style endpoints render `{"error": {"message", "type", "param", "code"}}`; the Anthropic-style
`/v1/messages` renders `{"type": "error", "error": {"type", "message"}}`. The official SDKs map the
status code to their exception classes (openai.BadRequestError, AuthenticationError, …), so the
status code is the contract and the envelope carries the detail.
"""

from __future__ import annotations

from typing import Any

import orjson

from contracts.money import usd_text

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


class ProxyError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    # --- constructors, one per status the proxy returns -------------------------------------------

    @classmethod
    def invalid_request(cls, message: str, *, param: str | None = None, code: str | None = None) -> ProxyError:
        return cls(400, message, type="invalid_request_error", code=code, param=param)

    @classmethod
    def unauthorized(cls, message: str = "Invalid API key. Use a Turnpike key (tpk_…).") -> ProxyError:
        return cls(401, message, type="authentication_error", code="invalid_api_key")

    @classmethod
    def insufficient_balance(cls, *, available_nanos: int, estimate_nanos: int, billing_url: str) -> ProxyError:
        """402, naming what is available, what this request may cost at most, and where to add credit."""
        if available_nanos <= 0:
            message = (
                f"Your workspace's prepaid balance is used up (available: {usd_text(available_nanos)}; this "
                f"request may cost up to {usd_text(estimate_nanos)}). Add credit at {billing_url} to continue."
            )
        else:
            message = (
                f"This request may cost up to {usd_text(estimate_nanos)}, more than your workspace's available "
                f"balance of {usd_text(available_nanos)}. Lower `max_tokens` (or `n`), or add credit at {billing_url}"
            )
        return cls(402, message, type="insufficient_balance", code="insufficient_balance")

    @classmethod
    def forbidden(cls, message: str, *, code: str = "permission_denied") -> ProxyError:
        return cls(403, message, type="permission_denied", code=code, param="model")

    @classmethod
    def model_not_found(cls, message: str, *, code: str = "model_not_found") -> ProxyError:
        return cls(404, message, type="invalid_request_error", code=code, param="model")

    @classmethod
    def too_large(cls, limit: int) -> ProxyError:
        return cls(
            413, f"Request body is larger than {limit} bytes.", type="invalid_request_error", code="request_too_large"
        )

    @classmethod
    def rate_limited(cls, message: str, *, retry_after: str | None = None) -> ProxyError:
        headers = {"retry-after": retry_after} if retry_after else {}
        return cls(429, message, type="rate_limit_error", code="rate_limit_exceeded", headers=headers)

    @classmethod
    def bad_gateway(cls, message: str, *, code: str = "upstream_error") -> ProxyError:
        return cls(502, message, type="upstream_error", code=code)

    @classmethod
    def unavailable(cls, message: str, *, retry_after: str | None = None) -> ProxyError:
        headers = {"retry-after": retry_after} if retry_after else {}
        return cls(503, message, type="service_unavailable", code="service_unavailable", headers=headers)

    @classmethod
    def timeout(cls, message: str) -> ProxyError:
        return cls(504, message, type="timeout", code="upstream_timeout")

    # --- rendering -----------------------------------------------------------------------------------

    def openai_body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )

    def anthropic_body(self) -> bytes:
        kind = _ANTHROPIC_TYPES.get(self.status, "api_error")
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": self.message}})

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "type": self.type, "code": self.code}
