"""The source's own preflight: the binlog settings and the privileges the user needs, checked
before streaming and by ``cdc check``.

Each problem is a ``Problem`` record; the blocking ones (settings the binlog cannot be read
without, and the privilege to read it) keep the source from streaming (``require_settings``)."""

from __future__ import annotations

from cdc.errors import SourceError
from cdc.model import Problem
from cdc.sources.mysql._server import Server


def check(server: Server) -> list[Problem]:
    """Every problem of the binlog settings and the user's privileges; [] when none."""
    server.catalog()
    problems: list[Problem] = []
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
            Problem(
                "the binary log is off (log_bin=OFF)",
                fix="start the server with log_bin (log-bin=mysql-bin in my.cnf) and restart it",
                blocking=True,
            )
        )
    fmt = variables.get("binlog_format", "")
    if fmt.upper() != "ROW":
        problems.append(
            Problem(
                f"binlog_format is {fmt!r}",
                fix="set binlog_format=ROW (SET GLOBAL binlog_format='ROW' and in my.cnf)",
                blocking=True,
            )
        )
    image = variables.get("binlog_row_image", "")
    if image.upper() != "FULL":
        problems.append(
            Problem(
                f"binlog_row_image is {image!r}",
                fix="set binlog_row_image=FULL (SET GLOBAL binlog_row_image='FULL' and in my.cnf)",
                blocking=True,
            )
        )
    meta = variables.get("binlog_row_metadata")
    if meta is None:
        problems.append(
            Problem(
                "the server has no binlog_row_metadata",
                "column names are not in the binlog",
                "use MariaDB >= 10.5 or MySQL >= 8.0.14",
                blocking=True,
            )
        )
    elif meta.upper() != "FULL":
        problems.append(
            Problem(
                f"binlog_row_metadata is {meta!r}",
                fix="set binlog_row_metadata=FULL (SET GLOBAL binlog_row_metadata='FULL' and in "
                "my.cnf), so that every event carries the column names and types it was "
                "written with",
                blocking=True,
            )
        )
    for setting in ("binlog_transaction_compression", "log_bin_compress"):
        if variables.get(setting, "OFF").upper() in ("ON", "1"):
            problems.append(
                Problem(
                    f"{setting} is ON",
                    "compressed binlog events cannot be decoded by the binlog reader and their "
                    "changes would be missed",
                    f"set {setting}=OFF (SET GLOBAL and in my.cnf)",
                    blocking=True,
                )
            )
    if server.config.position_mode == "gtid" and not (server.is_mariadb or server.mysql_gtids):
        # not blocking here: Server.gtid_mode refuses it when streaming starts
        problems.append(
            Problem(
                "source.position_mode is gtid but the server has gtid_mode=OFF",
                fix="turn GTIDs on (gtid_mode=ON, enforce_gtid_consistency=ON; on a running "
                "server step gtid_mode through OFF_PERMISSIVE and ON_PERMISSIVE) or use "
                "position_mode: file",
            )
        )
    if int(variables.get("server_id", "0") or 0) == server.config.server_id:
        problems.append(
            Problem(
                f"source.server_id {server.config.server_id} is the server's own server_id",
                fix="choose another number, unique among the server's replicas",
                blocking=True,
            )
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


def _check_grants(server: Server) -> list[Problem]:
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
                Problem(
                    f"the user {server.config.user!r} lacks {priv}",
                    why,
                    f"GRANT {priv} ON *.* TO '{server.config.user}'@'<host>'",
                    # the binlog cannot be read at all without it; the others fail where they
                    # are needed (snapshot, start position) with the server's own error
                    blocking=priv == "REPLICATION SLAVE",
                )
            )
    return problems


def require_settings(server: Server) -> None:
    """SourceError listing the blocking problems: what keeps the server from being captured."""
    problems = [str(p) for p in check(server) if p.blocking]
    if problems:
        raise SourceError("the server cannot be captured as it is set up: " + "; ".join(problems))
