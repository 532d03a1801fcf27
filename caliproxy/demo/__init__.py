"""A self-contained demo and test upstream: Dovecot on loopback, seeded with sample mail."""
