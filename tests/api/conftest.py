"""The API layer's tests: the OpenAI models and their refusals, the typed request both protocols
build, the metrics meters, and the whole HTTP and gRPC surface on the real application classes
in this process (tests/support/local_app.py: no Ray, the session's shared engines)."""
