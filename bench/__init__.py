"""`python -m bench` (`make bench`): throughput and latency of the daemon beside the ceiling.

Starts scratch servers, loads standard workloads, runs ``cdc run`` as a user would and prints
rows/s, CPU seconds and peak RSS per pipeline and workload, beside the rate of the server's own
tools over the same changes (pg_recvlogical, mariadb-binlog) and of python-mysql-replication
parsing the rows alone. See docs/bench.md.
"""
