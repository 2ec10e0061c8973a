"""payer-rules: a configurable payer rules engine for outpatient therapy billing (PT, OT, SLP)."""

__version__ = "0.2.0"
