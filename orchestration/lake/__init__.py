"""Lake side: reading committed raw hours, writing enriched hours, the raw/enriched assets."""
