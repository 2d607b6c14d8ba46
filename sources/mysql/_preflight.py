"""The source's own preflight: the binlog settings and the privileges the user needs, checked
before streaming and by ``cdc check``."""

from __future__ import annotations

from cdc.errors import SourceError
from cdc.sources.mysql._server import Server


def check(server: Server) -> list[str]:
    """Every problem of the binlog settings and the user's privileges; [] when none."""
    server.catalog()
    problems: list[str] = []
    variables = {
        str(k).lower(): str(v)
        for k, v in server.all(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
            "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', "
            "'server_id', 'binlog_transaction_compression', 'log_bin_compress')"
        )
    }
    if variables.get("log_bin", "OFF").upper() not in ("ON", "1"):
        problems.append(
            "the binary log is off (log_bin=OFF): start the server with log_bin "
            "(log-bin=mysql-bin in my.cnf) and restart it"
        )
    fmt = variables.get("binlog_format", "")
    if fmt.upper() != "ROW":
        problems.append(
            f"binlog_format is {fmt!r}: set binlog_format=ROW (SET GLOBAL binlog_format='ROW' "
            "and in my.cnf)"
        )
    image = variables.get("binlog_row_image", "")
    if image.upper() != "FULL":
        problems.append(
            f"binlog_row_image is {image!r}: set binlog_row_image=FULL (SET GLOBAL "
            "binlog_row_image='FULL' and in my.cnf)"
        )
    meta = variables.get("binlog_row_metadata")
    if meta is None:
        problems.append(
            "the server has no binlog_row_metadata (column names are not in the binlog): "
            "use MariaDB >= 10.5 or MySQL >= 8.0.14"
        )
    elif meta.upper() != "FULL":
        problems.append(
            f"binlog_row_metadata is {meta!r}: set binlog_row_metadata=FULL (SET GLOBAL "
            "binlog_row_metadata='FULL' and in my.cnf), so that every event carries the column "
            "names and types it was written with"
        )
    for setting in ("binlog_transaction_compression", "log_bin_compress"):
        if variables.get(setting, "OFF").upper() in ("ON", "1"):
            problems.append(
                f"{setting} is ON: compressed binlog events cannot be decoded by the binlog "
                f"reader and their changes would be missed; set {setting}=OFF (SET GLOBAL and "
                "in my.cnf)"
            )
    if server.config.position_mode == "gtid" and not (server.is_mariadb or server.mysql_gtids):
        problems.append(
            "source.position_mode is gtid but the server has gtid_mode=OFF: turn GTIDs on "
            "(gtid_mode=ON, enforce_gtid_consistency=ON; on a running server step gtid_mode "
            "through OFF_PERMISSIVE and ON_PERMISSIVE) or use position_mode: file"
        )
    if int(variables.get("server_id", "0") or 0) == server.config.server_id:
        problems.append(
            f"source.server_id {server.config.server_id} is the server's own server_id: choose "
            "another number, unique among the server's replicas"
        )
    problems += _check_grants(server)
    return problems


def _global_privileges(server: Server) -> set[str]:
    """The privileges the user holds ON *.*, upper case ("ALL PRIVILEGES" as such)."""
    privileges: set[str] = set()
    for (line,) in server.all("SHOW GRANTS"):
        text = str(line)
        if not text.upper().startswith("GRANT ") or " ON *.* TO " not in text.upper():
            continue
        head = text[len("GRANT ") : text.upper().index(" ON *.* TO ")]
        privileges.update(p.strip().upper() for p in head.split(",") if p.strip())
    return privileges


def _check_grants(server: Server) -> list[str]:
    held = _global_privileges(server)
    if "ALL PRIVILEGES" in held or "ALL" in held:
        return []
    # (privilege, what else also grants it, why)
    needed: list[tuple[str, tuple[str, ...], str]] = [
        ("REPLICATION SLAVE", (), "to read the binlog")
    ]
    if server.is_mariadb:
        needed.append(("BINLOG MONITOR", ("SUPER",), "for SHOW MASTER STATUS / BINARY LOGS"))
    else:
        needed.append(
            ("REPLICATION CLIENT", ("SUPER",), "for SHOW BINARY LOG STATUS / BINARY LOGS")
        )
        if server.config.snapshot != "never":
            needed.append(("RELOAD", (), "for the snapshot's brief FLUSH TABLES WITH READ LOCK"))
    problems = []
    for priv, alternatives, why in needed:
        if priv not in held and not held.intersection(alternatives):
            problems.append(
                f"the user {server.config.user!r} lacks {priv} ({why}): GRANT {priv} ON *.* TO "
                f"'{server.config.user}'@'<host>'"
            )
    return problems


def require_settings(server: Server) -> None:
    """SourceError listing the settings that keep the server from being captured."""
    problems = [p for p in check(server) if "server_id" in p or "binlog" in p or "log_bin" in p]
    if problems:
        raise SourceError("the server cannot be captured as it is set up: " + "; ".join(problems))
