"""The embedded local stack: Kafka-protocol broker launcher and the `eventpipe up` supervisor."""
