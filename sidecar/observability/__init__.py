"""Logs (and later metrics and the admin status view)."""
