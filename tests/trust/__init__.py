"""Connection trust: facts → clearance, its configuration, PROXY protocol, and real handshakes."""
