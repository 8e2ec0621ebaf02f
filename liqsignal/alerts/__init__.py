"""Alerts: scheduler, Telegram sender, alert state and outbox."""
