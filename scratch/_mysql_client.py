"""What the MariaDB and Oracle MySQL launchers share: their files and a pymysql client."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class MySQLClient:
    """Mixed into a launcher's server dataclass, which has these fields."""

    base_dir: Path
    port: int
    host: str
    user: str
    password: str

    @property
    def datadir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket(self) -> Path:
        return self.base_dir / "mysqld.sock"

    @property
    def config_file(self) -> Path:
        return self.base_dir / "my.cnf"

    @property
    def error_log(self) -> Path:
        return self.base_dir / "error.log"

    def connect_kwargs(self, db: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``pymysql.connect`` (TCP to 127.0.0.1, autocommit on)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "autocommit": True,
            "charset": "utf8mb4",
        }
        if db is not None:
            kwargs["database"] = db
        return kwargs

    def connect(self, db: str | None = None) -> Any:
        """A new ``pymysql`` connection (autocommit on); close it when done."""
        import pymysql

        return pymysql.connect(**self.connect_kwargs(db), connect_timeout=5)

    def sql(self, statement: str, db: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection; return its rows (``[]`` if it has none)."""
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str) -> dict[str, Any]:
        """Create database ``name`` (utf8mb4) and return ``connect_kwargs`` for it."""
        quoted = name.replace("`", "``")
        self.sql(f"CREATE DATABASE `{quoted}` CHARACTER SET utf8mb4")
        return self.connect_kwargs(name)
