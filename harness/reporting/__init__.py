"""Reporting: figures, comparison tables of run directories, the diagnosis report, the dashboard screenshot."""
