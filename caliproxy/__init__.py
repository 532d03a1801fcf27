"""caliproxy: a privacy mail proxy between standard mail clients and their IMAP/SMTP servers."""

__version__ = "0.1.0"
