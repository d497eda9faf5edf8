"""Alerts: rules over each sample, kept across runs, told to someone.

``rules`` says what can fire and with which threshold, margin, duration and
severity (from ``[alerts]``); ``event`` is what fired, the one shape stored in
the ``alerts`` table, shown by ``gpm alerts`` and sent to every channel.
"""
