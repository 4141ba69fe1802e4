"""The core's tests: orchestrator/ (sessions, schedules, rolling window, depth policy, stop
strings, modes) and the repository's own rules (layers, suite rules). Unit tier: no model, no
Ray. The scripted engine (tests/support/fakes.py) is allowed here only, where the control flow
itself is under test; every other layer runs real engines."""
