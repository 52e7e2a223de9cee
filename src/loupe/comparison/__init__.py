"""loupe compare (work in progress)."""
