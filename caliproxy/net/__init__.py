"""The IO shell: Twisted protocols, TLS and listeners that feed the sans-IO engines."""
