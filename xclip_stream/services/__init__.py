"""Local services for tests and the demo: a Kafka-protocol broker and test cameras."""
