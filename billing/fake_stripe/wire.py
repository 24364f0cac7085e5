"""Stripe's wire format, both ways: form bodies in bracket notation decoded to nested params, typed
readers for those params with Stripe's own 400s, the error envelope, ids and list objects.

Decoding follows what Stripe's API accepts: `a[b][c]=v` is a nested hash, `a[]=v` appends to an array,
`a[0][b]=v` is an array of hashes (a hash whose keys are all integers becomes an array, in index
order). An empty value is kept as "" (Stripe reads it as "unset"). Keys and values must be UTF-8 and
may not contain NUL.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

Params = dict[str, Any]

ALPHANUMERIC = string.ascii_letters + string.digits
MAX_AMOUNT = 99_999_999  # Stripe's ceiling for one USD payment: $999,999.99
MAX_STRING = 5000
DOC_URL = "https://stripe.com/docs/error-codes/"
_KEY_PART = re.compile(r"\[([^\[\]]*)\]")


class StripeError(Exception):
    """An error answered in Stripe's envelope: `{"error": {"type", "code", "message", "param", ...}}`.

    The status picks the SDK's exception class: 400/404 InvalidRequestError (IdempotencyError when the
    type is idempotency_error), 401 AuthenticationError, 402 CardError."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Params = {"type": type, "message": message}
        if code is not None:
            self.body["code"] = code
            self.body["doc_url"] = DOC_URL + code.replace("_", "-")
        if param is not None:
            self.body["param"] = param
        if decline_code is not None:
            self.body["decline_code"] = decline_code
        self.body.update(extra)

    def envelope(self) -> Params:
        return {"error": self.body}


def not_found(kind: str, object_id: str, *, param: str = "id") -> StripeError:
    return StripeError(f"No such {kind}: '{object_id}'", status=404, code="resource_missing", param=param)


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(ALPHANUMERIC) for _ in range(length))


def dumps(body: Any) -> bytes:
    return orjson.dumps(body)


def list_object(url: str, data: list[Params], *, has_more: bool = False) -> Params:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


# --- decoding --------------------------------------------------------------------------------------------


def decode_form(raw: bytes) -> Params:
    """A form body or query string in bracket notation → nested params (400 on anything malformed)."""
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=2000)
    except UnicodeDecodeError as exc:
        raise StripeError("Invalid request: the body is not valid UTF-8.") from exc
    except ValueError as exc:
        raise StripeError("Invalid request: too many parameters.") from exc
    root: dict[str, Any] = {}
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise StripeError(
                f"Invalid string: the value of {key.split('[', 1)[0]!r} contains a NUL character.",
                code="invalid_characters",
                param=key,
            )
        _insert(root, key, value)
    return _arrays(root)


def _insert(root: dict[str, Any], key: str, value: str) -> None:
    base, _, rest = key.partition("[")
    parts = [base, *_KEY_PART.findall("[" + rest)] if rest else [base]
    if not base or (rest and "[" + rest != "".join(f"[{p}]" for p in parts[1:])):
        raise StripeError(f"Invalid parameter name: {key!r}.", param=key)
    node: Any = root
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "":  # `a[]`: append
            if not isinstance(node, dict):
                raise StripeError(f"Invalid array: {key!r}.", param=key)
            slot = len(node)
            while slot in node:
                slot += 1
            part_key: str | int = slot
        else:
            part_key = int(part) if part.isdigit() and index > 0 else part
        if last:
            if isinstance(node.get(part_key), dict):
                raise StripeError(f"Invalid hash: {key!r} is both a value and a hash.", param=key)
            node[part_key] = value
        else:
            child = node.setdefault(part_key, {})
            if not isinstance(child, dict):
                raise StripeError(f"Invalid hash: {key!r} is both a value and a hash.", param=key)
            node = child


def _arrays(node: Any) -> Any:
    """Hashes whose keys are all integers become arrays, in index order."""
    if not isinstance(node, dict):
        return node
    converted = {k: _arrays(v) for k, v in node.items()}
    if converted and all(isinstance(k, int) for k in converted):
        return [converted[k] for k in sorted(converted)]
    return {str(k): v for k, v in converted.items()}


def decode_json(raw: bytes) -> Params:
    """A control endpoint's JSON body (empty means {})."""
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StripeError(f"Invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise StripeError("The JSON body must be an object.")
    return body


# --- typed readers (every one names the param it rejects) ------------------------------------------------


def get_str(params: Mapping[str, Any], name: str, *, required: bool = False, path: str = "") -> str | None:
    full = name if not path else f"{path}[{name}]"
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise StripeError(f"Missing required param: {full}.", code="parameter_missing", param=full)
        return None
    if isinstance(value, (bool, int)):
        value = str(value).lower() if isinstance(value, bool) else str(value)
    if not isinstance(value, str):
        raise StripeError(f"Invalid string: {full} must be a string.", param=full)
    if len(value) > MAX_STRING:
        raise StripeError(
            f"Invalid string: {full} must be at most {MAX_STRING} characters long.",
            param=full,
        )
    if "\x00" in value:
        raise StripeError(f"Invalid string: {full} contains a NUL character.", code="invalid_characters", param=full)
    return value


def get_ref(params: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    """An object id param: absent is None, but "" is refused, as Stripe refuses to "unset" a reference."""
    if params.get(name) == "":
        raise StripeError(
            f"You passed an empty string for '{name}'. We assume empty values are an attempt to unset a parameter; "
            f"however '{name}' cannot be unset. You should remove '{name}' from your request or supply a non-empty "
            "value.",
            code="parameter_invalid_empty",
            param=name,
        )
    return get_str(params, name, required=required)


def get_int(
    params: Mapping[str, Any],
    name: str,
    *,
    required: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
    path: str = "",
) -> int | None:
    full = name if not path else f"{path}[{name}]"
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise StripeError(f"Missing required param: {full}.", code="parameter_missing", param=full)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise StripeError(f"Invalid integer: {value!r}", code="parameter_invalid_integer", param=full)
    text = str(value)
    if not re.fullmatch(r"-?[0-9]{1,18}", text):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise StripeError(f"Invalid integer: {shown}", code="parameter_invalid_integer", param=full)
    number = int(text)
    if minimum is not None and number < minimum:
        raise StripeError(
            f"This value must be greater than or equal to {minimum}.", code="parameter_invalid_integer", param=full
        )
    if maximum is not None and number > maximum:
        raise StripeError(
            f"This value must be less than or equal to {maximum}.", code="parameter_invalid_integer", param=full
        )
    return number


def get_bool(params: Mapping[str, Any], name: str, *, default: bool = False, path: str = "") -> bool:
    full = name if not path else f"{path}[{name}]"
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise StripeError(f"Invalid boolean: {value!r}", param=full)


def get_hash(params: Mapping[str, Any], name: str, *, path: str = "") -> Params:
    full = name if not path else f"{path}[{name}]"
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise StripeError(f"Invalid object: {full} must be a hash.", param=full)
    return value


def get_list(params: Mapping[str, Any], name: str) -> list[Any]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise StripeError(f"Invalid array: {name} must be an array.", param=name)
    return value


def get_enum(params: Mapping[str, Any], name: str, choices: tuple[str, ...], *, path: str = "") -> str | None:
    value = get_str(params, name, path=path)
    full = name if not path else f"{path}[{name}]"
    if value is not None and value not in choices:
        raise StripeError(f"Invalid {full}: must be one of {', '.join(choices)}", param=full)
    return value


def get_currency(params: Mapping[str, Any], name: str, *, required: bool = True, path: str = "") -> str | None:
    value = get_str(params, name, required=required, path=path)
    full = name if not path else f"{path}[{name}]"
    if value is None:
        return None
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise StripeError(f"Invalid currency: {value}.", param=full)
    return value.lower()


def merge_metadata(current: Mapping[str, str], params: Mapping[str, Any], *, path: str = "") -> dict[str, str]:
    """Stripe's metadata rules: keys merge into what is there, an empty value removes the key, at most
    50 keys, keys ≤ 40 characters, values ≤ 500."""
    full = "metadata" if not path else f"{path}[metadata]"
    raw = params.get("metadata")
    if raw is None:
        return dict(current)
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise StripeError("Invalid object: metadata must be a hash.", param=full)
    merged = dict(current)
    for key, value in raw.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise StripeError(f"Invalid metadata value for {key!r}: must be a string.", param=f"{full}[{key}]")
        if len(key) > 40:
            raise StripeError(
                f"Metadata keys must be at most 40 characters long (got {key[:40]!r}…).", param=f"{full}[{key}]"
            )
        text = str(value)
        if len(text) > 500:
            raise StripeError("Metadata values must be at most 500 characters long.", param=f"{full}[{key}]")
        if text == "":
            merged.pop(key, None)
        else:
            merged[key] = text
    if len(merged) > 50:
        raise StripeError("Metadata can have at most 50 keys.", param=full)
    return merged
