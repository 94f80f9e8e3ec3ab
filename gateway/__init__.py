"""support-gateway: a help desk run from email and Slack."""
