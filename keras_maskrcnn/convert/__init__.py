"""Weight converters from other frameworks' checkpoints (torch is an optional extra)."""
