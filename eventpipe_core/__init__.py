"""Shared foundation of eventpipe: settings, Kafka client settings, the lake store, the event model."""
