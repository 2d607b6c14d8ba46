"""Which configuration values are secret, and masking them: the one rule every echo follows.

Used by `cdc validate`'s messages (cdc.config), the log lines and the published status (cdc.logs)
and by validators that show a value back (a NATS server URL, a registry URL). Two kinds of secret:

- a whole value, when its field's name says so (``is_secret_name``: password, passwd, secret,
  token, salt, key.pem, Kafka's ``sasl.oauthbearer.config`` ...) or the field is declared
  ``json_schema_extra={"secret": True}``;
- the password inside a connection string anywhere (``password=...`` in a libpq DSN,
  ``scheme://user:password@host`` in a URL), whatever the field's name.

A field whose name says it is a connection string (dsn, url, uri, servers, connection) is never
masked whole by its name (``sasl.oauthbearer.token.endpoint.url`` is a URL, not a token): only the
password inside it is.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

MASK = "***"

# Substrings of a field name (lower case) whose value is secret as a whole. Kafka's producer
# settings are free-form librdkafka names: sasl.password, ssl.key.password, ssl.keystore.password,
# ssl.key.pem, sasl.oauthbearer.client.secret, and sasl.oauthbearer.config (which carries
# clientSecret=... among other things).
SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "salt",
    "key.pem",
    "private_key",
    "private.key",
    "oauthbearer.config",
)
# Field names whose values are connection strings: only the password inside is masked.
CONNECTION_WORDS = ("dsn", "url", "uri", "servers", "connection")

_KV_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True when a field called ``name`` holds a secret as a whole value."""
    k = name.lower()
    return any(w in k for w in SECRET_WORDS) and not any(w in k for w in CONNECTION_WORDS)


def in_connection_string(value: str) -> list[str]:
    """The passwords inside a libpq key=value DSN or URL(s) (``scheme://user:pass@host``, also
    comma-separated lists of them), as written and percent-decoded."""
    out = []
    for m in _KV_PASSWORD.finditer(value):
        v = m.group(1)
        if v.startswith("'") and v.endswith("'") and len(v) > 1:
            v = v[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        out.append(v)
    for part in value.split(","):
        part = part.strip()
        if "://" in part:
            try:
                pw = urlsplit(part).password
            except ValueError:
                continue
            if pw:
                out += [pw, unquote(pw)]
    return [s for s in out if s]


def secrets_in(node: Any, key: str = "", declared: bool = False) -> list[str]:
    """Every secret value in a configuration: a pydantic model, or the dicts and lists parsed from
    YAML (keys need not be strings). ``key`` is the name of the field holding ``node``;
    ``declared`` says that field is marked ``{"secret": True}``."""
    if isinstance(node, BaseModel):
        out: list[str] = []
        for name, field in type(node).model_fields.items():
            extra = field.json_schema_extra
            marked = isinstance(extra, dict) and extra.get("secret") is True
            out += secrets_in(getattr(node, name), name, marked)
        return out
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in secrets_in(v, str(k))]
    if isinstance(node, list | tuple):
        return [s for v in node for s in secrets_in(v, key, declared)]
    if isinstance(node, SecretStr):
        node = node.get_secret_value()
    if not isinstance(node, str) or not node:
        return []
    found = in_connection_string(node)
    connection = any(w in key.lower() for w in CONNECTION_WORDS)
    if is_secret_name(key) or (declared and not connection):
        found.append(node)
    return found


# A secret shorter than this is masked only where it stands alone, not inside a longer word: a
# token "t" must not turn every message into "se*** only one of creden***ials"; the letters of
# other words reveal nothing about it.
_WHOLE_WORD_BELOW = 8


def mask(text: str, secrets: list[str] | set[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***`` (longest first, so that a secret
    containing another is masked whole). A secret shorter than 8 characters is masked where no
    letter or digit touches it (``user:pw@host``, ``password=pw``, ``'pw'``), not inside words."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        if s not in text:
            continue
        if len(s) >= _WHOLE_WORD_BELOW:
            text = text.replace(s, MASK)
        else:
            text = re.sub(rf"(?<![^\W_]){re.escape(s)}(?![^\W_])", MASK, text)
    return text


def mask_connection_string(value: str) -> str:
    """A DSN or URL as it may be shown: the password inside it replaced by ``***``."""
    return mask(value, in_connection_string(value))
