"""Change-data-capture into Avro change events in Debezium's envelope."""

__version__ = "0.1.0"
