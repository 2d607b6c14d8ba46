"""A client of a Confluent-compatible schema registry's REST API (the part the sink needs).

Plain HTTP through urllib rather than confluent-kafka's SchemaRegistryClient: the sink only
registers schemas under subjects it names itself (TopicNameStrategy: ``<topic>-key`` and
``<topic>-value``, passed in by the encoder), so it needs none of the client's subject-name
strategies (2.16's default looks subjects up through an associations API that non-Confluent
registries do not serve), and it can turn each HTTP answer into a precise error.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from cdc.avro import canonical_schema
from cdc.errors import SinkError
from cdc.sinks.kafka.config import SchemaRegistryConfig

log = logging.getLogger(__name__)

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def _what(subject: str) -> str:
    for suffix, part in (("-value", "value"), ("-key", "key")):
        if subject.endswith(suffix):
            return f"the {part} schema of topic {subject[: -len(suffix)]!r} (subject {subject!r})"
    return f"subject {subject!r}"


class RegistryClient:
    """``cdc.model.SchemaRegistry`` over a Confluent-compatible registry.

    ``register`` returns the registry's global id of the schema under the subject, registering it
    as a new version first if the subject does not hold it yet; the registry has stored it when
    the call returns (registries keep their schemas durably before answering). Ids are cached per
    (subject, schema), so each table version costs one request per process.
    """

    def __init__(self, config: SchemaRegistryConfig) -> None:
        self.url = config.url
        self._timeout = config.timeout_s
        self._headers = {"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE}
        if config.basic_auth is not None:
            token = f"{config.basic_auth.user}:{config.basic_auth.password}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self._ids: dict[tuple[str, str], int] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        canon = canonical_schema(schema)
        hit = self._ids.get((subject, canon))
        if hit is not None:
            return hit
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        answer = self._request("POST", path, {"schema": json.dumps(schema)}, subject)
        sid = answer.get("id")
        if not isinstance(sid, int):
            raise SinkError(
                f"schema registry {self.url} answered {answer!r} when registering "
                f"{_what(subject)}: expected an id; is this a Confluent-compatible registry?",
                retryable=False,
            )
        self._ids[(subject, canon)] = sid
        log.debug("registered %s as id %d", _what(subject), sid)
        return sid

    def _request(self, method: str, path: str, body: Any, subject: str) -> dict[str, Any]:
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data, self._headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                out = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise self._http_error(e, subject) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SinkError(
                f"schema registry {self.url} unreachable while registering {_what(subject)}: "
                f"{reason}; retrying once it answers",
                retryable=True,
            ) from None
        except ValueError:
            raise SinkError(
                f"schema registry {self.url} answered with something other than JSON while "
                f"registering {_what(subject)}: check schema_registry.url",
                retryable=False,
            ) from None
        return out if isinstance(out, dict) else {"answer": out}

    def _http_error(self, e: urllib.error.HTTPError, subject: str) -> SinkError:
        try:
            payload = json.loads(e.read() or b"{}")
            said = payload.get("message") or payload
        except (ValueError, AttributeError):
            said = e.reason
        what = _what(subject)
        if e.code == 409:
            return SinkError(
                f"schema registry {self.url} refused {what} as incompatible with the versions "
                f"it holds ({said}); the table changed in a way the subject's compatibility level "
                f"forbids: relax it (PUT /config/{subject}) or capture the change under a new "
                "topic prefix",
                retryable=False,
            )
        if e.code == 422:
            return SinkError(
                f"schema registry {self.url} rejected {what} as invalid: {said}", retryable=False
            )
        if e.code in (401, 403):
            return SinkError(
                f"schema registry {self.url} refused access (HTTP {e.code}: {said}) while "
                f"registering {what}: check schema_registry.basic_auth",
                retryable=False,
            )
        if e.code == 404:
            return SinkError(
                f"schema registry {self.url} has no such endpoint (HTTP 404: {said}) while "
                f"registering {what}: check schema_registry.url",
                retryable=False,
            )
        return SinkError(
            f"schema registry {self.url} failed registering {what} (HTTP {e.code}: {said}); "
            "retrying",
            retryable=e.code >= 500 or e.code == 429,
        )
