"""cdc check on managed services: the fix for wal_level names the service's own switch."""

from __future__ import annotations

from cdc.sources.postgres._check import _WAL_LEVEL_FIX, _platform


def test_a_managed_service_is_told_by_the_settings_only_it_has() -> None:
    assert _platform({"wal_level": "replica"}) == "postgres"
    assert _platform({"rds.logical_replication": "off"}) == "rds"
    assert _platform({"cloudsql.logical_decoding": "off"}) == "cloudsql"
    assert _platform({"azure.extensions": ""}) == "azure"


def test_each_fix_names_the_services_switch() -> None:
    assert "rds.logical_replication = 1" in _WAL_LEVEL_FIX["rds"]
    assert "cloudsql.logical_decoding=on" in _WAL_LEVEL_FIX["cloudsql"]
    assert "server parameter wal_level" in _WAL_LEVEL_FIX["azure"]
    assert "ALTER SYSTEM SET wal_level = logical" in _WAL_LEVEL_FIX["postgres"]
