"""Smoke test for the throwaway PostgreSQL 15 server fixture (tests/runtime/postgres_server.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest

if TYPE_CHECKING:
    from tests.runtime.postgres_server import PostgresServer

pytestmark = pytest.mark.postgresql


def test_two_fresh_databases_are_distinct(postgres_server: PostgresServer) -> None:
    dsn_a = postgres_server.create_database()
    dsn_b = postgres_server.create_database("other")
    assert dsn_a != dsn_b
    assert dsn_a.startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/nib_")
    assert dsn_b.startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/other_")

    with psycopg.connect(dsn_a, autocommit=True) as a, psycopg.connect(dsn_b, autocommit=True) as b:
        version_row = a.execute("select version()").fetchone()
        assert version_row is not None
        assert version_row[0].startswith("PostgreSQL 15.")
        version_num = a.execute("show server_version_num").fetchone()
        assert version_num is not None
        assert 150000 <= int(version_num[0]) < 160000

        name_a = a.execute("select current_database()").fetchone()
        name_b = b.execute("select current_database()").fetchone()
        assert name_a is not None
        assert name_b is not None
        assert name_a[0] != name_b[0]
        assert dsn_a.endswith("/" + name_a[0])
        assert dsn_b.endswith("/" + name_b[0])

        # Brand-new and isolated: a table created in one is invisible in the other.
        a.execute("create table only_in_a (id int primary key)")
        a.execute("insert into only_in_a values (1)")
        assert a.execute("select count(*) from only_in_a").fetchone() == (1,)
        assert b.execute("select to_regclass('public.only_in_a')").fetchone() == (None,)
        assert b.execute(
            "select count(*) from pg_catalog.pg_tables where schemaname = 'public'"
        ).fetchone() == (0,)

        # The server is ours: a private data directory, durability off, enough connections.
        assert a.execute("show data_directory").fetchone() == (str(postgres_server.datadir),)
        assert a.execute("show fsync").fetchone() == ("off",)
        assert a.execute("show max_connections").fetchone() == ("200",)
        assert a.execute(
            "select pg_encoding_to_char(encoding) from pg_database where datname = current_database()"
        ).fetchone() == ("UTF8",)


def test_dsn_for(postgres_server: PostgresServer) -> None:
    assert (
        postgres_server.dsn_for("postgres")
        == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
    )
    with psycopg.connect(postgres_server.dsn_for("postgres")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_rejects_bad_name_prefix(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="name_prefix"):
        postgres_server.create_database('x"; drop database postgres; --')
