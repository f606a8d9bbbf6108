# Copyright: PDSNO maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A small client for the Global controller's northbound API (``/api/v1``).

Shared by the modules (through :func:`client_from_module`) and by the ``pdsno.net.nib`` inventory
plugin. It only needs ``ansible.module_utils.urls``: nothing of the ``pdsno`` runtime is imported on
the Ansible side, so the collection works on any host that can reach the GC over HTTPS.
"""

import json
import ssl
import time

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote, urlencode
from ansible.module_utils.urls import open_url

API_PREFIX = "/api/v1"
CA_PATH_ENV = "PDSNO_CA_PATH"
MAX_PAGE = 1000
USER_AGENT = "pdsno.net-ansible"

# Codes the client itself reports when the GC gave no JSON error body of its own.
TRANSPORT_ERROR = "UNREACHABLE"
# The same code as the pdsno CLI's: the GC was reached, but its certificate was not accepted.
TLS_ERROR = "TLS_ERROR"
NOT_THE_API = "no PDSNO reason code: is url the GC's address, e.g. https://gc.example.net:8443?"
BAD_RESPONSE = "BAD_RESPONSE"
TIMED_OUT = "TIMED_OUT"

# The NIB's vocabularies, for argument choices (the GC refuses anything else with 422 anyway).
DEVICE_STATUSES = ["active", "inactive", "unreachable", "quarantined", "degraded"]
DEVICE_TYPES = [
    "router",
    "switch",
    "firewall",
    "access_point",
    "wireless_controller",
    "server",
    "endpoint",
    "unknown",
]
TIERS = ["LOW", "MEDIUM", "HIGH", "EMERGENCY"]
PROPOSAL_STATUSES = [
    "PENDING",
    "QUEUED",
    "APPROVED",
    "DENIED",
    "EXPIRED",
    "EXECUTING",
    "EXECUTED",
    "FAILED",
    "ROLLING_BACK",
    "ROLLED_BACK",
    "DEGRADED",
]


def connection_argument_spec():
    """The options every module shares, documented in the ``pdsno.net.connection`` doc fragment."""
    return {
        "url": {"type": "str", "required": True, "fallback": (env_fallback, ["PDSNO_URL"])},
        "token": {
            "type": "str",
            "required": True,
            "no_log": True,
            "fallback": (env_fallback, ["PDSNO_TOKEN"]),
        },
        "ca_path": {"type": "path", "fallback": (env_fallback, [CA_PATH_ENV])},
        "validate_certs": {"type": "bool", "default": True},
        "timeout": {"type": "int", "default": 30},
    }


class PdsnoApiError(Exception):
    """The GC refused a request (``status`` set) or could not be reached (``status`` is None)."""

    def __init__(self, message, code, status=None, method=None, path=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.method = method
        self.path = path

    def as_result(self):
        """Keyword arguments for ``fail_json``: the GC's reason code and HTTP status stay machine-readable."""
        return {"msg": self.message, "code": self.code, "http_status": self.status}


def error_from_response(status, body, method, path):
    """Map an HTTP error to a :class:`PdsnoApiError`, keeping the GC's ``{code, message}`` when present."""
    text = to_text(body or b"", errors="surrogate_or_strict").strip()
    code, message = f"HTTP_{status}", text or "no response body"
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("code"):
        code = to_text(data["code"])
        message = to_text(data.get("message") or message)
    else:
        if isinstance(data, dict) and data.get("detail"):
            message = to_text(data["detail"])
        # Only the GC's API answers with a reason code: this came from elsewhere on the server (a wrong
        # path in url) or from something in between.
        message = f"{message[:200]} ({NOT_THE_API})"
    return PdsnoApiError(
        f"{method} {path}: HTTP {status} {code}: {message}",
        code=code,
        status=status,
        method=method,
        path=path,
    )


def build_path(path, query=None):
    """``/api/v1`` + path + the query string, leaving out parameters that are None.

    List values repeat the parameter (``?a=1&a=2``), as FastAPI reads them.
    """
    full = API_PREFIX + path
    pairs = []
    for key in sorted(query or {}):
        value = query[key]
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, bool):
                item = "true" if item else "false"
            pairs.append((key, to_text(item)))
    return full + ("?" + urlencode(pairs) if pairs else "")


def base_url(url):
    """The GC's base address; the API's own prefix is accepted too (it is the URL the docs show)."""
    url = url.rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)].rstrip("/")
    return url


def tls_failure(exc):
    """The ``ssl.SSLError`` behind a failed request (urllib wraps it in a URLError), or None."""
    reason = getattr(exc, "reason", None)
    for candidate in (exc, reason, getattr(exc, "__cause__", None)):
        if isinstance(candidate, ssl.SSLError):
            return candidate
    return None


def quote_id(identifier):
    """An identifier as one path segment (ids are uuids or slugs, but never trust that)."""
    return quote(to_text(identifier), safe="")


class PdsnoClient:
    """Bearer-authenticated JSON requests to one GC."""

    def __init__(self, url, token, ca_path=None, validate_certs=True, timeout=30):
        if not url:
            raise PdsnoApiError("url is empty: set it or PDSNO_URL", code="INVALID_REQUEST")
        if not token:
            raise PdsnoApiError("token is empty: set it or PDSNO_TOKEN", code="UNAUTHENTICATED")
        self.base_url = base_url(url)
        self._token = token
        self.ca_path = ca_path
        self.validate_certs = validate_certs
        self.timeout = timeout

    def request(self, method, path, query=None, body=None):
        """Send one request; returns the decoded JSON body (None when empty); raises PdsnoApiError."""
        target = build_path(path, query)
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            response = open_url(
                self.base_url + target,
                data=data,
                headers=headers,
                method=method,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                ca_path=self.ca_path,
                http_agent=USER_AGENT,
                follow_redirects="none",
                use_proxy=True,
            )
            raw = response.read()
        except HTTPError as exc:
            body_bytes = exc.read() if exc.fp is not None else b""
            raise error_from_response(exc.code, body_bytes, method, target) from None
        except (URLError, OSError, ValueError) as exc:
            tls = tls_failure(exc)
            if tls is not None:
                raise PdsnoApiError(
                    f"{method} {target}: TLS with the GC at {self.base_url} failed ({to_native(tls)}): "
                    f"is ca_path ({CA_PATH_ENV}) the deployment CA that signed its certificate?",
                    code=TLS_ERROR,
                    method=method,
                    path=target,
                ) from exc
            raise PdsnoApiError(
                f"{method} {target}: cannot reach the GC at {self.base_url}: {to_native(exc)}",
                code=TRANSPORT_ERROR,
                method=method,
                path=target,
            ) from exc
        if not raw:
            return None
        try:
            return json.loads(to_text(raw, errors="surrogate_or_strict"))
        except ValueError:
            raise PdsnoApiError(
                f"{method} {target}: the answer is not JSON: {to_text(raw[:200])}",
                code=BAD_RESPONSE,
                method=method,
                path=target,
            ) from None

    def get(self, path, query=None):
        return self.request("GET", path, query=query)

    def post(self, path, body=None, query=None):
        return self.request("POST", path, query=query, body=body if body is not None else {})

    def put(self, path, body, query=None):
        return self.request("PUT", path, query=query, body=body)

    def get_all(self, path, query=None, limit=MAX_PAGE, max_items=None):
        """Every item of an offset-paged collection (``{items, next_offset}``), at most ``max_items``."""
        params = dict(query or {})
        items = []
        offset = 0
        while offset is not None:
            params.update(limit=limit, offset=offset)
            page = self.get(path, params)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise PdsnoApiError(
                    f"GET {path}: expected {{items, next_offset}}, got {type(page).__name__}",
                    code=BAD_RESPONSE,
                    method="GET",
                    path=path,
                )
            items.extend(page["items"])
            if max_items is not None and len(items) >= max_items:
                return items[:max_items]
            next_offset = page.get("next_offset")
            # A server that repeats an offset would loop forever; stop instead.
            offset = next_offset if next_offset is not None and next_offset > offset else None
        return items

    def get_audit(self, query=None, max_items=1000):
        """Audit events after ``after_seq`` (a cursor, not an offset), at most ``max_items``."""
        params = dict(query or {})
        events = []
        while len(events) < max_items:
            params["limit"] = min(MAX_PAGE, max_items - len(events))
            page = self.get("/audit", params)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise PdsnoApiError(
                    "GET /audit: expected {items, next_after_seq}",
                    code=BAD_RESPONSE,
                    method="GET",
                    path="/audit",
                )
            events.extend(page["items"])
            cursor = page.get("next_after_seq")
            if cursor is None or not page["items"]:
                break
            params["after_seq"] = cursor
        return events


def client_from_module(module):
    """A client built from the module's connection options; fails the module on bad options."""
    params = module.params
    try:
        return PdsnoClient(
            params["url"],
            params["token"],
            ca_path=params.get("ca_path"),
            validate_certs=params.get("validate_certs", True),
            timeout=params.get("timeout", 30),
        )
    except PdsnoApiError as exc:
        module.fail_json(**exc.as_result())


def wait_for(fetch, done, timeout, interval, what):
    """Call ``fetch()`` until ``done(result)`` is true; returns the last result.

    Raises :class:`PdsnoApiError` (code TIMED_OUT) with the last result's text after ``timeout`` seconds.
    ``done`` may itself raise to stop early (e.g. a proposal that was denied while we waited).
    """
    deadline = time.monotonic() + max(0, timeout)
    while True:
        result = fetch()
        if done(result):
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PdsnoApiError(f"timed out after {timeout}s waiting for {what}", code=TIMED_OUT)
        time.sleep(min(max(interval, 0.1), remaining))
