"""Edges of the gateway: SMTP in, mail out, Slack."""
