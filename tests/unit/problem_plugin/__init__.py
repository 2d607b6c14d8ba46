"""A source plugin whose ``check_source`` reports two ``Problem`` records, one without a
``why``: for tests/unit/test_contracts.py's ``cdc check`` test."""

from __future__ import annotations

from typing import Any

from cdc.model import Problem


def check_source(config: Any, pipeline: Any) -> list[Problem]:
    return [
        Problem(
            what="wal_level is 'replica'",
            why="logical decoding needs 'logical'",
            fix="ALTER SYSTEM SET wal_level = logical; then restart the server",
        ),
        Problem("user 'app' lacks the REPLICATION attribute", fix='ALTER ROLE "app" REPLICATION'),
    ]
