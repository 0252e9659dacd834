"""Gatekeeper: decide, before a Twilio call costs money or breaks a rule, whether and how to reach a number."""

__version__ = "0.1.0"
