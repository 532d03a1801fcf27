"""SMTP submission side: tagging hooks and relay logic, free of direct socket IO."""
