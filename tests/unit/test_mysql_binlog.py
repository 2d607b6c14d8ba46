"""sources/mysql/_binlog.py without a server: how the stream tells that the binlog paused, and
which logged statements are a TRUNCATE."""

from __future__ import annotations

import socket
from typing import Any

from cdc.sources.mysql._binlog import unread


class Conn:
    """What ``unread`` uses of a pymysql connection: its socket and the buffered reader on it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: Any = sock
        self._rfile: Any = sock.makefile("rb")


def test_unread_sees_bytes_in_the_socket_and_in_the_reader_without_waiting() -> None:
    a, b = socket.socketpair()
    a.settimeout(30)  # a read that waited would hold the test for 30 s
    conn = Conn(a)
    try:
        assert not unread(conn)
        b.sendall(b"abcdef")
        assert unread(conn)  # in the socket
        assert conn._rfile.read(2) == b"ab"
        assert unread(conn)  # in the reader's buffer, the socket is empty
        assert conn._rfile.read(4) == b"cdef"
        assert not unread(conn)
        assert a.gettimeout() == 30  # pymysql's read timeout is left as it was
        b.close()
        assert not unread(conn)  # the peer closed: the next read reports it
    finally:
        conn._rfile.close()
        a.close()
        b.close()


def test_unread_of_a_closed_connection_is_false() -> None:
    a, b = socket.socketpair()
    conn = Conn(a)
    conn._rfile.close()
    a.close()
    b.close()
    assert not unread(conn)
    conn._sock = None  # what pymysql leaves after closing
    assert not unread(conn)


def test_truncate_statements_are_recognised_as_the_server_logs_them() -> None:
    from cdc.sources.mysql._binlog import truncated_table

    assert truncated_table("TRUNCATE gone", "db") == ("db", "gone")
    assert truncated_table("truncate table `my db`.`a``b`;", "x") == ("my db", "a`b")
    assert truncated_table("/* app */ TRUNCATE TABLE shop . orders", "x") == ("shop", "orders")
    assert truncated_table("TRUNCATE TABLE t", "") is None  # no database to put it in
    assert truncated_table("ALTER TABLE t ADD COLUMN c INT", "db") is None
    assert truncated_table("TRUNCATE TABLE a, b", "db") is None  # not MySQL's syntax
