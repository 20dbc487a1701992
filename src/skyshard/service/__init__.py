"""Serving a catalog over the network: Qserv's MySQL proxy and HTTP query API.

    skyshard serve --catalog DIR --user alice:secret --token T

=================  =============================================================
``config``         users, tokens, limits, ports (TOML file + command line)
``queries``        the query service: state machine, limits, cancel, history
``results``        asynchronous results: memory, then Parquet files
``cursors``        interrupting the DuckDB statements of a query
``errors``         skyshard errors as MySQL codes and HTTP statuses (only here)
``columns``        Arrow types as MySQL column types
``statements``     what a MySQL statement is, and who answers it
``processlist``    queries as tables (PROCESSLIST, information_schema)
``mysql``          the MySQL-protocol front end (mysql-mimic)
``http``           the HTTP/JSON front end (Starlette) and ``openapi``
``server``         both front ends in one loop
=================  =============================================================
"""
