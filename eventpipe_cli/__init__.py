"""The `eventpipe` command line."""
