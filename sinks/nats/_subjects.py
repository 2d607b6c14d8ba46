"""Topic to subject mapping, and subject filter coverage.

A record's topic ``<topic prefix>.<schema>.<table>`` (or ``<topic prefix>.transaction``) becomes
the subject ``<subject prefix>.<schema>.<table>``. NATS subject tokens are separated by ``.`` and
must not hold whitespace or the wildcards ``*`` and ``>``; to keep subjects easy to type and to
filter on, each token keeps only ``A-Z a-z 0-9 _ -`` and every other character becomes ``_``
(``"Order Lines"`` -> ``Order_Lines``, ``café`` -> ``caf_``). A dot inside a schema or table name
splits it into two tokens. Two topics that map to the same subject are refused (see ``SubjectMap``).

Topics reach this sink already sanitised as Debezium sanitises them (``cdc.avro.topic_name``: only
``A-Z a-z 0-9 . _ -``), so a table's subject is its topic with the prefix swapped, the same name
the log and Kafka use; the token rule still guards topics renamed by a route_topics transform.
"""

from __future__ import annotations

import re

from cdc.errors import SinkError

_BAD = re.compile(r"[^A-Za-z0-9_-]")


def token(part: str) -> str:
    """One subject token from a name part; never empty."""
    return _BAD.sub("_", part) or "_"


def sanitise(dotted: str) -> str:
    """Every dot-separated token of ``dotted`` sanitised."""
    return ".".join(token(p) for p in dotted.split("."))


class SubjectMap:
    """Maps topics to subjects, remembering them so that no two topics share a subject."""

    def __init__(self, topic_prefix: str, subject_prefix: str) -> None:
        self.topic_prefix = topic_prefix
        self.subject_prefix = subject_prefix
        self._subjects: dict[str, str] = {}
        self._topics: dict[str, str] = {}

    def subject(self, topic: str) -> str:
        hit = self._subjects.get(topic)
        if hit is not None:
            return hit
        lead = self.topic_prefix + "."
        if not topic.startswith(lead) or len(topic) == len(lead):
            raise SinkError(
                f"record topic {topic!r} does not start with the pipeline's topic prefix "
                f"{self.topic_prefix!r}; this is a bug, please report it"
            )
        subject = self.subject_prefix + "." + sanitise(topic[len(lead) :])
        other = self._topics.get(subject)
        if other is not None and other != topic:
            raise SinkError(
                f"topics {other!r} and {topic!r} both map to nats subject {subject!r} (characters "
                "other than letters, digits, _ and - become _); capture only one of the two tables "
                "in this pipeline"
            )
        self._topics[subject] = topic
        self._subjects[topic] = subject
        return subject


def covers(pattern: str, subject: str) -> bool:
    """Whether the subject filter ``pattern`` matches every subject ``subject`` matches.

    ``subject`` may itself hold wildcards: ``covers("cdc.>", "cdc.>")`` and
    ``covers(">", "cdc.*")`` are true, ``covers("cdc.*", "cdc.>")`` is false.
    """
    pt, st = pattern.split("."), subject.split(".")
    for i, p in enumerate(pt):
        if p == ">":
            return i < len(st)
        if i >= len(st):
            return False
        s = st[i]
        if s == ">":
            return False
        if p == "*":
            continue
        if s == "*" or p != s:
            return False
    return len(pt) == len(st)
