"""Preflight checks of a PostgreSQL server for one pipeline (``cdc check``).

Reads catalogs and settings over a normal connection, and opens (then closes) a replication
connection to see that the server lets it in; never creates a slot or publication and never
starts replication. Managed services (RDS/Aurora, Cloud SQL, Azure) are told apart by the
settings only they have, so that a fix names their switch rather than postgresql.conf. Each
problem is a ``Problem`` record: the setting or object with its value, what it breaks, and the
statement or change that fixes it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from cdc.model import Problem
from cdc.sources.postgres._selection import selection
from cdc.sources.postgres.config import PostgresSourceConfig, default_name, sql_table


def check(config: PostgresSourceConfig, pipeline_name: str) -> list[Problem]:
    """Every problem that would keep this pipeline's source from working; [] when none."""
    try:
        conn = psycopg.connect(config.dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        return [
            Problem(
                f"cannot connect to postgres: {str(e).strip()}",
                fix="check source.dsn and that the server accepts connections from this host",
            )
        ]
    slot = config.slot or default_name(pipeline_name)
    publication = config.publication or default_name(pipeline_name)
    with conn:
        try:
            return _problems(conn, config, slot, publication) + _owners(
                conn, pipeline_name, slot, publication
            )
        except psycopg.Error as e:
            return [Problem(f"cannot read the server's settings and catalogs: {str(e).strip()}")]


_WAL_LEVEL_FIX = {
    "postgres": "set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET "
    "wal_level = logical) and restart the server",
    "rds": "RDS/Aurora: set rds.logical_replication = 1 in the instance's (or cluster's) "
    "parameter group and reboot it",
    "cloudsql": "Cloud SQL: set the database flag cloudsql.logical_decoding = on (gcloud sql "
    "instances patch INSTANCE --database-flags=cloudsql.logical_decoding=on); the instance "
    "restarts",
    "azure": "Azure Database for PostgreSQL: set the server parameter wal_level to logical (az "
    "postgres flexible-server parameter set --name wal_level --value logical ...) and restart "
    "the server",
}


def _platform(settings: dict[str, str]) -> str:
    """Which managed service the server is (by settings only it has), or plain ``postgres``."""
    if "rds.logical_replication" in settings:
        return "rds"
    if "cloudsql.logical_decoding" in settings:
        return "cloudsql"
    if "azure.extensions" in settings:
        return "azure"
    return "postgres"


def _member_of(conn: psycopg.Connection[Any], role: str) -> bool:
    row = conn.execute(
        "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s",
        (role,),
    ).fetchone()
    return bool(row and row[0])


def _replication_connection(conn: psycopg.Connection[Any], dsn: str, user: str) -> list[Problem]:
    """Whether the server accepts the pipeline's replication connection. A logical replication
    connection (``replication=database``) matches pg_hba.conf's lines for its database, not the
    ``replication`` keyword (physical replication only), so a normal connection that works
    usually means this one does too; what can still refuse it is said here."""
    from cdc.errors import SourceError
    from cdc.sources.postgres._connections import connect_replication

    try:
        connect_replication(dsn).finish()
    except SourceError as e:
        msg = str(e)
        fix = "check source.dsn and the server's log"
        if "pg_hba.conf" in msg:
            fix = (
                f"add a line for database {conn.info.dbname!r} and user {user!r} from this host "
                "to pg_hba.conf (a logical replication connection matches the database's lines; "
                "the replication keyword is for physical replication) and run SELECT "
                "pg_reload_conf()"
            )
        return [Problem(msg, fix=fix)]
    return []


def _owners(
    conn: psycopg.Connection[Any], pipeline_name: str, slot: str, publication: str
) -> list[Problem]:
    """A publication, or a slot, that another pipeline's publication records as its own: the
    daemon would refuse to use it (see Publication.ensure)."""
    from cdc.sources.postgres._publication import publication_claims

    out: list[Problem] = []
    for name, claim in publication_claims(conn).items():
        owner = claim.get("pipeline")
        if owner is None or owner == pipeline_name:
            continue
        if name == publication:
            out.append(
                Problem(
                    f"publication {publication!r} belongs to pipeline {owner!r}",
                    "its comment records it",
                    "give this pipeline a source.publication of its own",
                )
            )
        if claim.get("slot") == slot:
            out.append(
                Problem(
                    f"replication slot {slot!r} belongs to pipeline {owner!r}",
                    f"publication {name!r} records it",
                    "give this pipeline a source.slot of its own",
                )
            )
    return out


def _problems(
    conn: psycopg.Connection[Any], config: PostgresSourceConfig, slot: str, publication: str
) -> list[Problem]:
    problems: list[Problem] = []
    settings = dict(
        conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('wal_level', 'max_replication_slots', 'max_wal_senders', "
            "'rds.logical_replication', 'cloudsql.logical_decoding', 'azure.extensions')"
        ).fetchall()
    )
    platform = _platform(settings)
    row = conn.execute(
        "SELECT current_user, current_database(), r.rolreplication, r.rolsuper "
        "FROM pg_roles r WHERE r.rolname = current_user"
    ).fetchone()
    assert row is not None
    user, db, replication, superuser = row

    if settings.get("wal_level") != "logical":
        problems.append(
            Problem(f"wal_level is {settings.get('wal_level')!r}", fix=_WAL_LEVEL_FIX[platform])
        )
    rds_role = platform == "rds" and _member_of(conn, "rds_replication")
    if not (replication or superuser or rds_role):
        problems.append(
            Problem(
                f"user {user!r} lacks the REPLICATION attribute",
                fix=(
                    f'GRANT rds_replication TO "{user}" (as the master user)'
                    if platform == "rds"
                    else f'ALTER ROLE "{user}" REPLICATION (as a superuser'
                    + (", or a member of azure_pg_admin)" if platform == "azure" else ")")
                ),
            )
        )
    elif settings.get("wal_level") == "logical":
        problems += _replication_connection(conn, config.dsn, user)

    # Replication slots and WAL senders: this pipeline needs one of each.
    slots = conn.execute(
        "SELECT slot_name, plugin, slot_type, database, wal_status, active "
        "FROM pg_replication_slots"
    ).fetchall()
    ours = next((s for s in slots if s[0] == slot), None)
    if ours is not None:
        _, plugin, kind, slot_db, wal_status, _ = ours
        if kind != "logical" or plugin != "pgoutput" or slot_db != db:
            problems.append(
                Problem(
                    f"replication slot {slot!r} already exists as a {kind} slot for plugin "
                    f"{plugin!r} in database {slot_db!r}",
                    f"this pipeline needs a pgoutput slot in {db!r}",
                    "set source.slot to another name (or drop that slot if it is unused)",
                )
            )
        elif wal_status == "lost":
            problems.append(
                Problem(
                    f"replication slot {slot!r} is invalidated (wal_status lost), so the changes "
                    "since the pipeline's last position are gone",
                    fix="set snapshot: when_needed (or drop the slot: SELECT "
                    f"pg_drop_replication_slot('{slot}'), and move the sink's data aside) to take "
                    "a new snapshot",
                )
            )
    else:
        limit = int(settings.get("max_replication_slots", "0"))
        if limit - len(slots) < 1:
            problems.append(
                Problem(
                    f"max_replication_slots is {limit} and {len(slots)} slots exist",
                    "none is free for this pipeline",
                    "raise max_replication_slots in postgresql.conf and restart, or drop unused "
                    "slots (SELECT slot_name, active FROM pg_replication_slots)",
                )
            )
    if ours is None or not ours[5]:
        senders = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
        ).fetchone()
        used = int(senders[0]) if senders else 0
        limit = int(settings.get("max_wal_senders", "0"))
        if limit - used < 1:
            problems.append(
                Problem(
                    f"max_wal_senders is {limit} and {used} are in use",
                    "none is free for this pipeline's replication connection",
                    "raise max_wal_senders in postgresql.conf and restart",
                )
            )

    # Tables: exist, can be read, updates and deletes can be published.
    found: list[tuple[str, str]] = []
    owns_all = True
    for schema, table in selection(config).resolve(conn):
        info = conn.execute(
            "SELECT c.relkind, c.relreplident, "
            "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), "
            "has_table_privilege(c.oid, 'SELECT'), pg_has_role(c.relowner, 'USAGE') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, table),
        ).fetchone()
        name = f"{schema}.{table}"
        if info is None:
            problems.append(
                Problem(
                    f"table {name} does not exist in database {db!r}",
                    fix="create it or remove it from source.tables",
                )
            )
            continue
        relkind, ident, has_pk, can_select, owner = info
        if relkind not in ("r", "p"):
            problems.append(
                Problem(
                    f"{name} is not a table",
                    f"relkind {relkind!r}: only tables can be captured",
                    "remove it from source.tables",
                )
            )
            continue
        found.append((schema, table))
        owns_all = owns_all and bool(owner or superuser)
        if not has_pk and ident in ("d", "n"):
            problems.append(
                Problem(
                    f"table {name} has no primary key and REPLICA IDENTITY "
                    f"{'NOTHING' if ident == 'n' else 'DEFAULT'}",
                    "its UPDATEs and DELETEs fail once it is published",
                    f"add a primary key or ALTER TABLE {sql_table(schema, table)} "
                    "REPLICA IDENTITY FULL",
                )
            )
        if not can_select and config.snapshot != "never":
            problems.append(
                Problem(
                    f"user {user!r} cannot SELECT from {name}",
                    "the snapshot reads it",
                    f'GRANT SELECT ON {sql_table(schema, table)} TO "{user}"',
                )
            )

    if config.slot_failover:
        version = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        if version is not None and version[0] < 170000:
            problems.append(
                Problem(
                    f"slot_failover is true but the server is Postgres {version[0] // 10000}",
                    "failover slots need Postgres 17 or newer",
                    "upgrade the server, or set slot_failover: false",
                    blocking=True,
                )
            )

    # The publication: created or completed by the daemon when it may; a problem when not.
    pub = conn.execute(
        "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, "
        "pg_has_role(pubowner, 'USAGE') FROM pg_publication WHERE pubname = %s",
        (publication,),
    ).fetchone()
    mode = config.publication_autocreate_mode
    listed = ", ".join(f"{s}.{t}" for s, t in found)
    if pub is None and mode == "disabled":
        problems.append(
            Problem(
                f"publication {publication!r} does not exist",
                "publication_autocreate_mode is disabled: the daemon never creates it",
                f'have an administrator run CREATE PUBLICATION "{publication}" FOR TABLE {listed}',
                blocking=True,
            )
        )
    elif pub is None and mode == "all_tables":
        if not superuser:
            problems.append(
                Problem(
                    f"publication {publication!r} does not exist and user {user!r} cannot "
                    "create it FOR ALL TABLES",
                    "publication_autocreate_mode all_tables: that needs a superuser",
                    f'have a superuser run CREATE PUBLICATION "{publication}" FOR ALL TABLES, '
                    "or use publication_autocreate_mode: filtered",
                )
            )
    elif pub is None:
        can_create = conn.execute(
            "SELECT has_database_privilege(current_database(), 'CREATE')"
        ).fetchone()
        if not (superuser or (can_create and can_create[0] and owns_all)):
            problems.append(
                Problem(
                    f"publication {publication!r} does not exist and user {user!r} cannot "
                    "create it",
                    "that needs CREATE on the database and ownership of the tables",
                    f'have an owner run CREATE PUBLICATION "{publication}" FOR TABLE '
                    + ", ".join(f"{s}.{t}" for s, t in found),
                )
            )
    else:
        all_tables, ins, upd, dele, trunc, owner = pub
        off = [
            op
            for op, on in (("insert", ins), ("update", upd), ("delete", dele), ("truncate", trunc))
            if not on
        ]
        if off:
            problems.append(
                Problem(
                    f"publication {publication!r} does not publish {', '.join(off)}",
                    "those changes would be missed",
                    f'ALTER PUBLICATION "{publication}" SET (publish = '
                    "'insert, update, delete, truncate')",
                )
            )
        if not all_tables:
            published = set(
                conn.execute(
                    "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                    (publication,),
                ).fetchall()
            )
            missing = [f"{s}.{t}" for s, t in found if (s, t) not in published]
            if missing and mode != "filtered":
                problems.append(
                    Problem(
                        f"publication {publication!r} does not include {', '.join(missing)}",
                        f"publication_autocreate_mode is {mode}: the daemon never alters it, "
                        "and their changes would be missed",
                        f'have its owner run ALTER PUBLICATION "{publication}" ADD TABLE '
                        + ", ".join(missing),
                        blocking=True,
                    )
                )
            elif missing and not ((owner or superuser) and owns_all):
                problems.append(
                    Problem(
                        f"publication {publication!r} does not include {', '.join(missing)} and "
                        f"user {user!r} cannot add them",
                        "that needs ownership of the publication and the tables",
                        f'have an owner run ALTER PUBLICATION "{publication}" ADD TABLE '
                        + ", ".join(missing),
                    )
                )
    return problems
