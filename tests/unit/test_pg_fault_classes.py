"""Which Postgres faults cannot heal: not retried, with the ways out (issue 14 item 8)."""

from __future__ import annotations

from cdc.daemon import is_fatal
from cdc.sources.postgres._source import PostgresSource
from cdc.sources.postgres.config import PostgresSourceConfig


def source() -> PostgresSource:
    cfg = PostgresSourceConfig(
        type="postgres", dsn="host=127.0.0.1 port=1 connect_timeout=1", tables=["t"], slot="s1"
    )
    return PostgresSource(cfg, "p", "p")


def test_a_publication_missing_while_decoding_is_fatal_with_the_ways_out() -> None:
    err = source().faults.stream_error(
        'replication stream ended: ERROR:  publication "cdc_p" does not exist\n'
        'CONTEXT:  slot "s1", output plugin "pgoutput", in the change callback'
    )
    assert is_fatal(err)
    text = str(err)
    assert "publication 'cdc_p' was dropped after the slot's position" in text
    assert "pg_replication_slot_advance('s1'" in text
    assert "pg_drop_replication_slot('s1')" in text and "keeps every WAL file" in text


def test_renamed_and_dropped_tables_are_fatal_and_say_what_to_change() -> None:
    renamed = source().faults.renamed("public.a", "public.b")
    assert is_fatal(renamed) and "Put public.b in source.tables in place of public.a" in str(
        renamed
    )
    dropped = source().faults.dropped("public.a")
    assert is_fatal(dropped) and "Remove it from source.tables" in str(dropped)


def test_a_lost_connection_stays_retryable() -> None:
    assert not is_fatal(source().faults.stream_error("replication stream ended: server closed"))
