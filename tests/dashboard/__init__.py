"""Tests of the dashboard, the event stream and the metrics (tests/dashboard/)."""
