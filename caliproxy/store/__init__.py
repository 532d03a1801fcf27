"""Classification cache (features per upstream message), SQLite by default."""
