"""Pure privacy policy: message features, privacy index, confidentiality levels, clearance.

No IO, no clock, no logging, no YAML: callers pass everything in.
"""
