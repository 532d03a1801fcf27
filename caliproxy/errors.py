"""The error hierarchy every ring raises; only ``net/`` turns errors into BAD/NO/BYE or SMTP codes.

Pure module: imports nothing outside the standard library.
"""


class CaliproxyError(Exception):
    """Base of every error caliproxy raises on purpose."""


class ConfigError(CaliproxyError):
    """The configuration is invalid; the message names the file, line and dotted path."""


class PolicyError(CaliproxyError):
    """A privacy policy cannot be evaluated as written."""


class ProtocolError(CaliproxyError):
    """A peer broke the IMAP or SMTP protocol."""


class ClientProtocolError(ProtocolError):
    """The mail client sent something we will not accept."""


class ServerProtocolError(ProtocolError):
    """The upstream server sent something we cannot understand or must not pass on."""
