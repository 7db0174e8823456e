"""Alerts: the sensor that evaluates alert rules on their charts' series after loads and delivers webhooks."""
