"""Scratch servers for tests, the demo and the benchmark.

Each launcher starts a real server from this machine's binaries (Debian packages or jars from Maven
Central) in a temporary directory on a free loopback port, and stops it again. Nothing here is used
by the daemon itself.
"""
