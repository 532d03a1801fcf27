"""Drivers that run real mail clients against the test upstreams or the proxy."""
