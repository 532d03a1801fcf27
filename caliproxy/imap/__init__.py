"""Sans-IO IMAP engine: framing, grammar, capability rewriting and the proxy session machine.

Never imports Twisted, asyncio, OpenSSL, YAML or Prometheus.
"""
